"""The drops set's maps (probes/drops.h) in the kernel: a snapshot for dropcounts.py's
arithmetic, each drop location named once (kallsyms), and the rows of vanished devices
forgotten, so a reused ifindex starts from zero."""
from __future__ import annotations

import time
from typing import Mapping

from . import bpfmaps
from .catalogue import DROP_STAGE_OF
from .dropcounts import DropCounts, DropRow, aggregate
from .drops import DropReasons, DropSite, drop_site
from .kallsyms import Kallsyms


class DropReader:
    def __init__(self, maps: Mapping[str, bpfmaps.Map], kallsyms: Kallsyms,
                 reasons: DropReasons | None):
        self._maps = maps
        self._kallsyms = kallsyms
        self.reasons = reasons
        self._sites: dict[int, DropSite | None] = {}  # a few hundred locations at most

    def _site(self, location: int) -> DropSite | None:
        if location not in self._sites:
            self._sites[location] = drop_site(location, self._kallsyms, DROP_STAGE_OF)
        return self._sites[location]

    def read(self) -> DropCounts:
        m = self._maps
        rows = [DropRow(k.location, k.netns, k.ifindex, k.reason, k.facts,
                        sum(v.packets for v in per_cpu), sum(v.bytes for v in per_cpu))
                for k, per_cpu in m["drops"].items()]
        return DropCounts(time.monotonic(), aggregate(rows, self.reasons, self._site),
                          sum(v.value for v in m["drops_lost"][0]))

    def forget(self, keys: set[tuple[int, int]]) -> None:
        """Delete the rows of these (netns, ifindex)"""
        self._maps["drops"].delete_where(lambda k: (k.netns, k.ifindex) in keys)
