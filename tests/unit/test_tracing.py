"""trace's pure part: flows read from packet bytes, records put together per skb, the end
named, the pcapng file as a reader parses it; no kernel needed."""
import ctypes
import io
import struct

import pytest

from netprobe.render.pcapng import LINKTYPE_RAW, PcapngWriter
from netprobe.commands.trace_run import TraceFilter
from netprobe.model.tracing import (DELIVERED, DROPPED, UNSEEN, Footer, Hop, Names, Tracker,
                                    decode_flow, hop_from_record, path_comment, tcp_flags,
                                    trace_json, trace_lines)
from netprobe.errors import NetprobeError


def ipv4(proto, payload, src=b"\x7f\0\0\x01", dst=b"\x7f\0\0\x01"):
    return struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 1, 0, 64, proto, 0,
                       src, dst) + payload


def tcp(sport, dport, flags, data=b""):
    return struct.pack(">HHIIBBHHH", sport, dport, 0, 0, 5 << 4, flags, 0, 0, 0) + data


@pytest.mark.parametrize("bits, words", [(0x02, "SYN"), (0x12, "SYN-ACK"), (0x10, "ACK"),
                                         (0x18, "PSH-ACK"), (0x11, "FIN-ACK"), (0x04, "RST")])
def test_tcp_flags_read_as_words(bits, words):
    assert tcp_flags(bits) == words


def test_flows_of_tcp_icmp_ipv6_and_non_ip():
    f = decode_flow(ipv4(6, tcp(40000, 8000, 0x18, b"x" * 10)))
    assert (f.proto, f.sport, f.dport, f.flags, f.payload) == ("tcp", 40000, 8000, "PSH-ACK", 10)
    assert f.describe() == "tcp 127.0.0.1:40000 > 127.0.0.1:8000 PSH-ACK data 10"
    assert decode_flow(ipv4(1, b"\x08\0" + b"\0" * 6)).flags == "echo-request"
    v6 = struct.pack(">IHBB16s16s", 6 << 28, 8, 17, 64, b"\0" * 15 + b"\1", b"\0" * 15 + b"\1")
    f6 = decode_flow(v6 + struct.pack(">HHHH", 53, 5353, 8, 0))
    assert (f6.src, f6.proto, f6.dport) == ("::1", "udp", 5353)
    assert decode_flow(b"\x00\x01\x08\x00" + b"\0" * 24) is None  # ARP


def hop(stage, ts, pid=None, ifindex=1, reason=0, packet=b""):
    return Hop(ts, 0, 7, ifindex, stage, 84, pid, "ping" if pid else "", reason, packet)


def test_a_trace_ends_at_its_free_delivered_when_it_reached_l4():
    t = Tracker()
    assert t.add(0xA0, 1, hop("ip_output", 100, pid=42)) == []
    assert t.add(0xA0, 1, hop("l4_rcv", 300)) == []
    (done,) = t.add(0xA0, 1, hop("consume", 400))
    assert done.how == DELIVERED and done.path() == ["ip_output", "l4_rcv"]
    assert done.process.pid == 42 and t.open == {}


def test_a_drop_is_named_and_a_reused_address_closes_the_old_trace():
    t = Tracker()
    t.add(0xA0, 1, hop("ip_output", 100))
    (old,) = t.add(0xA0, 2, hop("ip_output", 200))  # the same address, a new life
    assert old.id == 1 and old.how == UNSEEN
    (dropped,) = t.add(0xA0, 2, hop("drop", 250, reason=2))
    assert dropped.how == DROPPED
    names = Names(reason={2: "NO_SOCKET"}.get)
    assert trace_lines(1, dropped, names)[-1].split("=")[1].strip().startswith("dropped: NO_SOCKET")
    assert trace_json(1, dropped, names)["end"]["reason_name"] == "NO_SOCKET"


def test_idle_traces_expire_and_are_shown_in_the_order_they_started():
    t = Tracker(idle_ns=1000)
    t.add(0xA0, 1, hop("ip_output", 100))
    t.add(0xB0, 2, hop("ip_output", 200))
    (b,) = t.add(0xB0, 2, hop("consume", 300))
    assert t.in_order([b]) == ([], [b])  # trace 1 started first and is still open
    (a,) = t.expire(1200)
    assert t.in_order([b, a]) == ([a, b], [])
    assert t.add(0xA0, 1, hop("consume", 5000)) == []  # its end, after it was shown


def test_lines_json_and_comment_name_the_device_its_xmit_and_softirq():
    t = Tracker()
    pkt = ipv4(1, b"\x08\0" + b"\0" * 6)
    t.add(0xA0, 1, hop("driver_xmit", 1000, pid=42, packet=pkt))
    t.add(0xA0, 1, hop("driver_rx", 1200, pid=42))
    t.add(0xA0, 1, hop("netif_receive_skb", 3500))
    (done,) = t.add(0xA0, 1, hop("consume", 4000))
    names = Names(device=lambda ns, i: ("lo", "loopback_xmit", False), netns={7: "np-a"}.get)
    lines = trace_lines(1, done, names)
    assert lines[0] == "skb #1 icmp 127.0.0.1 > 127.0.0.1 echo-request  sent by ping[42]"
    assert "np-a" in lines[1] and lines[1].endswith("ping[42]  loopback_xmit")
    assert lines[2].endswith("ping[42]  ← loopback_xmit")
    assert "     2.5 " in lines[3] and lines[3].endswith("softirq")
    j = trace_json(1, done, names)
    assert j["stages"][0]["xmit"] == "loopback_xmit" and j["stages"][2]["context"] == "softirq"
    assert j["stages"][1]["handed_over_by"] == "loopback_xmit"
    assert path_comment(done, names) == ("driver_xmit[lo, loopback_xmit] > driver_rx[lo] > "
                                         "netif_receive_skb[lo] > consumed")


def test_a_record_from_the_kernel_becomes_a_hop():
    class Rec(ctypes.Structure):
        _fields_ = [("skb", ctypes.c_uint64), ("id", ctypes.c_uint64), ("ts", ctypes.c_uint64),
                    ("netns", ctypes.c_uint32), ("ifindex", ctypes.c_uint32),
                    ("len", ctypes.c_uint32), ("l3_off", ctypes.c_int32),
                    ("reason", ctypes.c_uint32), ("pid", ctypes.c_uint32),
                    ("cpu", ctypes.c_uint32), ("cap_len", ctypes.c_uint16),
                    ("stage", ctypes.c_uint8), ("flags", ctypes.c_uint8),
                    ("comm", ctypes.c_char * 16), ("bytes", ctypes.c_uint8 * 128)]
    r = Rec(skb=0xA0, id=3, ts=9, stage=4, flags=1, pid=42, comm=b"curl", cap_len=2)
    r.bytes[0], r.bytes[1] = 0x45, 0
    skb, tid, h = hop_from_record(r)
    assert (skb, tid, h.stage, h.process, h.packet) == (0xA0, 3, "driver_xmit", "curl[42]", b"\x45\0")
    r.comm = b"ksoftirqd/1"  # a softirq in its thread is still a softirq, not a sender
    assert hop_from_record(r)[2].process == "softirq"


def test_footer_says_what_was_lost_evicted_and_limited():
    lines = Footer(5, 1, 2, 30, 0, 0, 1000).lines()
    assert "lost events: 1; in-flight skbs evicted: 2" in lines[0]
    assert lines[1] == "--max-rate 1000/s engaged: 30 skbs not traced"


def test_filter_flags_and_a_bad_device_name():
    assert TraceFilter(netns=5, pid=9).cflags() == ["-DNP_TRACE_NETNS=5U", "-DNP_TRACE_PID=9U"]
    assert TraceFilter(device="lo").cflags() == ["-DNP_TRACE_DEV0=28524ULL", "-DNP_TRACE_DEV1=0ULL"]
    with pytest.raises(NetprobeError):
        TraceFilter(device="x" * 16).cflags()


def test_pcapng_blocks_as_a_reader_walks_them():
    f = io.BytesIO()
    w = PcapngWriter(f, 128)
    w.write(1_700_000_000_123_456_789, b"\x45" + b"\0" * 20, 84, "ip_output[lo] > delivered")
    data, blocks, at = f.getvalue(), [], 0
    while at < len(data):
        btype, n = struct.unpack_from("<II", data, at)
        assert n % 4 == 0 and struct.unpack_from("<I", data, at + n - 4)[0] == n
        blocks.append((btype, data[at + 8:at + n - 4]))
        at += n
    assert [b[0] for b in blocks] == [0x0A0D0D0A, 1, 6]
    assert struct.unpack_from("<H", blocks[1][1])[0] == LINKTYPE_RAW
    _, hi, lo, cap, orig = struct.unpack_from("<IIIII", blocks[2][1])
    assert ((hi << 32) | lo, cap, orig) == (1_700_000_000_123_456_789, 21, 84)
    assert b"ip_output[lo] > delivered" in blocks[2][1]
