"""Options and set-up that several commands share (watch, export, prove, peer), each defined
once: the flow filter, --prefer, --ebpf, --ready-file, the checked number types, and what
SIGTERM does. Kept apart from cli.py, which imports every command module, so that those modules
can import these.

Every check here runs while click parses the command line, so bad input is one line and exit 2
before anything is compiled, loaded or attached."""
from __future__ import annotations

import json
import math
import os
import signal
import tempfile
from pathlib import Path

import click

from ..model.catalogue import MECHANISMS, RAW_TRACEPOINT
from ..model.flowfilter import PROTOCOLS, FlowFilter

# "tracepoint", the name BCC's users know, is an alias of raw_tracepoint and listed beside it
PREFER_CHOICES = tuple(name for m in MECHANISMS
                       for name in ((m, "tracepoint") if m == RAW_TRACEPOINT else (m,)))


# -- numbers -----------------------------------------------------------------------------------
class Seconds(click.ParamType):
    """A finite number of seconds within [low, high]. click.FloatRange lets nan through (every
    comparison with nan is false) and inf or 1e308 overflow time.sleep() once the probes are
    attached."""
    name = "SECONDS"

    def __init__(self, low: float, high: float):
        self.low, self.high = low, high

    def convert(self, value, param, ctx):
        try:
            seconds = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number of seconds", param, ctx)
        if not math.isfinite(seconds) or not self.low <= seconds <= self.high:
            self.fail(f"{value} is not a number of seconds from {self.low:g} to {self.high:g}",
                      param, ctx)
        return seconds


DAY_S = 24 * 3600
INTERVAL = Seconds(0.1, DAY_S)
DURATION = Seconds(0.1, 366 * DAY_S)


# -- options -----------------------------------------------------------------------------------
def prefer_option(f):
    return click.option("--prefer", type=click.Choice(PREFER_CHOICES), multiple=True,
                        help="Try this attach mechanism first for every stage (repeatable).")(f)


def ebpf_option(f):
    return click.option("--ebpf", is_flag=True,
                        help="Print the generated BPF C and exit.")(f)


def ready_file_option(what: str):
    """--ready-file, hidden: for tests and scripts. `what` says what JSON is written there."""
    return click.option("--ready-file", type=click.Path(dir_okay=False), hidden=True,
                        callback=_check_ready_file,
                        help=f"Once ready, write {what} here as JSON (for tests and scripts).")


def filter_options(f):
    """--proto/--port/--host: the in-kernel flow filter (watch, export, trace)"""
    f = click.option("--host", metavar="ADDR", help="Count only packets from or to this IPv4/IPv6 address.")(f)
    f = click.option("--port", type=int, metavar="N", help="Count only TCP/UDP packets with this port on either side.")(f)
    f = click.option("--proto", type=click.Choice(sorted(PROTOCOLS)), help="Count only this protocol.")(f)
    return f


def flow_options(f):
    """--proto/--port/--host, --device/--exclude-device and --prefer, shared by watch and export."""
    f = click.option("--exclude-device", "exclude_device", multiple=True, metavar="GLOB",
                     help="Hide devices whose name matches (repeatable).")(f)
    f = click.option("--device", "device", multiple=True, metavar="GLOB",
                     help="Show only devices whose name matches, e.g. 'lo' or 'veth*' (repeatable).")(f)
    return prefer_option(filter_options(f))


def latency_options(f):
    """--latency and --sample, shared by watch and export."""
    f = click.option("--sample", type=click.IntRange(min=1), default=1, metavar="N",
                     help="With --latency: follow one flow in N, chosen in the kernel by a hash "
                          "of its addresses and ports (counts stay exact).")(f)
    f = click.option("--latency", is_flag=True,
                     help="Also time each hop between stages and count the paths skbs take.")(f)
    return f


def latency_sets(latency: bool, sample: int):
    """The program sets for --latency/--sample; --sample alone is a usage error"""
    from ..model.programsets import COUNTING, DROPS, LATENCY

    if sample > 1 and not latency:
        raise click.UsageError("--sample applies to --latency")
    return (COUNTING, DROPS, LATENCY) if latency else (COUNTING, DROPS)


def make_flow(proto, port, host) -> FlowFilter:
    return FlowFilter(proto, port, host)


def prefer_order(prefer) -> tuple[str, ...]:
    return tuple("raw_tracepoint" if p == "tracepoint" else p for p in prefer)


def print_program(flow: FlowFilter, sets=None, sample: int = 1) -> None:
    """--ebpf: the C that would be loaded (the counting commands' sets unless told), with its
    flags; nothing is loaded."""
    from ..kernel.facts import Kernel
    from ..kernel.program import build
    from ..model.programsets import COUNTING_COMMANDS, INVENTORY

    sets = COUNTING_COMMANDS if sets is None else (INVENTORY, *sets)
    click.echo(build(Kernel(), flow, sets, sample=sample).render())


# -- the ready-file --------------------------------------------------------------------------
def _check_ready_file(ctx, param, value):
    """Its directory must take a new file now, not only once the probes are attached."""
    if value is None:
        return None
    path = Path(value)  # click.Path(dir_okay=False) has turned a directory down
    try:
        # a real create, not os.access(): root passes access() on read-only places like /proc
        with tempfile.NamedTemporaryFile(dir=path.parent or ".", prefix=".netprobe-check-"):
            pass
    except OSError as e:
        raise click.BadParameter(f"cannot create a file in {path.parent}/: "
                                 f"{e.strerror or e}", ctx, param) from None
    return value


def write_ready_file(path: str | None, obj) -> None:
    """Write obj as JSON, whole: written beside and renamed into place, so a reader that polls
    for the file never reads half of it."""
    if not path:
        return
    target = Path(path)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f)
        os.replace(tmp, target)
    except BaseException:
        os.unlink(tmp)
        raise


# -- signals -----------------------------------------------------------------------------------
class Terminated(BaseException):
    """SIGTERM, raised where the process is, so it unwinds like Ctrl-C: every `with` closes, so
    every probe, link and namespace netprobe made is removed on the way out. Not a
    KeyboardInterrupt: click would answer that with an empty line on stderr; cli.main() ends
    it with exit 0, and `prove` with 143."""


def _raise_terminated(signum, frame):
    raise Terminated()


def sigterm_unwinds() -> None:
    """The one SIGTERM policy of every long-running command (watch, export, prove, peer)."""
    signal.signal(signal.SIGTERM, _raise_terminated)
