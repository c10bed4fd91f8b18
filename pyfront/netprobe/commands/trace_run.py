"""`netprobe trace`, the kernel-facing part: a session with the trace program set only, its
event channel read, records put together per skb (tracing.py) and written out as text, JSON
or pcapng."""
from __future__ import annotations

import dataclasses
import json
import os
import platform
import struct
import sys
import time
from dataclasses import dataclass
from typing import Sequence

from ..kernel import events
from .cli_options import Terminated, write_ready_file
from ..errors import NetprobeError
from ..model.flowfilter import FlowFilter
from ..kernel.facts import require_root
from ..model.programsets import TRACE
from ..kernel.session import ProbeSession
from ..model.stagestate import to_json as state_json
from ..model.tracing import (COLUMNS, Footer, Names, Trace, Tracker, decode_flow, hop_from_record,
                             path_comment, stat_sums, trace_json, trace_lines)

SNAPLEN = 128             # probes/trace.c NP_TRACE_SNAP, passed to it
INFLIGHT = 8192
EVICT_AFTER_NS = 2_000_000_000   # an skb followed that moved no more for this long: evicted
IDLE_NS = 1_000_000_000          # a trace shown as ended when nothing came for this long
# THREAD_SIZE per architecture (arch/*/include/asm/page*.h, thread_info.h); KASAN doubles it
_THREAD_SIZE = {"x86_64": 16384, "aarch64": 16384}
# the pt_regs member that holds the system call number, -1 when the task entered the kernel by
# an interrupt or exception from user mode (x86_64: idtentry pushes -1; arm64: NO_SYSCALL)
_SYSCALL_REG = {"x86_64": "orig_ax", "aarch64": "syscallno"}


@dataclass(frozen=True)
class TraceFilter:
    """What the kernel checks at an skb's first stage, beside the flow filter"""
    netns: int | None = None   # inode number
    device: str | None = None  # interface name, exactly
    pid: int | None = None     # the sending process (tgid)

    def cflags(self) -> list[str]:
        flags = []
        if self.netns is not None:
            flags.append(f"-DNP_TRACE_NETNS={self.netns}U")
        if self.device is not None:
            raw = self.device.encode()
            if not 0 < len(raw) < 16:
                raise NetprobeError(f"--device must be an interface name (1-15 bytes), not {self.device!r}")
            w0, w1 = struct.unpack("<QQ", raw.ljust(16, b"\0"))
            flags += [f"-DNP_TRACE_DEV0={w0}ULL", f"-DNP_TRACE_DEV1={w1}ULL"]
        if self.pid is not None:
            flags.append(f"-DNP_TRACE_PID={self.pid}U")
        return flags


def netns_inode(spec: str) -> int:
    """--netns: a name under /run/netns, a path to a namespace file, or an inode number"""
    if spec.isdigit():
        return int(spec)
    path = spec if "/" in spec else f"/run/netns/{spec}"
    try:
        return os.stat(path).st_ino
    except OSError as e:
        raise NetprobeError(f"--netns {spec}: {e.strerror}") from None


def context_cflags(kernel) -> list[str]:
    """What probes/trace.c's process-or-softirq test needs: the task stack's size and where
    the task's user registers' system call number lies at its top (from BTF; without BTF the
    test is the stack's alone)"""
    flags = [f"-DNP_THREAD_SIZE={thread_size(kernel)}"]
    if kernel.btf is not None:
        from ..model.btf import BTFError
        try:
            nr = kernel.btf.field("pt_regs", _SYSCALL_REG[platform.machine()])
            flags += [f"-DNP_PT_REGS_SIZE={kernel.btf.struct_size('pt_regs')}",
                      f"-DNP_PT_REGS_SYSCALL={nr.offset}"]
        except BTFError:
            pass
    return flags


def thread_size(kernel) -> int:
    arch = platform.machine()
    if arch not in _THREAD_SIZE:
        raise NetprobeError(f"trace: no THREAD_SIZE known for {arch}")
    kasan = kernel.kallsyms.probe_name("kasan_report") is not None
    return _THREAD_SIZE[arch] * (2 if kasan else 1)


class TraceSession(ProbeSession):
    def __init__(self, flow: FlowFilter, tfilter: TraceFilter, max_rate: int,
                 prefer: Sequence[str] = ()):
        super().__init__(flow=flow, prefer=prefer, sets=(TRACE,))
        self.tfilter, self.max_rate = tfilter, max_rate

    def build_program(self):
        p = super().build_program()
        extra = [*events.cflags(), *self.tfilter.cflags(), f"-DNP_TRACE_MAX_RATE={self.max_rate}",
                 f"-DNP_TRACE_SNAP={SNAPLEN}", f"-DNP_TRACE_INFLIGHT={INFLIGHT}",
                 *context_cflags(self.kernel)]
        return dataclasses.replace(p, cflags=p.cflags + tuple(extra))


def _names(session: ProbeSession, reasons) -> Names:
    def device(netns: int, ifindex: int):
        d = session.devices.get((netns, ifindex))
        return (d.name, d.xmit, d.physical) if d else None

    def netns(inum: int) -> str:
        ns = session.namespaces.get(inum)
        return ns.name if ns else str(inum)

    return Names(device, netns, reasons.name if reasons else str)


def _drop_reasons(kernel):
    try:
        from ..model.drops import load_drop_reasons
        return load_drop_reasons(kernel.btf)
    except Exception:  # names are a nicety: the number is shown without them
        return None


def _open_pcap(path: str | None):
    """The --pcap file, opened before anything is loaded: a path that cannot be written is
    said at once"""
    if not path:
        return None
    try:
        return open(path, "wb")
    except OSError as e:
        raise NetprobeError(f"--pcap {path}: {e.strerror}") from None


class _Output:
    def __init__(self, as_json: bool, pcap_file, names: Names):
        self.as_json, self.names, self.n = as_json, names, 0
        self.pcap_file, self.pcap = pcap_file, None
        self.not_ip = 0
        if pcap_file is not None:
            from ..render.pcapng import PcapngWriter
            self.pcap = PcapngWriter(pcap_file, SNAPLEN)
        self.mono_to_wall = time.time_ns() - time.monotonic_ns()

    def trace(self, t: Trace) -> None:
        self.n += 1
        if self.as_json:
            print(json.dumps(trace_json(self.n, t, self.names)), flush=True)
        else:
            print("\n".join(trace_lines(self.n, t, self.names)), flush=True)
        if self.pcap is not None:
            first = next((h for h in t.hops if decode_flow(h.packet)), None)
            if first is None:
                self.not_ip += 1
                return
            self.pcap.write(first.ts + self.mono_to_wall, first.packet,
                            decode_flow(first.packet).ip_len or first.length - first.l3_off,
                            path_comment(t, self.names))
            self.pcap.flush()

    def close(self) -> None:
        if self.pcap_file is not None:
            self.pcap_file.close()


def run_trace(*, flow: FlowFilter, tfilter: TraceFilter, count: int | None,
              duration: float | None, as_json: bool, pcap: str | None, max_rate: int,
              ready_file: str | None, prefer: Sequence[str] = ()) -> None:
    require_root()
    pcap_file = _open_pcap(pcap)
    with TraceSession(flow, tfilter, max_rate, prefer) as session:
        missing = [s for s, st in session.states.items() if not st.attached]
        if len(missing) == len(session.states):
            raise NetprobeError("no stage could be attached on this kernel: run `netprobe doctor`")
        layout = session.maps["trace_event_layout"].value_type
        channel = events.EventChannel.open(session.channel_maps["np_events"], layout,
                                           session.maps["np_events_lost"].fd)
        out = _Output(as_json, pcap_file, _names(session, _drop_reasons(session.kernel)))
        tracker = Tracker(IDLE_NS)
        stats, inflight = session.maps["trace_stats"], session.maps["trace_inflight"]
        live = session.maps["trace_live"]
        evicted, engaged = 0, False
        try:
            write_ready_file(ready_file, {name: state_json(st) for name, st in session.states.items()})
            print(f"Tracing {flow.describe()}{_describe(tfilter)}... Ctrl-C to end.", file=sys.stderr)
            if not as_json:
                print(COLUMNS, flush=True)
            deadline = time.monotonic() + duration if duration else None
            next_sweep = time.monotonic() + 1.0
            done = False
            held: list[Trace] = []
            while not done:
                wait = 0.2 if deadline is None else max(0.0, min(0.2, deadline - time.monotonic()))
                finished = held
                for rec in channel.poll(wait):
                    finished += tracker.add(*hop_from_record(rec))
                now = time.monotonic()
                finished += tracker.expire(time.monotonic_ns())
                if now >= next_sweep:
                    next_sweep = now + 1.0
                    session.refresh()  # netfilter stages in namespaces made since
                    evicted += _evict(inflight, time.monotonic_ns())
                    live[1] = evicted  # what the kernel subtracts from the skbs it followed
                    if not engaged and _stats(stats)[0]:
                        engaged = True
                        print(f"netprobe: --max-rate {max_rate}/s engaged: skbs beyond it are "
                              "not traced", file=sys.stderr)
                show, held = tracker.in_order(finished)
                for t in show:
                    out.trace(t)
                    if count and out.n >= count:
                        done = True
                        break
                if deadline is not None and time.monotonic() >= deadline:
                    done = True
        except (KeyboardInterrupt, Terminated):
            pass
        finally:
            rest = tracker.flush()
            in_flight = len(rest)
            rest += held
            if not (count and out.n >= count):
                for t in sorted(rest, key=lambda t: t.first.ts)[:(count - out.n) if count else None]:
                    out.trace(t)
            rate, full, reused = _stats(stats)
            footer = Footer(out.n, channel.lost, evicted, rate, full, reused, max_rate,
                            in_flight=in_flight)
            channel.close()
            out.close()
            stream = sys.stderr if as_json else sys.stdout
            for line in footer.lines():
                print(line, file=stream)
            if out.not_ip:
                print(f"{out.not_ip} traced skbs were not IP and are not in the pcap", file=stream)
            stream.flush()


def _stats(stats) -> list[int]:
    return stat_sums([[v.value for v in stats[i]] for i in range(3)])


def _evict(inflight, now_ns: int) -> int:
    """Forget skbs followed that moved no more for EVICT_AFTER_NS: their free was not seen
    (TCP frees some with __kfree_skb, which has no tracepoint) and their entry would stay"""
    n = 0
    for key, v in inflight.items():
        if now_ns - v.last_ns >= EVICT_AFTER_NS:
            try:
                del inflight[key]
                n += 1
            except (KeyError, OSError):
                pass
    return n


def _describe(f: TraceFilter) -> str:
    parts = [f"netns {f.netns}" if f.netns is not None else "",
             f"device {f.device}" if f.device else "", f"pid {f.pid}" if f.pid else ""]
    parts = [p for p in parts if p]
    return (", " + ", ".join(parts)) if parts else ""
