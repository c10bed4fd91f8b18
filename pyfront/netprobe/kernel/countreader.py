"""The counting set's maps (probes/count.h) in the kernel: snapshots for counting.py's
arithmetic, and the two things user space tells the probes — that devices changed (the slots'
epoch, and which addresses were released) and which rows to forget."""
from __future__ import annotations

import time
from typing import Iterable, Mapping, Sequence

from . import bpfmaps
from ..model.catalogue import STAGES
from ..model.counting import Counts, DevSlot, NetSlot, aggregate
from ..model.devices import Device

_STAGE_NAMES = tuple(s.name for s in STAGES)


class CountReader:
    def __init__(self, maps: Mapping[str, bpfmaps.Map]):
        self._maps = maps
        self._released: set[int] = set()  # addresses of vanished devices

    def read(self, devices: Iterable[Device], namespaces: Iterable[int]) -> Counts:
        m = self._maps
        devices = list(devices)
        cookie = {(d.netns, d.ifindex): d.cookie for d in devices}
        # a row of a vanished device whose (netns, ifindex) a new one took is not the new one's
        rows = [(k.netns, k.ifindex, k.stage, sum(v.packets for v in per_cpu),
                 sum(v.bytes for v in per_cpu)) for k, per_cpu in m["counts"].items()
                if not k.ifindex or cookie.get((k.netns, k.ifindex), k.cookie) == k.cookie]
        dev_slots = [DevSlot(s.dev, s.netns, s.ifindex, _values(s.v), s.cookie)
                     for per_cpu in m["slots"].values() for s in per_cpu if s.dev]
        net_slots = [NetSlot(s.net, s.netns, _values(s.v))
                     for per_cpu in m["net_slots"].values() for s in per_cpu if s.net]
        values = aggregate(rows, dev_slots, net_slots, devices, self._released, set(namespaces),
                           _STAGE_NAMES)
        return Counts(time.monotonic(), values, sum(v.value for v in m["dropped"][0]))

    def devices_changed(self, vanished: Sequence[Device], present: Iterable[Device]) -> None:
        """Tell the probes' per-CPU slots that devices changed: each slot re-reads its owner's
        identity once, and slots of vanished devices may be taken back."""
        released = self._maps["released"]
        live = {d.addr for d in present}
        for addr in live & self._released:  # a new device at a vanished one's address (slab reuse)
            self._released.discard(addr)
            try:
                del released[addr]
            except KeyError:
                pass
        for d in vanished:
            if d.addr and d.addr not in live:
                try:
                    released[d.addr] = released.value_type(1)
                except OSError:  # full: that slot just stays taken (counts still go to the hash)
                    pass
                self._released.add(d.addr)
        ep = self._maps["epoch"]
        ep[0] = ep.value_type(ep[0].value + 1)

    def forget(self, gone: Iterable[Device]) -> None:
        """Delete the hash rows of these devices, by (netns, ifindex) and their namespace's
        cookie: a reused ifindex starts from zero, and a new device keeps its own rows"""
        keys = {(d.netns, d.ifindex, d.cookie) for d in gone}
        self._maps["counts"].delete_where(lambda k: (k.netns, k.ifindex, k.cookie) in keys)


def _values(v) -> list[tuple[int, int]]:
    return [(x.packets, x.bytes) for x in v]
