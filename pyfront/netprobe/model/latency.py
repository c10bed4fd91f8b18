"""The latency feature's arithmetic: from snapshots of its maps (probes/latency.h) to hop
histograms, their percentiles and deltas, and the census of paths in words. Pure logic, tested
without root; latreader.py takes the snapshots from the kernel."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, NamedTuple, Sequence

# as probes/latency.h numbers them
ENDS = ("delivered", "consumed", "dropped")
IN_FLIGHT = "in flight"
BUCKETS = 40  # bucket b holds [2^(b-1), 2^b) ns; the last also what is longer
STATS = ("followed", "ended", "hops_lost", "inferred", *(f"other_{e}" for e in ENDS))


def bucket_bound_ns(b: int) -> float:
    """The upper bound of bucket b in ns (inclusive as Prometheus reads `le`); the last bucket
    is unbounded"""
    return float("inf") if b >= BUCKETS - 1 else float(2 ** b)


class HopKey(NamedTuple):
    """A hop on the destination stage's device; span: from the path's first stage (end to end)"""
    netns: int
    ifindex: int
    src: str   # from-stage
    dst: str   # to-stage
    span: bool = False


@dataclass(frozen=True)
class Histogram:
    buckets: tuple[int, ...]  # per log2 bucket, summed over CPUs
    sum_ns: int

    @property
    def count(self) -> int:
        return sum(self.buckets)

    def minus(self, before: "Histogram | None") -> "Histogram":
        if before is None:
            return self
        return Histogram(tuple(a - b for a, b in zip(self.buckets, before.buckets)),
                         self.sum_ns - before.sum_ns)

    def quantile(self, q: float) -> float | None:
        """The q-quantile in ns, linear within its log2 bucket (as Prometheus'
        histogram_quantile); None when empty"""
        total = self.count
        if not total:
            return None
        rank = q * total
        seen = 0
        for b, n in enumerate(self.buckets):
            if n and seen + n >= rank:
                lo = 0.0 if b == 0 else float(2 ** (b - 1))
                hi = float(2 ** b)
                return lo + (hi - lo) * max(0.0, rank - seen) / n
            seen += n
        return float(2 ** (BUCKETS - 1))

    def cumulative(self) -> list[tuple[float, int]]:
        """(le in seconds, count ≤ le) for a Prometheus histogram, ending with +Inf"""
        out, running = [], 0
        for b, n in enumerate(self.buckets):
            running += n
            out.append((bucket_bound_ns(b) / 1e9, running))
        return out


@dataclass(frozen=True)
class Step:
    stage: str
    netns: int
    ifindex: int


@dataclass(frozen=True)
class Path:
    steps: tuple[Step, ...]  # the first ones, up to probes/latency.h's NP_PATH_MAX
    length: int              # the steps the skb took
    end: str                 # ENDS, or IN_FLIGHT for a path not ended yet
    packets: int

    @property
    def netns(self) -> int:
        return self.steps[0].netns if self.steps else 0

    def describe(self, name_of: Callable[[int, int], str]) -> str:
        """e.g. 'ip_output[lo] > dev_queue_xmit[lo] > ... > l4_rcv[lo]'; a device in another
        namespace than the path's first step is written dev@namespace. name_of(netns, ifindex)
        gives 'dev' or 'dev@namespace' as the caller knows them."""
        parts = [f"{s.stage}[{name_of(s.netns, s.ifindex)}]" for s in self.steps]
        if self.length > len(self.steps):
            parts.append(f"... (+{self.length - len(self.steps)})")
        return " > ".join(parts)


@dataclass(frozen=True)
class Latency:
    """One read of the latency maps: cumulative since attach."""
    at: float
    hops: dict[HopKey, Histogram]
    paths: tuple[Path, ...]
    stats: dict[str, int]
    in_flight: int
    sample: int = 1  # one flow in `sample` is followed
    # the reader's count of evictions (evicted_bound), where it made one
    evicted_count: int | None = None

    @property
    def evicted(self) -> int:
        """skbs pushed out of the in-flight table before their end was seen"""
        if self.evicted_count is not None:
            return self.evicted_count
        return max(0, self.stats["followed"] - self.stats["ended"] - self.in_flight)

    @property
    def other(self) -> dict[str, int]:
        """paths counted without their steps, per end: the census was full"""
        return {e: self.stats[f"other_{e}"] for e in ENDS}


def evicted_bound(followed_before: int, in_flight: int, ended_after: int) -> int:
    """The evictions of the in-flight table (an LRU evicts without a word), from three reads
    made in this order: skbs followed, entries in flight, skbs ended. An skb that started
    after the first read and is in flight at the second, or ended between the second and the
    third, is taken away too: the figure is never above the truth, so a running maximum of it
    is a counter that never goes down (a Prometheus counter must not)."""
    return max(0, followed_before - in_flight - ended_after)


def hop_histograms(rows: Iterable[tuple[int, int, int, int, int, Sequence[Sequence[int]],
                                        Sequence[int]]],
                   stage_names: Sequence[str]) -> dict[HopKey, Histogram]:
    """From the hops map: (netns, ifindex, from id, to id, span, per-CPU buckets, per-CPU sums)"""
    out: dict[HopKey, Histogram] = {}
    for netns, ifindex, src, dst, span, per_cpu, sums in rows:
        buckets = tuple(sum(cpu[b] for cpu in per_cpu) for b in range(BUCKETS))
        out[HopKey(netns, ifindex, stage_names[src], stage_names[dst], bool(span))] = \
            Histogram(buckets, sum(sums))
    return out


def census(rows: Iterable[tuple[int, int, Sequence[int], Sequence[tuple[int, int]], int]],
           stage_names: Sequence[str], keep: int) -> tuple[Path, ...]:
    """From the paths map: (end id, length, stage ids, (netns, ifindex) steps, packets), the
    rows of one path in several epochs summed, most packets first. keep: the steps the kernel
    keeps of a path; an end id past ENDS is a path still in flight."""
    paths: dict[tuple, int] = {}
    for end, length, stages, steps, packets in rows:
        n = min(length, keep)
        key = (tuple(Step(stage_names[stages[i]], *steps[i]) for i in range(n)), length,
               ENDS[end] if end < len(ENDS) else IN_FLIGHT)
        paths[key] = paths.get(key, 0) + packets
    return tuple(sorted((Path(*k, n) for k, n in paths.items()), key=lambda p: -p.packets))


def path_deltas(now: Sequence[Path], before: Sequence[Path]) -> list[Path]:
    """The paths taken since `before`, with their packets since then"""
    old = {(p.steps, p.length, p.end): p.packets for p in before}
    out = [Path(p.steps, p.length, p.end, p.packets - old.get((p.steps, p.length, p.end), 0))
           for p in now]
    return sorted((p for p in out if p.packets > 0), key=lambda p: -p.packets)


def hop_deltas(now: Mapping[HopKey, Histogram],
               before: Mapping[HopKey, Histogram]) -> dict[HopKey, Histogram]:
    """The hops taken since `before`"""
    out = {k: h.minus(before.get(k)) for k, h in now.items()}
    return {k: h for k, h in out.items() if h.count > 0}
