"""rtnetlink link dumps parsed from bytes: names, the three drop counters, the dump's end,
and an error reply."""
import struct

import pytest

from netprobe.kernel import linkstats
from netprobe.kernel.linkstats import LinkDrops, parse


def rta(kind, payload):
    n = 4 + len(payload)
    return struct.pack("<HH", n, kind) + payload + b"\0" * ((-n) % 4)


def msg(mtype, body):
    return struct.pack("<IHHII", 16 + len(body), mtype, 2, 1, 0) + body


def link(index, name, stats):
    info = struct.pack("<BxHiII", 0, 1, index, 0, 0)
    return msg(linkstats.RTM_NEWLINK, info + rta(linkstats.IFLA_IFNAME, name.encode() + b"\0")
               + rta(99, b"\1\2\3") + rta(linkstats.IFLA_STATS64, struct.pack("<24Q", *stats)))


def stats(rx_dropped=0, tx_dropped=0, missed=0):
    s = list(range(100, 124))  # every other counter nonzero, so a wrong place shows
    s[6], s[7], s[15] = rx_dropped, tx_dropped, missed
    return s


def test_links_and_their_drop_counters():
    data = link(1, "lo", stats()) + link(7, "eth0", stats(5, 3, 11))
    assert parse(data, 42) == ([LinkDrops(42, 1, "lo", 0, 0, 0),
                                LinkDrops(42, 7, "eth0", 5, 3, 11)], False)


def test_done_ends_the_dump():
    data = link(2, "veth0", stats(1)) + msg(linkstats.NLMSG_DONE, b"\0" * 4)
    links, done = parse(data, 1)
    assert done and [x.name for x in links] == ["veth0"]


def test_a_link_without_stats64_is_left_out():
    info = struct.pack("<BxHiII", 0, 1, 3, 0, 0)
    data = msg(linkstats.RTM_NEWLINK, info + rta(linkstats.IFLA_IFNAME, b"x\0"))
    assert parse(data, 1) == ([], False)


def test_an_error_reply_raises():
    with pytest.raises(OSError):
        parse(msg(linkstats.NLMSG_ERROR, struct.pack("<i", -1) + b"\0" * 16), 1)


def test_the_request_is_a_dump_of_links():
    length, mtype, flags, _seq, _pid = struct.unpack_from("<IHHII", linkstats.request())
    assert (length, mtype, flags) == (32, linkstats.RTM_GETLINK, 0x301)
