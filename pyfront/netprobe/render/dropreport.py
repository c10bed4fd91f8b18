"""Two reads of the drop counters (and of the devices' own drop counters) turned into rows:
per namespace, device, stage, reason and the function that freed the skb, with rates. Pure
logic, shared by `watch` (text and --json); the exporter reads DropCounts itself."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

from ..model.devices import Device
from ..model.dropcounts import NO_DEVICE, DropCounts, DropKey
from ..model.linkdrops import COUNTERS, LinkDrops, LinkDropsRead
from .report import DeviceSelector
from ..model.stagestate import StageState, to_json as state_json


def netns_name(inum: int, names: Mapping[int, str]) -> str:
    return "?" if inum == 0 else names.get(inum, f"ns:{inum}")


def device_name(netns: int, ifindex: int, devices: Mapping[tuple[int, int], Device]) -> str:
    if ifindex == 0:
        return NO_DEVICE
    dev = devices.get((netns, ifindex))
    return dev.name if dev else f"if{ifindex}"


@dataclass(frozen=True)
class DropLine:
    key: DropKey
    netns_name: str
    device: str
    packets: int
    bytes: int
    packets_delta: int
    seconds: float

    @property
    def pps(self) -> float:
        return self.packets_delta / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict:
        k = self.key
        return {"netns": k.netns, "netns_name": self.netns_name, "ifindex": k.ifindex,
                "device": self.device, "stage": k.stage, "reason": k.reason,
                "function": k.function, "packets": self.packets, "bytes": self.bytes,
                "packets_delta": self.packets_delta, "pps": round(self.pps, 1)}


def drop_lines(now: DropCounts, before: DropCounts | None, seconds: float,
               devices: Mapping[tuple[int, int], Device], names: Mapping[int, str],
               selector: DeviceSelector = DeviceSelector()) -> list[DropLine]:
    """Every drop row since attach, busiest now first, then the biggest totals."""
    lines = []
    for key, (p, b) in now.values.items():
        dev = device_name(key.netns, key.ifindex, devices)
        if not selector.wants(dev):
            continue
        p0 = before.values.get(key, (0, 0))[0] if before else 0
        # a row deleted in between (device gone) restarts from zero rather than going negative
        lines.append(DropLine(key, netns_name(key.netns, names), dev, p, b,
                              p - p0 if p >= p0 else p, seconds))
    lines.sort(key=lambda d: (-d.packets_delta, -d.packets, d.netns_name, d.device, d.key.stage))
    return lines


@dataclass(frozen=True)
class LinkLine:
    link: LinkDrops
    netns_name: str
    deltas: Mapping[str, int]
    seconds: float

    def as_dict(self) -> dict:
        return {"netns": self.link.netns, "netns_name": self.netns_name,
                "ifindex": self.link.ifindex, "device": self.link.name,
                **{c: getattr(self.link, c) for c in COUNTERS},
                "deltas": dict(self.deltas)}


def link_lines(now: LinkDropsRead, before: LinkDropsRead | None, seconds: float,
               names: Mapping[int, str], selector: DeviceSelector = DeviceSelector()
               ) -> list[LinkLine]:
    """Devices whose own drop counters are not all zero (they count from the device's
    creation, not from netprobe's start)."""
    lines = []
    for key, link in now.values.items():
        if not any(getattr(link, c) for c in COUNTERS) or not selector.wants(link.name):
            continue
        old = before.values.get(key) if before else None
        deltas = {c: max(0, getattr(link, c) - (getattr(old, c) if old else getattr(link, c)))
                  for c in COUNTERS}
        lines.append(LinkLine(link, netns_name(link.netns, names), deltas, seconds))
    lines.sort(key=lambda x: (x.netns_name != "root", x.netns_name, x.link.ifindex))
    return lines


def drops_json(lines: Sequence[DropLine], links: Sequence[LinkLine], *, state: StageState,
               reasons: bool, lost: int, link_errors: Mapping[int, str] = {}) -> dict:
    return {"stage": state_json(state), "reasons": reasons, "lost": lost,
            "rows": [d.as_dict() for d in lines],
            "devices": [x.as_dict() for x in links],
            "device_errors": {str(k): v for k, v in link_errors.items()}}
