"""`netprobe export` (being built: issue 3)."""
import click

from .errors import NetprobeError


@click.command()
def export():
    """Serve per-device, per-stage counts as Prometheus metrics."""
    raise NetprobeError("export is not built yet")
