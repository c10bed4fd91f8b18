"""The event channel's ring walks on hand-made rings: record headers, flags, alignment and
wrap-around as the kernel writes them."""
import ctypes
import struct

import pytest

from netprobe.kernel import events
from netprobe.errors import NetprobeError

BUSY, DISCARD = 1 << 31, 1 << 30


def ring(size, records, start=0):
    """A BPF ring buffer data area of `size` bytes mapped twice, with `records` (payload,
    flags) written from position `start`; returns (data, end position)."""
    area = bytearray(size)
    pos = start
    for payload, flags in records:
        blob = struct.pack("<II", len(payload) | flags, 0) + payload
        for i, b in enumerate(blob):
            area[(pos + i) % size] = b
        pos += (len(blob) + 7) & ~7
    return bytes(area) * 2, pos


def test_ring_records_in_order_aligned_to_8():
    data, end = ring(64, [(b"abc", 0), (b"0123456789", 0)])
    got = list(events.ring_records(data, 0, end, 63))
    assert got == [(b"abc", 16), (b"0123456789", 40)] and end == 40


def test_ring_discarded_records_are_skipped_and_busy_ones_wait():
    data, end = ring(64, [(b"x" * 4, DISCARD), (b"kept", 0), (b"notyet", BUSY), (b"after", 0)])
    got = list(events.ring_records(data, 0, end, 63))
    assert got == [(None, 16), (b"kept", 32)]  # stops at the busy one; its successor waits


def test_ring_record_across_the_end_reads_whole_from_the_second_mapping():
    data, end = ring(64, [(b"A" * 20, 0)], start=48)  # 48 + 28 > 64: wraps
    assert list(events.ring_records(data, 48, end, 63)) == [(b"A" * 20, 48 + 32)]


def test_ring_positions_keep_growing_past_the_size():
    data, end = ring(64, [(b"q" * 8, 0)] * 3, start=64 * 5 + 16)
    got = list(events.ring_records(data, 64 * 5 + 16, end, 63))
    assert [p for p, _ in got] == [b"q" * 8] * 3 and got[-1][1] == end


def perf_ring(size, records, start=0):
    area = bytearray(size)
    pos = start
    for rtype, body in records:
        blob = struct.pack("<IHH", rtype, 0, 8 + len(body)) + body
        for i, b in enumerate(blob):
            area[(pos + i) % size] = b
        pos += len(blob)
    return bytes(area), pos


def sample(payload):
    raw = payload + b"\0" * (-(4 + len(payload)) % 8)  # the kernel pads raw data so 4+raw is 8-aligned
    return (events.PERF_RECORD_SAMPLE, struct.pack("<I", len(raw)) + raw)


def test_perf_samples_and_lost_records():
    lost = (events.PERF_RECORD_LOST, struct.pack("<QQ", 7, 42))
    data, end = perf_ring(128, [sample(b"hello"), lost, sample(b"world!!!")])
    got = [(t, p) for t, p, _ in events.perf_records(data, 0, end, 128)]
    assert got == [(events.PERF_RECORD_SAMPLE, b"hello" + bytes(7)), (events.PERF_RECORD_LOST, 42),
                   (events.PERF_RECORD_SAMPLE, b"world!!!\0\0\0\0")]


def test_perf_record_wrapping_the_end_is_joined():
    data, end = perf_ring(64, [sample(b"Z" * 20)], start=48)
    [(t, p, after)] = events.perf_records(data, 48, end, 64)
    assert p.startswith(b"Z" * 20) and after == end == 48 + 32


def test_perf_corrupt_size_is_an_error_not_a_loop():
    data = struct.pack("<IHH", 9, 0, 0) + bytes(56)
    with pytest.raises(NetprobeError, match="corrupt"):
        list(events.perf_records(data, 0, 64, 64))


class Rec(ctypes.Structure):
    _fields_ = [("a", ctypes.c_uint32), ("b", ctypes.c_uint64)]


def test_decoder_ctypes_and_bytes():
    raw = bytes(Rec(a=3, b=2**40)) + b"\0" * 4  # perf pads
    r = events.decoder(Rec)(raw)
    assert (r.a, r.b) == (3, 2**40)
    assert events.decoder(5)(b"0123456789") == b"01234"
    with pytest.raises(NetprobeError, match="3 bytes, expected 16"):
        events.decoder(Rec)(b"abc")


def test_cflags_pick_the_kind_and_check_the_size():
    assert events.cflags(events.PERF, 8) == ["-DNP_EVENTS_PAGES=8", "-DNP_EVENTS_PERF"]
    assert events.cflags(events.RINGBUF, 1) == ["-DNP_EVENTS_PAGES=1"]
    with pytest.raises(ValueError):
        events.cflags(events.RINGBUF, 3)
