"""A running netprobe: compile → load → attach → follow → read → detach, as a context manager.

The parts each do one thing: loader.py compiles and loads in a child process (this process
never maps LLVM); attach.Attachments owns every attachment and always detaches;
inventory.Inventory lists each namespace's devices; countreader.CountReader reads the counting
set's maps, and counting.py turns them into counts without touching the kernel;
dropreader.DropReader and dropcounts.py do the same for the drops set. A session loads
only the program sets (programsets.py) its command uses. Leaving the context (normally, on an
error, on Ctrl-C, or on SIGTERM, which cli_options turns into its Terminated exception) closes
every attachment.
"""
from __future__ import annotations

import threading
import time
from typing import Sequence

from . import bpfmaps, events, loader, netns
from .attach import Attachments, program_specs
from ..model.catalogue import ALL_STAGES, Stage
from .countreader import CountReader
from ..model.counting import Counts, device_changes
from ..model.devices import Device
from ..model.dropcounts import DropCounts
from .dropreader import DropReader
from ..errors import NetprobeError
from ..model.flowfilter import FlowFilter
from .inventory import Inventory
from .facts import Kernel, ensure_tracefs, require_trusted_layouts
from ..model.latency import Latency
from .latreader import LatencyReader
from .nswatch import NetnsWatcher
from .program import Program, build
from ..model.programsets import COUNTING, DROPS, INVENTORY, LATENCY, WALK_MAX, ProgramSet
from ..model.stagestate import StageState

__all__ = ["ProbeSession", "Counts"]


class ProbeSession:
    def __init__(self, flow: FlowFilter = FlowFilter(), prefer: Sequence[str] = (),
                 stages: Sequence[Stage] = ALL_STAGES, kernel: Kernel | None = None,
                 sets: Sequence[ProgramSet] = (COUNTING,), follow: bool = True,
                 sample: int = 1):
        self.flow = flow
        self.sample = sample  # the latency set follows one flow in `sample`
        self.prefer = tuple(prefer)
        self.kernel = kernel or Kernel()
        # the inventory always: every command names devices
        self.sets = (INVENTORY, *[s for s in sets if s is not INVENTORY])
        if LATENCY in self.sets and COUNTING not in self.sets:
            raise ValueError("the latency set times skbs in counting's programs: load COUNTING too")
        # the stages this session's sets attach to (of those asked for), in path order
        self.stages = tuple(s for s in stages if any(s.name in ps.stages for ps in self.sets))
        self.program: Program | None = None
        self.maps: dict[str, bpfmaps.Map] = {}
        self.channel_maps: dict[str, int] = {}  # event channels' maps: name -> fd (the loader's)
        self.devices: dict[tuple[int, int], Device] = {}
        self.namespaces: dict[int, netns.Netns] = {}
        self.started_at = 0.0
        self._own_warnings: list[str] = []
        self._loaded: loader.Loaded | None = None
        self._attachments: Attachments | None = None
        self._inventory: Inventory | None = None
        self._counts: CountReader | None = None
        self._drops: DropReader | None = None
        self._latency: LatencyReader | None = None
        self._lock = threading.RLock()
        # hears of namespaces as they come and go (nswatch.py); off: only refresh() looks
        self._watcher = NetnsWatcher(self._follow_namespaces) if follow else None

    # -- lifecycle -----------------------------------------------------------------------
    def __enter__(self) -> "ProbeSession":
        try:
            self.open()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def open(self) -> None:
        require_trusted_layouts(self.kernel)  # the commands ask earlier; this covers every user
        if self.kernel.btf is None:
            ensure_tracefs()  # where tracepoints are looked up without BTF
        self.program = self.build_program()
        self._loaded = loader.load(self.program.text, list(self.program.cflags),
                                   program_specs(self.sets, self.kernel))
        for name, (fd, key, leaf) in self._loaded.maps.items():
            if bpfmaps.map_info(fd).type in events.CHANNEL_MAP_TYPES:
                self.channel_maps[name] = fd  # read by events.EventChannel, not as a table
                continue
            self.maps[name] = bpfmaps.Map(fd, bpfmaps.ctype_from_desc(key),
                                          bpfmaps.ctype_from_desc(leaf))
        if self.program.layout_source != "BTF":
            self._own_warnings.append("no BTF on this kernel: struct layouts come from the "
                                      "installed kernel headers, which must match the running kernel")
        if "netdev_walk" not in self._loaded.progs:
            raise NetprobeError(f"loading BPF programs: {self._loaded.errors.get('netdev_walk')} "
                                "(is BPF disabled, e.g. kernel.unprivileged_bpf_disabled or "
                                "a lockdown?)")
        missing = [m for s in self.sets for m in s.maps
                   if m not in self.maps and m not in self.channel_maps]
        if missing:
            raise NetprobeError(f"the compiled probes lack the maps {', '.join(missing)}")
        self._inventory = Inventory(self._loaded.progs["netdev_walk"], self.maps,
                                    self.kernel.symbolize)
        if COUNTING in self.sets:
            self._counts = CountReader(self.maps)
        if DROPS in self.sets:
            self._drops = DropReader(self.maps, self.kernel.reload_kallsyms,
                                     self.kernel.drop_reasons)
        if LATENCY in self.sets:
            self._latency = LatencyReader(self.maps, self.sample)
        self._attachments = Attachments(self.kernel, self._loaded, self.sets, self.prefer)
        self._attachments.attach_stages(self.stages)
        self.refresh()
        self._attachments.started()
        self.started_at = time.monotonic()
        if self._watcher is not None:
            self._watcher.start()

    def build_program(self) -> Program:
        """The C to load; the benchmark's floor (empty programs on the same hooks) overrides it."""
        return build(self.kernel, self.flow, self.sets, sample=self.sample)

    def close(self) -> None:
        if self._watcher is not None:
            self._watcher.stop()
        with self._lock:
            if self._attachments is not None:
                self._attachments.close()
            self.maps.clear()
            self.channel_maps.clear()
            if self._loaded is not None:
                self._loaded.close()
                self._loaded = None

    # -- what is attached ----------------------------------------------------------------
    @property
    def states(self) -> dict[str, StageState]:
        """stage name -> its state: the mechanism it runs on, or why none"""
        return self._attachments.states if self._attachments else {}

    @property
    def warnings(self) -> list[str]:
        if self._attachments is None:
            return list(self._own_warnings)
        late = [f"netns {n.name}: {', '.join(n.stages)} count from {n.since_text} (it appeared "
                f"while netprobe ran)" for n in self._attachments.late_namespaces()]
        unlisted = [f"netns {name}: more than {WALK_MAX:,} devices; those beyond are counted "
                    f"but not named (ifN rows)" for name in self._inventory.overflow.values()]
        return self._own_warnings + self._attachments.warnings + late + unlisted

    def unlisted_netns(self) -> list[int]:
        """Namespaces (inode numbers) with more devices than the inventory lists"""
        with self._lock:
            return sorted(self._inventory.overflow) if self._inventory else []

    def netfilter_linked(self, inum: int) -> bool:
        """Whether the netfilter stages count in this namespace yet (a namespace is linked
        when netprobe has seen it: at once by the watcher, or at the next refresh)"""
        with self._lock:
            return self._attachments.netfilter_linked(inum)

    def netfilter_unlinked_why(self, inum: int) -> str:
        with self._lock:
            return self._attachments.netfilter_unlinked_why(inum)

    def netfilter_unattached(self) -> list[int]:
        """Namespaces (inode numbers) where the netfilter stages' links could not be made"""
        with self._lock:
            return self._attachments.netfilter_unattached()

    # -- following namespaces and devices ------------------------------------------------
    def refresh(self) -> None:
        """Find new and vanished namespaces and devices: attach netfilter links in new
        namespaces, attach to new drivers' xmit functions, forget the counts of devices that are
        gone (so a reused ifindex starts from zero)."""
        with self._lock:
            self._follow_namespaces()
            devices = self._inventory.devices(self.namespaces)
            # the walk read each namespace's cookie: an inode number another namespace took
            # over since the last look gets its netfilter links anew
            self._attachments.follow_namespaces(
                self.namespaces, {d.netns: d.cookie for d in devices.values() if d.cookie})
            gone, changed = device_changes(self.devices, devices)
            if self._counts is not None and changed:
                self._counts.devices_changed(gone, devices.values())
            self.devices = devices
            if self._counts is not None and gone:
                self._counts.forget(gone)
            if self._drops is not None and gone:
                self._drops.forget({d.key for d in gone})
            self._attachments.follow_devices(self.devices.values())

    def _follow_namespaces(self) -> None:
        with self._lock:
            if self._attachments is None:  # closed under the watcher
                return
            before = set(self.namespaces)
            self.namespaces = netns.scan()
            self._attachments.follow_namespaces(self.namespaces)
            if self._counts is not None and before and set(self.namespaces) != before:
                # a namespace made anew may reuse a vanished one's inode number, and its
                # devices their ifindex and address: the slots re-read their owners' identity
                # (with the namespace's cookie) now, not at the next refresh
                self._counts.devices_changed([], self.devices.values())

    # -- reading -------------------------------------------------------------------------
    def read(self) -> Counts:
        """Cumulative counts since attach, per (netns, ifindex, stage)."""
        with self._lock:
            if self._counts is None:
                raise NetprobeError("this session does not count (no counting program set)")
            return self._counts.read(self.devices.values(), self.namespaces)

    @property
    def counts_drops(self) -> bool:
        return self._drops is not None

    @property
    def drops_reasons(self) -> bool:
        """Whether this kernel names why an skb was dropped (>= 5.17, with BTF)"""
        return self._drops is not None and self._drops.reasons is not None

    def read_drops(self) -> DropCounts:
        """Cumulative drops since attach, per (netns, ifindex, stage, reason, function)."""
        with self._lock:
            if self._drops is None:
                raise NetprobeError("this session does not count drops (no drops program set)")
            return self._drops.read()
    def read_latency(self) -> Latency:
        """Hop histograms and the census of paths, cumulative since attach."""
        with self._lock:
            return self._require_latency().read()

    @property
    def follows_paths(self) -> bool:
        """The latency set is loaded, counting's programs (which time the skbs) run at a stage
        at least and the latency set's at an end (a kernel that refuses its programs has them
        left off, with a warning)"""
        return (self._latency is not None and self._attachments is not None
                and self._attachments.set_attached(COUNTING)
                and self._attachments.set_attached(LATENCY))

    def begin_epoch(self) -> int:
        """Tell apart the paths that start from now on (paths_of)"""
        with self._lock:
            return self._require_latency().begin_epoch()

    def paths_of(self, epoch: int):
        """The paths started since begin_epoch() returned `epoch`, ended or in flight"""
        with self._lock:
            return self._require_latency().paths_of(epoch)

    def _require_latency(self) -> LatencyReader:
        if self._latency is None:
            raise NetprobeError("this session does not follow skbs (no latency program set)")
        return self._latency
