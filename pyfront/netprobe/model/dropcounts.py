"""The drops feature's arithmetic: from snapshots of its map (probes/drops.h) to drops per
(netns, device, stage, reason, function). Pure logic, tested without root; dropreader.py takes
the snapshots from the kernel, drops.py names reasons (BTF) and locations (kallsyms).

A drop's stage is that of the function holding its location (the catalogue's `functions`),
except in netfilter: nf_hook_slow frees what every hook drops, so there the stage comes from
what the skb had been through, as the drop program recorded it (netfilter_stage)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, NamedTuple

from .btf import BTF
from .catalogue import NETFILTER_DROP_FUNCTIONS
from .drops import CORE_ENUM, DropReasons, DropSite
from .kallsyms import base_name

# facts the drop program records (probes/drops.h NP_DROP_*)
RECEIVED = 1  # skb->skb_iif set: it came in through a device
ROUTED = 2    # skb->_skb_refdst set: it has a route

OTHER = "other"      # a drop in a function that belongs to no stage of the catalogue
UNKNOWN = "unknown"  # the reason, on a kernel whose kfree_skb gives none (before 5.17)
NO_DEVICE = "no device"


class DropKey(NamedTuple):
    netns: int      # 0: neither the device's nor a socket's namespace was known
    ifindex: int    # 0: no device
    stage: str      # a catalogue stage, or OTHER
    reason: str     # "NO_SOCKET", "NETFILTER_DROP", ... or UNKNOWN
    function: str   # where it was freed: "__udp4_lib_rcv", "nf_hook_slow", "0x..." unnamed


@dataclass(frozen=True)
class DropCounts:
    """One read of the drop counters: cumulative since attach."""
    at: float
    values: dict[DropKey, tuple[int, int]]  # -> (packets, bytes)
    lost: int  # drops not counted because the drops map was full


# a row of the drops map, summed over CPUs
class DropRow(NamedTuple):
    location: int
    netns: int
    ifindex: int
    reason: int
    facts: int
    packets: int
    bytes: int


def netfilter_stage(facts: int) -> str:
    """The stage of a netfilter drop, from what the skb had been through: made here and not
    yet out (no input device: LOCAL_OUT / POST_ROUTING) → ip_output; received, no route yet
    (PRE_ROUTING, before ip_rcv_finish routes it) → ip_rcv; received and routed (LOCAL_IN,
    or FORWARD, which netprobe has no stage for) → l4_rcv. On lo a received skb keeps the
    route it was sent with, so a PRE_ROUTING drop on lo reads as l4_rcv."""
    if not facts & RECEIVED:
        return "ip_output"
    return "l4_rcv" if facts & ROUTED else "ip_rcv"


def drop_stage(site: DropSite | None, facts: int) -> str:
    if site is None:
        return OTHER
    if base_name(site.function) in NETFILTER_DROP_FUNCTIONS:
        return netfilter_stage(facts)
    return site.stage or OTHER


def aggregate(rows: Iterable[DropRow], reasons: DropReasons | None,
              site_of: Callable[[int], DropSite | None]) -> dict[DropKey, tuple[int, int]]:
    """Cumulative drops per DropKey; `site_of` names a location (drops.drop_site)."""
    values: dict[DropKey, tuple[int, int]] = {}
    for r in rows:
        site = site_of(r.location)
        function = base_name(site.function) if site else f"{r.location:#x}"
        reason = reasons.name(r.reason) if reasons is not None else UNKNOWN
        key = DropKey(r.netns, r.ifindex, drop_stage(site, r.facts), reason, function)
        p, b = values.get(key, (0, 0))
        values[key] = (p + r.packets, b + r.bytes)
    return values


def probe_cflags(btf: BTF | None, reasons: DropReasons | None) -> list[str]:
    """The drop program's -D flags: which skb:kfree_skb arguments this kernel's tracepoint
    has (read from its prototype in BTF: a program may not read one it lacks), and the value
    of SKB_CONSUMED, which some kernels still send through kfree_skb. Without BTF the reason
    cannot be named, so it is not read: the location only."""
    params = btf.tracepoint_params("kfree_skb") if btf is not None else None
    if not params:
        return []
    flags = []
    if reasons is not None and len(params) >= 3 and params[2] == f"enum {CORE_ENUM}":
        flags.append("-DNP_DROP_REASONS")
        consumed = btf.enum_values(CORE_ENUM).get("SKB_CONSUMED")
        if consumed is not None:
            flags.append(f"-DNP_REASON_CONSUMED={consumed}")
    if len(params) >= 4 and params[3] == "struct sock *":
        flags.append("-DNP_DROP_RX_SK")
    return flags
