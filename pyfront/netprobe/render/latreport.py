"""What `watch --latency` and the exporter show of a latency read: hop rows with their
percentiles and paths in words, named after the devices netprobe knows. Pure."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

from ..model.catalogue import STAGE_IDS
from ..model.devices import Device
from ..model.latency import Histogram, HopKey, Latency, Path, hop_deltas, path_deltas


@dataclass(frozen=True)
class HopRow:
    key: HopKey
    device: str
    netns_name: str
    hist: Histogram

    def as_dict(self) -> dict:
        q = self.hist.quantile
        return {"netns": self.key.netns, "netns_name": self.netns_name, "device": self.device,
                "ifindex": self.key.ifindex, "from": self.key.src, "to": self.key.dst,
                "span": self.key.span, "count": self.hist.count,
                "p50_ns": _round(q(0.5)), "p99_ns": _round(q(0.99)),
                "mean_ns": _round(self.hist.sum_ns / self.hist.count if self.hist.count else None)}


@dataclass(frozen=True)
class PathRow:
    netns: int
    netns_name: str
    text: str
    end: str
    packets: int


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 1)


class Names:
    """Device and namespace names for rows: what the inventory knows, else if<N> / ns:<inode>"""

    def __init__(self, devices: Mapping[tuple[int, int], Device], netns_names: Mapping[int, str]):
        self._devices, self._netns = devices, netns_names

    def netns(self, inum: int) -> str:
        return self._netns.get(inum, f"ns:{inum}")

    def device(self, netns: int, ifindex: int) -> str:
        d = self._devices.get((netns, ifindex))
        return d.name if d else f"if{ifindex}"

    def in_path(self, path: Path) -> Callable[[int, int], str]:
        """a step's device, with @namespace where it is not the namespace the path began in"""
        def name(netns: int, ifindex: int) -> str:
            dev = self.device(netns, ifindex)
            return dev if netns == path.netns else f"{dev}@{self.netns(netns)}"
        return name


def hop_rows(hops: Mapping[HopKey, Histogram], names: Names,
             wants: Callable[[str], bool] = lambda name: True) -> list[HopRow]:
    """By namespace and device, then in path order; the end-to-end spans after the hops"""
    rows = [HopRow(k, names.device(k.netns, k.ifindex), names.netns(k.netns), h)
            for k, h in hops.items() if h.count and wants(names.device(k.netns, k.ifindex))]
    rows.sort(key=lambda r: (r.netns_name != "root", r.netns_name, r.key.ifindex, r.key.span,
                             STAGE_IDS[r.key.dst], STAGE_IDS[r.key.src]))
    return rows


def path_rows(paths: Sequence[Path], names: Names) -> list[PathRow]:
    return [PathRow(p.netns, names.netns(p.netns), p.describe(names.in_path(p)), p.end, p.packets)
            for p in paths]


def interval_rows(now: Latency, before: Latency, names: Names,
                  wants: Callable[[str], bool] = lambda name: True
                  ) -> tuple[list[HopRow], list[PathRow]]:
    """The hops and paths taken between two reads"""
    return (hop_rows(hop_deltas(now.hops, before.hops), names, wants),
            path_rows(path_deltas(now.paths, before.paths), names))


def to_json(lat: Latency, hops: Sequence[HopRow], paths: Sequence[PathRow]) -> dict:
    """The `latency` member of watch's JSON object: hops and paths of the interval; the
    table's overflow and the in-flight figures since attach"""
    return {
        "sample": lat.sample,
        "hops": [r.as_dict() for r in hops],
        "paths": [{"netns": p.netns, "netns_name": p.netns_name, "path": p.text, "end": p.end,
                   "packets": p.packets} for p in paths],
        "paths_other": lat.other,
        "in_flight": lat.in_flight,
        "evicted": lat.evicted,
        "ends_inferred": lat.stats["inferred"],
        "hops_lost": lat.stats["hops_lost"],
    }


def human_ns(ns: float | None) -> str:
    """850ns / 1.2µs / 3.4ms / 1.1s"""
    if ns is None:
        return "-"
    for unit, div in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
        if ns >= div:
            v = ns / div
            return f"{v:.1f}{unit}" if v < 100 else f"{v:.0f}{unit}"
    return f"{ns:.0f}ns"
