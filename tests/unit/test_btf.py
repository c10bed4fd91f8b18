"""BTF parsing on hand-made blobs: anonymous unions, nested paths, bitfields, functions."""
import struct

import pytest

from netprobe.btf import BTF, BTFError, FUNC, FUNC_PROTO, INT, PTR, STRUCT, TYPEDEF, UNION


class Builder:
    def __init__(self):
        self.types = b""
        self.strs = b"\0"
        self.n = 0

    def s(self, name):
        if not name:
            return 0
        off = len(self.strs)
        self.strs += name.encode() + b"\0"
        return off

    def add(self, kind, name, vlen=0, st=0, trailer=b"", kflag=0):
        self.types += struct.pack("<III", self.s(name), (kflag << 31) | (kind << 24) | vlen, st) + trailer
        self.n += 1
        return self.n

    def int(self, name, size):
        return self.add(INT, name, st=size, trailer=struct.pack("<I", size * 8))

    def struct(self, name, size, members, kind=STRUCT, kflag=0):
        tr = b"".join(struct.pack("<III", self.s(m), t, off) for m, t, off in members)
        return self.add(kind, name, len(members), size, tr, kflag)

    def blob(self):
        hdr = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(self.types), len(self.types), len(self.strs))
        return hdr + self.types + self.strs


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
    b.struct("bits", 4, [("a", u32, (3 << 24) | 0)], kflag=1)
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


def test_function_parameter_types(btf):
    assert btf.func_params("__netif_receive_skb_core") == ["struct net_device **", "u32"]


def test_bad_magic():
    with pytest.raises(BTFError):
        BTF(b"\0" * 32)
