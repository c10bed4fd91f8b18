"""`netprobe watch`: attach, then every interval read the counters and show the change."""
from __future__ import annotations

import json
import sys
import time
from datetime import datetime, timezone
from typing import Sequence

from .cli_options import write_ready_file
from .errors import NetprobeError
from .flowfilter import FlowFilter
from .kernel import require_root
from .report import DeviceSelector, active_rows, device_rows, protocol_rows, to_json


def run_watch(*, flow: FlowFilter, selector: DeviceSelector, prefer: Sequence[str],
              interval: float, count: int | None, duration: float | None, as_json: bool,
              show_all: bool, ready_file: str | None) -> None:
    require_root()
    from .session import ProbeSession

    with ProbeSession(flow=flow, prefer=prefer) as session:
        if not any(st.choice.available for st in session.status.values()):
            raise NetprobeError("no stage could be attached on this kernel: run `netprobe doctor`")
        before = session.read()
        write_ready_file(ready_file, session.mechanisms())
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
                if as_json:
                    obj = to_json(rows, prows, time=datetime.now(timezone.utc).isoformat(),
                                  seconds=seconds, mechanisms=session.mechanisms(),
                                  flow=flow.describe(), dropped=now.dropped,
                                  warnings=session.warnings)
                    print(json.dumps(obj), flush=True)
                else:
                    from .view import render

                    live.update(render(rows, prows, session.mechanisms(), flow=flow.describe(),
                                       seconds=seconds, dropped=now.dropped,
                                       warnings=session.warnings), refresh=True)
                before = now
                n += 1
                if (count and n >= count) or (deadline is not None and time.monotonic() >= deadline):
                    break
        except KeyboardInterrupt:
            pass
        finally:
            if live is not None:
                live.stop()
