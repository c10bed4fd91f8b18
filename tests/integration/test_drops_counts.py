"""Drop counts against the kernel's own books, in namespaces of the test's own: UDP to a closed
port on 127.0.0.1 and ::1 against nstat's UdpNoPorts / Udp6NoPorts, and an nftables rule's
counter against netprobe's NETFILTER_DROP drops across a veth pair, IPv4 and IPv6, at the stage
each hook belongs to."""
import json
import os
import socket
import subprocess
import time

import pytest

from netprobe.kernel import bpfsys
from netprobe.model.dropcounts import UNKNOWN
from netprobe.model.programsets import DROPS
from netprobe.kernel.session import ProbeSession
from netprobe.kernel.topology import VethPair

from following import linked


@pytest.fixture(scope="module")
def drops(bpf_ok):
    with ProbeSession(sets=(DROPS,)) as s:
        assert s.states["drop"].attached, s.states["drop"].describe()
        yield s


def nstat(ns: str, *names: str) -> dict[str, int]:
    # -a absolute, -s leave nstat's history alone, -z zeros too
    out = subprocess.run(["ip", "netns", "exec", ns, "nstat", "-asz", "--json", *names],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)["kernel"]


def in_ns(path, family, kind=socket.SOCK_DGRAM):
    with bpfsys.in_netns(path):
        return socket.socket(family, kind)


def settled(session, pred, timeout=2.0):
    deadline = time.monotonic() + timeout
    while True:
        d = session.read_drops()
        if pred(d) or time.monotonic() > deadline:
            return d
        time.sleep(0.05)


def total(counts, **match):
    return sum(p for k, (p, _) in counts.values.items()
               if all(getattr(k, f) == v for f, v in match.items()))


def test_udp_to_a_closed_port_equals_udp_no_ports(drops):
    n = 7
    with VethPair.create() as pair:
        inum = os.stat(pair.a.path).st_ino
        linked([drops], pair.a.path, pair.b.path)
        before_k = nstat(pair.a.ns, "UdpNoPorts", "Udp6NoPorts")
        before = drops.read_drops()
        for fam, addr, count in ((socket.AF_INET, "127.0.0.1", n), (socket.AF_INET6, "::1", n + 2)):
            with in_ns(pair.a.path, fam) as s:
                for _ in range(count):
                    s.sendto(b"x", (addr, 9))  # discard: nobody listens in a fresh namespace
        after_k = nstat(pair.a.ns, "UdpNoPorts", "Udp6NoPorts")
        reason = "NO_SOCKET" if drops.drops_reasons else UNKNOWN
        fn = {"__udp4_lib_rcv": "UdpNoPorts", "__udp6_lib_rcv": "Udp6NoPorts"}
        want = {c: after_k[c] - before_k[c] for c in fn.values()}
        assert want == {"UdpNoPorts": n, "Udp6NoPorts": n + 2}
        after = settled(drops, lambda d: sum(
            total(d, netns=inum, function=f) for f in fn) - sum(
            total(before, netns=inum, function=f) for f in fn) >= 2 * n + 2)
        got = {fn[f]: total(after, netns=inum, ifindex=1, stage="l4_rcv", reason=reason,
                            function=f)
               - total(before, netns=inum, ifindex=1, stage="l4_rcv", reason=reason, function=f)
               for f in fn}
        assert got == want, after.values


NFT = """
table inet np_drop_test {
  chain pre { type filter hook prerouting priority 0; udp dport %(pre)d counter drop; }
  chain inp { type filter hook input priority 0; udp dport %(inp)d counter drop; }
}"""


def nft_counters(ns: str) -> dict[str, int]:
    out = subprocess.run(["ip", "netns", "exec", ns, "nft", "-j", "list", "table", "inet",
                          "np_drop_test"], capture_output=True, text=True, check=True).stdout
    got = {}
    for item in json.loads(out)["nftables"]:
        rule = item.get("rule")
        if rule:
            got[rule["chain"]] = next(e["counter"]["packets"] for e in rule["expr"] if "counter" in e)
    return got


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_nftables_drops_equal_the_rules_counter(drops, family):
    ports = {"pre": 7001, "inp": 7002}
    sends = {"pre": 5, "inp": 8}
    with VethPair.create() as pair:
        pair.wait_up()
        subprocess.run(["ip", "netns", "exec", pair.b.ns, "nft", "-f", "-"], check=True,
                       text=True, input=NFT % ports)
        linked([drops], pair.a.path, pair.b.path)
        inum = os.stat(pair.b.path).st_ino
        ifindex = int(subprocess.run(["ip", "netns", "exec", pair.b.ns, "cat",
                                      f"/sys/class/net/{pair.b.dev}/ifindex"],
                                     capture_output=True, text=True, check=True).stdout)
        before = drops.read_drops()
        fam, addr = ((socket.AF_INET, pair.b.addr4) if family == "ipv4"
                     else (socket.AF_INET6, pair.b.addr6))
        with in_ns(pair.a.path, fam) as s:
            for chain, port in ports.items():
                for _ in range(sends[chain]):
                    s.sendto(b"y" * 100, (addr, port))
        want = nft_counters(pair.b.ns)
        assert want == sends  # the rules really dropped what was sent
        reason = "NETFILTER_DROP" if drops.drops_reasons else UNKNOWN

        def at(d, stage):
            return total(d, netns=inum, ifindex=ifindex, stage=stage, reason=reason)

        after = settled(drops, lambda d: at(d, "ip_rcv") - at(before, "ip_rcv") >= sends["pre"]
                        and at(d, "l4_rcv") - at(before, "l4_rcv") >= sends["inp"])
        # PRE_ROUTING drops at ip_rcv, LOCAL_IN drops at l4_rcv
        got = {"pre": at(after, "ip_rcv") - at(before, "ip_rcv"),
               "inp": at(after, "l4_rcv") - at(before, "l4_rcv")}
        assert got == want, after.values


def test_device_counters_equal_ip_link_and_the_veth_drop_is_seen(drops):
    """A veth whose peer is down drops in veth_xmit: its tx_dropped counts it (link
    statistics, read by netlink in the namespace, as `ip -s link` shows them) and netprobe
    sees it at driver_xmit on that veth."""
    from netprobe.kernel import linkstats, netns

    # without IPv6: the veth's own router solicitations and MLD reports, dropped the same way,
    # once made it 5 where 4 were sent
    with VethPair.create(ipv6=False) as pair:
        pair.wait_up()
        subprocess.run(["ip", "-n", pair.b.ns, "link", "set", pair.b.dev, "down"], check=True)
        subprocess.run(["ip", "-n", pair.a.ns, "neigh", "add", pair.b.addr4, "lladdr",
                        "02:00:00:00:00:01", "dev", pair.a.dev], check=True)
        linked([drops], pair.a.path, pair.b.path)
        inum = os.stat(pair.a.path).st_ino
        before = drops.read_drops()
        with in_ns(pair.a.path, socket.AF_INET) as s:
            for _ in range(4):
                s.sendto(b"z", (pair.b.addr4, 7003))
        link = json.loads(subprocess.run(["ip", "-n", pair.a.ns, "-s", "-j", "link", "show",
                                          pair.a.dev], capture_output=True, text=True,
                                         check=True).stdout)[0]
        ours = linkstats.read([netns.Netns(inum, pair.a.path, pair.a.ns)])
        assert not ours.errors
        mine = ours.values[inum, link["ifindex"]]
        assert (mine.name, mine.tx_dropped, mine.rx_dropped) == (
            pair.a.dev, link["stats64"]["tx"]["dropped"], link["stats64"]["rx"]["dropped"])
        assert mine.tx_dropped >= 4
        here = dict(netns=inum, ifindex=link["ifindex"])

        def sent_ones(d):
            return sum(total(d, stage=s, **here) for s in ("driver_xmit", "dev_queue_xmit"))

        after = settled(drops, lambda d: sent_ones(d) - sent_ones(before) >= 4)
        # in veth_xmit's hand-over to the peer (__dev_forward_skb2 on 6.18: driver_xmit), or,
        # once linkwatch has seen the carrier go, by the deactivated qdisc (dev_queue_xmit)
        assert sent_ones(after) - sent_ones(before) == 4, after.values


@pytest.mark.parametrize("prefer", ["tp_btf", "raw_tracepoint"])
def test_a_kernel_without_reasons_gets_the_place_only(bpf_ok, prefer):
    """As before 5.17: no reason argument is read (the program is built without
    -DNP_DROP_REASONS), and drops are still placed by namespace, device, stage and function."""
    from netprobe.kernel.facts import Kernel

    kernel = Kernel()
    kernel.__dict__["drop_reasons"] = None  # what a kernel without enum skb_drop_reason gives
    with VethPair.create() as pair, ProbeSession(sets=(DROPS,), prefer=(prefer,),
                                                 kernel=kernel) as s:
        assert "-DNP_DROP_REASONS" not in s.program.cflags and not s.drops_reasons
        assert s.states["drop"].mechanism == prefer
        inum = os.stat(pair.a.path).st_ino
        with in_ns(pair.a.path, socket.AF_INET) as so:
            for _ in range(3):
                so.sendto(b"x", ("127.0.0.1", 9))
        d = settled(s, lambda d: total(d, netns=inum) >= 3)
        assert total(d, netns=inum, ifindex=1, stage="l4_rcv", reason=UNKNOWN,
                     function="__udp4_lib_rcv") == 3, d.values
