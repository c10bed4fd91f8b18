"""Features as the kernel sees them: each is a set of BPF programs plus the maps it reads.

A command loads only the sets it uses (program.build compiles only their sources), and the
attach step puts each set's program on the hooks of the stages the set names, on whatever
mechanism the catalogue's choice gave the stage — so a feature that follows single skbs adds
a set and its C, and the counting code never hears of it. Pure data."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from .catalogue import END_STAGES, Hook, STAGES
from .dropcounts import probe_cflags

if TYPE_CHECKING:
    from ..kernel.facts import Kernel


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
    # -D flags its C takes from this kernel (which tracepoint arguments exist, enum values)
    cflags: Callable[["Kernel"], list[str]] | None = None

    def fn(self, hook: Hook) -> str:
        return self.fn_prefix + hook.fn


# The device inventory every command needs: names, drivers and xmit functions of each
# namespace's devices (probes/netdev_walk.c).
# A namespace's devices are listed WALK_PAGE at a time, up to WALK_MAX of them (a bound on
# the walk, so that a list changing under it cannot keep it going).
WALK_PAGE = 256
WALK_MAX = 65536
INVENTORY = ProgramSet("inventory", ("netdev_walk.c",), on_demand=(OnDemand("netdev_walk"),),
                       maps=("netdev_count", "netdev_table", "netdev_cursor"),
                       cflags=lambda kernel: [f"-DNP_WALK_PAGE={WALK_PAGE}"])

# Packets and bytes per (netns, device, stage): count.h, read by counting.py.
COUNTING = ProgramSet("counting", ("l4_send.c", "dev_tx.c", "dev_rx.c", "netfilter.c"),
                      stages=tuple(s.name for s in STAGES),
                      maps=("counts", "dropped", "slots", "epoch", "released", "net_slots"))

# Drops per (netns, device, location, reason) at skb:kfree_skb: drops.h, read by dropreader.py,
# named by dropcounts.py.
DROPS = ProgramSet("drops", ("drops.c",), stages=("drop",), maps=("drops", "drops_lost"),
                   cflags=lambda kernel: probe_cflags(kernel.btf, kernel.drop_reasons))

# Single skbs followed through the stages, one record per stage on the event channel
# (probes/trace.c, read by tracing.py): the device stages (the L4 send stages see a socket, not
# an skb) and the two ends of an skb's life.
TRACE = ProgramSet("trace", ("trace.c",), fn_prefix="trace__",
                   stages=tuple(s.name for s in STAGES if s.per_device) + ("drop", "consume"),
                   maps=("np_events", "np_events_lost", "trace_inflight", "trace_stats",
                         "trace_event_layout", "trace_live"))

# Per-hop latency histograms and the census of paths, per skb followed by address in the kernel
# from its first stage to its end: probes/latency.h, read by latreader.py. It rides on
# counting: with NP_TIMED, counting's programs at every stage that has an skb also time it
# (probes/device_stages.h: one program run per hook, not two), so this set's own programs are
# only at the ends of an skb's life. Load it with COUNTING.
LATENCY = ProgramSet("latency", ("latency.c",), fn_prefix="lat__",
                     stages=tuple(s.name for s in END_STAGES),
                     maps=("inflight", "hops", "paths", "lat_stats", "lat_epoch"),
                     cflags=lambda kernel: ["-DNP_TIMED"])

ALL: tuple[ProgramSet, ...] = (INVENTORY, COUNTING, DROPS, TRACE, LATENCY)
# what the counting commands (watch, export, prove) load, and their --ebpf prints
COUNTING_COMMANDS: tuple[ProgramSet, ...] = (INVENTORY, COUNTING, DROPS)


def sources(sets: tuple[ProgramSet, ...] | list[ProgramSet]) -> tuple[str, ...]:
    """The probes/ files of these sets, each once, in order"""
    return tuple(dict.fromkeys(f for s in sets for f in s.sources))
