"""The live table of `netprobe watch` (rich): devices as rows, stages as columns."""
from __future__ import annotations

from typing import Mapping, Sequence

from rich.console import Group
from rich.table import Table
from rich.text import Text

from ..model.catalogue import DEVICE_STAGES
from .report import DeviceRow, ProtocolRow, human
from ..model.stagestate import StageState


def render(rows: Sequence[DeviceRow], prows: Sequence[ProtocolRow], states: Mapping[str, StageState],
           *, flow: str, seconds: float, dropped: int, warnings: Sequence[str] = (),
           at: str | None = None, list_mechanisms: bool = True, sections: Sequence = ()) -> Group:
    """One interval. `at` (a time of day) is given when the intervals are printed one after
    another (piped output): it heads the table, and the "Tracing..." line, said once on stderr
    then, is left out; so is the list of stage mechanisms after the first table. `sections`:
    what other features show between the tables and the footer (drops)."""
    title = f"netprobe — {flow} — per {seconds:.1f}s: packets/s (total)"
    if at:
        title = f"{at} {title}"
    t = Table(box=None, pad_edge=False, header_style="bold", padding=(0, 1),
              title=title, title_justify="left")
    t.add_column("device", no_wrap=True)
    t.add_column("xmit fn", no_wrap=True, max_width=14, overflow="ellipsis")
    for s in DEVICE_STAGES:
        t.add_column(s.title, justify="right", no_wrap=True)
    for r in rows:
        d = r.device
        name = Text(d.name, style="bold yellow" if d.physical else "")
        if d.physical:
            name.append(" ●", style="yellow")
        if d.netns_name != "root":
            name.append(f" @{d.netns_name}", style="dim")
        cells = []
        for s in DEVICE_STAGES:
            c = r.cells[s.name]
            if s.name in states and not states[s.name].attached:
                cells.append(Text("n/a", style="dim"))
            elif c.packets == 0:
                cells.append(Text("·", style="dim"))
            else:
                cells.append(Text(f"{human(c.pps)}\n", style="bold" if c.packets_delta else "")
                             .append(f"({human(c.packets)})", style="dim"))
        t.add_row(name, Text(d.xmit or "?", style="cyan"), *cells)
    parts: list = [t]
    if prows:
        p = Table(box=None, pad_edge=False, header_style="bold", padding=(0, 1))
        p.add_column("L4 send", no_wrap=True)
        p.add_column("calls/s (total)", justify="right")
        p.add_column("bytes/s", justify="right")
        for r in prows:
            for c in r.cells.values():
                p.add_row(f"{r.protocol} @{r.netns_name}", f"{human(c.pps)} ({human(c.packets)})",
                          human(c.bps))
        parts.append(p)
    parts += sections
    foot = Text("● physical NIC" + ("   stage mechanisms:" if list_mechanisms else "") + "\n",
                style="dim")
    for name, st in states.items() if list_mechanisms else ():
        foot.append(f"  {name:<18} {st.describe()}\n", style="dim")
    if dropped:
        foot.append(f"  {dropped} hits not counted: counts map full\n", style="red")
    for w in warnings:
        foot.append(f"  ! {w}\n", style="yellow")
    if at is None:
        foot.append("Tracing... Ctrl-C to end.", style="dim")
    parts.append(foot)
    return Group(*parts)
