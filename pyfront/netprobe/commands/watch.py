"""`netprobe watch`: attach, then every interval read the counters and show the change."""
from __future__ import annotations

import fnmatch
import json
import sys
import time
from datetime import datetime, timezone
from typing import Iterable, Sequence

from .cli_options import write_ready_file
from ..model.devices import Device
from ..errors import NetprobeError
from ..model.flowfilter import FlowFilter
from ..kernel.facts import Kernel, require_root, require_trusted_layouts
from ..render.latreport import Names, interval_rows
from ..render.latreport import to_json as latency_json
from ..render.report import DeviceSelector, active_rows, device_rows, protocol_rows, to_json
from ..model.stagestate import to_json as state_json

# how many existing device names a warning lists before "and N more"
NAMES_SHOWN = 12


def unmatched_device_warnings(patterns: Sequence[str], devices: Iterable[Device]) -> list[str]:
    """One warning per --device pattern that matches no device now, naming what exists. The
    pattern stays: a device that appears later (a veth not made yet) is shown from then on."""
    devices = list(devices)
    missing = [p for p in patterns if not any(fnmatch.fnmatchcase(d.name, p) for d in devices)]
    if not missing:
        return []
    names = sorted({d.name if d.netns_name in ("root", "") else f"{d.name}@{d.netns_name}"
                    for d in devices}, key=lambda n: ("@" in n, n))
    shown = ", ".join(names[:NAMES_SHOWN])
    if len(names) > NAMES_SHOWN:
        shown += f" and {len(names) - NAMES_SHOWN} more"
    return [f"--device {p!r} matches no device (waiting for one to appear); devices: "
            f"{shown or 'none'}" for p in missing]


def run_watch(*, flow: FlowFilter, selector: DeviceSelector, prefer: Sequence[str],
              interval: float, count: int | None, duration: float | None, as_json: bool,
              show_all: bool, ready_file: str | None, latency: bool = False,
              sample: int = 1) -> None:
    require_root()
    kernel = Kernel()
    require_trusted_layouts(kernel)
    from .dropwatch import DropWatch
    from ..model.programsets import COUNTING, DROPS, LATENCY
    from ..kernel.session import ProbeSession

    sets = (COUNTING, DROPS, LATENCY) if latency else (COUNTING, DROPS)
    with ProbeSession(flow=flow, prefer=prefer, sets=sets, sample=sample,
                      kernel=kernel) as session:
        if not any(st.attached for st in session.states.values()):
            raise NetprobeError("no stage could be attached on this kernel: run `netprobe doctor`")
        before = session.read()
        lat_before = session.read_latency() if latency else None
        drops = DropWatch(session, selector)
        write_ready_file(ready_file, {name: state_json(st) for name, st in session.states.items()})
        deadline = time.monotonic() + duration if duration else None
        console = live = None
        if not as_json:
            from rich.console import Console
            from rich.live import Live

            console = Console()
            if console.is_terminal:
                live = Live(console=console, auto_refresh=False, transient=False)
                live.start()
            else:
                # piped or redirected: every interval is printed in turn, as BCC's tools do
                # (a Live display would print only the last)
                print("Tracing... Ctrl-C to end.", file=sys.stderr, flush=True)
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
                warnings = [*session.warnings,
                            *unmatched_device_warnings(selector.include, session.devices.values())]
                drops.update(seconds, names)
                lat = session.read_latency() if latency else None
                if lat is not None:
                    lat_rows = interval_rows(lat, lat_before, Names(session.devices, names),
                                             selector.wants)
                if as_json:
                    obj = to_json(rows, prows, time=datetime.now(timezone.utc).isoformat(),
                                  seconds=seconds, states=session.states,
                                  flow=flow.describe(), dropped=now.dropped,
                                  warnings=warnings)
                    obj["drops"] = drops.json()
                    if lat is not None:
                        obj["latency"] = latency_json(lat, *lat_rows)
                    print(json.dumps(obj), flush=True)
                else:
                    from ..render.view import render

                    frame = render(rows, prows, session.states, flow=flow.describe(),
                                   seconds=seconds, dropped=now.dropped, warnings=warnings,
                                   at=None if live else datetime.now().strftime("%H:%M:%S"),
                                   list_mechanisms=live is not None or n == 0,
                                   sections=[drops.render()])
                    if lat is not None:
                        from rich.console import Group

                        from ..render.latview import render_latency
                        frame = Group(frame, render_latency(lat, *lat_rows))
                    if live is not None:
                        live.update(frame, refresh=True)
                    else:
                        console.print(frame)
                        console.file.flush()
                before, lat_before = now, lat
                n += 1
                if (count and n >= count) or (deadline is not None and time.monotonic() >= deadline):
                    break
        except KeyboardInterrupt:
            pass
        finally:
            if live is not None:
                live.stop()

