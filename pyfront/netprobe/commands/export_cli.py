"""`netprobe export`: the Prometheus exporter's command line (the work is in export_server.py)."""
from __future__ import annotations

import click

from .cli_options import (ebpf_option, flow_options, latency_options, latency_sets, make_flow,
                          prefer_order, print_program, ready_file_option, sigterm_unwinds)
from ..render.exporter import DEFAULT_LISTEN, parse_listen_address
from ..render.report import DeviceSelector


class ListenAddress(click.ParamType):
    name = "HOST:PORT"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        try:
            return parse_listen_address(value)
        except ValueError as e:
            self.fail(str(e), param, ctx)


@click.command()
@flow_options
@click.option("--web.listen-address", "listen", type=ListenAddress(), default=DEFAULT_LISTEN,
              show_default=True,
              help="Address to serve on: HOST:PORT, [IPv6]:PORT, or :PORT for every interface "
                   "(an explicit choice: the metrics name your devices and namespaces).")
@click.option("--web.tls-cert-file", "tls_cert", type=click.Path(exists=True, dir_okay=False),
              help="Serve HTTPS with this PEM certificate (chain); needs --web.tls-key-file.")
@click.option("--web.tls-key-file", "tls_key", type=click.Path(exists=True, dir_okay=False),
              help="The PEM private key for --web.tls-cert-file.")
@ready_file_option("the URL and the stage mechanisms")
@latency_options
@ebpf_option
def export(proto, port, host, device, exclude_device, prefer, listen, tls_cert, tls_key,
           ready_file, latency, sample, ebpf):
    """Serve per-device, per-stage sk_buff counts as Prometheus metrics at /metrics
    (sudo netprobe export). Counts are read from the kernel at each scrape."""
    if bool(tls_cert) != bool(tls_key):
        raise click.UsageError("--web.tls-cert-file and --web.tls-key-file go together")
    flow = make_flow(proto, port, host)
    sets = latency_sets(latency, sample)
    if ebpf:
        print_program(flow, sets, sample)
        return
    from .export_server import run_export

    sigterm_unwinds()
    run_export(host=listen[0], port=listen[1], flow=flow,
               selector=DeviceSelector(tuple(device), tuple(exclude_device)),
               prefer=prefer_order(prefer), tls_cert=tls_cert, tls_key=tls_key,
               ready_file=ready_file, sets=sets, sample=sample)
