"""Drops named and staged without a kernel: the catalogue's functions, netfilter's stage from
what the skb had been through, reasons by this kernel's values or none, and the probe's flags
from the tracepoint's prototype."""
import struct

import pytest
from btf_builder import Builder

from netprobe.model.btf import BTF, FUNC_PROTO, PTR, STRUCT, TYPEDEF
from netprobe.model.catalogue import DROP_STAGE_OF, STAGES
from netprobe.model.dropcounts import (OTHER, RECEIVED, ROUTED, UNKNOWN, DropKey, DropRow,
                                       aggregate, drop_stage, netfilter_stage, probe_cflags)
from netprobe.model.drops import DropReasons, DropSite, drop_reasons

REASONS = DropReasons({2: "NOT_SPECIFIED", 3: "NO_SOCKET", 12: "NETFILTER_DROP"})


@pytest.mark.parametrize("facts, stage", [
    (0, "ip_output"),                  # made here, on its way out: LOCAL_OUT / POST_ROUTING
    (ROUTED, "ip_output"),
    (RECEIVED, "ip_rcv"),              # received, not routed yet: PRE_ROUTING
    (RECEIVED | ROUTED, "l4_rcv"),     # received and routed: LOCAL_IN
])
def test_netfilter_stage_from_facts(facts, stage):
    assert netfilter_stage(facts) == stage


@pytest.mark.parametrize("site, facts, stage", [
    (DropSite("__udp4_lib_rcv.isra.0", "", 0x40, "l4_rcv"), 0, "l4_rcv"),
    (DropSite("nf_hook_slow", "", 0x10, None), RECEIVED, "ip_rcv"),
    (DropSite("nft_do_chain", "", 0x10, None), RECEIVED | ROUTED, "l4_rcv"),
    (DropSite("nft_do_chain", "nf_tables", 0x10, None), 0, "ip_output"),
    (DropSite("sk_stream_kill_queues", "", 0x8, None), RECEIVED, OTHER),
    (None, RECEIVED, OTHER),
])
def test_drop_stage(site, facts, stage):
    assert drop_stage(site, facts) == stage


def test_catalogue_functions_name_the_stages_the_issue_names():
    for fn, stage in [("__udp4_lib_rcv", "l4_rcv"), ("udp_rcv", "l4_rcv"), ("udpv6_rcv", "l4_rcv"),
                      ("__udp6_lib_rcv", "l4_rcv"), ("tcp_v4_rcv", "l4_rcv"),
                      ("tcp_v6_rcv", "l4_rcv"), ("ip_rcv_core", "ip_rcv"),
                      ("ip_rcv_finish_core", "ip_rcv"), ("ip6_rcv_core", "ip_rcv"),
                      ("__dev_queue_xmit", "dev_queue_xmit"), ("pfifo_fast_enqueue", "dev_queue_xmit"),
                      ("enqueue_to_backlog", "driver_rx"), ("ip_finish_output2", "ip_output")]:
        assert DROP_STAGE_OF[fn] == stage
    # a function belongs to one stage only
    names = [fn for s in STAGES for fn in s.functions]
    assert len(names) == len(set(names))


def sites(table):
    return lambda location: table.get(location)


def test_aggregate_names_stages_reasons_and_sums_rows():
    table = {0x10: DropSite("__udp4_lib_rcv", "", 0x10, "l4_rcv"),
             0x20: DropSite("nft_do_chain", "", 0x20, None)}
    rows = [DropRow(0x10, 7, 1, 3, RECEIVED | ROUTED, 5, 45),
            DropRow(0x20, 8, 2, 12, RECEIVED, 3, 90),           # PRE_ROUTING
            DropRow(0x20, 8, 2, 12, RECEIVED | ROUTED, 4, 120),  # LOCAL_IN
            DropRow(0x20, 8, 0, 12, 0, 1, 30),                   # LOCAL_OUT, no device yet
            DropRow(0x30, 0, 0, 99, 0, 2, 0),                    # unnamed place and reason
            DropRow(0x10, 7, 1, 3, RECEIVED | ROUTED, 1, 9)]     # the same key again: summed
    got = aggregate(rows, REASONS, sites(table))
    assert got == {
        DropKey(7, 1, "l4_rcv", "NO_SOCKET", "__udp4_lib_rcv"): (6, 54),
        DropKey(8, 2, "ip_rcv", "NETFILTER_DROP", "nft_do_chain"): (3, 90),
        DropKey(8, 2, "l4_rcv", "NETFILTER_DROP", "nft_do_chain"): (4, 120),
        DropKey(8, 0, "ip_output", "NETFILTER_DROP", "nft_do_chain"): (1, 30),
        DropKey(0, 0, OTHER, "UNKNOWN_99", "0x30"): (2, 0),
    }


def test_without_reasons_the_location_only():
    rows = [DropRow(0x10, 7, 1, 0, RECEIVED, 2, 18)]
    got = aggregate(rows, None, sites({0x10: DropSite("__udp4_lib_rcv.isra.0", "", 0, "l4_rcv")}))
    assert got == {DropKey(7, 1, "l4_rcv", UNKNOWN, "__udp4_lib_rcv"): (2, 18)}


def kernel(params, reasons=True):
    """A BTF with skb:kfree_skb's prototype taking these arguments after __data."""
    b = Builder()
    void_ptr = b.add(PTR, "", st=0)
    skb = b.add(PTR, "", st=b.struct("sk_buff", 8, []))
    sock = b.add(PTR, "", st=b.struct("sock", 8, []))
    types = {"skb": skb, "location": void_ptr, "sock": sock}
    if reasons:
        types["reason"] = b.enum("skb_drop_reason", {"SKB_NOT_DROPPED_YET": 0, "SKB_CONSUMED": 5,
                                                      "SKB_DROP_REASON_NO_SOCKET": 6})
    args = [void_ptr] + [types[p] for p in params]
    proto = b.add(FUNC_PROTO, "", vlen=len(args), st=0,
                  trailer=b"".join(struct.pack("<II", 0, t) for t in args))
    b.add(TYPEDEF, "btf_trace_kfree_skb", st=b.add(PTR, "", st=proto))
    return BTF(b.blob())


@pytest.mark.parametrize("params, reasons, flags", [
    (("skb", "location", "reason", "sock"), True,                       # 6.11+
     ["-DNP_DROP_REASONS", "-DNP_REASON_CONSUMED=5", "-DNP_DROP_RX_SK"]),
    (("skb", "location", "reason"), True,                               # 5.17 - 6.10
     ["-DNP_DROP_REASONS", "-DNP_REASON_CONSUMED=5"]),
    (("skb", "location"), False, []),                                   # before 5.17
])
def test_probe_flags_from_the_tracepoints_prototype(params, reasons, flags):
    btf = kernel(params, reasons)
    assert btf.tracepoint_params("kfree_skb")[:2] == ["struct sk_buff *", "void *"]
    assert probe_cflags(btf, drop_reasons(btf)) == flags


def test_no_btf_no_flags():
    assert probe_cflags(None, None) == []
