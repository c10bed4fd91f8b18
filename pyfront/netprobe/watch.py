"""`netprobe watch`: attach, then every interval read the counters and show the change."""
from __future__ import annotations

import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

from .errors import NetprobeError
from .flowfilter import FlowFilter
from .kernel import require_root
from .latreport import Names, interval_rows
from .latreport import to_json as latency_json
from .report import DeviceSelector, active_rows, device_rows, protocol_rows, to_json
from .stagestate import to_json as state_json


def run_watch(*, flow: FlowFilter, selector: DeviceSelector, prefer: Sequence[str],
              interval: float, count: int | None, duration: float | None, as_json: bool,
              show_all: bool, ready_file: str | None, latency: bool = False,
              sample: int = 1) -> None:
    require_root()
    from .programsets import COUNTING, LATENCY
    from .session import ProbeSession

    sets = (COUNTING, LATENCY) if latency else (COUNTING,)
    with ProbeSession(flow=flow, prefer=prefer, sets=sets, sample=sample) as session:
        if not any(st.attached for st in session.states.values()):
            raise NetprobeError("no stage could be attached on this kernel: run `netprobe doctor`")
        before = session.read()
        lat_before = session.read_latency() if latency else None
        if ready_file:
            Path(ready_file).write_text(json.dumps(
                {name: state_json(st) for name, st in session.states.items()}))
        deadline = time.monotonic() + duration if duration else None
        console = live = None
        if not as_json:
            from rich.console import Console
            from rich.live import Live

            console = Console()
            live = Live(console=console, auto_refresh=False, transient=False)
            live.start()
            if not console.is_terminal:
                print("Tracing... Ctrl-C to end.", file=sys.stderr)
        try:
            n = 0
            while True:
                wait = interval
                if deadline is not None:
                    wait = min(wait, max(0.0, deadline - time.monotonic()))
                time.sleep(wait)
                session.refresh()
                now = session.read()
                seconds = now.at - before.at
                names = {ns.inum: ns.name for ns in session.namespaces.values()}
                rows = device_rows(now.values, before.values, seconds, session.devices,
                                   selector, names)
                if not show_all:
                    rows = active_rows(rows)
                prows = protocol_rows(now.values, before.values, seconds, names)
                lat = session.read_latency() if latency else None
                if lat is not None:
                    lat_rows = interval_rows(lat, lat_before, Names(session.devices, names),
                                             selector.wants)
                if as_json:
                    obj = to_json(rows, prows, time=datetime.now(timezone.utc).isoformat(),
                                  seconds=seconds, states=session.states,
                                  flow=flow.describe(), dropped=now.dropped,
                                  warnings=session.warnings)
                    if lat is not None:
                        obj["latency"] = latency_json(lat, *lat_rows)
                    print(json.dumps(obj), flush=True)
                else:
                    from .view import render

                    view = render(rows, prows, session.states, flow=flow.describe(),
                                  seconds=seconds, dropped=now.dropped, warnings=session.warnings)
                    if lat is not None:
                        from rich.console import Group

                        from .latview import render_latency
                        view = Group(view, render_latency(lat, *lat_rows))
                    live.update(view, refresh=True)
                before, lat_before = now, lat
                n += 1
                if (count and n >= count) or (deadline is not None and time.monotonic() >= deadline):
                    break
        except KeyboardInterrupt:
            pass
        finally:
            if live is not None:
                live.stop()

