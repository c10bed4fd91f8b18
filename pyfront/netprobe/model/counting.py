"""The counting feature's arithmetic: from snapshots of its maps (probes/count.h) to counts per
(netns, device, stage). Pure logic — the rules that decide which per-CPU slot speaks for which
device are tested here without root; countreader.py takes the snapshots from the kernel."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, NamedTuple, Sequence

from .devices import Device


class CountKey(NamedTuple):
    """A row of counts: a device stage has the device's ifindex, an L4 send stage ifindex 0."""
    netns: int
    ifindex: int
    stage: str


@dataclass(frozen=True)
class Counts:
    """One read of the kernel's counters: cumulative since attach."""
    at: float
    values: dict[CountKey, tuple[int, int]]  # -> (packets, bytes)
    dropped: int  # hits not counted because the counts map was full


@dataclass(frozen=True)
class DevSlot:
    """One CPU's slot for a device (struct np_slot): who owns it and its per-stage counts."""
    dev: int                                   # the owner net_device's address; 0: free
    netns: int
    ifindex: int
    values: Sequence[tuple[int, int]]          # per stage id: (packets, bytes)
    cookie: int = 0                            # its namespace's net_cookie


@dataclass(frozen=True)
class NetSlot:
    """One CPU's slot for a namespace's L4 send counts (struct np_net_slot)."""
    net: int                                   # the struct net's address; 0: free
    netns: int
    values: Sequence[tuple[int, int]]


def aggregate(hash_rows: Iterable[tuple[int, int, int, int, int]], dev_slots: Iterable[DevSlot],
              net_slots: Iterable[NetSlot], devices: Iterable[Device], released: set[int],
              namespaces: set[int], stage_names: Sequence[str]) -> dict[CountKey, tuple[int, int]]:
    """Cumulative counts: the hash's rows (netns, ifindex, stage id, packets, bytes, summed over
    CPUs) plus every slot that speaks for a device or namespace that exists."""
    values: dict[CountKey, tuple[int, int]] = {}

    def add(netns: int, ifindex: int, stage: int, pk: int, by: int) -> None:
        key = CountKey(netns, ifindex, stage_names[stage])
        p0, b0 = values.get(key, (0, 0))
        values[key] = (p0 + pk, b0 + by)

    for netns, ifindex, stage, pk, by in hash_rows:
        add(netns, ifindex, stage, pk, by)
    devices = list(devices)
    owner = {(d.netns, d.ifindex): d.addr for d in devices}
    current = {d.addr: (d.netns, d.ifindex, d.cookie) for d in devices}
    for slot in dev_slots:
        if slot.dev and slot_counts(slot, current, owner, released):
            for i, (pk, by) in enumerate(slot.values):
                if pk:
                    add(slot.netns, slot.ifindex, i, pk, by)
    for slot in net_slots:
        if slot.net and slot.netns in namespaces:
            for i, (pk, by) in enumerate(slot.values):
                if pk:
                    add(slot.netns, 0, i, pk, by)
    return values


def slot_counts(slot: DevSlot, current: Mapping[int, tuple[int, int, int]],
                owner: Mapping[tuple[int, int], int], released: set[int]) -> bool:
    """Whether a device slot's numbers are counted: only when it speaks for a device that
    exists — the one at this address now (a slot not yet re-read after the address was reused
    still holds the vanished device's numbers), or a device netprobe cannot list (a namespace
    it cannot enter) that did not vanish."""
    if slot.dev in current:
        return current[slot.dev] == (slot.netns, slot.ifindex, slot.cookie)
    return slot.dev not in released and owner.get((slot.netns, slot.ifindex), slot.dev) == slot.dev


def device_changes(old: Mapping[tuple[int, int], Device],
                   new: Mapping[tuple[int, int], Device]) -> tuple[list[Device], bool]:
    """(the devices that are gone — vanished, renamed, another driver, another net_device at
    the same (netns, ifindex) — and whether any device's identity changed at all, which the
    probes' slots must be told of)"""
    gone = [d for k, d in old.items()
            if k not in new or new[k].name != d.name or new[k].xmit_addr != d.xmit_addr
            or new[k].addr != d.addr or new[k].cookie != d.cookie]
    ids = lambda devs: {(d.addr, d.netns, d.ifindex, d.cookie) for d in devs.values()}  # noqa: E731
    return gone, ids(old) != ids(new)
