"""`netprobe prove`: the cases, what each claims, the verdicts and how they read.

Pure logic. The runner (prove_run.py) builds the namespaces, makes the traffic and reads the
counters; everything here takes those reads as plain values, so the claims and their wording are
tested without a kernel.

Each case is a set of flows (TCP and UDP, IPv4 and IPv6) on one port that the probes filter on,
run one after another, with the counters read before and after each flow; the claim is judged
per server address over that address's flows.
"""
from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

from .catalogue import DEVICE_STAGES, PROTOCOL_STAGES, STAGES
from .stagestate import StageState, to_json as state_json, unavailable
from .devices import Device
from .prove_drops import DropVerdict
from .hosts import Host

LOOPBACK = "loopback"  # the flow stays on lo: lo counts it, no other device's driver does
NIC = "nic"            # the flow leaves through a NIC's driver, and loopback_xmit never sees it

# the stages a claim rests on: if either is unavailable, the claim cannot be judged
CLAIM_STAGES = ("dev_queue_xmit", "driver_xmit")


# -- plan ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FlowPlan:
    proto: str                    # "tcp" or "udp"
    server: str                   # the address the client sends to
    client_ns: str | None = None  # netns path the client socket is made in; None: netprobe's own
    server_ns: str | None = None  # netns path of prove's own server; unused with echo
    echo: bool = False            # the server is a remote echo peer (`netprobe peer`)

    @property
    def family(self) -> str:
        return "ipv6" if ":" in self.server else "ipv4"

    @property
    def label(self) -> str:
        return f"{self.proto} {self.server}"


@dataclass(frozen=True)
class CasePlan:
    id: str            # "loopback", "own_address", "nic"
    title: str         # the case's header line
    expect: str        # LOOPBACK or NIC
    flows: tuple[FlowPlan, ...]
    nic: str | None = None  # the device a NIC case must leave through, when known in advance
    note: str = ""


@dataclass(frozen=True)
class Peer:
    """`--peer`: a host running `netprobe peer`, reached from netprobe's own namespace."""
    addr: str
    port: int
    protocols: tuple[str, ...] = ("tcp", "udp")


def plan_cases(a: Host, b: Host, peer: Peer | None = None,
               own_ns: str = "root") -> tuple[CasePlan, ...]:
    """The three cases: loopback addresses, the client's own veth address (still lo), and across
    a NIC — prove's veth to `b`, or the --peer host from netprobe's own namespace (`own_ns`)."""
    def flows(addrs, **kw):
        return tuple(FlowPlan(p, addr, **kw) for addr in addrs for p in ("tcp", "udp"))

    local = dict(client_ns=a.path, server_ns=a.path)
    cases = [
        CasePlan("loopback", f"loopback: client and server on 127.0.0.1 and ::1 in {a.ns}",
                 LOOPBACK, flows(("127.0.0.1", "::1"), **local)),
        CasePlan("own_address", f"own address: client in {a.ns} to {a.addr4} and {a.addr6}, "
                 f"the addresses of its own {a.dev}", LOOPBACK, flows((a.addr4, a.addr6), **local)),
    ]
    if peer is None:
        cases.append(CasePlan(
            "nic", f"across a NIC: client in {a.ns} through veth {a.dev} to {b.addr4} and "
            f"{b.addr6} in {b.ns}", NIC,
            flows((b.addr4, b.addr6), client_ns=a.path, server_ns=b.path), nic=a.dev,
            note="veth is a virtual NIC; `netprobe peer` on another host and --peer ADDR "
                 "cross a physical one"))
    else:
        where = f"[{peer.addr}]" if ":" in peer.addr else peer.addr
        cases.append(CasePlan(
            "nic", f"across a NIC: to `netprobe peer` at {where}:{peer.port} from namespace "
            f"{own_ns}", NIC,
            tuple(FlowPlan(p, peer.addr, echo=True) for p in peer.protocols)))
    return tuple(cases)


# -- measurements ----------------------------------------------------------------------------
@dataclass(frozen=True)
class DevCount:
    """One device's counts for one flow (or one address's flows summed): sk_buffs per stage."""
    netns: int
    ifindex: int
    netns_name: str
    name: str
    driver: str
    xmit: str          # "loopback_xmit", "veth_xmit", "e1000_xmit_frame [e1000]", ""
    physical: bool
    stages: Mapping[str, int]

    @property
    def key(self) -> tuple[int, int]:
        return (self.netns, self.ifindex)

    @property
    def loopback(self) -> bool:
        return self.driver == "loopback"

    @property
    def xmit_fn(self) -> str:
        """The bare function name; the module ("[e1000]") and raw addresses are left off."""
        fn = self.xmit.split(" ")[0]
        return fn if fn and not fn.startswith("0x") else f"{self.name}'s xmit function"

    @property
    def kind(self) -> str:
        return "physical NIC" if self.physical else (self.driver or "virtual")

    def at(self, stage: str) -> int:
        return self.stages.get(stage, 0)


@dataclass(frozen=True)
class FlowResult:
    plan: FlowPlan
    devices: tuple[DevCount, ...]  # only devices that counted the flow somewhere
    l4_send: int = 0               # sendmsg calls (both ends), from the per-protocol stages
    sent: int = 0                  # bytes (tcp) or datagrams (udp) the client sent
    arrived: int = 0               # what the server read (or, from an echo peer, came back)
    error: str = ""                # the flow failed: what happened
    note: str = ""
    # the paths its sk_buffs took, most taken first: (stage[device] > ..., end, sk_buffs)
    paths: tuple[tuple[str, str, int], ...] = ()


@dataclass(frozen=True)
class CaseResult:
    plan: CasePlan
    client_netns: int  # inode number of the namespace the client sent from
    flows: tuple[FlowResult, ...]


def _delta(now: Mapping, before: Mapping, key) -> int:
    p, p0 = now.get(key, (0, 0))[0], before.get(key, (0, 0))[0]
    return p - p0 if p >= p0 else p  # a row deleted in between restarts from zero


def flow_counts(before: Mapping, now: Mapping, devices: Mapping[tuple[int, int], Device],
                netns_names: Mapping[int, str] = {}) -> tuple[tuple[DevCount, ...], int]:
    """Two reads of the counters (session.Counts.values) around one flow → the devices that
    counted something in between, and the sendmsg calls at the L4 send stages."""
    out = []
    for ns, ifx in sorted({(ns, ifx) for (ns, ifx, _) in now if ifx}):
        stages = {s.name: d for s in DEVICE_STAGES if (d := _delta(now, before, (ns, ifx, s.name)))}
        if not stages:
            continue
        dev = devices.get((ns, ifx))
        name = netns_names.get(ns, f"ns:{ns}")
        if dev is None:
            out.append(DevCount(ns, ifx, name, f"if{ifx}", "", "", False, stages))
        else:
            out.append(DevCount(ns, ifx, dev.netns_name or name, dev.name, dev.driver, dev.xmit,
                                dev.physical, stages))
    l4 = sum(_delta(now, before, (ns, 0, s.name))
             for ns in {ns for (ns, ifx, _) in now if ifx == 0} for s in PROTOCOL_STAGES)
    return tuple(out), l4


def merge(flows: Iterable[FlowResult]) -> tuple[DevCount, ...]:
    """Several flows' device counts summed per device."""
    acc: dict[tuple[int, int], DevCount] = {}
    for f in flows:
        for d in f.devices:
            if d.key in acc:
                old = acc[d.key]
                stages = {k: old.at(k) + d.at(k) for k in {*old.stages, *d.stages}}
                acc[d.key] = DevCount(**{**old.__dict__, "stages": stages})
            else:
                acc[d.key] = d
    return tuple(acc.values())


# -- verdicts --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Claim:
    address: str
    holds: bool
    text: str           # one line in plain words
    device: str = ""    # lo, or the NIC the flow left through
    xmit: str = ""      # that device's xmit function
    count: int = 0      # sk_buffs at driver_xmit through that device
    against: int = 0    # sk_buffs at driver_xmit where the claim says there are none


@dataclass(frozen=True)
class Verdict:
    case: CaseResult
    claims: tuple[Claim, ...]

    @property
    def holds(self) -> bool:
        return bool(self.claims) and all(c.holds for c in self.claims)


def _unavailable(states: Mapping[str, StageState]) -> list[str]:
    return [s for s in CLAIM_STAGES if s not in states or not states[s].attached]


def _n(n: int, what: str = "sk_buff") -> str:
    return f"{n:,} {what}{'' if n == 1 else 's'}"


def _list(devs: Sequence[DevCount]) -> str:
    return ", ".join(f"{_n(d.at('driver_xmit'))} through {d.xmit_fn} ({d.name}"
                     f"{'' if d.netns_name in ('', 'root') else ' in ' + d.netns_name})"
                     for d in devs)


def judge_loopback(addr: str, flows: Sequence[FlowResult], client_netns: int) -> Claim:
    devs = merge(flows)
    lo = [d for d in devs if d.loopback and d.netns == client_netns]
    lo_q = sum(d.at("dev_queue_xmit") for d in lo)
    lo_drv = sum(d.at("driver_xmit") for d in lo)
    others = [d for d in devs if d not in lo and d.at("driver_xmit")]
    against = sum(d.at("driver_xmit") for d in others)
    xmit = lo[0].xmit_fn if lo else "loopback_xmit"
    name = lo[0].name if lo else "lo"
    base = f"{addr}: {_n(lo_drv)} through {xmit}" + ("" if name == "lo" else f" ({name})")
    if others:
        return Claim(addr, False, f"{base}, but {_list(others)}", name, xmit, lo_drv, against)
    if not lo_q or not lo_drv:
        return Claim(addr, False, f"{addr}: lo counted {_n(lo_q)} at dev_queue_xmit and {lo_drv:,} "
                     "at driver_xmit: the flow was not seen on lo", name, xmit, lo_drv)
    return Claim(addr, True, f"{base}, 0 through any NIC driver", name, xmit, lo_drv)


def judge_nic(addr: str, flows: Sequence[FlowResult], client_netns: int,
              nic: str | None = None) -> Claim:
    devs = merge(flows)
    out = [d for d in devs if d.netns == client_netns and not d.loopback and d.at("driver_xmit")]
    if nic is not None:
        out = [d for d in out if d.name == nic]
    # the NIC is the physical device that counted the flow; on a route through a bridge or a
    # tunnel a virtual device counts it too, before the NIC
    out.sort(key=lambda d: (not d.physical, -d.at("driver_xmit")))
    lo = [d for d in devs if d.loopback and d.at("driver_xmit")]
    against = sum(d.at("driver_xmit") for d in lo)
    if not out:
        head = f"{addr}: {nic} counted none of it" if nic else f"{addr}: no NIC counted it"
        return Claim(addr, False, f"{head} at driver_xmit" + (f", but {_list(lo)}" if lo else ""),
                     nic or "", "", 0, against)
    d = out[0]
    base = f"{addr}: {_n(d.at('driver_xmit'))} through {d.xmit_fn} ({d.name}, {d.kind})"
    if lo:
        return Claim(addr, False, f"{base}, but {_list(lo)}", d.name, d.xmit_fn,
                     d.at("driver_xmit"), against)
    return Claim(addr, True, f"{base}, 0 through loopback_xmit", d.name, d.xmit_fn,
                 d.at("driver_xmit"))


def judge(case: CaseResult, states: Mapping[str, StageState]) -> Verdict:
    """The case's claim, once per server address over that address's flows."""
    missing = _unavailable(states)
    claims = []
    for addr in dict.fromkeys(f.plan.server for f in case.flows):
        flows = [f for f in case.flows if f.plan.server == addr]
        failed = [f for f in flows if f.error]
        if missing:
            claims.append(Claim(addr, False, f"{addr}: cannot tell: "
                                + "; ".join(f"{s} is {_describe(states, s)}"
                                            for s in missing)))
        elif failed:
            why: dict[str, list[str]] = {}
            for f in failed:
                why.setdefault(f.error, []).append(f.plan.proto)
            claims.append(Claim(addr, False, f"{addr}: " + "; ".join(
                f"{' and '.join(protos)} failed: {error}" for error, protos in why.items())))
        elif case.plan.expect == LOOPBACK:
            claims.append(judge_loopback(addr, flows, case.client_netns))
        else:
            claims.append(judge_nic(addr, flows, case.client_netns, case.plan.nic))
    return Verdict(case, tuple(claims))


# -- the whole run ---------------------------------------------------------------------------
@dataclass
class Report:
    port: int
    states: Mapping[str, StageState]
    verdicts: list[Verdict | DropVerdict] = field(default_factory=list)
    namespaces: tuple[str, ...] = ()
    veth: tuple[str, str] = ("", "")
    peer: Peer | None = None
    warnings: Sequence[str] = ()
    seconds: float = 0.0

    @property
    def holds(self) -> bool:
        return bool(self.verdicts) and all(v.holds for v in self.verdicts)


def header(r: Report) -> list[str]:
    ns = " and ".join(r.namespaces)
    return _wrap(
        f"netprobe prove: TCP and UDP over IPv4 and IPv6, counting port {r.port} only, in "
        f"throw-away namespaces {ns} joined by veth {r.veth[0]} <-> {r.veth[1]}.")


def _wrap(text: str, **kw) -> list[str]:
    # addresses and namespace names (np-1a2b3c-a) stay whole
    return textwrap.wrap(text, 80, break_on_hyphens=False, **kw)


def _describe(states: Mapping[str, StageState], stage: str) -> str:
    return states[stage].describe() if stage in states else "not attached"


def _off(states: Mapping[str, StageState]) -> set[str]:
    """Stages no mechanism reached: their cells say n/a, not zero."""
    return {s.name for s in DEVICE_STAGES if states and
            (s.name not in states or not states[s.name].attached)}


def case_lines(v: Verdict | DropVerdict, index: int,
               states: Mapping[str, StageState] = {}) -> list[str]:
    """One case: its title, per flow the devices that counted it per stage, the claims."""
    if isinstance(v, DropVerdict):  # "where it dies" has a table of its own
        return v.lines(index)
    off = _off(states)

    def cell(n: int, stage: str) -> str:
        return "n/a" if stage in off else f"{n:,}" if n else "·"

    flows = v.case.flows
    rows = [d for f in flows for d in f.devices]
    # devices of one name in two namespaces (lo, or eth1 of a peer namespace): say whose
    clash = {d.name for d in rows if len({r.netns for r in rows if r.name == d.name}) > 1}

    def label(d: DevCount, room: int = 80) -> str:
        if d.name not in clash:
            return d.name
        if len(d.name) + 1 + len(d.netns_name) <= room:
            return f"{d.name}@{d.netns_name}"
        # cut the namespace's name in front: np-1a2b3c-a / np-1a2b3c-b differ at their ends
        return f"{d.name}@…{d.netns_name[-max(1, room - len(d.name) - 2):]}"

    fw = max([len("flow")] + [len(f.plan.label) for f in flows])
    widths = [max([len(s.title)] + [len(cell(d.at(s.name), s.name)) for d in rows])
              for s in DEVICE_STAGES]
    room = max(len("device"), 80 - 3 - fw - 2 - sum(widths) - len(widths))
    dw = min(room, max([len("device")] + [len(label(d)) for d in rows]))

    def row(flow: str, device: str, cells: Sequence[str]) -> str:
        return f"   {flow:<{fw}}  {device:<{dw}}" + "".join(f" {c:>{w}}" for c, w in zip(cells, widths))

    lines = _wrap(f"{index}. {v.case.plan.title}", subsequent_indent="   ")
    lines.append(row("flow", "device", [s.title for s in DEVICE_STAGES]))
    for f in flows:
        name = f.plan.label
        if not f.devices:
            lines.append(row(name, "(none)", [cell(0, s.name) for s in DEVICE_STAGES]))
        for d in f.devices:
            lines.append(row(name, label(d, dw), [cell(d.at(s.name), s.name) for s in DEVICE_STAGES]))
            name = ""
        if f.error or f.note:
            lines += _wrap(f"{f.plan.label}: " + "; ".join(filter(None, (f.error, f.note))),
                           initial_indent="   ! ", subsequent_indent="     ")
    for c in v.claims:
        lines += _wrap(c.text, initial_indent=f"{'ok' if c.holds else 'FAIL':<5}",
                       subsequent_indent="     ")
        lines += path_lines([f for f in flows if f.plan.server == c.address])
    if v.case.plan.note:
        lines += _wrap(f"({v.case.plan.note})", initial_indent="     ", subsequent_indent="      ")
    return lines


def path_lines(flows: Sequence[FlowResult]) -> list[str]:
    """The path most of these flows' sk_buffs took, and how many others there were"""
    taken: dict[str, int] = {}
    for f in flows:
        for text, _end, n in f.paths:
            taken[text] = taken.get(text, 0) + n
    if not taken:
        return []
    top = max(taken, key=lambda t: taken[t])
    more = len(taken) - 1
    tail = f" ({_n(taken[top])}" + (f"; {more} other path{'s' if more > 1 else ''})" if more
                                     else ")")
    return _wrap(f"path: {top}{tail}", initial_indent="     ", subsequent_indent="       ")


def footer(r: Report) -> list[str]:
    lines = _wrap("Cells are the flow's sk_buffs, both directions (· is zero, n/a "
                          "not counted here), counted with:")
    for s in DEVICE_STAGES:
        lines += _wrap(f"{s.title:<8} {s.name:<18} {_describe(r.states, s.name)}",
                               initial_indent="  ", subsequent_indent=" " * 30)
    note = r.states["driver_xmit"].note if "driver_xmit" in r.states else ""
    if note:
        lines += _wrap(f"drv_tx counts at {note}; the xmit function "
                               "named is the device's own ndo_start_xmit, read from the device.",
                               initial_indent="  ", subsequent_indent="  ")
    for w in r.warnings:
        lines += _wrap(w, initial_indent="  ! ", subsequent_indent="    ")
    failed = [str(i) for i, v in enumerate(r.verdicts, 1) if not v.holds]
    if not failed:
        lines.append(f"All {len(r.verdicts)} claims hold ({r.seconds:.1f} s).")
    else:
        which = (f"Case {failed[0]} does" if len(failed) == 1 else
                 f"Cases {', '.join(failed[:-1])} and {failed[-1]} do")
        lines.append(f"{which} not hold: {len(r.verdicts) - len(failed)} of {len(r.verdicts)} "
                     f"claims hold ({r.seconds:.1f} s).")
    return lines


def text(r: Report) -> str:
    out = header(r) + [""]
    for i, v in enumerate(r.verdicts, 1):
        out += case_lines(v, i, r.states) + [""]
    return "\n".join(out + footer(r))


def to_json(r: Report) -> dict:
    off = _off(r.states)

    def dev(d: DevCount) -> dict:
        return {"netns": d.netns, "netns_name": d.netns_name, "ifindex": d.ifindex,
                "name": d.name, "driver": d.driver, "xmit": d.xmit, "physical": d.physical,
                "stages": {s.name: None if s.name in off else d.at(s.name) for s in DEVICE_STAGES}}

    return {
        "holds": r.holds,
        "port": r.port,
        "seconds": round(r.seconds, 3),
        "namespaces": list(r.namespaces),
        "veth": list(r.veth),
        "peer": None if r.peer is None else {"addr": r.peer.addr, "port": r.peer.port,
                                             "protocols": list(r.peer.protocols)},
        "stages": [dict(state_json(r.states.get(s.name) or unavailable(s)), title=s.title)
                   for s in STAGES],
        "cases": [v.as_json() if isinstance(v, DropVerdict) else {
            "id": v.case.plan.id, "title": v.case.plan.title, "expect": v.case.plan.expect,
            "holds": v.holds,
            "claims": [c.__dict__ for c in v.claims],
            "flows": [{"proto": f.plan.proto, "family": f.plan.family, "server": f.plan.server,
                       "echo": f.plan.echo, "sent": f.sent, "arrived": f.arrived,
                       "l4_send_calls": f.l4_send, "error": f.error or None, "note": f.note or None,
                       "devices": [dev(d) for d in f.devices],
                       "paths": [{"path": t, "end": e, "skbs": n} for t, e, n in f.paths]}
                      for f in v.case.flows],
        } for v in r.verdicts],
        "warnings": list(r.warnings),
    }
