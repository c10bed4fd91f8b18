"""A device's own drop counters as read from the kernel's link statistics (kernel/linkstats.py
reads them): the values the drop reports and the exporter show beside netprobe's drops."""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

COUNTERS = ("rx_dropped", "tx_dropped", "rx_missed_errors")


class LinkDrops(NamedTuple):
    netns: int
    ifindex: int
    name: str
    rx_dropped: int
    tx_dropped: int
    rx_missed_errors: int


@dataclass(frozen=True)
class LinkDropsRead:
    values: dict[tuple[int, int], LinkDrops]  # (netns, ifindex) ->
    errors: dict[int, str]                    # netns -> why it could not be read
