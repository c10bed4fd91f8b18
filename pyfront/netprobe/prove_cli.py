"""`netprobe prove` and `netprobe peer` (being built: issue 4)."""
import click

from .errors import NetprobeError


@click.command()
def prove():
    """Prove, stage by stage, that loopback traffic never reaches a NIC driver."""
    raise NetprobeError("prove is not built yet")


@click.command()
def peer():
    """Run TCP and UDP echo servers for `netprobe prove --peer` on another host."""
    raise NetprobeError("peer is not built yet")
