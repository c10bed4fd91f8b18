"""`netprobe trace`: the command line of following single sk_buffs."""
from __future__ import annotations

import click

from .cli_options import (DURATION, ebpf_option, filter_options, make_flow, prefer_option,
                          prefer_order, ready_file_option, sigterm_unwinds)


@click.command()
@filter_options
@prefer_option
@click.option("--netns", metavar="NAME|PATH|INODE",
              help="Only skbs whose first stage is in this network namespace.")
@click.option("--device", metavar="NAME", help="Only skbs whose first stage is on this device.")
@click.option("--pid", type=click.IntRange(min=1), help="Only skbs sent by this process (tgid).")
@click.option("-c", "--count", type=click.IntRange(min=1), help="Stop after this many skbs.")
@click.option("-d", "--duration", type=DURATION, help="Stop after this many seconds.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per skb on stdout.")
@click.option("--pcap", type=click.Path(dir_okay=False, writable=True), metavar="FILE",
              help="Also write each traced skb once to this pcapng file (its path as comment).")
@click.option("--max-rate", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Follow at most this many new skbs per second (protects the machine).")
@ready_file_option("the stage mechanisms")
@ebpf_option
def trace(proto, port, host, prefer, netns, device, pid, count, duration, as_json, pcap,
          max_rate, ready_file, ebpf):
    """Follow single sk_buffs through the stages: one line per stage crossed, and how each
    ended (sudo netprobe trace --proto icmp)."""
    from .trace_run import TraceFilter, TraceSession, netns_inode, run_trace
    flow = make_flow(proto, port, host)
    tfilter = TraceFilter(netns_inode(netns) if netns else None, device, pid)
    if ebpf:
        click.echo(TraceSession(flow, tfilter, max_rate).build_program().render())
        return
    sigterm_unwinds()
    run_trace(flow=flow, tfilter=tfilter, count=count, duration=duration, as_json=as_json,
              pcap=pcap, max_rate=max_rate, ready_file=ready_file, prefer=prefer_order(prefer))
