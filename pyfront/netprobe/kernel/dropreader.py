"""The drops set's maps (probes/drops.h) in the kernel: a snapshot for dropcounts.py's
arithmetic, each drop location named once (kallsyms), and the rows of vanished devices
forgotten, so a reused ifindex starts from zero."""
from __future__ import annotations

import time
from typing import Callable, Mapping

from . import bpfmaps
from ..model.catalogue import DROP_STAGE_OF
from ..model.dropcounts import DropCounts, DropRow, aggregate
from ..model.drops import DropReasons, DropSite, drop_site
from ..model.kallsyms import Kallsyms


class DropReader:
    def __init__(self, maps: Mapping[str, bpfmaps.Map], kallsyms: Callable[[], Kallsyms],
                 reasons: DropReasons | None):
        self._maps = maps
        # a module loaded after start (nf_tables, when a first nftables rule is made) has
        # functions the first read of /proc/kallsyms lacks: a drop there would be named after
        # the nearest symbol below it, another module's. So the symbols are read again, and the
        # names made again, when the set of modules changes.
        self._load_kallsyms = kallsyms
        self._kallsyms = kallsyms()
        self._modules = _modules()
        self.reasons = reasons
        self._sites: dict[int, DropSite | None] = {}  # a few hundred locations at most

    def _site(self, location: int) -> DropSite | None:
        if location not in self._sites:
            self._sites[location] = drop_site(location, self._kallsyms, DROP_STAGE_OF)
        return self._sites[location]

    def read(self) -> DropCounts:
        modules = _modules()
        if modules != self._modules:
            self._modules, self._kallsyms = modules, self._load_kallsyms()
            self._sites.clear()
        m = self._maps
        rows = [DropRow(k.location, k.netns, k.ifindex, k.reason, k.facts,
                        sum(v.packets for v in per_cpu), sum(v.bytes for v in per_cpu))
                for k, per_cpu in m["drops"].items()]
        return DropCounts(time.monotonic(), aggregate(rows, self.reasons, self._site),
                          sum(v.value for v in m["drops_lost"][0]))

    def forget(self, keys: set[tuple[int, int]]) -> None:
        """Delete the rows of these (netns, ifindex)"""
        self._maps["drops"].delete_where(lambda k: (k.netns, k.ifindex) in keys)


def _modules() -> frozenset[str]:
    try:
        with open("/proc/modules") as f:
            return frozenset(line.split(" ", 1)[0] for line in f)
    except OSError:
        return frozenset()
