"""The one owner of netprobe's attachments: it chooses each stage's mechanism (plan.py), attaches
every loaded program set's program at the chosen hooks, falls back when the kernel refuses,
follows namespaces (netfilter links are per namespace) and devices (an fentry program or a
kprobe on each driver's xmit function), and detaches everything on close.

Every attachment is a file descriptor — raw tracepoint, tp_btf and fentry links, kprobe perf
events, netfilter links — held only here, so nothing outlives netprobe: close() (from the session's
context manager: normal exit, an error, Ctrl-C, SIGTERM) closes them all, and a process that
dies harder has the kernel close them."""
from __future__ import annotations

import errno
import os
import time
from dataclasses import dataclass, replace
from typing import Iterable, Mapping, Sequence

from . import bpfsys, loader, netns
from ..model.catalogue import (ALL_STAGES, FENTRY, KPROBE, NDO_START_XMIT, NETFILTER,
                               RAW_TRACEPOINT, TP_BTF, Stage)
from ..model.devices import Device, xmit_functions
from ..errors import NetprobeError
from .facts import Kernel
from .netns import Netns
from ..model.plan import Attach, Choice, choose, resolve
from ..model.programsets import ProgramSet
from ..model.stagestate import Refusal, StageState

_PROG_TYPES = {  # mechanism -> (program type, expected attach type)
    KPROBE: (bpfsys.BPF_PROG_TYPE_KPROBE, -1),
    RAW_TRACEPOINT: (bpfsys.BPF_PROG_TYPE_RAW_TRACEPOINT, -1),
    NETFILTER: (bpfsys.BPF_PROG_TYPE_NETFILTER, bpfsys.BPF_NETFILTER),
}


def prog_key(mechanism: str, fn: str, target: str) -> str:
    # a tp_btf program is bound to its tracepoint at load time, an fentry program to its
    # function: one loaded program per tracepoint or function
    if mechanism == TP_BTF:
        return f"{fn}@{target.split(':')[1]}"
    if mechanism == FENTRY and target != NDO_START_XMIT:
        return f"{fn}@{target}"
    return fn


def stages_of(sets: Sequence[ProgramSet]) -> tuple[Stage, ...]:
    """The catalogue stages any of these sets attaches to, in path order"""
    wanted = {name for s in sets for name in s.stages}
    return tuple(s for s in ALL_STAGES if s.name in wanted)


def program_specs(sets: Sequence[ProgramSet], kernel: Kernel) -> list[loader.ProgSpec]:
    """Every program an attach may ask for: each set's program for each hook of each candidate
    whose mechanism this kernel has, so that a fallback needs no second compile; and the
    sets' on-demand programs."""
    specs: dict[str, loader.ProgSpec] = {}
    for ps in sets:
        for od in ps.on_demand:
            specs[od.fn] = loader.ProgSpec(od.fn, od.fn, bpfsys.BPF_PROG_TYPE_RAW_TRACEPOINT)
        for stage in stages_of([ps]):
            for cand in stage.candidates:
                if cand.mechanism not in kernel.mechanisms:
                    continue
                for hook in cand.hooks:
                    fn = ps.fn(hook)
                    if cand.mechanism == TP_BTF:
                        target, _ = resolve(hook, TP_BTF, kernel)
                        btf_id = target and kernel.tracepoint_btf_id(target)
                        if btf_id:
                            key = prog_key(TP_BTF, fn, target)
                            specs[key] = loader.ProgSpec(key, fn, bpfsys.BPF_PROG_TYPE_TRACING,
                                                         bpfsys.BPF_TRACE_RAW_TP, btf_id)
                    elif cand.mechanism == FENTRY:
                        target, _ = resolve(hook, FENTRY, kernel)
                        if target == NDO_START_XMIT:  # loaded per driver, in follow_devices()
                            specs[fn] = loader.ProgSpec(fn, fn, bpfsys.BPF_PROG_TYPE_TRACING,
                                                        bpfsys.BPF_TRACE_FENTRY, late=True)
                        elif target:
                            key = prog_key(FENTRY, fn, target)
                            specs[key] = loader.ProgSpec(key, fn, bpfsys.BPF_PROG_TYPE_TRACING,
                                                         bpfsys.BPF_TRACE_FENTRY,
                                                         kernel.btf.func_id(target))
                    else:
                        ptype, atype = _PROG_TYPES[cand.mechanism]
                        specs[fn] = loader.ProgSpec(fn, fn, ptype, atype)
    return list(specs.values())


@dataclass(frozen=True)
class LateNetns:
    """A namespace that appeared while netprobe ran: its netfilter stages count from `since`
    (the packets it passed before that were not seen there)."""
    inum: int
    name: str
    stages: tuple[str, ...]
    since: float  # wall-clock time the links were made

    @property
    def since_text(self) -> str:
        return time.strftime("%H:%M:%S", time.localtime(self.since)) + f".{int(self.since % 1 * 1000):03d}"


class _Without:
    """Kernel facts with some mechanisms taken away (after one failed to attach)."""

    def __init__(self, facts: Kernel, removed: set[str]):
        self._facts, self.mechanisms = facts, facts.mechanisms - removed

    def __getattr__(self, name):
        return getattr(self._facts, name)


class Attachments:
    def __init__(self, kernel: Kernel, loaded: loader.Loaded, sets: Sequence[ProgramSet],
                 prefer: Sequence[str] = ()):
        self.kernel = kernel
        self.sets = tuple(sets)
        self.prefer = tuple(prefer)
        self.states: dict[str, StageState] = {}
        self.warnings: list[str] = []
        self._loaded = loaded
        self._choices: dict[str, Choice] = {}
        # (set, mechanism, event or symbol) -> fd: raw tracepoint and tp_btf links, kprobes
        self._links: dict[tuple[str, str, str], int] = {}
        self._nf_links: dict[int, list[int]] = {}   # netns inum -> link fds
        # netns inum -> (path, cookie) of the namespace those links were made in
        self._nf_made_in: dict[int, tuple[str, int | None]] = {}
        self._nf_failed: set[int] = set()
        self._nf_not_entered: dict[int, str] = {}     # netns inum -> why, until linked
        self._xmit_syms: set[str] = set()            # driver xmit functions seen, as kallsyms
                                                      # names them ("start_xmit [virtio_net]")
        self._xmit_progs: list[int] = []              # fentry programs loaded for them
        self._started = False
        self._late: dict[int, LateNetns] = {}         # namespaces linked after the start
        self.left_off: dict[str, list[str]] = {}      # set name -> stages it failed to attach at

    # -- stages ----------------------------------------------------------------------------
    def attach_stages(self, stages: Iterable[Stage] | None = None) -> dict[str, StageState]:
        for stage in (stages_of(self.sets) if stages is None else stages):
            self.states[stage.name] = self._attach_stage(stage)
        return self.states

    def set_attached(self, ps: ProgramSet) -> bool:
        """Whether a program set runs at one stage at least"""
        off = set(self.left_off.get(ps.name, ()))
        return any(st.attached and name in ps.stages and name not in off
                   for name, st in self.states.items())

    def _users(self, stage: Stage) -> list[ProgramSet]:
        return [s for s in self.sets if stage.name in s.stages]

    def _attach_stage(self, stage: Stage) -> StageState:
        removed: set[str] = set()
        refused: list[Refusal] = []
        while True:
            choice = choose(stage, _Without(self.kernel, removed), self.prefer)
            if not choice.available:
                return choice.state(tuple(refused))
            # the first set that uses the stage (counting, where it is loaded) decides its
            # mechanism; a set added beside it that fails there is left off that stage, with a
            # warning, and never takes the stage away from the first
            primary, *extra = self._users(stage)
            mark = self._mark()
            try:
                for a in choice.attaches:
                    self._attach(primary, a)
                self._choices[stage.name] = choice
                for ps in extra:
                    self._attach_extra(ps, stage, choice)
                return choice.state(tuple(refused))
            except OSError as e:
                # the hooks this choice did attach go too: kept, they would count the stage a
                # second time beside the fallback's
                self._undo(mark)
                refused.append(Refusal(choice.candidate.mechanism, e.strerror or str(e)))
            removed.add(choice.candidate.mechanism)

    def _attach_extra(self, ps: ProgramSet, stage: Stage, choice: Choice) -> None:
        mark = self._mark()
        try:
            for a in choice.attaches:
                self._attach(ps, a)
        except OSError as e:
            self._undo(mark)
            self.left_off.setdefault(ps.name, []).append(stage.name)
            self.warnings.append(f"{ps.name}: not at {stage.name} ({choice.candidate.mechanism}: "
                                 f"{e.strerror or e})")

    def _prog(self, mechanism: str, fn: str, target: str = "") -> int:
        key = prog_key(mechanism, fn, target)
        if key not in self._loaded.progs:
            raise OSError(errno.EINVAL, f"{fn} did not load: "
                                        f"{self._loaded.errors.get(key, 'not compiled')}")
        return self._loaded.progs[key]

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

    def _attach(self, ps: ProgramSet, a: Attach) -> None:
        fn = ps.fn_prefix + a.fn
        if a.mechanism == FENTRY:
            if a.target != NDO_START_XMIT and (ps.name, FENTRY, a.target) not in self._links:
                self._links[ps.name, FENTRY, a.target] = bpfsys.raw_tracepoint_open(
                    self._prog(FENTRY, fn, a.target))
        elif a.mechanism in (RAW_TRACEPOINT, TP_BTF):
            event = a.target.split(":")[1]
            if (ps.name, a.mechanism, event) not in self._links:
                prog = self._prog(a.mechanism, fn, a.target)
                self._links[ps.name, a.mechanism, event] = bpfsys.raw_tracepoint_open(
                    prog, event if a.mechanism == RAW_TRACEPOINT else None)
        elif a.mechanism == KPROBE:
            if a.target != NDO_START_XMIT:  # those follow the devices, in follow_devices()
                self._attach_kprobe(ps, a.target, fn)
        elif a.mechanism == NETFILTER:
            # links are per namespace: made for netprobe's own one now, the rest as found
            own = os.stat("/proc/thread-self/ns/net").st_ino
            self._nf_links.setdefault(own, []).append(self._nf_link(fn, a.target))

    def _attach_kprobe(self, ps: ProgramSet, symbol: str, fn: str) -> None:
        if (ps.name, KPROBE, symbol) not in self._links:
            self._links[ps.name, KPROBE, symbol] = bpfsys.kprobe_attach(self._prog(KPROBE, fn),
                                                                        symbol)

    def _nf_link(self, fn: str, target: str) -> int:
        family, hook = target.split(":")
        return bpfsys.netfilter_link(self._prog(NETFILTER, fn), family, hook)

    def _nf_programs(self) -> list[tuple[str, str]]:
        """(program, netfilter target) for every netfilter hook of every attached stage"""
        return [(ps.fn_prefix + a.fn, a.target) for name, c in self._choices.items()
                for a in c.attaches if a.mechanism == NETFILTER
                for ps in self._users(c.stage) if name not in self.left_off.get(ps.name, ())]

    # -- following namespaces and devices --------------------------------------------------
    def follow_namespaces(self, namespaces: Mapping[int, Netns],
                          cookies: Mapping[int, int] | None = None) -> None:
        """Netfilter links in namespaces new since the last call; those of vanished ones go.
        `cookies` (netns inum -> net_cookie, from the device walk) say which namespace each
        inode number is now."""
        for ns in namespaces.values():
            if ns.inum in self._nf_links and self._taken_over(ns, cookies or {}):
                self._drop_nf(ns.inum)
            if ns.inum not in self._nf_links and ns.inum not in self._nf_failed:
                self._attach_nf_in(ns)
        self._nf_failed &= set(namespaces)  # an inode number may be reused
        self._nf_not_entered = {i: w for i, w in self._nf_not_entered.items() if i in namespaces}
        for inum in [i for i in self._nf_links if i not in namespaces]:
            self._drop_nf(inum)
        for inum, late in list(self._late.items()):
            if inum not in namespaces:
                del self._late[inum]
            elif namespaces[inum].name != late.name:  # first seen as "pid:N", named since
                self._late[inum] = replace(late, name=namespaces[inum].name)

    def _taken_over(self, ns: Netns, cookies: Mapping[int, int]) -> bool:
        """Whether the namespace at this inode number is no longer the one its links were made
        in: a namespace deleted and another made between two looks can get the same inode
        number (the kernel hands a freed one out again at once), and the old links, made in a
        dead namespace, would leave the new one uncounted at the netfilter stages (a TCP flow
        on a fresh namespace's lo counted 0 at ip_output, ip_rcv and l4_rcv, 1 run in 4)."""
        made = self._nf_made_in.get(ns.inum)
        if made is None or made[1] is None:  # netprobe's own namespace; a kernel < 5.14
            return False
        path, cookie = made
        if ns.inum in cookies:
            return cookies[ns.inum] != cookie
        if ns.path == path:
            return False
        # another handle (a new name, or "pid:N" named since): look inside once
        try:
            with bpfsys.in_netns(ns.path):
                now = netns.current_cookie()
        except NetprobeError:
            return False
        if now == cookie:
            self._nf_made_in[ns.inum] = (ns.path, cookie)
        return now is not None and now != cookie

    def _drop_nf(self, inum: int) -> None:
        for fd in self._nf_links.pop(inum, []):
            os.close(fd)
        self._nf_made_in.pop(inum, None)
        self._late.pop(inum, None)

    def started(self) -> None:
        """From now on a namespace that gets its links late is reported as such"""
        self._started = True

    def late_namespaces(self) -> list[LateNetns]:
        return list(self._late.values())

    def _attach_nf_in(self, ns: Netns) -> None:
        programs = self._nf_programs()
        if not programs:
            return
        fds: list[int] = []
        try:
            with bpfsys.in_netns(ns.path):
                cookie = netns.current_cookie()
                for fn, target in programs:
                    fds.append(self._nf_link(fn, target))
        except NetprobeError as e:
            # not entered: the handle went with its process (`ip netns add` is briefly the
            # namespace's only holder, before the mount names it); the next look tries again
            for fd in fds:
                os.close(fd)
            self._nf_not_entered[ns.inum] = str(e)
            return
        except OSError as e:
            for fd in fds:
                os.close(fd)
            self._nf_failed.add(ns.inum)
            self.warnings.append(f"netfilter stages not attached in netns {ns.name}: "
                                 f"{getattr(e, 'strerror', None) or e}")
            return
        self._nf_links[ns.inum] = fds
        self._nf_made_in[ns.inum] = (ns.path, cookie)
        self._nf_not_entered.pop(ns.inum, None)
        if self._started:
            stages = tuple(dict.fromkeys(c.stage.name for c in self._choices.values()
                                         for a in c.attaches if a.mechanism == NETFILTER))
            self._late[ns.inum] = LateNetns(ns.inum, ns.name, stages, time.time())

    def netfilter_linked(self, inum: int) -> bool:
        """Whether the netfilter stages have their links in this namespace (True where no
        stage takes netfilter)"""
        return not self._nf_programs() or inum in self._nf_links

    def netfilter_unlinked_why(self, inum: int) -> str:
        """Why a namespace has no netfilter links yet, as far as netprobe knows"""
        if inum in self._nf_failed:
            return "attaching failed (see warnings)"
        return self._nf_not_entered.get(inum, "not seen yet")

    def netfilter_unattached(self) -> list[int]:
        """Namespaces (inode numbers) where the netfilter stages' links could not be made"""
        return sorted(self._nf_failed) if self._nf_programs() else []

    def _attach_xmit_fentry(self, ps: ProgramSet, sym: str, fn: str) -> None:
        """An fentry program loaded for the driver function `sym` ("e1000_xmit_frame
        [e1000]"), by its module's BTF for a module's function, and attached. Keyed by the
        whole symbol: two modules' start_xmit are two functions, each with its own BTF id."""
        if (ps.name, FENTRY, sym) in self._links:
            return
        found = self.kernel.function_btf(sym)
        if found is None:
            raise OSError(errno.ENOENT, f"{sym} is in no BTF")
        btf_id, obj = found
        obj_fd = bpfsys.kernel_btf_fd(obj) if obj != "vmlinux" else 0
        try:
            prog = self._loaded.load_fentry(fn, btf_id, obj_fd)
        finally:
            if obj_fd:
                os.close(obj_fd)
        try:
            self._links[ps.name, FENTRY, sym] = bpfsys.raw_tracepoint_open(prog)
        except OSError:
            os.close(prog)
            raise
        self._xmit_progs.append(prog)

    def _attach_xmit(self, ps: ProgramSet, choice: Choice, sym: str) -> None:
        """The stage's program at one driver's xmit function: fentry where the stage took
        fentry and the function takes it, else the stage's kprobe program there"""
        fn = next(a.fn for a in choice.attaches if a.target == NDO_START_XMIT)
        if choice.candidate.mechanism == FENTRY:
            try:
                return self._attach_xmit_fentry(ps, sym, ps.fn_prefix + fn)
            except OSError as e:
                kfn = next((h.fn for c in choice.stage.candidates if c.mechanism == KPROBE
                            for h in c.hooks if h.targets == (NDO_START_XMIT,)), None)
                if (KPROBE not in self.kernel.mechanisms or kfn is None
                        or ps.fn_prefix + kfn not in self._loaded.progs):
                    raise
                self.warnings.append(f"driver_xmit: fentry on {sym} refused "
                                     f"({e.strerror or e}); a kprobe there instead")
                fn = kfn
        name = sym.split(" ")[0]
        if not self.kernel.kallsyms.is_unique(name):
            # a kprobe names its function by symbol alone (fentry by BTF id and module)
            raise OSError(errno.ENOTUNIQ, f"{name} is not a unique symbol; a kprobe cannot "
                                          f"tell which is meant")
        self._attach_kprobe(ps, name, ps.fn_prefix + fn)

    def follow_devices(self, devices: Iterable[Device]) -> None:
        """An fentry program or a kprobe on each new driver xmit function, where driver_xmit
        follows them"""
        choice = self._choices.get("driver_xmit")
        if choice is None:
            return
        if not any(a.target == NDO_START_XMIT for a in choice.attaches):
            return
        attached = []
        for sym, devs in xmit_functions(devices).items():
            name = sym.split(" ")[0]
            if sym in self._xmit_syms:
                continue
            self._xmit_syms.add(sym)
            ok = False
            for ps in self._users(choice.stage):
                if "driver_xmit" in self.left_off.get(ps.name, ()):
                    continue
                try:
                    self._attach_xmit(ps, choice, sym)
                    ok = True
                except OSError as e:
                    self.warnings.append(f"driver_xmit: {choice.candidate.mechanism} on {sym} "
                                         f"(used by {devs[0].name}) failed for {ps.name}: "
                                         f"{e.strerror or e}; its devices are not counted "
                                         f"there")
            if ok:
                attached.append(name)
        if attached:
            st = self.states["driver_xmit"]
            self.states["driver_xmit"] = StageState(
                st.stage, st.mechanism, st.targets + tuple(attached), st.per_device_xmit,
                st.passed_over, st.fell_back_from, st.note)

    def close(self) -> None:
        for fd in [*self._links.values(), *(fd for fds in self._nf_links.values() for fd in fds)]:
            os.close(fd)
        for fd in self._xmit_progs:
            os.close(fd)
        self._links.clear()
        self._nf_links.clear()
        self._nf_made_in.clear()
        self._xmit_progs.clear()
