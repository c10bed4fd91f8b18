"""`netprobe trace`, the pure part: records from probes/trace.c put together into one trace per
skb (Tracker), the flow read from the packet's headers, the trace as text lines or a JSON
object. Nothing here touches the kernel, so all of it is tested without root."""
from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field
from typing import Callable

from .catalogue import ALL_STAGES

TASK = 1  # probes/trace.c NP_TRACE_TASK: the stage ran in process context
CLONED = 2  # NP_TRACE_CLONED: skb->cloned, its data shared with another skb
STAGE_NAMES = tuple(s.name for s in ALL_STAGES)
# what user space sees of a softirq that runs in its own thread: a task, but not the sender
_SOFTIRQ_THREADS = ("ksoftirqd/",)


@dataclass(frozen=True)
class Hop:
    """One stage an skb crossed, or the end of its life (stage "drop" or "consume")"""
    ts: int            # ns, CLOCK_MONOTONIC
    cpu: int
    netns: int
    ifindex: int
    stage: str
    length: int
    pid: int | None    # the process the stage ran in; None: a softirq (or interrupt)
    comm: str = ""
    reason: int = 0    # drop: enum skb_drop_reason
    packet: bytes = b""  # from the L3 header, the linear part, at most the snap length
    l3_off: int = 0
    cloned: bool = False  # skb->cloned at this stage

    @property
    def process(self) -> str:
        return "softirq" if self.pid is None else f"{self.comm}[{self.pid}]"


def hop_from_record(rec) -> tuple[int, int, Hop]:
    """(skb address, trace id, hop) from one struct np_trace_event"""
    comm = bytes(rec.comm).split(b"\0", 1)[0].decode(errors="replace")
    task = bool(rec.flags & TASK) and not comm.startswith(_SOFTIRQ_THREADS)
    stage = STAGE_NAMES[rec.stage] if rec.stage < len(STAGE_NAMES) else f"stage{rec.stage}"
    packet = bytes(rec.bytes[:min(rec.cap_len, len(rec.bytes))])
    return rec.skb, rec.id, Hop(rec.ts, rec.cpu, rec.netns, rec.ifindex, stage, rec.len,
                                rec.pid if task else None, comm if task else "", rec.reason,
                                packet, rec.l3_off, bool(rec.flags & CLONED))


# -- the flow, from the packet's first bytes -------------------------------------------------
_TCP_FLAGS = ((0x02, "SYN"), (0x01, "FIN"), (0x04, "RST"), (0x08, "PSH"), (0x10, "ACK"),
              (0x20, "URG"))
_ICMP = {(1, 0): "echo-reply", (1, 8): "echo-request", (1, 3): "unreachable",
         (1, 11): "time-exceeded", (58, 128): "echo-request", (58, 129): "echo-reply",
         (58, 135): "neighbor-solicit", (58, 136): "neighbor-advert", (58, 133): "router-solicit"}
_PROTOS = {6: "tcp", 17: "udp", 1: "icmp", 58: "icmp6"}


@dataclass(frozen=True)
class Flow:
    proto: str
    src: str
    dst: str
    sport: int | None = None
    dport: int | None = None
    flags: str = ""      # TCP: "SYN", "SYN-ACK", "PSH-ACK", "FIN-ACK", ...; ICMP: the type
    ip_len: int = 0      # the IP packet's length, from its header
    payload: int = 0     # bytes after the L4 header (TCP, UDP)

    def describe(self) -> str:
        if self.sport is not None:
            ends = f"{_host(self.src)}:{self.sport} > {_host(self.dst)}:{self.dport}"
        else:
            ends = f"{self.src} > {self.dst}"
        text = f"{self.proto} {ends}"
        if self.flags:
            text += f" {self.flags}"
        if self.proto in ("tcp", "udp"):
            text += f" data {self.payload}"
        return text

    def to_json(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v not in (None, "")}


def _host(addr: str) -> str:
    return f"[{addr}]" if ":" in addr else addr


def tcp_flags(bits: int) -> str:
    return "-".join(name for bit, name in _TCP_FLAGS if bits & bit)


def decode_flow(packet: bytes) -> Flow | None:
    """The flow of an IPv4 or IPv6 packet whose bytes start at its IP header; None when they
    are something else or too short"""
    if len(packet) < 20:
        return None
    version = packet[0] >> 4
    if version == 4:
        ihl = (packet[0] & 0xF) * 4
        ip_len = struct.unpack_from(">H", packet, 2)[0]
        proto, l4 = packet[9], ihl
        src, dst = (str(ipaddress.IPv4Address(packet[o:o + 4])) for o in (12, 16))
        frag = struct.unpack_from(">H", packet, 6)[0] & 0x1FFF
        if frag:  # a later fragment has no L4 header
            return Flow(_PROTOS.get(proto, str(proto)), src, dst, ip_len=ip_len)
    elif version == 6 and len(packet) >= 40:
        ip_len = 40 + struct.unpack_from(">H", packet, 4)[0]
        proto, l4 = packet[6], 40
        src, dst = (str(ipaddress.IPv6Address(packet[o:o + 16])) for o in (8, 24))
    else:
        return None
    name = _PROTOS.get(proto, str(proto))
    if proto in (6, 17) and len(packet) >= l4 + 4:
        sport, dport = struct.unpack_from(">HH", packet, l4)
        if proto == 6 and len(packet) >= l4 + 14:
            doff = (packet[l4 + 12] >> 4) * 4
            return Flow(name, src, dst, sport, dport, tcp_flags(packet[l4 + 13]), ip_len,
                        max(0, ip_len - l4 - doff))
        return Flow(name, src, dst, sport, dport, "", ip_len, max(0, ip_len - l4 - 8))
    if proto in (1, 58) and len(packet) > l4:
        kind = _ICMP.get((proto, packet[l4]), f"type {packet[l4]}")
        return Flow(name, src, dst, flags=kind, ip_len=ip_len)
    return Flow(name, src, dst, ip_len=ip_len)


# -- one skb's trace ------------------------------------------------------------------------
DELIVERED, CONSUMED, DROPPED, UNSEEN, IN_FLIGHT = (
    "delivered", "consumed", "dropped", "free not seen", "in flight")


@dataclass
class Trace:
    skb: int
    id: int
    hops: list[Hop] = field(default_factory=list)   # path stages, in time order
    end: Hop | None = None                          # the drop or consume, when seen
    how: str = IN_FLIGHT

    @property
    def first(self) -> Hop:
        return self.hops[0] if self.hops else self.end

    @property
    def last_ts(self) -> int:
        return max([h.ts for h in self.hops] + ([self.end.ts] if self.end else []))

    @property
    def clone(self) -> bool:
        """A clone from its first stage on: TCP transmits clones of the skbs it keeps queued
        for retransmission, so its data segments and SYNs are clones while pure ACKs are not"""
        return bool(self.hops) and self.hops[0].cloned

    @property
    def flow(self) -> Flow | None:
        for h in self.hops:
            f = decode_flow(h.packet)
            if f is not None:
                return f
        return None

    @property
    def process(self) -> Hop | None:
        """The first stage that ran in a process's context: the process that sent it"""
        return next((h for h in self.hops if h.pid is not None), None)

    def finish(self, how: str | None = None) -> "Trace":
        self.hops.sort(key=lambda h: h.ts)
        delivered = any(h.stage == "l4_rcv" for h in self.hops)
        if self.end is not None:
            if self.end.stage == "drop":
                self.how = DROPPED
            else:
                self.how = DELIVERED if delivered else CONSUMED
        else:
            self.how = how or UNSEEN
        return self

    def path(self) -> list[str]:
        return [h.stage for h in self.hops]


class Tracker:
    """Records in, finished traces out: at their end (drop, consume), when their address starts
    a new trace (its free was not seen), or when nothing came for `idle_ns`."""

    def __init__(self, idle_ns: int = 1_000_000_000):
        self.idle_ns = idle_ns
        self.open: dict[int, Trace] = {}     # trace id -> trace
        self._by_skb: dict[int, int] = {}    # skb address -> its open trace's id

    def add(self, skb: int, trace_id: int, hop: Hop) -> list[Trace]:
        done = []
        prev = self._by_skb.get(skb)
        if prev is not None and prev != trace_id and prev in self.open:
            done.append(self.open.pop(prev).finish(UNSEEN))
        t = self.open.get(trace_id)
        if t is None and hop.stage in ("drop", "consume"):
            return done  # the end of a trace already shown (idle for longer than idle_ns)
        if t is None:
            t = self.open[trace_id] = Trace(skb, trace_id)
            self._by_skb[skb] = trace_id
        if hop.stage in ("drop", "consume"):
            t.end = hop
            done.append(self.open.pop(trace_id).finish())
            if self._by_skb.get(skb) == trace_id:
                del self._by_skb[skb]
        else:
            t.hops.append(hop)
        return done

    def in_order(self, finished: list[Trace]) -> tuple[list[Trace], list[Trace]]:
        """(those to show now, those to hold): finished traces are shown in the order their
        skbs started, so one waits for every trace that started before it"""
        first_open = min((t.first.ts for t in self.open.values()), default=None)
        finished = sorted(finished, key=lambda t: t.first.ts)
        if first_open is None:
            return finished, []
        now = [t for t in finished if t.first.ts < first_open]
        return now, finished[len(now):]

    def expire(self, now_ns: int) -> list[Trace]:
        old = [i for i, t in self.open.items() if now_ns - t.last_ts >= self.idle_ns]
        return [self._close(i, UNSEEN) for i in old]

    def flush(self) -> list[Trace]:
        return [self._close(i, IN_FLIGHT) for i in list(self.open)]

    def _close(self, trace_id: int, how: str) -> Trace:
        t = self.open.pop(trace_id)
        if self._by_skb.get(t.skb) == trace_id:
            del self._by_skb[t.skb]
        return t.finish(how)


# -- showing a trace ------------------------------------------------------------------------
@dataclass(frozen=True)
class Names:
    """What the session knows, as plain lookups: device (name, xmit fn, physical) by
    (netns, ifindex), a namespace's name by inode, a drop reason's name by value"""
    device: Callable[[int, int], tuple[str, str, bool] | None] = lambda ns, i: None
    netns: Callable[[int], str] = str
    reason: Callable[[int], str] = str


def _dev(h: Hop, names: Names) -> tuple[str, str, bool]:
    d = names.device(h.netns, h.ifindex) if h.ifindex else None
    return d or ((f"if{h.ifindex}" if h.ifindex else "-"), "", False)


def end_text(t: Trace, names: Names) -> str:
    if t.how == DROPPED:
        return f"dropped: {names.reason(t.end.reason)}"
    if t.how == UNSEEN and any(h.stage == "l4_rcv" for h in t.hops):
        return "delivered (its free not seen)"
    return t.how


def header_line(n: int, t: Trace) -> str:
    flow = t.flow
    proc = t.process
    who = proc.process if proc else "softirq"
    clone = "  (clone)" if t.clone else ""
    return f"skb #{n} {flow.describe() if flow else 'not IP'}  sent by {who}{clone}"


COLUMNS = f"  {'µs':>8} {'cpu':>3} {'netns':<12} {'device':<10} {'stage':<17} {'len':>5}  process"


def handed_over_by(t: Trace, i: int, names: Names) -> str:
    """The xmit function that handed hop i's skb over, when the skb came to driver_rx straight
    from a driver_xmit: the same skb crossing from lo to lo, or from a veth end to its peer"""
    if i == 0 or t.hops[i].stage != "driver_rx" or t.hops[i - 1].stage != "driver_xmit":
        return ""
    return _dev(t.hops[i - 1], names)[1]


def hop_line(h: Hop, t0: int, names: Names, handed_over: str = "") -> str:
    name, xmit, physical = _dev(h, names)
    extra = f"  ← {handed_over}" if handed_over else ""
    if h.stage == "driver_xmit" and xmit:
        extra = f"  {xmit}" + (" (physical NIC)" if physical else "")
    return (f"  {(h.ts - t0) / 1000:8.1f} {h.cpu:>3} {names.netns(h.netns)[:12]:<12} "
            f"{name[:10]:<10} {h.stage:<17} {h.length:>5}  {h.process}{extra}")


def trace_lines(n: int, t: Trace, names: Names) -> list[str]:
    t0 = t.first.ts
    lines = [header_line(n, t)] + [hop_line(h, t0, names, handed_over_by(t, i, names))
                                   for i, h in enumerate(t.hops)]
    if t.end is not None:
        name, _, _ = _dev(t.end, names)
        lines.append(f"  {(t.end.ts - t0) / 1000:8.1f} {t.end.cpu:>3} "
                     f"{names.netns(t.end.netns)[:12] if t.end.netns else '-':<12} "
                     f"{name[:10]:<10} {'= ' + end_text(t, names):<23}  {t.end.process}")
    else:
        lines.append(f"  {'':8} {'':3} {'':12} {'':10} = {end_text(t, names)}")
    return lines


def trace_json(n: int, t: Trace, names: Names) -> dict:
    t0 = t.first.ts
    flow = t.flow
    proc = t.process

    def hop(i: int, h: Hop) -> dict:
        name, xmit, physical = _dev(h, names)
        out = {"t_us": round((h.ts - t0) / 1000, 1), "cpu": h.cpu, "netns": h.netns,
               "netns_name": names.netns(h.netns), "device": name, "ifindex": h.ifindex,
               "stage": h.stage, "len": h.length,
               "context": "softirq" if h.pid is None else "process"}
        if h.pid is not None:
            out.update(pid=h.pid, comm=h.comm)
        if h.stage == "driver_xmit":
            out.update(xmit=xmit, physical=physical)
        if handed_over_by(t, i, names):
            out["handed_over_by"] = handed_over_by(t, i, names)
        return out

    end = {"how": t.how, "text": end_text(t, names)}
    if t.end is not None:
        end.update(t_us=round((t.end.ts - t0) / 1000, 1), at=t.end.stage,
                   context="softirq" if t.end.pid is None else "process")
        if t.how == DROPPED:
            end.update(reason=t.end.reason, reason_name=names.reason(t.end.reason))
    return {"n": n, "skb": f"0x{t.skb:x}", "trace_id": t.id, "clone": t.clone,
            "flow": flow.to_json() if flow else None,
            "process": {"pid": proc.pid, "comm": proc.comm} if proc else None,
            "stages": [hop(i, h) for i, h in enumerate(t.hops)], "end": end}


def path_comment(t: Trace, names: Names) -> str:
    """The packet comment of its pcapng record: its way through the stages"""
    parts = []
    for h in t.hops:
        name, xmit, _ = _dev(h, names)
        parts.append(f"{h.stage}[{name}{', ' + xmit if h.stage == 'driver_xmit' and xmit else ''}]")
    return " > ".join(parts + [end_text(t, names)])


@dataclass(frozen=True)
class Footer:
    traced: int
    lost: int              # records that did not reach netprobe
    evicted: int           # in-flight skbs netprobe stopped following (nothing for too long)
    rate_limited: int      # skbs not followed: over --max-rate
    table_full: int        # skbs not followed: the in-flight table was full
    reused: int            # addresses that began a new life before their free was seen
    max_rate: int
    in_flight: int = 0     # still followed when netprobe stopped

    def lines(self) -> list[str]:
        out = [f"{self.traced} skb{'' if self.traced == 1 else 's'} traced "
               f"({self.in_flight} still in flight at exit); "
               f"lost events: {self.lost}; in-flight skbs evicted: {self.evicted}"]
        if self.rate_limited:
            out.append(f"--max-rate {self.max_rate}/s engaged: {self.rate_limited} skbs not traced")
        if self.table_full:
            out.append(f"in-flight table full: {self.table_full} skbs not traced")
        if self.reused:
            out.append(f"{self.reused} skb addresses reused before their free was seen "
                       "(freed outside kfree_skb/consume_skb)")
        return out

    def to_json(self) -> dict:
        return dict(self.__dict__)


def stat_sums(per_cpu: list[list[int]]) -> list[int]:
    """trace_stats' [rate limited, table full, reused], each summed over the CPUs"""
    return [sum(values) for values in per_cpu]
