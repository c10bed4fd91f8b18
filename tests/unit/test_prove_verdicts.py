"""`netprobe prove`'s pure half: the plan, the per-flow deltas, the claims and how they read."""
import json

import pytest

from netprobe.model.devices import Device
from netprobe.model.catalogue import BY_NAME
from netprobe.model.stagestate import Refusal, StageState
from netprobe.model.prove import (LOOPBACK, NIC, CasePlan, CaseResult, DevCount, FlowPlan,
                                  FlowResult, Peer, Report, case_lines, flow_counts, judge,
                                  plan_cases, text, to_json)
from netprobe.kernel.topology import Host

A = Host("np-t-a", "npta", "10.9.0.1", "fd00:9::1")
B = Host("np-t-b", "nptb", "10.9.0.2", "fd00:9::2")
NS_A, NS_B, ROOT = 11, 12, 1
WORDS = {"tcp_sendmsg": "raw_tracepoint sock:sock_send_length",
        "udp_sendmsg": "raw_tracepoint sock:sock_send_length",
        "ip_output": "netfilter ipv4:POST_ROUTING, ipv6:POST_ROUTING",
        "dev_queue_xmit": "raw_tracepoint net:net_dev_queue",
        "driver_xmit": "raw_tracepoint net:net_dev_start_xmit",
        "driver_rx": "raw_tracepoint net:netif_rx, net:napi_gro_receive_entry",
        "netif_receive_skb": "raw_tracepoint net:netif_receive_skb",
        "ip_rcv": "netfilter ipv4:PRE_ROUTING, ipv6:PRE_ROUTING",
        "l4_rcv": "netfilter ipv4:LOCAL_IN, ipv6:LOCAL_IN"}
# what a second netprobe at once leaves this one on a kernel without kprobes: netfilter links
# at the same priority are refused (EBUSY)
BUSY = (Refusal("netfilter", "Device or resource busy"),)


def _state(name: str, words: str | None = None) -> StageState:
    if words is None:
        return StageState(BY_NAME[name], None, fell_back_from=BUSY)
    mech, targets = words.split(" ", 1)
    return StageState(BY_NAME[name], mech, tuple(targets.split(", ")))


MECH = {name: _state(name, words) for name, words in WORDS.items()}

TX = ("ip_output", "dev_queue_xmit", "driver_xmit")
RX = ("driver_rx", "netif_receive_skb", "ip_rcv", "l4_rcv")


def dev(name, n_tx=0, n_rx=0, ns=NS_A, driver=None, xmit=None, physical=False, ifindex=None):
    driver = driver or {"lo": "loopback"}.get(name, "veth")
    xmit = xmit if xmit is not None else {"loopback": "loopback_xmit", "veth": "veth_xmit"}.get(driver, "")
    stages = {**{s: n_tx for s in TX if n_tx}, **{s: n_rx for s in RX if n_rx}}
    return DevCount(ns, ifindex or (1 if name == "lo" else 2), "root" if ns == ROOT else f"ns{ns}",
                    name, driver, xmit,
                    physical, stages)


def flow(proto, server, *devices, error="", echo=False):
    return FlowResult(FlowPlan(proto, server, echo=echo), tuple(devices), error=error)


def _plan(id, expect, nic=None):
    return CasePlan(id, f"title of {id}", expect, (), nic=nic)


# -- plan ------------------------------------------------------------------------------------
def test_plan_has_three_cases_each_tcp_and_udp_over_ipv4_and_ipv6():
    cases = plan_cases(A, B)
    assert [c.id for c in cases] == ["loopback", "own_address", "nic"]
    assert [c.expect for c in cases] == [LOOPBACK, LOOPBACK, NIC]
    assert [(f.proto, f.server) for f in cases[0].flows] == [
        ("tcp", "127.0.0.1"), ("udp", "127.0.0.1"), ("tcp", "::1"), ("udp", "::1")]
    # case 2: the client's own veth addresses, client and server both in A
    assert {f.server for f in cases[1].flows} == {A.addr4, A.addr6}
    assert all(f.client_ns == f.server_ns == A.path for f in cases[0].flows + cases[1].flows)
    # case 3: from A across the veth to a server in B, which must leave through A's veth end
    nic = cases[2]
    assert nic.nic == A.dev and {f.server for f in nic.flows} == {B.addr4, B.addr6}
    assert all(f.client_ns == A.path and f.server_ns == B.path and not f.echo for f in nic.flows)


def test_plan_with_peer_sends_case_3_from_own_namespace_to_the_echo_peer():
    cases = plan_cases(A, B, Peer("192.0.2.7", 7, ("tcp",)), own_ns="root")
    nic = cases[2]
    assert [(f.proto, f.server, f.echo, f.client_ns) for f in nic.flows] == [
        ("tcp", "192.0.2.7", True, None)]
    assert nic.nic is None  # identified from the counts
    assert "192.0.2.7:7" in nic.title and "root" in nic.title
    assert "[fd00::7]:7777" in plan_cases(A, B, Peer("fd00::7", 7777))[2].title


# -- deltas ----------------------------------------------------------------------------------
def test_flow_counts_keeps_only_devices_that_counted_and_sums_l4_send():
    lo = Device(NS_A, 1, "lo", "loopback", False, "loopback_xmit", 0x10, "np-t-a")
    eth = Device(ROOT, 2, "eth0", "e1000", True, "e1000_xmit_frame [e1000]", 0x20, "root")
    before = {(NS_A, 1, "driver_xmit"): (10, 1000), (ROOT, 2, "driver_xmit"): (50, 5000),
              (NS_A, 0, "tcp_sendmsg"): (3, 300)}
    now = {(NS_A, 1, "driver_xmit"): (25, 2500), (NS_A, 1, "ip_rcv"): (15, 1500),
           (ROOT, 2, "driver_xmit"): (50, 5000), (NS_A, 0, "tcp_sendmsg"): (9, 900),
           (NS_B, 3, "l4_rcv"): (4, 400)}
    devs, l4 = flow_counts(before, now, {lo.key: lo, eth.key: eth}, {NS_B: "np-t-b"})
    assert [(d.name, dict(d.stages)) for d in devs] == [
        ("lo", {"driver_xmit": 15, "ip_rcv": 15}),
        ("if3", {"l4_rcv": 4})]          # a device netprobe has not named yet still shows
    assert devs[1].netns_name == "np-t-b"
    assert l4 == 6


def test_flow_counts_row_reset_in_between_counts_from_zero():
    devs, _ = flow_counts({(NS_A, 1, "driver_xmit"): (100, 0)}, {(NS_A, 1, "driver_xmit"): (7, 0)}, {})
    assert devs[0].at("driver_xmit") == 7


# -- claims ----------------------------------------------------------------------------------
@pytest.mark.parametrize("flows, holds, text", [
    # lo alone: the claim holds, with the sum over the address's flows
    ([flow("tcp", "127.0.0.1", dev("lo", 60, 60)), flow("udp", "127.0.0.1", dev("lo", 128, 128))],
     True, "127.0.0.1: 188 sk_buffs through loopback_xmit, 0 through any NIC driver"),
    # a NIC driver counted it too
    ([flow("tcp", "127.0.0.1", dev("lo", 60, 60), dev("eth0", 2, ns=ROOT, driver="e1000",
                                                       xmit="e1000_xmit_frame [e1000]",
                                                       physical=True))],
     False, "127.0.0.1: 60 sk_buffs through loopback_xmit, but 2 sk_buffs through "
            "e1000_xmit_frame (eth0)"),
    # lo of another namespace is not this flow's lo
    ([flow("tcp", "127.0.0.1", dev("lo", 60, 60), dev("lo", 1, ns=NS_B))],
     False, "127.0.0.1: 60 sk_buffs through loopback_xmit, but 1 sk_buff through "
            "loopback_xmit (lo in ns12)"),
    # nothing seen at dev_queue_xmit / driver_xmit on lo
    ([flow("tcp", "127.0.0.1", dev("lo", 0, 60))],
     False, "127.0.0.1: lo counted 0 sk_buffs at dev_queue_xmit and 0 at driver_xmit: the flow "
            "was not seen on lo"),
    ([flow("tcp", "127.0.0.1")],
     False, "127.0.0.1: lo counted 0 sk_buffs at dev_queue_xmit and 0 at driver_xmit: the flow "
            "was not seen on lo"),
])
def test_loopback_claim(flows, holds, text):
    v = judge(CaseResult(_plan("loopback", LOOPBACK), NS_A, tuple(flows)), MECH)
    assert [(c.holds, c.text) for c in v.claims] == [(holds, text)]
    assert v.holds is holds


@pytest.mark.parametrize("flows, nic, holds, text", [
    # the expected veth end counted it, lo did not
    ([flow("tcp", "10.9.0.2", dev("npta", 119, 108), dev("nptb", 108, 119, ns=NS_B))], "npta",
     True, "10.9.0.2: 119 sk_buffs through veth_xmit (npta, veth), 0 through loopback_xmit"),
    # found from the counts: the physical NIC wins over a bridge in front of it
    ([flow("tcp", "192.0.2.7", dev("br0", 30, driver="bridge", xmit="br_dev_xmit", ifindex=3),
           dev("eth0", 20, 20, driver="e1000", xmit="e1000_xmit_frame [e1000]", physical=True),
           echo=True)], None,
     True, "192.0.2.7: 20 sk_buffs through e1000_xmit_frame (eth0, physical NIC), 0 through "
           "loopback_xmit"),
    # lo counted the flow at driver_xmit: it did not leave the host
    ([flow("tcp", "127.0.0.1", dev("lo", 60, 60), echo=True)], None,
     False, "127.0.0.1: no NIC counted it at driver_xmit, but 60 sk_buffs through "
            "loopback_xmit (lo in ns11)"),
    # both
    ([flow("udp", "10.9.0.2", dev("npta", 5), dev("lo", 1))], "npta",
     False, "10.9.0.2: 5 sk_buffs through veth_xmit (npta, veth), but 1 sk_buff through "
            "loopback_xmit (lo in ns11)"),
    # the expected device saw nothing (another one did)
    ([flow("udp", "10.9.0.2", dev("other", 5))], "npta",
     False, "10.9.0.2: npta counted none of it at driver_xmit"),
])
def test_nic_claim(flows, nic, holds, text):
    v = judge(CaseResult(_plan("nic", NIC, nic), NS_A, tuple(flows)), MECH)
    assert [(c.holds, c.text) for c in v.claims] == [(holds, text)]


def test_nic_claim_names_the_device_and_its_xmit_function():
    v = judge(CaseResult(_plan("nic", NIC), ROOT, (flow("tcp", "10.0.2.100", dev(
        "eth0", 19, 17, ns=ROOT, driver="e1000", xmit="e1000_xmit_frame [e1000]",
        physical=True), echo=True),)), MECH)
    c = v.claims[0]
    assert (c.device, c.xmit, c.count, c.against) == ("eth0", "e1000_xmit_frame", 19, 0)


def test_one_claim_per_address_over_its_flows():
    v = judge(CaseResult(_plan("loopback", LOOPBACK), NS_A, (
        flow("tcp", "127.0.0.1", dev("lo", 3, 3)), flow("udp", "127.0.0.1", dev("lo", 4, 4)),
        flow("tcp", "::1", dev("lo", 5, 5)), flow("udp", "::1", dev("npta", 1)))), MECH)
    assert [(c.address, c.holds, c.count) for c in v.claims] == [
        ("127.0.0.1", True, 7), ("::1", False, 5)]
    assert not v.holds


def test_a_failed_flow_fails_its_claim_with_the_reason():
    v = judge(CaseResult(_plan("nic", NIC), ROOT, (
        flow("tcp", "192.0.2.7", error="Connection refused", echo=True),)), MECH)
    assert [(c.holds, c.text) for c in v.claims] == [
        (False, "192.0.2.7: tcp failed: Connection refused")]
    v = judge(CaseResult(_plan("nic", NIC), ROOT, (
        flow("tcp", "10.66.0.9", error="Network is unreachable", echo=True),
        flow("udp", "10.66.0.9", error="Network is unreachable", echo=True))), MECH)
    assert v.claims[0].text == "10.66.0.9: tcp and udp failed: Network is unreachable"


def test_an_unavailable_claim_stage_means_cannot_tell():
    mech = dict(MECH, driver_xmit=StageState(BY_NAME["driver_xmit"], None, passed_over=(
        Refusal("raw_tracepoint", "no tracepoint net:net_dev_start_xmit"),)))
    v = judge(CaseResult(_plan("loopback", LOOPBACK), NS_A,
                         (flow("tcp", "127.0.0.1", dev("lo", 3, 3)),)), mech)
    assert not v.holds
    assert v.claims[0].text == ("127.0.0.1: cannot tell: driver_xmit is unavailable "
                                "(raw_tracepoint: no tracepoint net:net_dev_start_xmit)")


def test_a_case_without_flows_does_not_hold():
    assert not judge(CaseResult(_plan("nic", NIC), NS_A, ()), MECH).holds


# -- formatting ------------------------------------------------------------------------------
def _report():
    v1 = judge(CaseResult(_plan("loopback", LOOPBACK), NS_A, (
        flow("tcp", "127.0.0.1", dev("lo", 59, 59)), flow("udp", "::1", dev("lo", 128, 128)))),
        MECH)
    v3 = judge(CaseResult(_plan("nic", NIC, "npta"), NS_A, (
        flow("tcp", "fd00:255::2", dev("npta", 1119, 1108), dev("nptb", 1108, 1119, ns=NS_B)),
        FlowResult(FlowPlan("udp", "fd00:255::2"), (dev("npta", 127),), note="127 of 128 datagrams arrived"))),
        MECH)
    states = dict(MECH, driver_xmit=StageState(
        BY_NAME["driver_xmit"], "raw_tracepoint", ("net:net_dev_start_xmit",),
        note="net:net_dev_start_xmit, just before ndo_start_xmit"))
    return Report(7777, states, [v1, v3], ("np-t-a", "np-t-b"), ("npta", "nptb"), seconds=1.62)


def test_case_lines_table_and_verdicts():
    lines = case_lines(_report().verdicts[0], 1)
    assert lines == [
        "1. title of loopback",
        "   flow           device ip_out dev_q drv_tx drv_rx rcv_skb ip_rcv l4_rcv",
        "   tcp 127.0.0.1  lo         59    59     59     59      59     59     59",
        "   udp ::1        lo        128   128    128    128     128    128    128",
        "ok   127.0.0.1: 59 sk_buffs through loopback_xmit, 0 through any NIC driver",
        "ok   ::1: 128 sk_buffs through loopback_xmit, 0 through any NIC driver",
    ]


def test_case_lines_second_device_of_a_flow_and_notes():
    lines = case_lines(_report().verdicts[1], 3)
    assert lines[2] == "   tcp fd00:255::2  npta    1,119 1,119  1,119  1,108   1,108  1,108  1,108"
    assert lines[3] == "                    nptb    1,108 1,108  1,108  1,119   1,119  1,119  1,119"
    assert lines[4].startswith("   udp fd00:255::2  npta      127   127    127      ·")
    assert "   ! udp fd00:255::2: 127 of 128 datagrams arrived" in lines


def test_text_fits_80_columns_and_ends_with_the_summary():
    out = text(_report())
    assert max(len(line) for line in out.splitlines()) <= 80
    assert "counting port 7777 only" in out
    assert "drv_tx   driver_xmit        raw_tracepoint net:net_dev_start_xmit" in out
    assert out.splitlines()[-1] == "All 2 claims hold (1.6 s)."


def test_summary_names_the_cases_that_do_not_hold():
    r = _report()
    r.verdicts.append(judge(CaseResult(_plan("nic", NIC), NS_A, (flow("tcp", "10.9.0.2"),)), MECH))
    assert text(r).splitlines()[-1] == "Case 3 does not hold: 2 of 3 claims hold (1.6 s)."
    assert not r.holds


def test_json_is_serialisable_and_carries_claims_and_per_flow_counts():
    obj = json.loads(json.dumps(to_json(_report())))
    assert obj["holds"] is True and obj["port"] == 7777
    assert [c["id"] for c in obj["cases"]] == ["loopback", "nic"]
    nic = obj["cases"][1]
    assert nic["claims"][0]["device"] == "npta" and nic["claims"][0]["xmit"] == "veth_xmit"
    f = nic["flows"][0]
    assert (f["proto"], f["family"], f["server"]) == ("tcp", "ipv6", "fd00:255::2")
    assert f["devices"][0]["stages"]["driver_xmit"] == 1119
    assert f["devices"][0]["stages"]["driver_rx"] == 1108
    st = {s["name"]: s for s in obj["stages"]}["tcp_sendmsg"]
    assert (st["mechanism"], st["description"]) == ("raw_tracepoint", WORDS["tcp_sendmsg"])


def test_a_stage_no_mechanism_reached_reads_n_a_not_zero():
    r = _report()
    r.states = dict(MECH, **{s: _state(s) for s in ("ip_output", "ip_rcv", "l4_rcv")})
    lines = case_lines(r.verdicts[0], 1, r.states)
    assert lines[2] == "   tcp 127.0.0.1  lo        n/a    59     59     59      59    n/a    n/a"
    assert r.verdicts[0].holds  # the claims rest on dev_queue_xmit and driver_xmit only
    dev = to_json(r)["cases"][0]["flows"][0]["devices"][0]["stages"]
    assert (dev["ip_output"], dev["driver_xmit"]) == (None, 59)


def test_devices_of_one_name_in_two_namespaces_are_told_apart_within_80_columns():
    v = judge(CaseResult(_plan("nic", NIC), NS_A, (
        flow("tcp", "fd00:77::2",
             DevCount(NS_A, 2, "np-doc-host", "eth1", "veth", "veth_xmit", False,
                      {"driver_xmit": 28, "driver_rx": 23}),
             DevCount(NS_B, 2, "np-doc-peer", "eth1", "veth", "veth_xmit", False,
                      {"driver_xmit": 23, "driver_rx": 28}), echo=True),)), MECH)
    lines = case_lines(v, 3, MECH)
    assert [line[19:31] for line in lines[2:4]] == ["eth1@…c-host", "eth1@…c-peer"]
    assert max(map(len, lines)) <= 80
    short = judge(CaseResult(_plan("nic", NIC), NS_A, (flow(
        "tcp", "10.9.0.2", dev("lo", 1, ns=NS_A), dev("lo", 1, ns=NS_B)),)), MECH)
    assert {line.split()[-8] for line in case_lines(short, 3, MECH)[2:4]} == {"lo@ns11", "lo@ns12"}


def test_a_claim_states_the_path_most_of_its_packets_took():
    from netprobe.model.prove import FlowResult, path_lines

    flows = [FlowResult(None, (), paths=(("a[lo] > b[lo]", "delivered", 5),
                                         ("b[lo]", "in flight", 1))),
             FlowResult(None, (), paths=(("a[lo] > b[lo]", "delivered", 2),))]
    assert path_lines(flows) == ["     path: a[lo] > b[lo] (7 sk_buffs; 1 other path)"]
    assert path_lines([FlowResult(None, ())]) == []
