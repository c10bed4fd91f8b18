"""The flow filter's edge cases, each against its oracle: tcpdump with the same pcap filter on the
same device, or the same traffic counted without a filter. (issue 10, items 1, 2, 3 and 5)"""
import re
import signal
import socket
import struct
import subprocess
import time
from contextlib import contextmanager

import pytest

from netprobe.kernel.bpfsys import in_netns
from netprobe.model.flowfilter import FlowFilter
from netprobe.kernel.session import ProbeSession
from netprobe.kernel.topology import VethPair
from netprobe.kernel.traffic import tcp_flow

from following import linked

PORT = 30069
DEVICE_STAGES = ("ip_output", "dev_queue_xmit", "driver_xmit", "driver_rx", "netif_receive_skb",
                 "ip_rcv", "l4_rcv")


def delta(before, after, key):
    return after.values.get(key, (0, 0))[0] - before.values.get(key, (0, 0))[0]


def dev(session, ns_name, name):
    return next(d for d in session.devices.values() if d.netns_name == ns_name and d.name == name)


def settled(*sessions, quiet_s=0.1, max_s=2.0):
    """Reads once the counters stop moving: a flow's last ACK or FIN may still be on its way"""
    reads = [s.read() for s in sessions]
    deadline = time.monotonic() + max_s
    while time.monotonic() < deadline:
        time.sleep(quiet_s)
        again = [s.read() for s in sessions]
        if all(a.values == r.values for a, r in zip(again, reads)):
            break
        reads = again
    return reads


@contextmanager
def tcpdump(ns, device, pcap_filter):
    """The oracle: how many packets tcpdump's own filter matches on `device` in `ns`, in
    result["count"] once the block is left. Headers only (-s): at its full snapshot length a
    ring of lo's 64 KiB frames overflows within tens of packets."""
    p = subprocess.Popen(["ip", "netns", "exec", ns, "tcpdump", "-i", device, "-nn", "-p",
                          "-s", "128", "-B", "8192", "--immediate-mode", "-w", "/dev/null",
                          pcap_filter],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    result = {}
    try:
        first = p.stderr.readline()
        assert "listening on" in first, first
        yield result
        time.sleep(0.3)
    finally:
        p.send_signal(signal.SIGINT)
        err = p.communicate(timeout=10)[1]
    assert re.search(r"\b0 packets dropped by kernel", err), err  # an oracle that missed none
    result["count"] = int(re.search(r"(\d+) packets? captured", err)[1])


def send_fragmented_udp(pair, family, port, count=10, size=3000):
    """`count` datagrams of `size` bytes from a to b across the veth (MTU 1500, so three
    fragments each), their payload `port` over and over: every non-first fragment holds the
    port where a UDP header's ports would be."""
    fam = socket.AF_INET if family == "ipv4" else socket.AF_INET6
    dst = pair.b.addr4 if family == "ipv4" else pair.b.addr6
    payload = struct.pack(">H", port) * (size // 2)
    with in_netns(pair.b.path):
        srv = socket.socket(fam, socket.SOCK_DGRAM)
    with in_netns(pair.a.path):
        cli = socket.socket(fam, socket.SOCK_DGRAM)
    with srv, cli:
        srv.bind((dst, port))
        srv.settimeout(2.0)
        for _ in range(count):
            cli.sendto(payload, (dst, port))
            assert len(srv.recv(65536)) == size


# tcpdump's `port` does not walk IPv6 extension headers (it matches no IPv6 fragment at all),
# so for IPv6 the oracle spells out "a first fragment of a UDP datagram to or from the port"
def first_fragment_ports6(port):
    return (f"ip6[6] = 44 and ip6[40] = 17 and (ip6[42:2] & 0xfff8) = 0 "
            f"and (ip6[48:2] = {port} or ip6[50:2] = {port})")


@pytest.mark.parametrize("family, flt, pcap, expected", [
    # item 1: a non-first fragment has no ports; tcpdump `port` matches the first fragments only
    ("ipv4", FlowFilter(port=PORT), f"port {PORT}", 10),
    ("ipv4", FlowFilter(proto="udp"), "udp", 30),
    # item 2: the IPv6 fragment header is walked to the UDP header it hides
    ("ipv6", FlowFilter(port=PORT), first_fragment_ports6(PORT), 10),
    ("ipv6", FlowFilter(proto="udp"), "ip6 and udp", 30),
    ("ipv6", FlowFilter(proto="udp", port=PORT), first_fragment_ports6(PORT), 10),
], ids=["ipv4-port", "ipv4-udp", "ipv6-port", "ipv6-udp", "ipv6-udp-port"])
def test_fragments_are_counted_as_tcpdump_counts_them(bpf_ok, header_reads, family, flt, pcap,
                                                     expected):
    with VethPair.create() as pair, ProbeSession(flow=flt) as s:
        pair.wait_up()
        linked([s], pair.a.path, pair.b.path)
        va, vb = dev(s, pair.a.ns, pair.a.dev), dev(s, pair.b.ns, pair.b.dev)
        with tcpdump(pair.a.ns, pair.a.dev, pcap) as sent, \
                tcpdump(pair.b.ns, pair.b.dev, pcap) as received:
            (before,) = settled(s)
            send_fragmented_udp(pair, family, PORT)
            (after,) = settled(s)
    assert sent["count"] == received["count"] == expected  # the oracle saw what was meant
    for stage in ("dev_queue_xmit", "driver_xmit"):
        assert delta(before, after, (va.netns, va.ifindex, stage)) == sent["count"], stage
    for stage in ("driver_rx", "netif_receive_skb"):
        assert delta(before, after, (vb.netns, vb.ifindex, stage)) == received["count"], stage


def dual_stack_exchange(ns_path, port, rounds=20):
    """A dual-stack TCP server (AF_INET6 on ::) echoing an IPv4 client's `rounds` messages, and
    a dual-stack UDP socket connected to ::ffff:127.0.0.1 sending `rounds` datagrams. Returns
    the send calls made: (TCP, UDP)."""
    with in_netns(ns_path):
        lst = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        cli = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        usrv = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        ucli = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    with lst, cli, usrv, ucli:
        lst.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        lst.bind(("::", port))
        lst.listen(1)
        cli.connect(("127.0.0.1", port))
        conn, _ = lst.accept()
        with conn:
            for _ in range(rounds):
                cli.sendall(b"q" * 100)
                got = b""
                while len(got) < 100:
                    got += conn.recv(100 - len(got))
                conn.sendall(got)
                back = b""
                while len(back) < 100:
                    back += cli.recv(100 - len(back))
        usrv.bind(("127.0.0.1", port))
        usrv.settimeout(2.0)
        ucli.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        ucli.connect(("::ffff:127.0.0.1", port))
        for _ in range(rounds):
            ucli.send(b"d" * 100)
            usrv.recv(65536)
    return 2 * rounds, rounds


# item 3: a dual-stack socket's addresses are v4-mapped; they are the IPv4 address they carry,
# and so is a v4-mapped --host
@pytest.mark.parametrize("host", ["127.0.0.1", "::ffff:127.0.0.1"])
def test_ipv4_host_matches_a_dual_stack_sockets_sends(bpf_ok, header_reads, veth, host):
    with ProbeSession(flow=FlowFilter(host=host)) as s:
        linked([s], veth.a.path, veth.b.path)
        lo = dev(s, veth.a.ns, "lo")
        with tcpdump(veth.a.ns, "lo", "host 127.0.0.1") as dump:
            (before,) = settled(s)
            tcp_calls, udp_calls = dual_stack_exchange(veth.a.path, PORT)
            (after,) = settled(s)
    assert delta(before, after, (lo.netns, 0, "tcp_sendmsg")) == tcp_calls
    assert delta(before, after, (lo.netns, 0, "udp_sendmsg")) == udp_calls
    # the packets are IPv4 on the wire: the skb stages judged them right before, and still do
    assert dump["count"] > tcp_calls + udp_calls
    assert delta(before, after, (lo.netns, lo.ifindex, "driver_xmit")) == dump["count"]


# item 5: every stage judges an skb the same way. A TCP flow (handshake, 512 KiB, close) on the
# namespace's lo, counted by a port-filtered netprobe and, beside it, an unfiltered one (the flow
# is the only traffic on that lo): the filter may not change any stage's count.
@pytest.fixture(scope="module")
def beside(bpf_ok):
    with ProbeSession(flow=FlowFilter(port=PORT)) as filtered, ProbeSession() as unfiltered:
        yield filtered, unfiltered


# "kernel default": lo's MTU of 65536 lets TCP build sk_buffs of two 64 KiB segments (BIG TCP:
# IPv4 with tot_len 0, IPv6 behind a hop-by-hop jumbo header), which validate_xmit_skb splits in
# software before loopback_xmit, as they exceed lo's gso_max_size: driver_xmit and the receive
# stages count more sk_buffs than ip_output and dev_queue_xmit, filtered or not. "unsplit": an MTU
# that keeps IPv4 below 64 KiB and a gso_max_size that takes IPv6's BIG TCP whole (its jumbo
# header then reaches every stage): the same sk_buffs pass every stage.
LO_SETUPS = {"kernel-default": None, "unsplit": ("mtu", "32768", "gso_max_size", "524280")}


@pytest.mark.parametrize("lo_setup", LO_SETUPS)
@pytest.mark.parametrize("to", ["own-address", "loopback"])
@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_a_tcp_flow_is_judged_alike_at_every_stage_on_lo(beside, family, to, lo_setup):
    filtered, unfiltered = beside
    with VethPair.create() as pair:
        if LO_SETUPS[lo_setup]:
            subprocess.run(["ip", "-n", pair.a.ns, "link", "set", "lo", *LO_SETUPS[lo_setup]],
                           check=True)
        pair.wait_up()
        linked(beside, pair.a.path)
        lo = dev(filtered, pair.a.ns, "lo")
        addr = {("ipv4", "own-address"): pair.a.addr4, ("ipv6", "own-address"): pair.a.addr6,
                ("ipv4", "loopback"): "127.0.0.1", ("ipv6", "loopback"): "::1"}[family, to]
        b_f, b_u = settled(filtered, unfiltered)
        got = tcp_flow(server_addr=addr, port=PORT, nbytes=512 * 1024, chunk=4096,
                       server_ns=pair.a.path, client_ns=pair.a.path)
        a_f, a_u = settled(filtered, unfiltered)
    assert got == 512 * 1024
    counts = {st: delta(b_f, a_f, (lo.netns, lo.ifindex, st)) for st in DEVICE_STAGES}
    unfiltered_counts = {st: delta(b_u, a_u, (lo.netns, lo.ifindex, st)) for st in DEVICE_STAGES}
    assert counts == unfiltered_counts
    assert counts["ip_output"] == counts["dev_queue_xmit"] > 0
    assert len({counts[st] for st in DEVICE_STAGES[2:]}) == 1, counts
    if lo_setup == "unsplit":
        assert len(set(counts.values())) == 1, counts
