"""The latency set's maps (probes/latency.h) in the kernel: snapshots for latency.py's
arithmetic. Nothing is reset: every read is cumulative since attach."""
from __future__ import annotations

import time
from typing import Mapping

from . import bpfmaps
from ..model.catalogue import ALL_STAGES
from ..model.latency import ENDS, STATS, Latency, Path, census, evicted_bound, hop_histograms

_STAGE_NAMES = tuple(s.name for s in ALL_STAGES)


class LatencyReader:
    def __init__(self, maps: Mapping[str, bpfmaps.Map], sample: int = 1):
        self._maps = maps
        self.sample = sample
        self._evicted = 0

    def read(self) -> Latency:
        m = self._maps
        hops = hop_histograms(((k.netns, k.ifindex, getattr(k, "from"), k.to, k.span,
                                [list(v.slot) for v in per_cpu], [v.sum_ns for v in per_cpu])
                               for k, per_cpu in m["hops"].items()), _STAGE_NAMES)
        paths = census(((k.end, v.n, list(v.stages), [(s.netns, s.ifindex) for s in v.steps],
                         v.packets) for k, v in m["paths"].items()),
                       _STAGE_NAMES, len(m["paths"].value_type().stages))
        followed = self._stats()["followed"]
        # the LRU's live entries: one GET_NEXT_KEY each, ~1 µs apiece (16k at most)
        in_flight = len(m["inflight"].keys())
        stats = self._stats()
        self._evicted = max(self._evicted, evicted_bound(followed, in_flight, stats["ended"]))
        return Latency(time.monotonic(), hops, paths, stats, in_flight, self.sample,
                       self._evicted)

    def _stats(self) -> dict[str, int]:
        m = self._maps["lat_stats"]
        return {name: sum(v.value for v in m[i]) for i, name in enumerate(STATS)}

    def begin_epoch(self) -> int:
        """Paths that start from now on are told apart by this number (paths_of)"""
        ep = self._maps["lat_epoch"]
        n = ep[0].value + 1
        ep[0] = ep.value_type(n)
        return n

    def paths_of(self, epoch: int) -> tuple[Path, ...]:
        """The paths that started in this epoch: ended (the census) or still in flight — an skb
        whose end no tracepoint showed stays in flight until its address is reused"""
        m = self._maps
        keep = len(m["paths"].value_type().stages)
        rows = [(k.end, v.n, list(v.stages), [(s.netns, s.ifindex) for s in v.steps], v.packets)
                for k, v in m["paths"].items() if k.epoch == epoch]
        rows += [(len(ENDS), f.n, list(f.stages), [(s.netns, s.ifindex) for s in f.steps], 1)
                 for f in m["inflight"].values() if f.epoch == epoch and f.n]
        return census(rows, _STAGE_NAMES, keep)
