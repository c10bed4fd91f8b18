"""System-call numbers come from a per-architecture table; an unknown machine is one line."""
import pytest

from netprobe.kernel import bpfsys
from netprobe.errors import NetprobeError


@pytest.mark.parametrize("machine, bpf, setns, perf_event_open", [
    ("x86_64", 321, 308, 298),     # arch/x86/entry/syscalls/syscall_64.tbl
    ("aarch64", 280, 268, 241),    # include/uapi/asm-generic/unistd.h
])
def test_numbers_per_architecture(machine, bpf, setns, perf_event_open):
    assert bpfsys.syscalls_for(machine) == bpfsys.Syscalls(bpf, setns, perf_event_open)


@pytest.mark.parametrize("machine", ["riscv64", "armv7l", "ppc64le", "s390x", "i686", ""])
def test_other_architectures_are_a_one_line_error(machine):
    with pytest.raises(NetprobeError) as e:
        bpfsys.syscalls_for(machine)
    assert str(e.value) == f"netprobe runs on x86_64 and aarch64 only, not on {machine}"


def test_an_unknown_machine_stops_a_command_before_any_system_call(monkeypatch, capsys):
    """The check sits in front of everything a command does: no bpf() with a wrong number."""
    import sys

    from netprobe.commands import cli

    monkeypatch.setattr(bpfsys.os, "uname", lambda: _Uname("riscv64"))
    bpfsys._nr.cache_clear()
    called = []
    monkeypatch.setattr(bpfsys._libc, "syscall", lambda *a: called.append(a) or -1)
    monkeypatch.setattr(sys, "argv", ["netprobe", "watch", "--once"])
    try:
        with pytest.raises(SystemExit) as exit:
            cli.main()
    finally:
        bpfsys._nr.cache_clear()
    assert exit.value.code == 1 and called == []
    assert capsys.readouterr().err.strip() == \
        "netprobe: error: netprobe runs on x86_64 and aarch64 only, not on riscv64"


def test_a_bpf_call_on_an_unknown_machine_raises_instead_of_calling(monkeypatch):
    monkeypatch.setattr(bpfsys.os, "uname", lambda: _Uname("mips"))
    bpfsys._nr.cache_clear()
    called = []
    monkeypatch.setattr(bpfsys._libc, "syscall", lambda *a: called.append(a) or -1)
    try:
        with pytest.raises(NetprobeError, match="not on mips"):
            bpfsys.raw_tracepoint_open(3, "net_dev_queue")
    finally:
        bpfsys._nr.cache_clear()
    assert called == []


class _Uname:
    def __init__(self, machine):
        self.machine = machine
