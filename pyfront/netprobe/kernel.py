"""What this kernel offers netprobe: BTF, symbols, tracepoints and attach mechanisms.

Cheap checks only (files and tables): `doctor` proves each mechanism by really attaching."""
from __future__ import annotations

import os
import platform
import subprocess
from functools import cached_property
from pathlib import Path

from . import bpfsys
from . import btf as btfmod
from .catalogue import KPROBE, NETFILTER, RAW_TRACEPOINT, TP_BTF
from .errors import NetprobeError
from .kallsyms import Kallsyms

TRACEFS_CANDIDATES = (Path("/sys/kernel/tracing"), Path("/sys/kernel/debug/tracing"))
KPROBE_PMU = Path("/sys/bus/event_source/devices/kprobe")


def kernel_version() -> tuple[int, int]:
    major, minor = platform.release().split(".")[:2]
    return int(major), int("".join(ch for ch in minor if ch.isdigit()) or 0)


def tracefs() -> Path | None:
    for p in TRACEFS_CANDIDATES:
        if (p / "events").is_dir():
            return p
    return None


def ensure_tracefs() -> Path | None:
    """Mount tracefs if it is not: BCC detaches kprobes through it, and `ip netns exec` (a new
    mount namespace with its own /sys) hides the host's mount. Within such a namespace the
    mount is private to it."""
    tf = tracefs()
    if tf is not None:
        return tf
    target = TRACEFS_CANDIDATES[0]
    if target.is_dir():
        subprocess.run(["mount", "-t", "tracefs", "tracefs", str(target)], capture_output=True)
    return tracefs()


class Kernel:
    """The running kernel, as KernelFacts for plan.choose()."""

    def __init__(self, btf_path: Path = btfmod.VMLINUX_BTF):
        self.btf_path = btf_path
        self._unknown: set[int] = set()

    @cached_property
    def btf(self) -> btfmod.BTF | None:
        # NETPROBE_NO_BTF=1 takes the headers path on purpose (tests of the no-BTF fallback)
        if not self.btf_path.exists() or os.environ.get("NETPROBE_NO_BTF") == "1":
            return None
        return btfmod.BTF.load(self.btf_path)

    @cached_property
    def kallsyms(self) -> Kallsyms:
        return Kallsyms.load()

    @cached_property
    def kprobes(self) -> bool:
        tf = tracefs()
        return KPROBE_PMU.exists() or bool(tf and (tf / "kprobe_events").exists())

    @cached_property
    def raw_tracepoints(self) -> bool:
        return (self.kallsyms.probe_name("bpf_raw_tracepoint_open") is not None
                or self.kallsyms.probe_name("bpf_get_raw_tracepoint") is not None
                or self.kallsyms.probe_name("bpf_find_raw_tracepoint") is not None)

    @cached_property
    def tp_btf(self) -> bool:
        # BTF raw tracepoints (5.5) attach by the tracepoint's btf_trace_<event> typedef,
        # which needs the kernel's BTF; whether this kernel lets such a program load (it is
        # BPF_PROG_TYPE_TRACING, like fentry) shows at load time, and a refusal falls back
        return bool(self.raw_tracepoints and self.btf
                    and self.btf.has("btf_trace_netif_receive_skb", btfmod.TYPEDEF))

    @cached_property
    def netfilter_links(self) -> bool:
        # BPF netfilter links arrived in 6.4 with struct bpf_nf_ctx
        return bool(self.btf and self.btf.has("bpf_nf_ctx", btfmod.STRUCT))

    @cached_property
    def mechanisms(self) -> frozenset[str]:
        found = set()
        if self.kprobes:
            found.add(KPROBE)
        if self.raw_tracepoints:
            found.add(RAW_TRACEPOINT)
        if self.tp_btf:
            found.add(TP_BTF)
        if self.netfilter_links:
            found.add(NETFILTER)
        return frozenset(found)

    def symbolize(self, addr: int):
        """Name a code address; a miss re-reads /proc/kallsyms once, since a module loaded
        after start (veth, on the first `ip link add ... type veth`) adds symbols."""
        sym = self.kallsyms.symbolize(addr)
        if sym is None and addr not in self._unknown:
            self.__dict__.pop("kallsyms", None)
            sym = self.kallsyms.symbolize(addr)
            if sym is None:
                self._unknown.add(addr)
        return sym

    def kprobe_symbol(self, function: str) -> str | None:
        return self.kallsyms.probe_name(function)

    def tracepoint_exists(self, name: str) -> bool:
        if self.btf is not None:
            # every tracepoint has a btf_trace_<event> typedef for raw tracepoint programs
            return self.tracepoint_btf_id(name) is not None
        category, event = name.split(":")
        tf = tracefs()
        return bool(tf and (tf / "events" / category / event).is_dir())

    def tracepoint_btf_id(self, name: str) -> int | None:
        """The btf_trace_<event> typedef a tp_btf program for "category:event" is loaded for"""
        if self.btf is None:
            return None
        return self.btf.type_id(f"btf_trace_{name.split(':')[1]}", btfmod.TYPEDEF)

    def first_param(self, function: str) -> str | None:
        if self.btf is None:
            return None
        try:
            params = self.btf.func_params(function)
        except btfmod.BTFError:
            return None
        return params[0] if params else None


def require_root() -> None:
    bpfsys.this_machine()
    if os.geteuid() != 0:
        raise NetprobeError("netprobe loads BPF programs and needs root: run it with sudo")
