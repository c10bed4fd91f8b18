"""`netprobe`: the command line. Each command's docstring is its help."""
from __future__ import annotations

import sys

import click

from .. import __version__
from .cli_options import (DURATION, INTERVAL, ebpf_option, flow_options, latency_options,
                          latency_sets, make_flow, Terminated, prefer_order, print_program,
                          ready_file_option, sigterm_unwinds)
from ..errors import NetprobeError, one_line
from ..render.report import DeviceSelector


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="netprobe")
def cli():
    """Count the sk_buffs that cross each stage of the Linux network stack, per device."""


@cli.command()
@flow_options
@click.option("-i", "--interval", type=INTERVAL, default=1.0, show_default=True,
              help="Seconds between refreshes (0.1 to 86400).")
@click.option("-c", "--count", type=click.IntRange(min=1), help="Stop after this many intervals.")
@click.option("-d", "--duration", type=DURATION, help="Stop after this many seconds.")
@click.option("--once", is_flag=True, help="Print one interval and exit (not with --count or --duration).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per interval on stdout.")
@click.option("--all", "show_all", is_flag=True, help="Show quiet devices of every namespace too.")
@ready_file_option("the stage mechanisms")
@latency_options
@ebpf_option
def watch(proto, port, host, device, exclude_device, prefer, interval, count, duration, once,
          as_json, show_all, ready_file, latency, sample, ebpf):
    """Live per-device, per-stage sk_buff counts (sudo netprobe watch); with --latency, the
    time each hop between stages takes (p50/p99) and the paths skbs take.

    On a terminal the table is redrawn in place; piped or redirected, every interval is
    printed in turn."""
    from .watch import run_watch

    if once and (count is not None or duration is not None):
        raise click.UsageError("--once is one interval: it does not go with --count or --duration")
    flow = make_flow(proto, port, host)
    sets = latency_sets(latency, sample)
    if ebpf:
        print_program(flow, sets, sample)
        return
    if once:
        count = 1
    sigterm_unwinds()
    run_watch(flow=flow, selector=DeviceSelector(tuple(device), tuple(exclude_device)),
              prefer=prefer_order(prefer), interval=interval, count=count, duration=duration,
              as_json=as_json, show_all=show_all, ready_file=ready_file, latency=latency,
              sample=sample)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable report.")
def doctor(as_json):
    """Check this machine: kernel, BTF, headers, which attach mechanisms work, and what each
    stage would use. Exits non-zero when nothing usable is found."""
    from .doctor import run_doctor

    sys.exit(run_doctor(as_json=as_json))


def _commands() -> None:
    # an explicit list: each module holds one command family
    from .export_cli import export
    from .prove_cli import peer, prove
    from .trace_cli import trace

    for command in (export, prove, peer, trace):
        cli.add_command(command)


_commands()


def main() -> None:
    try:
        # named, not guessed from argv: started as `python -m netprobe` by the launcher
        rv = cli.main(prog_name="netprobe", complete_var="_NETPROBE_COMPLETE",
                      standalone_mode=False)
        if isinstance(rv, int):
            sys.exit(rv)
    except click.exceptions.Abort:
        sys.exit(0)  # Ctrl-C
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except NetprobeError as e:
        click.echo(f"netprobe: error: {e}", err=True)
        sys.exit(1)
    except (KeyboardInterrupt, Terminated):
        sys.exit(0)
    except SystemExit:
        raise
    except Exception as e:  # a bug still gets one line, not a traceback
        why = one_line(e) if str(e).strip() else ""
        click.echo(f"netprobe: error: {type(e).__name__}: {why}", err=True)
        sys.exit(1)
