"""Compiling in a child process: the netprobe process holds programs and maps as descriptors
and never maps BCC or LLVM itself."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from netprobe.kernel import loader
from netprobe.errors import NetprobeError
from netprobe.kernel.program import Program
from netprobe.kernel.session import ProbeSession

ROOT = Path(__file__).resolve().parents[2]

_CHECK = r"""
import sys
from netprobe.kernel.session import ProbeSession
with ProbeSession() as s:
    maps = open("/proc/self/maps").read()
    assert s.read().values is not None
    print("bcc" in sys.modules, "libLLVM" in maps or "libclang" in maps, "libbcc" in maps)
"""


def test_the_netprobe_process_never_loads_bcc_or_llvm(bpf_ok):
    r = subprocess.run([sys.executable, "-c", _CHECK], capture_output=True, text=True, timeout=60,
                       env={"PYTHONPATH": str(ROOT / "pyfront"), "PATH": "/usr/bin:/bin",
                            # the run's cache (tests/conftest.py), not the machine's
                            "NETPROBE_CACHE": os.environ.get("NETPROBE_CACHE", "off")})
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["False", "False", "False"]


class _Broken(ProbeSession):
    def build_program(self) -> Program:
        p = super().build_program()
        return Program(p.text + "\nint broken(void *ctx) { return undeclared_thing; }\n",
                       p.cflags, p.layout_source)


def test_a_compile_error_is_one_line_from_the_compiler(bpf_ok):
    with pytest.raises(NetprobeError) as e:
        with _Broken():
            pass
    assert str(e.value).startswith("compiling probes:")
    assert "undeclared_thing" in str(e.value) and "\n" not in str(e.value)


def test_a_program_that_does_not_load_is_reported_not_fatal(bpf_ok):
    """The child answers for each program; one the verifier refuses comes back as an error
    (the session then falls back to the stage's next mechanism)."""
    text = ("int fine(struct bpf_raw_tracepoint_args *ctx) { return 0; }\n"
            "int bad(struct bpf_raw_tracepoint_args *ctx) { return *(int *)0; }\n")
    specs = [loader.ProgSpec(n, n, 17) for n in ("fine", "bad")]
    loaded = loader.load(text, [], specs)
    try:
        assert set(loaded.progs) == {"fine"}
        assert "bad" in loaded.errors and loaded.errors["bad"]
    finally:
        loaded.close()
