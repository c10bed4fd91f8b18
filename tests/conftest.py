import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "pyfront"))


def _bpf_unusable_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root"
    try:
        import bcc  # noqa: F401
    except ImportError:
        return "BCC (python3-bpfcc) is not importable"
    if not Path("/sys/kernel/btf/vmlinux").exists() and not Path(f"/lib/modules/{os.uname().release}/build").exists():
        return "neither BTF nor kernel headers"
    return None


@pytest.fixture(scope="session")
def bpf_ok():
    """Integration tests ask for this. In CI, unusable BPF is a failure, never a skip."""
    why = _bpf_unusable_reason()
    if why:
        if os.environ.get("CI"):
            pytest.fail(f"BPF unusable in CI: {why}")
        pytest.skip(f"BPF unusable here: {why}")
    return True


# The compiled-program cache, for the whole run, in a directory of its own (mkdtemp: 0700),
# never the machine's /var/cache/netprobe: the first session of each program compiles, later
# ones load from the cache, so the suite exercises both paths. NETPROBE_CACHE=off (or a
# directory) set outside wins.
if "NETPROBE_CACHE" not in os.environ:
    import atexit
    import shutil
    import tempfile

    os.environ["NETPROBE_CACHE"] = tempfile.mkdtemp(prefix="netprobe-test-cache-")
    atexit.register(shutil.rmtree, os.environ["NETPROBE_CACHE"], True)
