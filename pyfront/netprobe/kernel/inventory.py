"""The devices of every namespace, as the kernel knows them: probes/netdev_walk.c run on demand
(BPF_PROG_TEST_RUN) inside each namespace, its table read back and named (devices.py)."""
from __future__ import annotations

from typing import Callable, Mapping

from . import bpfmaps, bpfsys
from ..model.devices import Device, WalkRecord, describe
from ..errors import NetprobeError
from .netns import Netns
from ..model.programsets import WALK_MAX


class Inventory:
    def __init__(self, walk_fd: int, maps: Mapping[str, bpfmaps.Map],
                 symbolize: Callable[[int], object | None]):
        self._walk_fd = walk_fd
        self._count = maps["netdev_count"]
        self._table = maps["netdev_table"]
        self._cursor = maps["netdev_cursor"]
        self._symbolize = symbolize
        # namespaces (inode -> name) with more devices than the walk lists (WALK_MAX)
        self.overflow: dict[int, str] = {}

    def devices(self, namespaces: Mapping[int, Netns]) -> dict[tuple[int, int], Device]:
        """Every device of these namespaces; a namespace that vanishes while we look is
        skipped, the root namespace's failure is an error."""
        out: dict[tuple[int, int], Device] = {}
        self.overflow = {}
        for ns in namespaces.values():
            try:
                for d in self.walk(ns):
                    out[d.key] = d
            except NetprobeError:
                if ns.name == "root":
                    raise
        return out

    def walk(self, ns: Netns) -> list[Device]:
        """The namespace's devices, a page of the kernel's list per run of the walk (a device
        added or removed between two runs may shift one across a page's edge: the next
        refresh sees it)"""
        out: dict[int, Device] = {}
        with bpfsys.in_netns(ns.path):
            cursor, seen = 0, 0
            while True:
                self._cursor[0] = self._cursor.value_type(cursor)
                try:
                    bpfsys.test_run(self._walk_fd)
                except OSError as e:
                    raise NetprobeError(f"listing devices of netns {ns.name}: {e.strerror}") from None
                n, cursor = self._count[0].value, self._cursor[0].value
                for i in range(n):
                    d = self._record(i, ns.name)
                    if d.netns == ns.inum:  # not a node freed between two runs
                        out[d.ifindex] = d
                seen += n
                if not cursor or n == 0:
                    break
                if seen >= WALK_MAX:
                    self.overflow[ns.inum] = ns.name
                    break
        return list(out.values())

    def _record(self, i: int, netns_name: str) -> Device:
        r = self._table[i]
        rec = WalkRecord(r.netns, r.ifindex, r.flags, bool(r.physical),
                         r.name.decode(errors="replace"), r.kind.decode(errors="replace"),
                         r.driver.decode(errors="replace"), r.xmit, r.addr, r.cookie)
        return describe(rec, self._symbolize, netns_name)
