"""Drop reasons named from a BTF blob whose values are not this kernel's, and drop locations
named and staged through a fake symbol table."""
import pytest
from btf_builder import Builder

from netprobe.model.btf import BTF
from netprobe.model.drops import (DropReasons, DropSite, drop_reasons, drop_site,
                                  module_btf_candidates)
from netprobe.model.kallsyms import Kallsyms

SUBSYS_MASK = 0xFFFF0000


def kernel_btf(with_subsystems=True):
    """A kernel whose reasons sit at other values than 6.18's (NO_SOCKET 3 there, 7 here)."""
    b = Builder()
    core = {"SKB_NOT_DROPPED_YET": 0, "SKB_CONSUMED": 1, "SKB_DROP_REASON_NOT_SPECIFIED": 2,
            "SKB_DROP_REASON_NETFILTER_DROP": 5, "SKB_DROP_REASON_NO_SOCKET": 7,
            "SKB_DROP_REASON_MAX": 8}
    if with_subsystems:
        core["SKB_DROP_REASON_SUBSYS_MASK"] = SUBSYS_MASK
        b.enum("skb_drop_reason_subsys", {"SKB_DROP_REASON_SUBSYS_CORE": 0,
                                          "SKB_DROP_REASON_SUBSYS_MAC80211_UNUSABLE": 1,
                                          "SKB_DROP_REASON_SUBSYS_OPENVSWITCH": 3,
                                          "SKB_DROP_REASON_SUBSYS_NUM": 4})
        b.enum("ovs_drop_reason", {"__OVS_DROP_REASON": 3 << 16, "OVS_DROP_LAST_ACTION": (3 << 16) + 1,
                                   "OVS_DROP_METER": (3 << 16) + 2, "OVS_DROP_MAX": (3 << 16) + 3})
    b.enum("skb_drop_reason", core)
    b.enum("tcp_ca_state", {"TCP_CA_Open": 0})  # an unrelated enum is not read
    return b


def test_core_reasons_by_this_blobs_values():
    r = drop_reasons(BTF(kernel_btf(with_subsystems=False).blob()))
    assert r.names == {0: "NOT_DROPPED_YET", 1: "CONSUMED", 2: "NOT_SPECIFIED",
                       5: "NETFILTER_DROP", 7: "NO_SOCKET"}
    assert r.name(7) == "NO_SOCKET" and r.name(5) == "NETFILTER_DROP"
    assert r.name(8) == "UNKNOWN_8" and r.subsys_mask == 0


def test_subsystem_reasons_in_the_high_bits():
    r = drop_reasons(BTF(kernel_btf().blob()))
    assert r.subsystems == {1: "MAC80211_UNUSABLE", 3: "OPENVSWITCH"}
    assert r.name((3 << 16) + 1) == "OVS_DROP_LAST_ACTION"
    assert r.name((3 << 16) + 2) == "OVS_DROP_METER"
    assert r.name((3 << 16) + 9) == "OPENVSWITCH:9"  # a reason newer than the BTF read
    assert r.name((1 << 16) + 4) == "MAC80211_UNUSABLE:4"
    assert r.name(7) == "NO_SOCKET" and SUBSYS_MASK not in r.names
    assert "__OVS_DROP_REASON" not in r.names.values() and "OVS_DROP_MAX" not in r.names.values()


def test_subsystem_reasons_from_a_modules_split_btf(tmp_path):
    base = kernel_btf()
    vmlinux = BTF(base.blob())
    module = Builder(base_strs=len(base.strs))
    module.enum("mac80211_drop_reason", {"RX_CONTINUE": 1, "RX_QUEUED": 0,
                                         "__RX_DROP_UNUSABLE_BASE": 1 << 16,
                                         "RX_DROP_U_MIC_FAIL": (1 << 16) + 1})
    r = drop_reasons(vmlinux, [BTF(module.blob(), base=vmlinux)])
    assert r.name((1 << 16) + 1) == "RX_DROP_U_MIC_FAIL"
    assert r.name(1) == "CONSUMED"  # RX_CONTINUE's 1 is no drop reason: no subsystem bits
    (tmp_path / "mac80211").write_bytes(module.blob())
    (tmp_path / "openvswitch").write_bytes(b"")
    assert module_btf_candidates(vmlinux, tmp_path) == [tmp_path / "mac80211", tmp_path / "openvswitch"]


def test_a_kernel_without_the_enum_gives_location_only():
    b = Builder()
    b.enum("tcp_ca_state", {"TCP_CA_Open": 0})
    assert drop_reasons(BTF(b.blob())) is None


def test_unnamed_values_still_read():
    assert DropReasons({}).name(3) == "UNKNOWN_3"


SYMBOLS = """\
ffffffff81000000 T _stext
ffffffff81a00000 t __udp4_lib_rcv.isra.0
ffffffff81a00800 t udp_rcv
ffffffff81b00000 t ip_rcv_core
ffffffff81b00400 T ip_rcv
ffffffff81c00000 t __dev_queue_xmit
ffffffff81c02000 t nf_hook_slow
ffffffffc0001000 t ovs_dp_process_packet\t[openvswitch]
"""
STAGES = {"__udp4_lib_rcv": "l4_rcv", "ip_rcv_core": "ip_rcv", "__dev_queue_xmit": "dev_queue_xmit"}


@pytest.mark.parametrize("location, site", [
    (0xffffffff81a00123, DropSite("__udp4_lib_rcv.isra.0", "", 0x123, "l4_rcv")),
    (0xffffffff81b00000, DropSite("ip_rcv_core", "", 0, "ip_rcv")),
    (0xffffffff81c00fff, DropSite("__dev_queue_xmit", "", 0xfff, "dev_queue_xmit")),
    (0xffffffff81c02010, DropSite("nf_hook_slow", "", 0x10, None)),  # not a stage's function
    (0xffffffffc0001040, DropSite("ovs_dp_process_packet", "openvswitch", 0x40, None)),
    (0xffffffff80000000, None),  # below every symbol
])
def test_drop_site(location, site):
    assert drop_site(location, Kallsyms(SYMBOLS), STAGES) == site
