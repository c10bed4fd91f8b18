"""Turning two reads of the counters into rows: per device and per protocol, totals and rates.
Pure logic (no kernel), shared by `watch`, the JSON output and the exporter's tests."""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

from ..model.catalogue import DEVICE_STAGES, PROTOCOL_STAGES, STAGES
from ..model.devices import Device
from ..model.stagestate import StageState, to_json as state_json, unavailable


@dataclass(frozen=True)
class Cell:
    packets: int
    bytes: int
    packets_delta: int
    bytes_delta: int
    seconds: float

    @property
    def pps(self) -> float:
        return self.packets_delta / self.seconds if self.seconds > 0 else 0.0

    @property
    def bps(self) -> float:
        return self.bytes_delta / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict:
        return {"packets": self.packets, "bytes": self.bytes, "packets_delta": self.packets_delta,
                "bytes_delta": self.bytes_delta, "pps": round(self.pps, 1),
                "bytes_per_s": round(self.bps, 1)}


@dataclass
class DeviceRow:
    device: Device
    cells: dict[str, Cell] = field(default_factory=dict)

    @property
    def active(self) -> bool:
        return any(c.packets for c in self.cells.values())


@dataclass
class ProtocolRow:
    netns: int
    netns_name: str
    protocol: str
    cells: dict[str, Cell] = field(default_factory=dict)


@dataclass(frozen=True)
class DeviceSelector:
    """--device / --exclude-device glob patterns on the device name."""
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    def wants(self, name: str) -> bool:
        if self.include and not any(fnmatch.fnmatchcase(name, p) for p in self.include):
            return False
        return not any(fnmatch.fnmatchcase(name, p) for p in self.exclude)


def _cell(now: Mapping, before: Mapping, key, seconds: float) -> Cell:
    p, b = now.get(key, (0, 0))
    p0, b0 = before.get(key, (0, 0))
    # a row deleted in between (device gone) restarts from zero rather than going negative
    if p < p0:
        p0 = b0 = 0
    return Cell(p, b, p - p0, b - b0, seconds)


def device_rows(now: Mapping, before: Mapping, seconds: float, devices: Mapping[tuple[int, int], Device],
                selector: DeviceSelector = DeviceSelector(),
                netns_names: Mapping[int, str] = {}) -> list[DeviceRow]:
    keys = {(ns, ifx) for (ns, ifx, st) in now if ifx}
    keys |= set(devices)
    rows = []
    for ns, ifx in keys:
        dev = devices.get((ns, ifx)) or Device(ns, ifx, f"if{ifx}", "", False, "", 0,
                                               netns_names.get(ns, f"ns:{ns}"))
        if not selector.wants(dev.name):
            continue
        row = DeviceRow(dev, {s.name: _cell(now, before, (ns, ifx, s.name), seconds)
                              for s in DEVICE_STAGES})
        rows.append(row)
    rows.sort(key=lambda r: (r.device.netns_name != "root", r.device.netns_name,
                             r.device.ifindex))
    return rows


def protocol_rows(now: Mapping, before: Mapping, seconds: float,
                  netns_names: Mapping[int, str] = {}) -> list[ProtocolRow]:
    rows = []
    for ns in sorted({ns for (ns, ifx, st) in now if ifx == 0}):
        for stage in PROTOCOL_STAGES:
            key = (ns, 0, stage.name)
            if key in now:
                rows.append(ProtocolRow(ns, netns_names.get(ns, f"ns:{ns}"), stage.protocol or "",
                                        {stage.name: _cell(now, before, key, seconds)}))
    return rows


def to_json(rows: Sequence[DeviceRow], prows: Sequence[ProtocolRow], *, time: str,
            seconds: float, states: Mapping[str, StageState], flow: str, dropped: int,
            warnings: Sequence[str] = ()) -> dict:
    return {
        "time": time,
        "interval_s": round(seconds, 3),
        "filter": flow,
        "stages": [state_json(states.get(s.name) or unavailable(s)) for s in STAGES],
        "devices": [{
            "netns": r.device.netns, "netns_name": r.device.netns_name,
            "ifindex": r.device.ifindex, "name": r.device.name, "driver": r.device.driver,
            "kind": r.device.kind, "xmit": r.device.xmit,
            "stages": {k: c.as_dict() for k, c in r.cells.items()},
        } for r in rows],
        "protocols": [{
            "netns": r.netns, "netns_name": r.netns_name, "protocol": r.protocol,
            "stages": {k: c.as_dict() for k, c in r.cells.items()},
        } for r in prows],
        "dropped": dropped,
        "warnings": list(warnings),
    }


def human(n: float) -> str:
    """12 / 1.2k / 34.5M: fits a narrow column."""
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= div:
            v = n / div
            return f"{v:.1f}{unit}" if v < 100 else f"{v:.0f}{unit}"
    return f"{n:.0f}"


def active_rows(rows: Iterable[DeviceRow], keep_netns: str = "root") -> list[DeviceRow]:
    """Rows worth showing: any device that counted something, and every device of the root
    namespace (so a quiet NIC is visibly still)."""
    return [r for r in rows if r.active or r.device.netns_name == keep_netns]
