"""Features as the kernel sees them: each is a set of BPF programs plus the maps it reads.

A command loads only the sets it uses (program.build compiles only their sources), and the
attach step puts each set's program on the hooks of the stages the set names, on whatever
mechanism the catalogue's choice gave the stage — so a feature that follows single skbs adds
a set and its C, and the counting code never hears of it. Pure data."""
from __future__ import annotations

from dataclasses import dataclass

from .catalogue import END_STAGES, Hook, STAGES


@dataclass(frozen=True)
class OnDemand:
    """A program that is not attached but run by netprobe when it asks (BPF_PROG_TEST_RUN)."""
    fn: str


@dataclass(frozen=True)
class ProgramSet:
    name: str
    sources: tuple[str, ...]       # probes/ files, after netprobe.h
    stages: tuple[str, ...] = ()   # the catalogue stages it puts a program on
    fn_prefix: str = ""            # its program at a hook: fn_prefix + the catalogue's hook fn
    on_demand: tuple[OnDemand, ...] = ()
    maps: tuple[str, ...] = ()     # the maps it reads: they must exist once loaded

    def fn(self, hook: Hook) -> str:
        return self.fn_prefix + hook.fn


# The device inventory every command needs: names, drivers and xmit functions of each
# namespace's devices (probes/netdev_walk.c).
INVENTORY = ProgramSet("inventory", ("netdev_walk.c",), on_demand=(OnDemand("netdev_walk"),),
                       maps=("netdev_count", "netdev_table"))

# Packets and bytes per (netns, device, stage): count.h, read by counting.py.
COUNTING = ProgramSet("counting", ("l4_send.c", "dev_tx.c", "dev_rx.c", "netfilter.c"),
                      stages=tuple(s.name for s in STAGES),
                      maps=("counts", "dropped", "slots", "epoch", "released", "net_slots"))

# Per-hop latency histograms and the census of paths, per skb followed by address in the kernel
# from its first stage to its end: probes/latency.h, read by latreader.py. Every stage that
# has an skb (not the L4 send stages, which see a socket), and the ends.
LATENCY = ProgramSet("latency", ("latency.c",), fn_prefix="lat__",
                     stages=tuple(s.name for s in STAGES if s.per_device)
                     + tuple(s.name for s in END_STAGES),
                     maps=("inflight", "hops", "paths", "lat_stats", "lat_epoch"))

ALL: tuple[ProgramSet, ...] = (INVENTORY, COUNTING, LATENCY)


def sources(sets: tuple[ProgramSet, ...] | list[ProgramSet]) -> tuple[str, ...]:
    """The probes/ files of these sets, each once, in order"""
    return tuple(dict.fromkeys(f for s in sets for f in s.sources))
