"""`netprobe prove` and `netprobe peer`: the command line of issue 4."""
from __future__ import annotations

import ipaddress
import json
import secrets
import signal
import sys

import click

from .cli_options import (Terminated, ebpf_option, prefer_option, prefer_order, print_program,
                          ready_file_option, sigterm_unwinds, write_ready_file)
from ..errors import NetprobeError
from .peer import DEFAULT_PORT

# A proof cut short did not hold: unlike watch and export, prove exits as a shell reports a
# process killed by the signal
EXIT_SIGINT, EXIT_SIGTERM = 130, 143


@click.command()
@click.option("--peer", metavar="ADDR",
              help="Send case 3 to `netprobe peer` at this IPv4 or IPv6 address, from "
                   "netprobe's own namespace through whatever NIC the route uses.")
@click.option("--peer-port", type=click.IntRange(1, 65535), metavar="N",
              help=f"Port of the peer's echo servers [default: {DEFAULT_PORT}]; every case then "
                   "uses it, and the probes count only it.")
@click.option("--peer-proto", type=click.Choice(["tcp", "udp", "both"]),
              help="Which echo the peer answers [default: both]; tcp for a TCP-only echo.")
@prefer_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout.")
@ready_file_option("the namespaces and the stage states")
@ebpf_option
def prove(peer, peer_port, peer_proto, prefer, as_json, ready_file, ebpf):
    """Prove, stage by stage, that loopback traffic never reaches a NIC driver
    (sudo netprobe prove).

    In throw-away network namespaces joined by a veth pair, runs TCP and UDP over IPv4 and IPv6
    and counts only those flows: 1. on 127.0.0.1 and ::1; 2. to the client's own veth address;
    3. across a NIC (the veth, or --peer); 4. where it dies: UDP to a closed port on 127.0.0.1
    and ::1, and into the peer namespace through an nftables drop rule, each seen dropped at
    the device, stage and reason expected. Prints a verdict per case and exits non-zero when a
    claim does not hold. Everything it builds is removed on exit, also on Ctrl-C or SIGTERM.
    """
    from ..model.flowfilter import FlowFilter
    from ..model.prove import Peer

    # Without a peer the port is prove's own choice: a fresh one per run, so two runs at once
    # (or anything else on a fixed port) do not count each other's flows; below the ephemeral
    # range, so no client socket elsewhere is given it as its source port.
    port = (peer_port or DEFAULT_PORT) if peer else secrets.choice(range(20000, 32000))
    if peer is None and (peer_port or peer_proto):
        raise click.UsageError("--peer-port and --peer-proto need --peer")
    peer_spec = None
    if peer is not None:
        try:
            addr = ipaddress.ip_address(peer)
        except ValueError:
            raise NetprobeError(f"--peer must be an IPv4 or IPv6 address, not {peer!r}") from None
        protocols = ("tcp", "udp") if peer_proto in (None, "both") else (peer_proto,)
        peer_spec = Peer(str(addr), port, protocols)
    if ebpf:
        print_program(FlowFilter(port=port))
        return 0
    sigterm_unwinds()
    try:
        return _prove(peer_spec, port, prefer_order(prefer), as_json, ready_file)
    except Terminated:
        code, what = EXIT_SIGTERM, "SIGTERM"
    except KeyboardInterrupt:
        code, what = EXIT_SIGINT, "Ctrl-C"
    click.echo(f"netprobe: prove stopped by {what}; its namespaces and probes are removed",
               err=True)
    return code


def _prove(peer, port, prefer, as_json, ready_file) -> int:
    from ..model import prove as fmt
    from ..kernel.facts import Kernel, require_root, require_trusted_layouts
    from .prove_run import run_prove

    require_root()
    require_trusted_layouts(Kernel())

    def start(report):
        click.echo("\n".join(fmt.header(report)) + "\n")

    def case(report):
        lines = fmt.case_lines(report.verdicts[-1], len(report.verdicts), report.states)
        click.echo("\n".join(lines) + "\n")

    if not as_json:
        click.echo("netprobe prove: building namespaces, attaching probes...", err=True)
    report = run_prove(port=port, peer=peer, prefer=prefer, ready_file=ready_file,
                       on_start=None if as_json else start, on_case=None if as_json else case)
    if as_json:
        click.echo(json.dumps(fmt.to_json(report), indent=2))
    else:
        click.echo("\n".join(fmt.footer(report)))
    return 0 if report.holds else 1


@click.command()
@click.option("--listen", default="::", show_default=True, metavar="ADDR",
              help="Address to listen on; '::' takes IPv4 and IPv6.")
@click.option("--port", type=click.IntRange(1, 65535), default=DEFAULT_PORT, show_default=True,
              help="TCP and UDP port.")
@ready_file_option("the address and port")
def peer(listen, port, ready_file):
    """TCP and UDP echo servers for `netprobe prove --peer` on another host.

    Runs until Ctrl-C or SIGTERM, then exits 0. Needs no root above port 1024.
    """
    from .peer import EchoServer

    def log(line):
        click.echo(f"netprobe peer: {line}")
        sys.stdout.flush()

    sigterm_unwinds()
    try:
        with EchoServer(listen, port, log=log) as server:
            log(f"{server.describe()}. Ctrl-C to end.")
            write_ready_file(ready_file, {"listen": listen, "port": port})
            while True:
                signal.pause()
    except KeyboardInterrupt:
        pass
    return 0
