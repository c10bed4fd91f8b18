"""prove's "where it dies" claims judged without a kernel: all seen where expected, some seen
elsewhere, none seen, a kernel count that disagrees, a kernel without reasons, an error; and
how the case reads (80 columns) and its JSON."""
from dataclasses import replace

import pytest

from netprobe.model.dropcounts import DropKey
from netprobe.model.prove import Report, text, to_json
from netprobe.model.prove_drops import DropExpect, delta, judge, judge_drop

A, B = 101, 202
LO4 = DropExpect("127.0.0.1", "closed port", A, "np-x-a", 1, "lo", ("l4_rcv",), "NO_SOCKET", 16)
NFT4 = DropExpect("10.9.0.2", "nftables input rule", B, "np-x-b", 3, "npxb", ("l4_rcv",),
                  "NETFILTER_DROP", 16, kernel_count=16, by_rule=True)
UDP4 = DropKey(A, 1, "l4_rcv", "NO_SOCKET", "__udp4_lib_rcv")
NFT = DropKey(B, 3, "l4_rcv", "NETFILTER_DROP", "nft_do_chain")


def test_all_seen_where_expected():
    c = judge_drop(LO4, {UDP4: 16})
    assert c.holds
    assert c.text == ("127.0.0.1 (closed port): 16 of 16 datagrams dropped at l4_rcv on lo in "
                      "np-x-a, NO_SOCKET (freed in __udp4_lib_rcv)")
    c = judge_drop(NFT4, {NFT: 16})
    assert c.holds and c.text.endswith("nftables counted 16")


@pytest.mark.parametrize("drops, says", [
    ({UDP4: 10, DropKey(A, 1, "ip_rcv", "IP_INHDR", "ip_rcv_core"): 6},
     "10 of 16 datagrams dropped at l4_rcv on lo in np-x-a, NO_SOCKET (freed in __udp4_lib_rcv); "
     "seen instead: 6 at ip_rcv on lo (IP_INHDR, ip_rcv_core)"),
    ({}, "0 of 16 datagrams dropped"),
    ({DropKey(A, 1, "l4_rcv", "SOCKET_FILTER", "sk_filter_trim_cap"): 16},
     "seen instead: 16 at l4_rcv on lo (SOCKET_FILTER"),  # the right place, another reason
    ({UDP4: 17}, "17 of 16"),  # more than were sent: not where the claim says either
])
def test_not_all_where_expected_fails_and_says_where(drops, says):
    c = judge_drop(LO4, drops, {(A, 1): "lo"})
    assert not c.holds and says in c.text


def test_the_kernels_own_count_must_agree():
    c = judge_drop(replace(NFT4, kernel_count=15), {NFT: 16})
    assert not c.holds and c.text.endswith("nftables counted 15")


def test_a_kernel_without_reasons_any_reason_will_do():
    e = replace(LO4, reason=None)
    c = judge_drop(e, {DropKey(A, 1, "l4_rcv", "unknown", "__udp4_lib_rcv"): 16})
    assert c.holds and "no reason given by this kernel" in c.text


def test_an_error_fails_the_claim():
    c = judge_drop(replace(NFT4, error="cannot tell: nft (nftables) is not installed"), {})
    assert not c.holds and c.text == "10.9.0.2: cannot tell: nft (nftables) is not installed"


def test_delta_between_reads():
    assert delta({UDP4: (20, 0), NFT: (3, 0)}, {UDP4: (4, 0), NFT: (3, 0)}) == {UDP4: 16}
    assert delta({UDP4: (2, 0)}, {UDP4: (9, 0)}) == {UDP4: 2}  # restarted


def test_the_case_reads_in_80_columns_and_in_json():
    v = judge("where it dies: UDP to a closed port on 127.0.0.1 and ::1 in np-x-a, and across "
              "veth npxa to 10.9.0.2 and fd00:9::2, dropped by an nftables input rule in np-x-b",
              [LO4, NFT4], [{UDP4: 16}, {NFT: 16}], {(B, 3): "npxb"},
              counted_with="tp_btf skb:kfree_skb")
    r = Report(12345, {}, [v], ("np-x-a", "np-x-b"), ("npxa", "npxb"))
    out = text(r)
    assert max(map(len, out.splitlines())) <= 80
    assert "1. where it dies" in out and "(drops counted at tp_btf skb:kfree_skb)" in out
    assert "10.9.0.2   npxb        l4_rcv  NETFILTER_DROP  nft_do_chain       16" in out
    assert out.splitlines()[-1].startswith("All 1 claims hold")
    case = to_json(r)["cases"][0]
    assert case["id"] == "where_it_dies" and case["holds"] and r.holds
    assert case["claims"][1]["drops"] == [{"netns": B, "ifindex": 3, "stage": "l4_rcv",
                                           "reason": "NETFILTER_DROP",
                                           "function": "nft_do_chain", "packets": 16}]
    assert case["claims"][1]["expected"]["device"] == "npxb"
