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
from .report import DeviceSelector, active_rows, device_rows, protocol_rows, to_json
from .stagestate import to_json as state_json


def run_watch(*, flow: FlowFilter, selector: DeviceSelector, prefer: Sequence[str],
              interval: float, count: int | None, duration: float | None, as_json: bool,
              show_all: bool, ready_file: str | None) -> None:
    require_root()
    from .dropwatch import DropWatch
    from .programsets import COUNTING, DROPS
    from .session import ProbeSession

    with ProbeSession(flow=flow, prefer=prefer, sets=(COUNTING, DROPS)) as session:
        if not any(st.attached for st in session.states.values()):
            raise NetprobeError("no stage could be attached on this kernel: run `netprobe doctor`")
        before = session.read()
        drops = DropWatch(session, selector)
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
                drops.update(seconds, names)
                if as_json:
                    obj = to_json(rows, prows, time=datetime.now(timezone.utc).isoformat(),
                                  seconds=seconds, states=session.states,
                                  flow=flow.describe(), dropped=now.dropped,
                                  warnings=session.warnings)
                    obj["drops"] = drops.json()
                    print(json.dumps(obj), flush=True)
                else:
                    from .view import render

                    live.update(render(rows, prows, session.states, flow=flow.describe(),
                                       seconds=seconds, dropped=now.dropped,
                                       warnings=session.warnings, sections=[drops.render()]),
                                refresh=True)
                before = now
                n += 1
                if (count and n >= count) or (deadline is not None and time.monotonic() >= deadline):
                    break
        except KeyboardInterrupt:
            pass
        finally:
            if live is not None:
                live.stop()
