"""What a device is: name, driver, physical or virtual, and the driver's transmit function.

Built from the kernel's own view (probes/netdev_walk.c), which works for devices in every
namespace; sysfs would only show the namespace netprobe runs in."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

IFF_LOOPBACK = 0x8


@dataclass(frozen=True)
class Device:
    netns: int
    ifindex: int
    name: str
    driver: str
    physical: bool
    xmit: str          # "loopback_xmit", "start_xmit [virtio_net]", "" when unknown
    xmit_addr: int
    netns_name: str = ""
    addr: int = 0      # the struct net_device's address (identity within one kernel run)
    cookie: int = 0    # its namespace's net_cookie, never reused (an inode number is)

    @property
    def key(self) -> tuple[int, int]:
        return (self.netns, self.ifindex)

    @property
    def kind(self) -> str:
        return "physical" if self.physical else "virtual"


@dataclass(frozen=True)
class WalkRecord:
    """One row of probes/netdev_walk.c's netdev_table."""
    netns: int
    ifindex: int
    flags: int
    physical: bool
    name: str
    kind: str
    driver: str
    xmit: int
    addr: int = 0
    cookie: int = 0


def describe(rec: WalkRecord, symbolize: Callable[[int], object | None],
             netns_name: str = "") -> Device:
    if rec.physical and rec.driver:
        driver = rec.driver
    elif rec.kind:
        driver = rec.kind
    elif rec.flags & IFF_LOOPBACK:
        driver = "loopback"
    else:
        driver = ""
    sym = symbolize(rec.xmit) if rec.xmit else None
    xmit = str(sym) if sym else (f"0x{rec.xmit:x}" if rec.xmit else "")
    return Device(rec.netns, rec.ifindex, rec.name, driver, rec.physical, xmit, rec.xmit,
                  netns_name, rec.addr, rec.cookie)


def xmit_functions(devices: Iterable[Device]) -> dict[str, list[Device]]:
    """Each distinct ndo_start_xmit symbol and the devices that use it."""
    out: dict[str, list[Device]] = {}
    for d in devices:
        if d.xmit and not d.xmit.startswith("0x"):
            out.setdefault(d.xmit, []).append(d)
    return out
