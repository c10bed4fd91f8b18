"""The devices' own drop counters, beside netprobe's: rx_dropped, tx_dropped and
rx_missed_errors from the kernel's link statistics (what `ip -s link` shows). A NIC that runs
out of ring buffers drops in hardware or in its driver before any sk_buff exists, so those
drops never reach skb:kfree_skb; these counters are where they show.

Read with one rtnetlink dump (RTM_GETLINK, IFLA_STATS64) per namespace: a netlink socket
belongs to the namespace it was made in. struct rtnl_link_stats64 is user-space ABI: its
fields only ever grow at the end. The flow filters do not apply to these counters."""
from __future__ import annotations

import os
import socket
import struct
from typing import Iterable

from . import bpfsys
from ..errors import NetprobeError
from ..model.linkdrops import COUNTERS, LinkDrops, LinkDropsRead
from .netns import Netns

RTM_NEWLINK, RTM_GETLINK = 16, 18
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
IFLA_IFNAME, IFLA_STATS64 = 3, 23
_NLMSG = struct.Struct("<IHHII")   # len, type, flags, seq, pid
_IFINFO = struct.Struct("<BxHiII")  # family, type, index, flags, change
_RTA = struct.Struct("<HH")         # len, type
# struct rtnl_link_stats64: the u64 fields' places
_RX_DROPPED, _TX_DROPPED, _RX_MISSED = 6, 7, 15
def _align(n: int) -> int:
    return (n + 3) & ~3


def request(seq: int = 1) -> bytes:
    body = _IFINFO.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
    return _NLMSG.pack(_NLMSG.size + len(body), RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP, seq,
                       0) + body


def parse(data: bytes, netns: int) -> tuple[list[LinkDrops], bool]:
    """The links in one buffer of a dump's replies, and whether the dump is done."""
    links, pos = [], 0
    while pos + _NLMSG.size <= len(data):
        length, mtype, _flags, _seq, _pid = _NLMSG.unpack_from(data, pos)
        if length < _NLMSG.size:
            break
        if mtype == NLMSG_DONE:
            return links, True
        if mtype == NLMSG_ERROR:
            err = -struct.unpack_from("<i", data, pos + _NLMSG.size)[0]
            raise OSError(err, f"RTM_GETLINK: {os.strerror(err)}")
        if mtype == RTM_NEWLINK:
            _fam, _type, index, _fl, _ch = _IFINFO.unpack_from(data, pos + _NLMSG.size)
            name, stats = "", None
            at, end = pos + _NLMSG.size + _IFINFO.size, pos + length
            while at + _RTA.size <= end:
                alen, atype = _RTA.unpack_from(data, at)
                if alen < _RTA.size:
                    break
                payload = data[at + _RTA.size:at + alen]
                if atype == IFLA_IFNAME:
                    name = payload.split(b"\0")[0].decode(errors="replace")
                elif atype == IFLA_STATS64 and len(payload) >= 8 * (_RX_MISSED + 1):
                    stats = struct.unpack_from(f"<{_RX_MISSED + 1}Q", payload)
                at += _align(alen)
            if stats is not None:
                links.append(LinkDrops(netns, index, name, stats[_RX_DROPPED], stats[_TX_DROPPED],
                                       stats[_RX_MISSED]))
        pos += _align(length)
    return links, False


def read_netns(ns: Netns) -> list[LinkDrops]:
    try:
        with bpfsys.in_netns(ns.path):
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
    except OSError as e:
        raise NetprobeError(f"netlink socket in netns {ns.name}: {e.strerror}") from None
    links: list[LinkDrops] = []
    with sock:
        sock.settimeout(2.0)
        sock.sendto(request(), (0, 0))
        done = False
        while not done:
            got, done = parse(sock.recv(1 << 16), ns.inum)
            links += got
    return links


def read(namespaces: Iterable[Netns]) -> LinkDropsRead:
    """Every device's counters in every namespace given; one that cannot be read is named."""
    values, errors = {}, {}
    for ns in namespaces:
        try:
            for link in read_netns(ns):
                values[link.netns, link.ifindex] = link
        except (OSError, NetprobeError) as e:
            errors[ns.inum] = getattr(e, "strerror", None) or str(e)
    return LinkDropsRead(values, errors)

