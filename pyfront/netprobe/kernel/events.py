"""Records from BPF programs to netprobe: a BPF ring buffer (kernel >= 5.8), or a perf buffer
where the kernel has none, read by netprobe itself with mmap and epoll.

The programs write with probes/events.h (NP_EVENT_RESERVE / NP_EVENT_SUBMIT); cflags() picks
the same kind for them that EventChannel.open() then finds in the map. Every record that does
not arrive is counted: the BPF side counts its failed outputs per CPU (np_events_lost), and
the perf buffer's own PERF_RECORD_LOST counts are kept beside them.

Memory ordering: the kernel publishes a record before it moves the producer position
(release), and frees space when the consumer position moves. netprobe reads the position
before the record and stores the consumer position after copying it out; on x86_64 loads are
not reordered with loads nor stores with earlier loads, so plain accesses suffice. On arm64
the interpreter's own work between these accesses (hundreds of instructions, with the GIL's
atomics) orders them in practice, which libbpf's C readers get from explicit barriers.
"""
from __future__ import annotations

import ctypes
import mmap
import os
import select
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass

from . import bpfsys
from .bpfmaps import Map, map_info, parse_cpu_list
from ..errors import NetprobeError

BPF_MAP_TYPE_PERF_EVENT_ARRAY = 4
BPF_MAP_TYPE_RINGBUF = 27
CHANNEL_MAP_TYPES = (BPF_MAP_TYPE_PERF_EVENT_ARRAY, BPF_MAP_TYPE_RINGBUF)
RINGBUF, PERF = "ringbuf", "perf"
PAGE = mmap.PAGESIZE

# ring buffer record header: u32 length with these two flags, u32 page offset (kernel's own)
_BUSY, _DISCARD = 1 << 31, 1 << 30
_RING_HDR = 8
# perf: struct perf_event_mmap_page's data_head/tail/offset/size; record types; attr values
_PERF_HEAD, _PERF_TAIL, _PERF_DATA_OFFSET, _PERF_DATA_SIZE = 1024, 1032, 1040, 1048
PERF_RECORD_LOST, PERF_RECORD_SAMPLE = 2, 9
_PERF_TYPE_SOFTWARE, _PERF_COUNT_SW_BPF_OUTPUT, _PERF_SAMPLE_RAW = 1, 10, 1 << 10
# perf_event_attr.watermark: wake the reader when a quarter of the ring is full, not at every
# sample (a wakeup per sample cost the producer more than the output itself: 24k records/s
# instead of 100k offered, measured with bench/events_rate.py)
_PERF_FLAG_WATERMARK = 1 << 14
_PERF_LOOK = 0.05
_BPF_MAP_CREATE = 0


def _align8(n: int) -> int:
    return (n + 7) & ~7


# -- pure: walking the two kinds of ring --------------------------------------------------
def ring_records(data, cons: int, prod: int, mask: int) -> Iterator[tuple[bytes | None, int]]:
    """(payload, position after it) for each committed record from `cons` up to `prod` in a
    BPF ring buffer's data area; a discarded record's payload is None. `data` holds the area
    twice in a row, as the kernel maps it, so a record that wraps is contiguous."""
    while cons < prod:
        at = cons & mask
        (length,) = struct.unpack_from("<I", data, at)
        if length & _BUSY:  # reserved, not yet submitted: everything after it waits too
            return
        n = length & ~(_BUSY | _DISCARD)
        cons += _align8(_RING_HDR + n)
        yield (None if length & _DISCARD else bytes(data[at + _RING_HDR:at + _RING_HDR + n])), cons


def _wrapped(data, start: int, n: int, size: int) -> bytes:
    start %= size
    if start + n <= size:
        return bytes(data[start:start + n])
    return bytes(data[start:size]) + bytes(data[0:start + n - size])


def perf_records(data, tail: int, head: int, size: int) -> Iterator[tuple[int, object, int]]:
    """(record type, payload, position after it) for each record from `tail` up to `head` in
    a perf ring's data area of `size` bytes: a sample's raw bytes (padded by the kernel to 8),
    or the number of records a PERF_RECORD_LOST says were lost."""
    while tail < head:
        rtype, _misc, rsize = struct.unpack("<IHH", _wrapped(data, tail, 8, size))
        if rsize < 8:
            raise NetprobeError(f"perf buffer: a record of {rsize} bytes (corrupt ring)")
        body = _wrapped(data, tail + 8, rsize - 8, size)
        tail += rsize
        if rtype == PERF_RECORD_SAMPLE:
            (raw,) = struct.unpack_from("<I", body, 0)
            yield rtype, body[4:4 + raw], tail
        elif rtype == PERF_RECORD_LOST:
            yield rtype, struct.unpack_from("<QQ", body, 0)[1], tail
        else:
            yield rtype, None, tail


def decoder(record):
    """bytes -> what poll() hands out: a ctypes record, or the first `record` bytes"""
    if isinstance(record, int):
        size = record

        def cut(payload: bytes) -> bytes:
            return payload[:size]
    else:
        size = ctypes.sizeof(record)
        cut = record.from_buffer_copy

    def decode(payload: bytes):
        if len(payload) < size:
            raise NetprobeError(f"event channel: a record of {len(payload)} bytes, "
                                f"expected {size}")
        return cut(payload)
    return decode


# -- the kernel side ----------------------------------------------------------------------
class _CreateAttr(ctypes.Structure):
    _fields_ = [("map_type", ctypes.c_uint32), ("key_size", ctypes.c_uint32),
                ("value_size", ctypes.c_uint32), ("max_entries", ctypes.c_uint32),
                ("_rest", ctypes.c_uint8 * 56)]


def ringbuf_supported() -> bool:
    """Whether this kernel makes BPF ring buffers: by making a one-page one."""
    try:
        os.close(bpfsys._bpf(_BPF_MAP_CREATE, _CreateAttr(map_type=BPF_MAP_TYPE_RINGBUF,
                                                          max_entries=PAGE)))
    except OSError:
        return False
    return True


def cflags(kind: str | None = None, pages: int = 64) -> list[str]:
    """The -D flags for probes/events.h: the ring buffer where the kernel has it (or `kind`
    forces one), and its size in pages (a power of two; per CPU for the perf buffer)."""
    if pages < 1 or pages & (pages - 1):
        raise ValueError(f"event buffer pages must be a power of two, not {pages}")
    kind = kind or (RINGBUF if ringbuf_supported() else PERF)
    return [f"-DNP_EVENTS_PAGES={pages}"] + (["-DNP_EVENTS_PERF"] if kind == PERF else [])


class _Ring:
    """One BPF ring buffer: consumer page (rw), producer page and data twice over (ro)."""

    def __init__(self, fd: int, size: int):
        self.fds = [fd]
        self._mask = size - 1
        self._cons_page = mmap.mmap(fd, PAGE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        try:
            self._prod = mmap.mmap(fd, PAGE + 2 * size, mmap.MAP_SHARED, mmap.PROT_READ,
                                   offset=PAGE)
        except BaseException:
            self._cons_page.close()
            raise
        self._data = memoryview(self._prod)[PAGE:]

    def drain(self, out: list[bytes], lost: list[int]) -> None:
        (cons,) = struct.unpack_from("<Q", self._cons_page, 0)
        (prod,) = struct.unpack_from("<Q", self._prod, 0)
        for payload, cons in ring_records(self._data, cons, prod, self._mask):
            if payload is not None:
                out.append(payload)
            # each record's space back to the producer at once, not after the whole batch
            struct.pack_into("<Q", self._cons_page, 0, cons)

    def close(self) -> None:
        self._data.release()
        self._prod.close()
        self._cons_page.close()


class _PerfRings:
    """One perf event (PERF_COUNT_SW_BPF_OUTPUT) and mmap'd ring per online CPU, each stored
    in the BPF_MAP_TYPE_PERF_EVENT_ARRAY at its CPU's index."""

    def __init__(self, map_fd: int, max_entries: int, pages: int):
        with open("/sys/devices/system/cpu/online") as f:
            cpus = parse_cpu_list(f.read())
        if max(cpus) >= max_entries:
            raise NetprobeError(f"perf event array has {max_entries} slots for CPU {max(cpus)}")
        self.fds: list[int] = []
        self._rings: list[tuple[mmap.mmap, memoryview, int]] = []
        self._array = Map(os.dup(map_fd), ctypes.c_uint32, ctypes.c_uint32)
        self._cpus: list[int] = []
        try:
            for cpu in cpus:
                attr = bpfsys.PerfEventAttr(type=_PERF_TYPE_SOFTWARE,
                                            config=_PERF_COUNT_SW_BPF_OUTPUT,
                                            sample_type=_PERF_SAMPLE_RAW, sample_period=1,
                                            flags=_PERF_FLAG_WATERMARK,
                                            wakeup_events=max(1, PAGE * pages // 4))
                fd = bpfsys.perf_event_open(attr, cpu=cpu)
                self.fds.append(fd)
                ring = mmap.mmap(fd, PAGE * (1 + pages), mmap.MAP_SHARED,
                                 mmap.PROT_READ | mmap.PROT_WRITE)
                offset, size = struct.unpack_from("<QQ", ring, _PERF_DATA_OFFSET)
                offset, size = offset or PAGE, size or PAGE * pages  # kernels < 4.1 leave 0
                self._rings.append((ring, memoryview(ring)[offset:offset + size], size))
                self._array[cpu] = fd
                self._cpus.append(cpu)
        except BaseException:
            self.close()
            raise

    def drain(self, out: list[bytes], lost: list[int]) -> None:
        for ring, data, size in self._rings:
            head, tail = struct.unpack_from("<QQ", ring, _PERF_HEAD)
            for rtype, payload, tail in perf_records(data, tail, head, size):
                if rtype == PERF_RECORD_SAMPLE:
                    out.append(payload)
                elif rtype == PERF_RECORD_LOST:
                    lost[0] += payload
            struct.pack_into("<Q", ring, _PERF_TAIL, head)

    def close(self) -> None:
        for cpu in self._cpus:  # the array holds the events open until its slot is emptied
            try:
                del self._array[cpu]
            except (KeyError, OSError):
                pass
        self._array.close()
        for ring, data, _ in self._rings:
            data.release()
            ring.close()
        for fd in self.fds:
            os.close(fd)
        self.fds, self._rings, self._cpus = [], [], []


@dataclass
class EventChannel:
    """Records from one events map: `poll()` waits and returns them, decoded; `lost` counts
    those that never arrived."""
    kind: str
    _rings: object
    _decode: object
    _lost_map: Map | None
    _epoll: select.epoll
    kernel_lost: int = 0  # perf only: what the kernel's PERF_RECORD_LOST records summed to
    received: int = 0

    @classmethod
    def open(cls, events_fd: int, record, lost_fd: int | None = None,
             pages_per_cpu: int = 8) -> "EventChannel":
        """A channel on the events map (a ring buffer or a perf event array, as the map says)
        for records of ctypes type `record` (or of `record` bytes); `lost_fd` is the BPF side's
        per-CPU count of failed outputs (np_events_lost). The map fds stay the caller's."""
        info = map_info(events_fd)
        if info.type == BPF_MAP_TYPE_RINGBUF:
            if lost_fd is None:
                raise ValueError("a ring buffer reports no losses itself: pass np_events_lost")
            rings, kind = _Ring(events_fd, info.max_entries), RINGBUF
        elif info.type == BPF_MAP_TYPE_PERF_EVENT_ARRAY:
            rings, kind = _PerfRings(events_fd, info.max_entries, pages_per_cpu), PERF
        else:
            raise NetprobeError(f"BPF map {info.name or events_fd} (type {info.type}) is not an "
                                "event channel")
        ep = select.epoll()
        try:
            for fd in rings.fds:
                ep.register(fd, select.EPOLLIN)
            lost = Map(os.dup(lost_fd), ctypes.c_uint32, ctypes.c_uint64) if lost_fd is not None else None
        except BaseException:
            ep.close()
            rings.close()
            raise
        return cls(kind, rings, decoder(record), lost, ep)

    def poll(self, timeout: float | None = None) -> list:
        """Every record there is, waiting up to `timeout` seconds (None: until one comes) when
        there is none yet."""
        out: list[bytes] = []
        lost = [0]
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self._rings.drain(out, lost)
            left = None if deadline is None else deadline - time.monotonic()
            if out or lost[0] or (left is not None and left <= 0):
                break
            # a perf ring wakes its reader only past a watermark: look again every
            # _PERF_LOOK seconds, so a lone record waits no longer than that
            step = _PERF_LOOK if self.kind == PERF else None
            if step is not None and (left is None or left > step):
                left = step
            try:
                self._epoll.poll(-1 if left is None else left)
            except InterruptedError:
                pass
        self.kernel_lost += lost[0]
        self.received += len(out)
        return [self._decode(p) for p in out]

    @property
    def lost(self) -> int:
        """Records that did not reach netprobe: what the BPF side counted, or for a perf
        buffer without that count, what the kernel reported."""
        if self._lost_map is None:
            return self.kernel_lost
        return sum(v.value for v in self._lost_map[0])

    def fileno(self) -> int:
        """An epoll fd that is readable when records wait: for a caller's own select loop."""
        return self._epoll.fileno()

    def close(self) -> None:
        self._epoll.close()
        self._rings.close()
        if self._lost_map is not None:
            self._lost_map.close()

    def __enter__(self) -> "EventChannel":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
