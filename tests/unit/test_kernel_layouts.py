"""Whether the probes' struct layouts can be believed (issue 10, item 15): from BTF always;
without BTF only from the running kernel's own headers. Files only: no root, no BPF."""
import platform
from pathlib import Path

import pytest

from netprobe.errors import NetprobeError
from netprobe.kernel.facts import Kernel, headers_release, require_trusted_layouts

RELEASE = platform.release()


def headers(tmp_path: Path, release: str | None) -> Path:
    build = tmp_path / "build"
    (build / "include/generated").mkdir(parents=True)
    if release is not None:
        (build / "include/generated/utsrelease.h").write_text(f'#define UTS_RELEASE "{release}"\n')
    return build


@pytest.fixture
def btf(tmp_path):
    f = tmp_path / "vmlinux"
    f.write_bytes(b"\x9f\xeb")
    return f


def test_headers_release_reads_uts_release(tmp_path):
    assert headers_release(headers(tmp_path, "6.1.0-57-amd64")) == "6.1.0-57-amd64"
    assert headers_release(tmp_path / "nowhere") is None


def test_btf_is_trusted_whatever_the_headers(tmp_path, btf):
    k = Kernel(btf_path=btf, build=headers(tmp_path, "6.1.0-57-amd64"))
    assert k.layouts().trusted and k.layouts().source == f"BTF ({btf})"
    require_trusted_layouts(k)


def test_without_btf_this_kernels_own_headers_are_trusted(tmp_path):
    k = Kernel(btf_path=tmp_path / "no-btf", build=headers(tmp_path, RELEASE))
    assert k.layouts().trusted
    assert k.layouts().source == f"kernel headers ({RELEASE}, this kernel's own)"


@pytest.mark.parametrize("release, says", [
    ("0.0.1-other", "are 0.0.1-other's, not this kernel's"),
    (None, f"no kernel headers for {RELEASE}"),
])
def test_without_btf_other_headers_stop_netprobe(tmp_path, release, says):
    build = headers(tmp_path, release) if release else tmp_path / "missing"
    k = Kernel(btf_path=tmp_path / "no-btf", build=build)
    assert not k.layouts().trusted
    with pytest.raises(NetprobeError) as e:
        require_trusted_layouts(k)
    assert says in str(e.value) and "\n" not in str(e.value)
    assert str(e.value).startswith(f"no BTF ({tmp_path / 'no-btf'}) and ")
    assert "CONFIG_DEBUG_INFO_BTF" in str(e.value)


def test_netprobe_btf_names_the_btf_file(monkeypatch, tmp_path):
    monkeypatch.setenv("NETPROBE_BTF", str(tmp_path / "hidden"))
    k = Kernel()
    assert k.btf_path == tmp_path / "hidden" and k.btf is None
