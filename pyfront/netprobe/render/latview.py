"""The latency tables of `netprobe watch --latency` (rich): hops per device with p50/p99,
then the paths seen."""
from __future__ import annotations

from typing import Sequence

from rich.console import Group
from rich.table import Table
from rich.text import Text

from ..model.latency import Latency
from .latreport import HopRow, PathRow, human_ns
from .report import human

MAX_PATHS = 10


def render_latency(lat: Latency, hops: Sequence[HopRow], paths: Sequence[PathRow]) -> Group:
    sampled = f", one flow in {lat.sample} followed" if lat.sample > 1 else ""
    t = Table(box=None, pad_edge=False, header_style="bold", padding=(0, 1),
              title=f"latency per hop, this interval{sampled}", title_justify="left")
    for col, just in (("device", "left"), ("from", "left"), ("to", "left"), ("skbs", "right"),
                      ("p50", "right"), ("p99", "right")):
        t.add_column(col, justify=just, no_wrap=True)
    for r in hops:
        name = Text(r.device)
        if r.netns_name != "root":
            name.append(f" @{r.netns_name}", style="dim")
        style = "bold" if r.key.span else ""
        t.add_row(name, Text(r.key.src + (" ⇒" if r.key.span else ""), style=style),
                  Text(r.key.dst, style=style), human(r.hist.count),
                  human_ns(r.hist.quantile(0.5)), human_ns(r.hist.quantile(0.99)))
    p = Table(box=None, pad_edge=False, header_style="bold", padding=(0, 1))
    p.add_column("skbs", justify="right", no_wrap=True)
    p.add_column("end", no_wrap=True)
    p.add_column("path")
    for r in paths[:MAX_PATHS]:
        where = f" @{r.netns_name}" if r.netns_name != "root" else ""
        p.add_row(human(r.packets), r.end, Text(r.text + where))
    foot = Text("⇒ end to end, from the path's first stage   ", style="dim")
    if len(paths) > MAX_PATHS:
        foot.append(f"{len(paths) - MAX_PATHS} more paths   ", style="dim")
    other = sum(lat.other.values())
    if other:
        foot.append(f"{other} paths without steps (census full)   ", style="yellow")
    if lat.evicted or lat.stats["hops_lost"]:
        foot.append(f"{lat.evicted} skbs evicted in flight, {lat.stats['hops_lost']} hop times "
                    "lost (tables full)", style="yellow")
    return Group(t, p, foot)
