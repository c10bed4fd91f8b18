"""Options and set-up that several commands share (watch, export, prove): kept apart from
cli.py, which imports every command module, so that those modules can import these."""
from __future__ import annotations

import signal

import click

from .flowfilter import PROTOCOLS, FlowFilter

PREFER_CHOICES = ("kprobe", "tp_btf", "raw_tracepoint", "tracepoint", "netfilter")


def flow_options(f):
    """--proto/--port/--host and --device/--exclude-device, shared by watch and export."""
    f = click.option("--exclude-device", "exclude_device", multiple=True, metavar="GLOB",
                     help="Hide devices whose name matches (repeatable).")(f)
    f = click.option("--device", "device", multiple=True, metavar="GLOB",
                     help="Show only devices whose name matches, e.g. 'lo' or 'veth*' (repeatable).")(f)
    f = click.option("--host", metavar="ADDR", help="Count only packets from or to this IPv4/IPv6 address.")(f)
    f = click.option("--port", type=int, metavar="N", help="Count only TCP/UDP packets with this port on either side.")(f)
    f = click.option("--proto", type=click.Choice(sorted(PROTOCOLS)), help="Count only this protocol.")(f)
    f = click.option("--prefer", type=click.Choice(PREFER_CHOICES), multiple=True,
                     help="Try this attach mechanism first for every stage (repeatable).")(f)
    return f


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
    from .programsets import COUNTING, LATENCY

    if sample > 1 and not latency:
        raise click.UsageError("--sample applies to --latency")
    return (COUNTING, LATENCY) if latency else (COUNTING,)


def make_flow(proto, port, host) -> FlowFilter:
    return FlowFilter(proto, port, host)


def prefer_order(prefer) -> tuple[str, ...]:
    return tuple("raw_tracepoint" if p == "tracepoint" else p for p in prefer)


def _sigterm_exits() -> None:
    """SIGTERM unwinds like Ctrl-C, so every probe is detached on the way out."""
    def handler(signum, frame):
        raise SystemExit(0)
    signal.signal(signal.SIGTERM, handler)
