"""Real probes, real namespaces, real traffic: counts checked against what the kernel says."""
import subprocess
from contextlib import contextmanager

import pytest

from netprobe.model.catalogue import FENTRY, KPROBE, RAW_TRACEPOINT, TP_BTF
from netprobe.model.flowfilter import FlowFilter
from netprobe.kernel.facts import Kernel
from netprobe.kernel.session import ProbeSession
from netprobe.kernel.topology import VethPair, link_stats
from netprobe.kernel.traffic import tcp_flow, udp_flow

from following import linked

PORT = 47001


def delta(before, after, netns, ifindex, stage):
    p1 = after.values.get((netns, ifindex, stage), (0, 0))[0]
    p0 = before.values.get((netns, ifindex, stage), (0, 0))[0]
    return p1 - p0


def dev(session, ns_name, name):
    return next(d for d in session.devices.values() if d.netns_name == ns_name and d.name == name)


def send(kind, server, port, client_ns=None, server_ns=None):
    if kind == "udp":
        got = udp_flow(server_addr=server, port=port, count=50, server_ns=server_ns, client_ns=client_ns)
        # a fresh IPv6 neighbour may lose the datagram that triggered its resolution
        assert got >= 48
    else:
        got = tcp_flow(server_addr=server, port=port, nbytes=20000, server_ns=server_ns, client_ns=client_ns)
        assert got == 20000


# Counted with the mechanisms this kernel gives netprobe: its default choice (fentry in the
# QEMU lab; tp_btf here) and, on a kernel without kprobes, also the plain raw tracepoint
# programs that kernels without tp_btf get; where fentry is the default, also the kprobes
# (--prefer kprobe). All must count alike.
MECHANISMS_HERE = Kernel().mechanisms
TRACEPOINT_MECHANISMS = ([None] + ([RAW_TRACEPOINT] if KPROBE not in MECHANISMS_HERE else [])
                         + ([KPROBE] if FENTRY in MECHANISMS_HERE else []))


@contextmanager
def _session(mechanism, **kw):
    with ProbeSession(prefer=(mechanism,) if mechanism else (), **kw) as s:
        if mechanism is None and FENTRY in MECHANISMS_HERE:
            mechanism = FENTRY  # the kernel takes trampolines: fentry comes first
        elif mechanism is None and KPROBE not in MECHANISMS_HERE and TP_BTF in MECHANISMS_HERE:
            mechanism = TP_BTF  # where BTF allows it, tracepoints are reached as tp_btf
        if mechanism:
            assert s.states["dev_queue_xmit"].mechanism == mechanism, s.states
        yield s


@pytest.fixture(scope="module", params=TRACEPOINT_MECHANISMS)
def filtered(bpf_ok, request):
    """A netprobe that counts only our test port, so the host's other traffic cannot leak in."""
    with _session(request.param, flow=FlowFilter(port=PORT)) as s:
        yield s


@pytest.fixture(scope="module", params=TRACEPOINT_MECHANISMS)
def each_mechanism(bpf_ok, request):
    with _session(request.param) as s:
        yield s


@pytest.mark.parametrize("kind", ["udp", "tcp"])
@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_loopback_flow_is_counted_on_lo_and_never_on_a_veth(filtered, veth, kind, family):
    s = filtered
    linked([s], veth.a.path, veth.b.path)  # the new namespaces' devices and netfilter links
    a = veth.a
    addr = "127.0.0.1" if family == "ipv4" else "::1"
    before = s.read()
    send(kind, addr, PORT, client_ns=a.path, server_ns=a.path)
    after = s.read()
    lo = dev(s, a.ns, "lo")
    assert lo.xmit == "loopback_xmit"
    for stage in ("ip_output", "dev_queue_xmit", "driver_xmit", "driver_rx",
                  "netif_receive_skb", "ip_rcv", "l4_rcv"):
        assert delta(before, after, lo.netns, lo.ifindex, stage) > 0, stage
    # every packet that lo sent at dev_queue_xmit went through its driver, and came back in
    sent = delta(before, after, lo.netns, lo.ifindex, "driver_xmit")
    assert delta(before, after, lo.netns, lo.ifindex, "dev_queue_xmit") == sent
    assert delta(before, after, lo.netns, lo.ifindex, "driver_rx") == sent
    for d in s.devices.values():
        if d.name != "lo":
            assert delta(before, after, d.netns, d.ifindex, "driver_xmit") == 0, d.name
    # L4 send stage, keyed by namespace and protocol
    stage = "udp_sendmsg" if kind == "udp" else "tcp_sendmsg"
    assert delta(before, after, lo.netns, 0, stage) > 0


@pytest.mark.parametrize("kind", ["udp", "tcp"])
@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_flow_to_the_veth_peer_goes_through_veth_xmit_not_lo(filtered, veth, kind, family):
    s = filtered
    linked([s], veth.a.path, veth.b.path)
    server = veth.b.addr4 if family == "ipv4" else veth.b.addr6
    before = s.read()
    send(kind, server, PORT, client_ns=veth.a.path, server_ns=veth.b.path)
    after = s.read()
    va, vb = dev(s, veth.a.ns, veth.a.dev), dev(s, veth.b.ns, veth.b.dev)
    # "veth_xmit" where veth is built in, "veth_xmit [veth]" where it is a module
    assert (va.driver, va.xmit.split()[0], va.kind) == ("veth", "veth_xmit", "virtual")
    for stage in ("ip_output", "dev_queue_xmit", "driver_xmit"):
        assert delta(before, after, va.netns, va.ifindex, stage) > 0, stage
    for stage in ("driver_rx", "netif_receive_skb", "ip_rcv", "l4_rcv"):
        assert delta(before, after, vb.netns, vb.ifindex, stage) > 0, stage
    for ns in (veth.a.ns, veth.b.ns):
        lo = dev(s, ns, "lo")
        for stage in ("driver_xmit", "driver_rx"):
            assert delta(before, after, lo.netns, lo.ifindex, stage) == 0


def test_count_equals_the_kernels_own_counters_on_a_quiet_device(each_mechanism):
    session = each_mechanism
    with VethPair.create() as pair:
        for h in (pair.a, pair.b):
            # no IPv6 on this pair: no router solicitations or MLD reports arrive unasked
            subprocess.run(["ip", "netns", "exec", h.ns, "sysctl", "-qw",
                            f"net.ipv6.conf.{h.dev}.disable_ipv6=1"], check=True)
        linked([session], pair.a.path, pair.b.path)
        va, vb = dev(session, pair.a.ns, pair.a.dev), dev(session, pair.b.ns, pair.b.dev)
        ka0, kb0 = link_stats(pair.a.dev, pair.a.ns), link_stats(pair.b.dev, pair.b.ns)
        before = session.read()
        udp_flow(server_addr=pair.b.addr4, port=PORT + 1, count=200, server_ns=pair.b.path,
                 client_ns=pair.a.path)
        tcp_flow(server_addr=pair.b.addr4, port=PORT + 2, nbytes=100000, server_ns=pair.b.path,
                 client_ns=pair.a.path)
        after = session.read()
        ka1, kb1 = link_stats(pair.a.dev, pair.a.ns), link_stats(pair.b.dev, pair.b.ns)
        tx_a = ka1["tx_packets"] - ka0["tx_packets"]
        rx_b = kb1["rx_packets"] - kb0["rx_packets"]
        tx_b = kb1["tx_packets"] - kb0["tx_packets"]
        assert tx_a > 200
        assert delta(before, after, va.netns, va.ifindex, "driver_xmit") == tx_a
        assert delta(before, after, vb.netns, vb.ifindex, "netif_receive_skb") == rx_b
        assert delta(before, after, vb.netns, vb.ifindex, "driver_xmit") == tx_b


def test_lo_of_two_namespaces_is_two_rows(session):
    with VethPair.create() as pair:
        linked([session], pair.a.path, pair.b.path)
        before = session.read()
        udp_flow(server_addr="127.0.0.1", port=PORT + 3, count=10, server_ns=pair.a.path,
                 client_ns=pair.a.path)
        udp_flow(server_addr="127.0.0.1", port=PORT + 3, count=20, server_ns=pair.b.path,
                 client_ns=pair.b.path)
        after = session.read()
        la, lb = dev(session, pair.a.ns, "lo"), dev(session, pair.b.ns, "lo")
        assert la.netns != lb.netns and la.ifindex == lb.ifindex == 1
        assert delta(before, after, la.netns, 1, "driver_xmit") == 10
        assert delta(before, after, lb.netns, 1, "driver_xmit") == 20


@pytest.mark.parametrize("flt, counted, ignored", [
    (FlowFilter(proto="udp"), "udp", "tcp"),
    (FlowFilter(proto="tcp"), "tcp", "udp"),
])
def test_protocol_filter_is_applied_in_the_kernel(bpf_ok, veth, flt, counted, ignored):
    with ProbeSession(flow=flt) as s:
        lo = dev(s, veth.a.ns, "lo")
        before = s.read()
        send(ignored, "127.0.0.1", PORT + 4, client_ns=veth.a.path, server_ns=veth.a.path)
        mid = s.read()
        send(counted, "127.0.0.1", PORT + 5, client_ns=veth.a.path, server_ns=veth.a.path)
        after = s.read()
    assert delta(before, mid, lo.netns, 1, "driver_xmit") == 0
    assert delta(mid, after, lo.netns, 1, "driver_xmit") > 0


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_host_filter_counts_only_that_address(bpf_ok, veth, family):
    other, wanted = ("127.0.0.1", veth.b.addr4) if family == "ipv4" else ("::1", veth.b.addr6)
    with ProbeSession(flow=FlowFilter(host=wanted)) as s:
        va = dev(s, veth.a.ns, veth.a.dev)
        lo = dev(s, veth.a.ns, "lo")
        before = s.read()
        udp_flow(server_addr=other, port=PORT + 6, count=20, server_ns=veth.a.path, client_ns=veth.a.path)
        udp_flow(server_addr=wanted, port=PORT + 6, count=20, server_ns=veth.b.path, client_ns=veth.a.path)
        after = s.read()
    assert delta(before, after, lo.netns, 1, "driver_xmit") == 0
    assert delta(before, after, va.netns, va.ifindex, "driver_xmit") == 20


def test_two_netprobes_at_once_both_count_every_stage(session, veth):
    """A second netprobe (watch beside the exporter) gets its own netfilter slots."""
    with ProbeSession(flow=FlowFilter(port=PORT + 7)) as other:
        assert all(st.attached for st in other.states.values()), other.states
        linked([session, other], veth.a.path, veth.b.path)
        lo = dev(other, veth.a.ns, "lo")
        b1, b2 = session.read(), other.read()
        udp_flow(server_addr="127.0.0.1", port=PORT + 7, count=10, server_ns=veth.a.path,
                 client_ns=veth.a.path)
        a1, a2 = session.read(), other.read()
    for stage in ("ip_output", "ip_rcv", "l4_rcv"):
        assert delta(b1, a1, lo.netns, 1, stage) == 10, stage
        assert delta(b2, a2, lo.netns, 1, stage) == 10, stage
