"""BTF parsing on hand-made blobs: anonymous unions, nested paths, bitfields, functions, enums."""
import struct

import pytest
from btf_builder import Builder

from netprobe.model.btf import BTF, BTFError, ENUM, FUNC, FUNC_PROTO, PTR, TYPEDEF, UNION


@pytest.fixture
def btf():
    b = Builder()
    u32 = b.int("u32", 4)
    u16 = b.int("u16", 2)
    dev = b.struct("net_device", 64, [("ifindex", u32, 0)])
    pdev = b.add(PTR, "", st=dev)
    inner = b.struct("", 8, [("dev", pdev, 0)])
    anon = b.struct("", 8, [("", inner, 0), ("other", u32, 0)], kind=UNION)
    possible = b.struct("", 8, [("net", pdev, 0)])
    tdef = b.add(TYPEDEF, "possible_net_t", st=possible)
    b.struct("sk_buff", 128, [("", anon, 128), ("len", u32, 8 * 16), ("proto", u16, 8 * 20),
                              ("nd_net", tdef, 8 * 24)])
    # a:3 at bit 0; cloned:1 at bit 130 (byte 16, bit 2), inside an anonymous struct;
    # wide:4 at bit 14, across bytes 1 and 2
    grouped = b.struct("", 4, [("cloned", u32, (1 << 24) | 2)], kflag=1)
    b.struct("bits", 24, [("a", u32, (3 << 24) | 0), ("", grouped, 128), ("wide", u32, (4 << 24) | 14)],
             kflag=1)
    ppdev = b.add(PTR, "", st=pdev)
    proto = b.add(FUNC_PROTO, "", vlen=2, st=u32,
                  trailer=struct.pack("<IIII", b.s("pskb"), ppdev, b.s("x"), u32))
    b.add(FUNC, "__netif_receive_skb_core", st=proto)
    return BTF(b.blob())


def test_field_through_anonymous_union_and_struct(btf):
    f = btf.field("sk_buff", "dev")
    assert (f.offset, f.size) == (16, 8)


def test_plain_and_dotted_fields(btf):
    assert btf.field("sk_buff", "len").offset == 16
    assert btf.field("sk_buff", "proto").size == 2
    assert btf.field("sk_buff", "nd_net.net").offset == 24  # through a typedef'd struct


def test_missing_field_and_struct(btf):
    with pytest.raises(BTFError, match="no field nope"):
        btf.field("sk_buff", "nope")
    with pytest.raises(BTFError, match="not in this kernel"):
        btf.field("nosuch", "x")


def test_bitfields_are_refused(btf):
    with pytest.raises(BTFError, match="bitfield"):
        btf.field("bits", "a")


def test_a_bitfield_as_its_byte_and_mask(btf):
    assert btf.bitfield("bits", "a") == (0, 0b111)
    assert btf.bitfield("bits", "cloned") == (16, 0b100)  # through the anonymous struct
    with pytest.raises(BTFError, match="within one byte"):
        btf.bitfield("bits", "wide")
    with pytest.raises(BTFError, match="not a bitfield"):
        btf.bitfield("sk_buff", "len")
    with pytest.raises(BTFError, match="no field"):
        btf.bitfield("bits", "nope")


def test_function_parameter_types(btf):
    assert btf.func_params("__netif_receive_skb_core") == ["struct net_device **", "u32"]


def test_bad_magic():
    with pytest.raises(BTFError):
        BTF(b"\0" * 32)


def test_enums_signed_unsigned_and_64_bit():
    b = Builder()
    b.enum("colour", {"RED": 0, "BLUE": 0xFFFF0000})
    b.enum("delta", {"DOWN": -1, "UP": 1}, signed=True)
    b.enum64("wide", {"BIG": 1 << 40})
    btf = BTF(b.blob())
    assert btf.enum_values("colour") == {"RED": 0, "BLUE": 0xFFFF0000}
    assert btf.enum_values("delta") == {"DOWN": -1, "UP": 1}
    assert btf.enum_values("wide") == {"BIG": 1 << 40}
    assert btf.enum_values("nosuch") is None
    assert btf.enum_names() == ["colour", "delta", "wide"]


def test_split_btf_reads_names_from_its_base_and_itself():
    """A module's BTF continues vmlinux's string offsets, and may name things with its strings."""
    base = Builder()
    base.enum("shared", {"A": 1})
    vmlinux = BTF(base.blob())
    module = Builder(base_strs=len(base.strs))
    in_base = base.strs.index(b"A\0")
    module.add(ENUM, "mod_enum", 2, 4, struct.pack("<II", in_base, 5) + struct.pack("<II", module.s("B"), 2))
    split = BTF(module.blob(), base=vmlinux)
    assert split.enum_values("mod_enum") == {"A": 5, "B": 2}
    assert split.enum_values("shared") is None  # the base's own types stay the base's


def test_struct_size(btf):
    # trace places a task's user registers at the top of its stack by this size (pt_regs)
    assert btf.struct_size("sk_buff") == 128 and btf.struct_size("net_device") == 64
    with pytest.raises(BTFError):
        btf.struct_size("pt_regs")


def test_func_id_in_vmlinux_and_in_a_modules_split_btf():
    """An fentry program names its function by kernel-wide BTF id: a module's ids go on from
    vmlinux's last one (e1000_xmit_frame in e1000's BTF)"""
    base = Builder()
    u32 = base.int("u32", 4)
    proto = base.add(FUNC_PROTO, "", 0, u32)
    base.add(FUNC, "loopback_xmit", 0, proto)
    vmlinux = BTF(base.blob())
    assert vmlinux.func_id("loopback_xmit") == 3
    assert vmlinux.func_id("e1000_xmit_frame") is None
    module = Builder(base_strs=len(base.strs))
    mproto = module.add(FUNC_PROTO, "", 0, u32)       # local 1: kernel-wide 4
    module.add(FUNC, "e1000_xmit_frame", 0, mproto)  # local 2: kernel-wide 5
    split = BTF(module.blob(), base=vmlinux)
    assert split.func_id("e1000_xmit_frame") == 5
    assert split.func_id("loopback_xmit") is None  # vmlinux's, not the module's
