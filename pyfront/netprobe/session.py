"""A running set of probes: compile → choose mechanisms → attach → read → detach.

Compiling and loading happen in a child process (loader.py); this process holds the programs,
maps and attachments as file descriptors and works them with system calls (bpfsys, bpfmaps).
Every attachment is a descriptor — raw tracepoint and tp_btf links, kprobe perf events,
netfilter links — so nothing outlives netprobe: `ProbeSession` is a context manager whose exit
(normal, an error, Ctrl-C, SIGTERM turned into SystemExit by the CLI) closes them all, and a
process that dies harder has the kernel close them.
"""
from __future__ import annotations

import errno
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Sequence

from . import bpfmaps, bpfsys, loader, netns
from .catalogue import KPROBE, NDO_START_XMIT, NETFILTER, RAW_TRACEPOINT, STAGES, TP_BTF, Stage
from .devices import Device, WalkRecord, describe, xmit_functions
from .errors import NetprobeError
from .flowfilter import FlowFilter
from .kernel import Kernel, ensure_tracefs
from .plan import Attach, Choice, choose, resolve
from .program import Program, build

CountKey = tuple[int, int, str]  # (netns inum, ifindex or 0, stage name)


@dataclass(frozen=True)
class Counts:
    """One read of the kernel's counters: cumulative since attach."""
    at: float
    values: dict[CountKey, tuple[int, int]]  # -> (packets, bytes)
    dropped: int  # hits not counted because the counts map was full


class _OnlyMechanisms:
    """KernelFacts with some mechanisms taken away (after one failed to attach)."""

    def __init__(self, facts: Kernel, removed: set[str]):
        self._facts, self.mechanisms = facts, facts.mechanisms - removed

    def __getattr__(self, name):
        return getattr(self._facts, name)


@dataclass
class StageStatus:
    choice: Choice
    errors: list[str] = field(default_factory=list)  # attach failures that forced a fallback


class ProbeSession:
    def __init__(self, flow: FlowFilter = FlowFilter(), prefer: Sequence[str] = (),
                 stages: Sequence[Stage] = STAGES, kernel: Kernel | None = None):
        self.flow = flow
        self.prefer = tuple(prefer)
        self.stages = tuple(stages)
        self.kernel = kernel or Kernel()
        self.program: Program | None = None
        self.status: dict[str, StageStatus] = {}
        self.devices: dict[tuple[int, int], Device] = {}
        self.namespaces: dict[int, netns.Netns] = {}
        self.warnings: list[str] = []
        self.started_at = 0.0
        self._loaded: loader.Loaded | None = None
        self._maps: dict[str, bpfmaps.Map] = {}
        self._lock = threading.RLock()
        # (mechanism, event or symbol) -> fd: raw tracepoint and tp_btf links, kprobe events
        self._links: dict[tuple[str, str], int] = {}
        self._xmit_syms: set[str] = set()  # driver xmit functions seen (kprobed or not)
        self._nf_links: dict[int, list[int]] = {}   # netns inum -> link fds
        self._nf_failed: set[int] = set()
        self._walk_fd: int | None = None
        self._identities: set[tuple[int, int, int]] = set()
        self._released: set[int] = set()  # addresses of vanished devices

    # -- lifecycle -----------------------------------------------------------------------
    def __enter__(self) -> "ProbeSession":
        try:
            self.open()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def open(self) -> None:
        if self.kernel.btf is None:
            ensure_tracefs()  # where tracepoints are looked up without BTF
        self.program = self.build_program()
        self._loaded = loader.load(self.program.text, list(self.program.cflags), self._prog_specs())
        for name, (fd, key, leaf) in self._loaded.maps.items():
            self._maps[name] = bpfmaps.Map(fd, bpfmaps.ctype_from_desc(key),
                                           bpfmaps.ctype_from_desc(leaf))
        if self.program.layout_source != "BTF":
            self.warnings.append("no BTF on this kernel: struct layouts come from the installed "
                                 "kernel headers, which must match the running kernel")
        if "netdev_walk" not in self._loaded.progs:
            raise NetprobeError(f"loading BPF programs: {self._loaded.errors.get('netdev_walk')} "
                                "(is BPF disabled, e.g. kernel.unprivileged_bpf_disabled or "
                                "a lockdown?)")
        self._walk_fd = self._loaded.progs["netdev_walk"]
        for stage in self.stages:
            self.status[stage.name] = self._attach_stage(stage)
        self.refresh()
        self.started_at = time.monotonic()

    def _prog_specs(self) -> list[loader.ProgSpec]:
        """Every program an attach may ask for: each hook of each candidate whose mechanism
        this kernel has, so that a fallback needs no second compile."""
        specs = {"netdev_walk": loader.ProgSpec("netdev_walk", "netdev_walk",
                                                bpfsys.BPF_PROG_TYPE_RAW_TRACEPOINT)}
        for stage in self.stages:
            for cand in stage.candidates:
                if cand.mechanism not in self.kernel.mechanisms:
                    continue
                for hook in cand.hooks:
                    if cand.mechanism == TP_BTF:
                        target, _ = resolve(hook, TP_BTF, self.kernel)
                        btf_id = target and self.kernel.tracepoint_btf_id(target)
                        if btf_id:
                            key = _prog_key(TP_BTF, hook.fn, target)
                            specs[key] = loader.ProgSpec(key, hook.fn,
                                                         bpfsys.BPF_PROG_TYPE_TRACING,
                                                         bpfsys.BPF_TRACE_RAW_TP, btf_id)
                    else:
                        ptype, atype = _PROG_TYPES[cand.mechanism]
                        specs[hook.fn] = loader.ProgSpec(hook.fn, hook.fn, ptype, atype)
        return list(specs.values())

    def _prog(self, mechanism: str, fn: str, target: str = "") -> int:
        key = _prog_key(mechanism, fn, target)
        if key not in self._loaded.progs:
            raise OSError(errno.EINVAL, f"{fn} did not load: "
                                        f"{self._loaded.errors.get(key, 'not compiled')}")
        return self._loaded.progs[key]

    def build_program(self) -> Program:
        """The C to load; the benchmark's floor (empty programs on the same hooks) overrides it."""
        return build(self.kernel, self.flow)

    def close(self) -> None:
        with self._lock:
            nf = [fd for fds in self._nf_links.values() for fd in fds]
            for fd in [*self._links.values(), *nf]:
                os.close(fd)
            self._links.clear()
            self._nf_links.clear()
            self._maps.clear()
            if self._loaded is not None:
                self._loaded.close()
                self._loaded = None

    # -- attaching -----------------------------------------------------------------------
    def _attach_stage(self, stage: Stage) -> StageStatus:
        removed: set[str] = set()
        errors: list[str] = []
        while True:
            choice = choose(stage, _OnlyMechanisms(self.kernel, removed), self.prefer)
            if not choice.available:
                choice.passed_over = errors + choice.passed_over
                return StageStatus(choice, errors)
            mark = self._mark()
            try:
                for a in choice.attaches:
                    self._attach(a)
                return StageStatus(choice, errors)
            except OSError as e:
                # the hooks this choice did attach go too: kept, they would count the stage a
                # second time beside the fallback's
                self._undo(mark)
                errors.append(f"{choice.mechanism}: {e.strerror or e}")
            removed.add(choice.mechanism)

    def _mark(self):
        return set(self._links), {ns: len(fds) for ns, fds in self._nf_links.items()}

    def _undo(self, mark) -> None:
        links, nf = mark
        for key in [k for k in self._links if k not in links]:
            os.close(self._links.pop(key))
        for ns, fds in list(self._nf_links.items()):
            for fd in fds[nf.get(ns, 0):]:
                os.close(fd)
            del fds[nf.get(ns, 0):]
            if not fds:
                del self._nf_links[ns]

    def _attach(self, a: Attach) -> None:
        if a.mechanism in (RAW_TRACEPOINT, TP_BTF):
            event = a.target.split(":")[1]
            if (a.mechanism, event) not in self._links:
                prog = self._prog(a.mechanism, a.fn, a.target)
                self._links[a.mechanism, event] = bpfsys.raw_tracepoint_open(
                    prog, event if a.mechanism == RAW_TRACEPOINT else None)
        elif a.mechanism == KPROBE:
            if a.target != NDO_START_XMIT:  # those follow the devices, in refresh()
                self._attach_kprobe(a.target, a.fn)
        elif a.mechanism == NETFILTER:
            # links are per namespace: made for the netprobe's own one now, the rest in refresh()
            own = os.stat("/proc/thread-self/ns/net").st_ino
            self._nf_links.setdefault(own, []).append(self._nf_link(a))

    def _attach_kprobe(self, symbol: str, fn: str) -> None:
        if (KPROBE, symbol) not in self._links:
            self._links[KPROBE, symbol] = bpfsys.kprobe_attach(self._prog(KPROBE, fn), symbol)

    def _nf_link(self, a: Attach) -> int:
        family, hook = a.target.split(":")
        return bpfsys.netfilter_link(self._prog(NETFILTER, a.fn), family, hook)

    def _nf_attaches(self) -> list[Attach]:
        return [a for st in self.status.values() for a in st.choice.attaches
                if a.mechanism == NETFILTER]

    # -- following namespaces and devices ------------------------------------------------
    def refresh(self) -> None:
        """Find new and vanished namespaces and devices: attach netfilter links in new
        namespaces, kprobe new drivers' xmit functions, forget the counts of devices that are
        gone (so a reused ifindex starts from zero)."""
        with self._lock:
            self.namespaces = netns.scan()
            devices: dict[tuple[int, int], Device] = {}
            for ns in self.namespaces.values():
                try:
                    for d in self._walk(ns):
                        devices[d.key] = d
                except NetprobeError as e:
                    if ns.name == "root":
                        raise
                    continue  # the namespace vanished while we looked
                if ns.inum not in self._nf_links and ns.inum not in self._nf_failed:
                    self._attach_nf_in(ns)
            self._nf_failed &= set(self.namespaces)  # an inode number may be reused
            for inum in list(self._nf_links):
                if inum not in self.namespaces:
                    for fd in self._nf_links.pop(inum):
                        os.close(fd)
            gone = [k for k, d in self.devices.items()
                    if k not in devices or devices[k].name != d.name
                    or devices[k].xmit_addr != d.xmit_addr or devices[k].addr != d.addr]
            identities = {(d.addr, d.netns, d.ifindex) for d in devices.values()}
            if identities != self._identities:
                self._new_epoch([self.devices[k] for k in gone])
                self._identities = identities
            self.devices = devices
            if gone:
                self._forget(set(gone))
            self._follow_xmit_functions()

    def _walk(self, ns: netns.Netns) -> list[Device]:
        with bpfsys.in_netns(ns.path):
            try:
                bpfsys.test_run(self._walk_fd)
            except OSError as e:
                raise NetprobeError(f"listing devices of netns {ns.name}: {e.strerror}") from None
        n = self._maps["netdev_count"][0].value
        table = self._maps["netdev_table"]
        out = []
        for i in range(n):
            r = table[i]
            rec = WalkRecord(r.netns, r.ifindex, r.flags, bool(r.physical), r.name.decode(errors="replace"),
                             r.kind.decode(errors="replace"), r.driver.decode(errors="replace"), r.xmit,
                             r.addr)
            out.append(describe(rec, self.kernel.symbolize, ns.name))
        return out

    def _attach_nf_in(self, ns: netns.Netns) -> None:
        attaches = self._nf_attaches()
        if not attaches:
            return
        fds: list[int] = []
        try:
            with bpfsys.in_netns(ns.path):
                for a in attaches:
                    fds.append(self._nf_link(a))
        except (OSError, NetprobeError) as e:
            for fd in fds:
                os.close(fd)
            self._nf_failed.add(ns.inum)
            self.warnings.append(f"netfilter stages not attached in netns {ns.name}: "
                                 f"{getattr(e, 'strerror', None) or e}")
            return
        self._nf_links[ns.inum] = fds

    def _follow_xmit_functions(self) -> None:
        st = self.status.get("driver_xmit")
        if not st or not any(a.target == NDO_START_XMIT for a in st.choice.attaches):
            return
        fn = next(a.fn for a in st.choice.attaches if a.target == NDO_START_XMIT)
        for sym, devs in xmit_functions(self.devices.values()).items():
            name = sym.split(" ")[0]
            if name in self._xmit_syms:
                continue
            self._xmit_syms.add(name)
            if not self.kernel.kallsyms.is_unique(name):
                self.warnings.append(f"driver_xmit: {sym} (used by {devs[0].name}) is not a "
                                     f"unique symbol; its devices are not counted at driver_xmit")
                continue
            try:
                self._attach_kprobe(name, fn)
            except OSError as e:
                self.warnings.append(f"driver_xmit: kprobe on {sym} failed: {e.strerror or e}")
                continue
            st.choice.attaches.append(Attach(KPROBE, name, fn))

    def _new_epoch(self, vanished: list[Device]) -> None:
        """Tell the probes' per-CPU slots (probes/netprobe.h) that devices changed: each slot
        re-reads its owner's identity once, and slots of vanished devices may be taken back."""
        released = self._maps["released"]
        for d in vanished:
            if d.addr:
                try:
                    released[d.addr] = released.value_type(1)
                except OSError:  # full: that slot just stays taken (counts still go to the hash)
                    pass
                self._released.add(d.addr)
        ep = self._maps["epoch"]
        ep[0] = ep.value_type(ep[0].value + 1)

    def _forget(self, keys: set[tuple[int, int]]) -> None:
        table = self._maps["counts"]
        for k in list(table.keys()):
            if (k.netns, k.ifindex) in keys:
                try:
                    del table[k]
                except KeyError:
                    pass

    # -- reading -------------------------------------------------------------------------
    def read(self) -> Counts:
        """Cumulative counts: the probes' per-CPU slots plus the `counts` hash that takes what
        does not fit in a slot."""
        with self._lock:
            values: dict[CountKey, tuple[int, int]] = {}

            def add(netns: int, ifindex: int, stage: int, pk: int, by: int) -> None:
                key = (netns, ifindex, STAGES[stage].name)
                p0, b0 = values.get(key, (0, 0))
                values[key] = (p0 + pk, b0 + by)

            for k, per_cpu in self._maps["counts"].items():
                add(k.netns, k.ifindex, k.stage, sum(v.packets for v in per_cpu),
                    sum(v.bytes for v in per_cpu))
            owner = {(d.netns, d.ifindex): d.addr for d in self.devices.values()}
            current = {d.addr: (d.netns, d.ifindex) for d in self.devices.values()}
            for per_cpu in self._maps["slots"].values():
                for slot in per_cpu:
                    if not slot.dev:
                        continue
                    ident = (slot.netns, slot.ifindex)
                    # Counted only when the slot speaks for a device that exists: the one at
                    # this address now (a slot not yet re-read after the address was reused
                    # still holds the vanished device's numbers), or a device netprobe cannot
                    # list (a namespace it cannot enter) that did not vanish.
                    if slot.dev in current:
                        if current[slot.dev] != ident:
                            continue
                    elif slot.dev in self._released or owner.get(ident, slot.dev) != slot.dev:
                        continue
                    for i in range(len(STAGES)):
                        if slot.v[i].packets:
                            add(slot.netns, slot.ifindex, i, slot.v[i].packets, slot.v[i].bytes)
            for per_cpu in self._maps["net_slots"].values():
                for slot in per_cpu:
                    if slot.net and slot.netns in self.namespaces:
                        for i in range(len(STAGES)):
                            if slot.v[i].packets:
                                add(slot.netns, 0, i, slot.v[i].packets, slot.v[i].bytes)
            dropped = sum(v.value for v in self._maps["dropped"][0])
            return Counts(time.monotonic(), values, dropped)

    def netfilter_unattached(self) -> list[int]:
        """Namespaces (inode numbers) where the netfilter stages' links could not be made"""
        if not self._nf_attaches():
            return []
        with self._lock:
            return sorted(self._nf_failed)

    def map(self, name: str) -> bpfmaps.Map:
        """One of the probes' maps, by its name in probes/ (tests and the benchmark look in)"""
        return self._maps[name]

    def mechanisms(self) -> dict[str, str]:
        """stage name -> 'raw_tracepoint net:net_dev_queue' and the like."""
        return {name: st.choice.describe() for name, st in self.status.items()}


_PROG_TYPES = {  # mechanism -> (program type, expected attach type)
    KPROBE: (bpfsys.BPF_PROG_TYPE_KPROBE, -1),
    RAW_TRACEPOINT: (bpfsys.BPF_PROG_TYPE_RAW_TRACEPOINT, -1),
    NETFILTER: (bpfsys.BPF_PROG_TYPE_NETFILTER, bpfsys.BPF_NETFILTER),
}


def _prog_key(mechanism: str, fn: str, target: str) -> str:
    # a tp_btf program is bound to its tracepoint at load time: one per tracepoint
    return f"{fn}@{target.split(':')[1]}" if mechanism == TP_BTF else fn
