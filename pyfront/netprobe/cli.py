"""`netprobe`: the command line. Each command's docstring is its help."""
from __future__ import annotations

import sys

import click

from . import __version__
from .cli_options import (_sigterm_exits, flow_options, latency_options, latency_sets, make_flow,
                          prefer_order)
from .errors import NetprobeError, one_line
from .report import DeviceSelector


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="netprobe")
def cli():
    """Count the sk_buffs that cross each stage of the Linux network stack, per device."""


@cli.command()
@flow_options
@click.option("-i", "--interval", type=click.FloatRange(min=0.1), default=1.0, show_default=True,
              help="Seconds between refreshes.")
@click.option("-c", "--count", type=click.IntRange(min=1), help="Stop after this many intervals.")
@click.option("-d", "--duration", type=click.FloatRange(min=0.1), help="Stop after this many seconds.")
@click.option("--once", is_flag=True, help="Print one interval and exit.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per interval on stdout.")
@click.option("--all", "show_all", is_flag=True, help="Show quiet devices of every namespace too.")
@click.option("--ready-file", type=click.Path(dir_okay=False), hidden=True,
              help="Touch this file once the probes are attached (for tests and scripts).")
@latency_options
@click.option("--ebpf", is_flag=True, help="Print the generated BPF C and exit.")
def watch(proto, port, host, device, exclude_device, prefer, interval, count, duration, once,
          as_json, show_all, ready_file, latency, sample, ebpf):
    """Live per-device, per-stage sk_buff counts (sudo netprobe watch); with --latency, the
    time each hop between stages takes (p50/p99) and the paths skbs take."""
    from .watch import run_watch

    flow = make_flow(proto, port, host)
    sets = latency_sets(latency, sample)
    if ebpf:
        from .kernel import Kernel
        from .program import build
        from .programsets import INVENTORY
        click.echo(build(Kernel(), flow, (INVENTORY, *sets), sample=sample).render())
        return
    if once:
        count = 1
    _sigterm_exits()
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

    for command in (export, prove, peer):
        cli.add_command(command)


_commands()


def main() -> None:
    try:
        rv = cli.main(standalone_mode=False)
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
    except KeyboardInterrupt:
        sys.exit(0)
    except SystemExit:
        raise
    except Exception as e:  # a bug still gets one line, not a traceback
        why = one_line(e) if str(e).strip() else ""
        click.echo(f"netprobe: error: {type(e).__name__}: {why}", err=True)
        sys.exit(1)
