"""The devices of every namespace, as the kernel knows them: probes/netdev_walk.c run on demand
(BPF_PROG_TEST_RUN) inside each namespace, its table read back and named (devices.py)."""
from __future__ import annotations

from typing import Callable, Mapping

from . import bpfmaps, bpfsys
from .devices import Device, WalkRecord, describe
from .errors import NetprobeError
from .netns import Netns


class Inventory:
    def __init__(self, walk_fd: int, maps: Mapping[str, bpfmaps.Map],
                 symbolize: Callable[[int], object | None]):
        self._walk_fd = walk_fd
        self._count = maps["netdev_count"]
        self._table = maps["netdev_table"]
        self._symbolize = symbolize

    def devices(self, namespaces: Mapping[int, Netns]) -> dict[tuple[int, int], Device]:
        """Every device of these namespaces; a namespace that vanishes while we look is
        skipped, the root namespace's failure is an error."""
        out: dict[tuple[int, int], Device] = {}
        for ns in namespaces.values():
            try:
                for d in self.walk(ns):
                    out[d.key] = d
            except NetprobeError:
                if ns.name == "root":
                    raise
        return out

    def walk(self, ns: Netns) -> list[Device]:
        with bpfsys.in_netns(ns.path):
            try:
                bpfsys.test_run(self._walk_fd)
            except OSError as e:
                raise NetprobeError(f"listing devices of netns {ns.name}: {e.strerror}") from None
        out = []
        for i in range(self._count[0].value):
            r = self._table[i]
            rec = WalkRecord(r.netns, r.ifindex, r.flags, bool(r.physical),
                             r.name.decode(errors="replace"), r.kind.decode(errors="replace"),
                             r.driver.decode(errors="replace"), r.xmit, r.addr, r.cookie)
            out.append(describe(rec, self._symbolize, ns.name))
        return out
