"""The drops section of `netprobe watch` (rich): where sk_buffs died this interval and since
start, then the devices' own drop counters."""
from __future__ import annotations

from typing import Sequence

from rich.console import Group
from rich.table import Table
from rich.text import Text

from ..model.catalogue import BY_NAME
from .dropreport import DropLine, LinkLine
from ..model.linkdrops import COUNTERS
from .report import human

# rows shown; the rest are summed in one line (--json has them all)
MAX_LINES = 12


def _where(netns_name: str, device: str) -> Text:
    t = Text(device)
    if netns_name != "root":
        t.append(f" @{netns_name}", style="dim")
    return t


def render_drops(lines: Sequence[DropLine], links: Sequence[LinkLine], *, reasons: bool,
                 lost: int, attached: bool, describe: str) -> Group:
    parts: list = []
    if not attached:
        return Group(Text(f"drops: {describe}", style="dim"))
    t = Table(box=None, pad_edge=False, header_style="bold", padding=(0, 1))
    # 80 columns: the reason and the rate whole, the device and the function cut first
    t.add_column("drops", no_wrap=True, max_width=18, overflow="ellipsis")
    t.add_column("stage", no_wrap=True)
    t.add_column("reason", no_wrap=True, min_width=14, max_width=22, overflow="ellipsis")
    t.add_column("freed in", no_wrap=True, max_width=20, overflow="ellipsis")
    t.add_column("/s (total)", justify="right", no_wrap=True, min_width=10)
    for d in lines[:MAX_LINES]:
        stage = BY_NAME[d.key.stage].title if d.key.stage in BY_NAME else d.key.stage
        t.add_row(_where(d.netns_name, d.device), stage, d.key.reason, d.key.function,
                  Text(f"{human(d.pps)} ", style="bold" if d.packets_delta else "")
                  .append(f"({human(d.packets)})", style="dim"))
    if len(lines) > MAX_LINES:
        rest = lines[MAX_LINES:]
        t.add_row(Text(f"{len(rest)} more rows", style="dim"), "", "", "",
                  Text(f"{human(sum(d.pps for d in rest))} ", style="dim")
                  .append(f"({human(sum(d.packets for d in rest))})", style="dim"))
    if not lines:
        t.add_row(Text("none yet", style="dim"), "", "", "", "")
    parts.append(t)
    if links:
        c = Table(box=None, pad_edge=False, header_style="bold", padding=(0, 1))
        c.add_column("device's own counters", no_wrap=True, max_width=30, overflow="ellipsis")
        for name in COUNTERS:
            c.add_column(name, justify="right", no_wrap=True)
        for x in links:
            c.add_row(_where(x.netns_name, x.link.name),
                      *[Text(human(getattr(x.link, n))).append(
                          f" +{human(x.deltas[n])}" if x.deltas[n] else "", style="bold")
                        for n in COUNTERS])
        parts.append(c)
    if not reasons:
        parts.append(Text("  this kernel gives no drop reasons (before 5.17, or no BTF): "
                          "where only", style="dim"))
    if lost:
        parts.append(Text(f"  {lost} drops not counted: drops map full", style="red"))
    return Group(*parts)
