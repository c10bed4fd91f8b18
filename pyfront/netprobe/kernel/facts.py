"""What this kernel offers netprobe: BTF, symbols, tracepoints and attach mechanisms.

Cheap checks (files and tables), but for fentry, whose refusal (a lockdown, an LSM, a kernel
without trampolines) shows nowhere else: one empty program is loaded and attached to find out.
`doctor` proves each mechanism by really attaching."""
from __future__ import annotations

import errno
import os
import platform
import re
import struct
import subprocess
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from . import bpfsys
from ..model import btf as btfmod
from ..model.catalogue import FENTRY, KPROBE, NETFILTER, RAW_TRACEPOINT, TP_BTF
from ..errors import NetprobeError
from ..model.kallsyms import Kallsyms

def _refusal(what: str, e: OSError) -> str:
    """A trial load's refusal in a few words: the errno's name and the verifier's first"""
    return (f"the kernel refused {what} ({errno.errorcode.get(e.errno, e.errno)}: "
            f"{(e.strerror or '').split(' / ')[0]})")


# refused[] key for header_casts (not an attach mechanism: how the probes read packet headers)
HEADER_CASTS = "header casts"

TRACEFS_CANDIDATES = (Path("/sys/kernel/tracing"), Path("/sys/kernel/debug/tracing"))
KPROBE_PMU = Path("/sys/bus/event_source/devices/kprobe")


def kernel_version() -> tuple[int, int]:
    major, minor = platform.release().split(".")[:2]
    return int(major), int("".join(ch for ch in minor if ch.isdigit()) or 0)


def tracefs() -> Path | None:
    for p in TRACEFS_CANDIDATES:
        try:
            if (p / "events").is_dir():
                return p
        except PermissionError:  # tracefs is root's (0700): to anyone else it is not there
            continue
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


def headers_build_dir(release: str | None = None) -> Path:
    """The kernel tree BCC compiles against: /lib/modules/<release>/build"""
    return Path(f"/lib/modules/{release or platform.release()}/build")


_UTS_RELEASE = re.compile(r'^#define UTS_RELEASE "([^"]*)"', re.M)


def headers_release(build: Path) -> str | None:
    """The kernel release the headers at `build` were made for (UTS_RELEASE), or None when
    there are no headers or they do not say"""
    try:
        m = _UTS_RELEASE.search((build / "include/generated/utsrelease.h").read_text())
    except OSError:
        return None
    return m[1] if m else None


@dataclass(frozen=True)
class Layouts:
    """Where the probes' struct layouts (field offsets) come from, and whether they can be
    believed. Without BTF they are the kernel headers' own: right only for the kernel those
    headers were made for (Debian's 6.1 headers under a 6.18 kernel put net_device.name at 0
    instead of 280, and a probe then reads garbage without any error)."""
    trusted: bool
    source: str   # "BTF (/sys/kernel/btf/vmlinux)", "kernel headers (6.1.0-57-amd64)"
    why: str = ""  # when not trusted: what is missing, and the fix


class Kernel:
    """The running kernel, as KernelFacts for plan.choose()."""

    def __init__(self, btf_path: Path | None = None, build: Path | None = None):
        # NETPROBE_BTF points elsewhere (a missing file: how tests run a kernel without BTF)
        self.btf_path = btf_path or Path(os.environ.get("NETPROBE_BTF", btfmod.VMLINUX_BTF))
        self.build = build or headers_build_dir()
        self._unknown: set[int] = set()
        self._module_btf: dict[str, btfmod.BTF | None] = {}
        # why a mechanism the kernel has in principle does not work here (KernelFacts.refused)
        self.refused: dict[str, str] = {}

    @cached_property
    def btf(self) -> btfmod.BTF | None:
        if not self.btf_path.exists():
            return None
        return btfmod.BTF.load(self.btf_path)

    def layouts(self) -> Layouts:
        """Cheap: looks at files only, so a command can ask before it loads anything."""
        if self.btf_path.exists():
            return Layouts(True, f"BTF ({self.btf_path})")
        release = platform.release()
        made_for = headers_release(self.build)
        if made_for == release:
            return Layouts(True, f"kernel headers ({made_for}, this kernel's own)")
        got = (f"the kernel headers in {self.build} are {made_for}'s, not this kernel's "
               f"({release})" if made_for else f"no kernel headers for {release} "
                                              f"({self.build})")
        return Layouts(False, f"kernel headers ({made_for or 'none'})",
                       f"no BTF ({self.btf_path}) and {got}: struct layouts would be wrong and "
                       f"the counts garbage. Use a kernel built with CONFIG_DEBUG_INFO_BTF, or "
                       f"install linux-headers-{release}")

    @cached_property
    def drop_reasons(self):
        """skb:kfree_skb's reasons named from BTF (drops.DropReasons); None before 5.17 or
        without BTF, where a drop has a location only"""
        from ..model.drops import load_drop_reasons

        return load_drop_reasons(self.btf, self.btf_path) if self.btf is not None else None

    @cached_property
    def kallsyms(self) -> Kallsyms:
        return Kallsyms.load()

    def reload_kallsyms(self) -> Kallsyms:
        """/proc/kallsyms read again (modules loaded since)"""
        self.__dict__.pop("kallsyms", None)
        return self.kallsyms

    @cached_property
    def kprobes(self) -> bool:
        tf = tracefs()
        if KPROBE_PMU.exists() or bool(tf and (tf / "kprobe_events").exists()):
            return True
        self.refused[KPROBE] = "kernel built without CONFIG_KPROBES"
        return False

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

    # what the fentry trial attaches to: a function only BPF's own test runs call, else one
    # every kernel has (an empty program there costs a trampoline call, for a moment)
    FENTRY_TRIAL_TARGETS = ("bpf_fentry_test1", "tcp_sendmsg")

    @cached_property
    def fentry(self) -> bool:
        # BPF trampolines (5.5, x86_64; arm64 from 6.0) attach by the function's BTF id. The
        # kernel may still refuse the program type as a whole (EPERM under a lockdown or an
        # LSM, 6.18 here, with kprobes compiled out): a trial load and attach of an empty
        # program says, and why, once per run
        if self.btf is None:
            self.refused[FENTRY] = "needs the kernel's BTF (/sys/kernel/btf/vmlinux)"
            return False
        target = next((f for f in self.FENTRY_TRIAL_TARGETS if self.btf.func_id(f)), None)
        if target is None:
            self.refused[FENTRY] = "no function to try it on in BTF"
            return False
        try:
            prog = bpfsys.load_fentry(bpfsys.NOOP_INSNS, "np_trial", self.btf.func_id(target))
            try:
                os.close(bpfsys.raw_tracepoint_open(prog))
            finally:
                os.close(prog)
        except OSError as e:
            self.refused[FENTRY] = _refusal(f"an empty fentry program on {target}()", e)
            return False
        return True

    @cached_property
    def header_casts(self) -> bool:
        """Whether probes/packet.h may read packet headers in place, by the bpf_rdonly_cast
        kfunc (6.2+), rather than copy them; why not is in refused[HEADER_CASTS]. The kfunc
        needs BTF and a JIT; a trial load of a call to it says whether this kernel takes it."""
        fid = self.btf.func_id("bpf_rdonly_cast") if self.btf else None
        if fid is None:
            self.refused[HEADER_CASTS] = ("no bpf_rdonly_cast kfunc (6.2+)" if self.btf
                                          else "needs the kernel's BTF (/sys/kernel/btf/vmlinux)")
            return False
        try:
            sid = self.btf.struct_id("iphdr")
        except btfmod.BTFError:
            self.refused[HEADER_CASTS] = "no struct iphdr in BTF"
            return False
        # r1 = 0; r2 = <iphdr>; r0 = bpf_rdonly_cast(r1, r2) as a kfunc call; r0 = 0; exit
        insns = b"".join(struct.pack("<BBhi", *i) for i in (
            (0xb7, 1, 0, 0), (0xb7, 2, 0, sid), (0x85, 2 << 4, 0, fid), (0xb7, 0, 0, 0),
            (0x95, 0, 0, 0)))
        try:
            os.close(bpfsys.load_program(insns, "np_trial", bpfsys.BPF_PROG_TYPE_RAW_TRACEPOINT))
        except OSError as e:
            self.refused[HEADER_CASTS] = _refusal("a call to bpf_rdonly_cast", e)
            return False
        return True

    @cached_property
    def netfilter_links(self) -> bool:
        # BPF netfilter links arrived in 6.4 with struct bpf_nf_ctx
        return bool(self.btf and self.btf.has("bpf_nf_ctx", btfmod.STRUCT))

    @cached_property
    def mechanisms(self) -> frozenset[str]:
        found = set()
        if self.fentry:
            found.add(FENTRY)
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

    def fentry_function(self, function: str) -> bool:
        """Whether vmlinux's BTF has `function` as a FUNC, which an fentry program names"""
        return self.btf is not None and self.btf.func_id(function) is not None

    def function_btf(self, symbol: str) -> tuple[int, str] | None:
        """(BTF id, BTF object name) of a kernel function as kallsyms names it ("veth_xmit",
        "e1000_xmit_frame [e1000]"): vmlinux's, or its module's split BTF; None where neither
        has it (a module built without BTF)."""
        name, _, module = symbol.partition(" ")
        module = module.strip("[]")
        if not module:
            tid = self.btf.func_id(name) if self.btf is not None else None
            return (tid, "vmlinux") if tid else None
        if module not in self._module_btf:
            path = self.btf_path.parent / module
            try:
                self._module_btf[module] = (btfmod.BTF(path.read_bytes(), base=self.btf)
                                            if self.btf is not None else None)
            except (OSError, btfmod.BTFError):
                self._module_btf[module] = None
        mbtf = self._module_btf[module]
        tid = mbtf.func_id(name) if mbtf is not None else None
        return (tid, module) if tid else None

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


def require_trusted_layouts(kernel: Kernel) -> None:
    """Stop before loading anything when the probes' struct layouts cannot be believed."""
    layouts = kernel.layouts()
    if not layouts.trusted:
        raise NetprobeError(layouts.why)
