"""The kernel-facing half of `netprobe prove`: build the throw-away namespaces → attach one
ProbeSession that counts only prove's port → per flow: send, read the counters → judge → tear
down, on every way out (an error, Ctrl-C, SIGTERM).

One session serves every case: compiling the probes is the slow step (about 1 s here, a minute
under emulation), so the port filter is compiled once and the cases run one after another, each
flow measured as the difference of two reads.
"""
from __future__ import annotations

import json
import os
import signal
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Callable, Sequence

from ..errors import NetprobeError
from ..model.flowfilter import FlowFilter
from ..kernel.facts import require_root
from ..model.programsets import COUNTING, DROPS, LATENCY
from ..render.latreport import Names, path_rows
from ..model.prove import (CaseResult, FlowPlan, FlowResult, Peer, Report, flow_counts, judge,
                           plan_cases)
from ..model.stagestate import to_json as state_json
from ..kernel.topology import VethPair
from ..kernel.traffic import tcp_echo, tcp_flow, udp_echo, udp_flow

TCP_BYTES = 512 * 1024      # a few hundred sk_buffs on lo, more on a veth (smaller segments)
TCP_CHUNK = 4096
UDP_COUNT = 128
UDP_SIZE = 512
PEER_TCP_BYTES = 64 * 1024  # echoed back over a real link, maybe through an emulated NIC
# A flow is over when the counters stop moving: the last ACK or FIN can still be on its way when
# the sockets are closed.
SETTLE_S = 0.05
SETTLE_MAX_S = 1.0


@contextmanager
def signals_deferred():
    """Ctrl-C and SIGTERM wait until the block is done, then take effect: making and deleting
    the namespaces is never cut off half-way (which would leave one behind)."""
    pending: list[int] = []
    sigs = (signal.SIGINT, signal.SIGTERM)
    old = {s: signal.signal(s, lambda signum, frame: pending.append(signum)) for s in sigs}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
        if pending:
            signal.raise_signal(pending[0])


def run_prove(*, port: int, peer: Peer | None = None, prefer: Sequence[str] = (),
              ready_file: str | None = None,
              on_start: Callable[[Report], None] | None = None,
              on_case: Callable[[Report], None] | None = None) -> Report:
    """Run every case; `on_start` is called once the probes are attached, `on_case` after
    each case with its verdict appended to the report."""
    require_root()
    from .prove_drops_run import run_drop_case
    from ..kernel.session import ProbeSession

    t0 = time.monotonic()
    stack = ExitStack()
    try:
        with signals_deferred():
            try:
                pair = stack.enter_context(VethPair.create())
            except NetprobeError as e:
                raise NetprobeError(f"building the test namespaces: {e}") from None
        pair.wait_up()
        # the latency set too: each claim also states the path its packets took (a kernel
        # that refuses its programs leaves it off, with a warning, and the paths unstated)
        session = stack.enter_context(ProbeSession(flow=FlowFilter(port=port), prefer=prefer,
                                                   sets=(COUNTING, DROPS, LATENCY)))
        report = Report(port, dict(session.states), namespaces=pair.namespaces,
                        veth=(pair.a.dev, pair.b.dev), peer=peer, warnings=session.warnings)
        if ready_file:
            Path(ready_file).write_text(json.dumps({"namespaces": list(pair.namespaces),
                                                    "stages": {n: state_json(st) for n, st
                                                               in report.states.items()}}))
        if on_start:
            on_start(report)
        before = settled(session.read)
        own = os.stat("/proc/thread-self/ns/net").st_ino
        names = {ns.inum: ns.name for ns in session.namespaces.values()}
        own_name = names.get(own, f"ns:{own}")
        for case in plan_cases(pair.a, pair.b, peer, own_name):
            client_ns = case.flows[0].client_ns
            results = []
            for fp in case.flows:
                epoch = session.begin_epoch() if session.follows_paths else None
                sent, arrived, error, note = _send(fp, port)
                now = settled(session.read)
                devs, l4 = flow_counts(before.values, now.values, session.devices, names)
                results.append(FlowResult(fp, devs, l4, sent, arrived, error, note,
                                          _paths(session, epoch, names)))
                before = now
            client = os.stat(client_ns).st_ino if client_ns else own
            report.verdicts.append(judge(CaseResult(case, client, tuple(results)),
                                         report.states))
            if on_case:
                on_case(report)
        report.verdicts.append(run_drop_case(session, pair, port))
        if on_case:
            on_case(report)
        report.seconds = time.monotonic() - t0
        return report
    finally:
        with signals_deferred():
            stack.close()


def _paths(session, epoch: int | None, names) -> tuple[tuple[str, str, int], ...]:
    if epoch is None:
        return ()
    rows = path_rows(session.paths_of(epoch), Names(session.devices, names))
    return tuple((r.text, r.end, r.packets) for r in rows)


def settled(read):
    """The counters once they stop moving: `read` (session.read, session.read_drops) again
    until two reads agree"""
    last = read()
    deadline = time.monotonic() + SETTLE_MAX_S
    while time.monotonic() < deadline:
        time.sleep(SETTLE_S)
        now = read()
        if now.values == last.values:
            return now
        last = now
    return last


def _send(fp: FlowPlan, port: int) -> tuple[int, int, str, str]:
    """Run one flow: (sent, arrived, error, note). Sent and arrived are bytes for TCP and
    datagrams for UDP; for an echo peer, arrived is what came back."""
    tcp = fp.proto == "tcp"
    sent = (PEER_TCP_BYTES if fp.echo else TCP_BYTES) if tcp else UDP_COUNT
    try:
        if fp.echo and tcp:
            arrived = tcp_echo(server_addr=fp.server, port=port, nbytes=sent, chunk=TCP_CHUNK)
        elif fp.echo:
            sent, arrived = udp_echo(server_addr=fp.server, port=port, count=sent, size=UDP_SIZE)
        elif tcp:
            arrived = tcp_flow(server_addr=fp.server, port=port, nbytes=sent, chunk=TCP_CHUNK,
                               server_ns=fp.server_ns, client_ns=fp.client_ns)
        else:
            arrived = udp_flow(server_addr=fp.server, port=port, count=sent, size=UDP_SIZE,
                               server_ns=fp.server_ns, client_ns=fp.client_ns)
    except OSError as e:
        hint = "is `netprobe peer` running there, and the port open?" if fp.echo else ""
        return sent, 0, e.strerror or str(e) or type(e).__name__, hint
    if fp.echo and not tcp and arrived == 0:
        return sent, 0, "", (f"no UDP echo came back after {sent} datagrams, so no more were "
                             "sent; the ones sent are counted (a TCP-only echo peer? "
                             "--peer-proto tcp skips UDP)")
    if arrived < sent:
        unit = "bytes" if tcp else "datagrams"
        verb = "came back" if fp.echo else "arrived"
        return sent, arrived, "", f"{arrived:,} of {sent:,} {unit} {verb}"
    return sent, arrived, "", ""
