"""BCC's key/value descriptions decoded into ctypes layouts that match C's, without a kernel."""
import ctypes
import json

import pytest

from netprobe.kernel.bpfmaps import ctype_from_desc, parse_cpu_list, percpu_stride
from netprobe.errors import NetprobeError

# as BCC 0.26 describes them (lib.bpf_table_key_desc / bpf_table_leaf_desc)
NP_KEY = ["np_key", [["netns", "unsigned int"], ["ifindex", "unsigned int"],
                     ["stage", "unsigned int"]], "struct"]
K = ["k", [["netns", "unsigned int"], ["stage", "unsigned char"], ["__pad_2", "char", [3]],
           ["x", "unsigned long long"]], "struct_packed"]
NEST = ["nest", [["inner", K], ["ok", "_Bool"], ["__pad_2", "char", [15]],
                 ["big", "unsigned __int128"], ["e", "unsigned int"],
                 ["__pad_end", "char", [12]]], "struct_packed"]
V = ["v", [["packets", "unsigned long long"], ["bytes", "unsigned int"], ["name", "char", [5]],
           ["flag", "unsigned char"], ["__pad_end", "char", [6]]], "struct_packed"]
UN = ["un", [["q", "unsigned long long"], ["s", "char", [12]]], "union"]
# struct bf { u32 a:3; u32 b:13; u8 c; union { u32 u; u16 h[2]; }; }: BCC leaves bitfield
# structs unpadded ("struct"), so the decoder lays them out itself
BF = ["bf", [["a", "unsigned int", 3], ["b", "unsigned int", 13], ["c", "unsigned char"],
             ["", [["u", "unsigned int"], ["h", "unsigned short", [2]]], "union"]], "struct"]


@pytest.mark.parametrize("desc, ctype", [
    ('"unsigned int"', ctypes.c_uint), ("unsigned int", ctypes.c_uint),
    (b'"unsigned long long"', ctypes.c_ulonglong), ('"_Bool"', ctypes.c_bool),
    ("char", ctypes.c_char), ("long", ctypes.c_long),
])
def test_scalars_from_json_text_or_parsed(desc, ctype):
    assert ctype_from_desc(desc) is ctype


def test_unknown_scalar_is_a_clear_error():
    with pytest.raises(NetprobeError, match="__fp16"):
        ctype_from_desc('"__fp16"')


def test_struct_from_json_text_and_from_parsed_object_alike():
    for desc in (json.dumps(NP_KEY), NP_KEY):
        t = ctype_from_desc(desc)
        assert ctypes.sizeof(t) == 12
        assert [t.netns.offset, t.ifindex.offset, t.stage.offset] == [0, 4, 8]
        assert t(netns=1, ifindex=2, stage=3).ifindex == 2


@pytest.mark.parametrize("desc", [
    ["s", [["a", "unsigned int"], ["b", "unsigned long long"]], "struct"],  # C's alignment
    ["s", [["a", "unsigned int"], ["__pad_1", "char", [4]], ["b", "unsigned long long"]],
     "struct_packed"],  # BCC's own form, padding spelled out
])
def test_u32_then_u64_is_16_bytes_with_the_u64_at_8(desc):
    t = ctype_from_desc(desc)
    assert (ctypes.sizeof(t), t.b.offset) == (16, 8)


def test_nested_struct_and_int128_keep_c_offsets():
    t = ctype_from_desc(NEST)
    assert ctypes.sizeof(t) == 64
    assert (t.inner.offset, t.ok.offset, t.big.offset, t.e.offset) == (0, 16, 32, 48)
    v = t()
    v.inner.x = 7
    assert bytes(v)[8] == 7


def test_arrays_char_arrays_and_more_dimensions():
    t = ctype_from_desc(V)
    assert (ctypes.sizeof(t), t.name.offset, t.flag.offset) == (24, 12, 17)
    v = t(name=b"eth0")
    assert v.name == b"eth0"
    m = ctype_from_desc(["m", [["grid", "int", [2, 3]]], "struct"])
    assert ctypes.sizeof(m) == 24 and len(m().grid) == 2 and len(m().grid[0]) == 3


def test_union_shares_its_bytes_and_rounds_to_its_alignment():
    t = ctype_from_desc(UN)
    assert ctypes.sizeof(t) == 16
    u = t(q=0x4142)
    assert u.s[:2] == b"BA"


def test_bitfields_and_anonymous_union_laid_out_as_gcc_does():
    # the expected bytes were printed by the same struct compiled with gcc on x86_64
    t = ctype_from_desc(BF)
    v = t()
    v.a, v.b, v.c, v.u = 5, 1000, 7, 0xDEADBEEF
    assert ctypes.sizeof(t) == 8 and t.c.offset == 2
    assert bytes(v).hex() == "451f0700efbeadde"
    assert (v.a, v.b, v.h[0]) == (5, 1000, 0xBEEF)


def test_signed_bitfield_and_one_that_would_straddle_its_type():
    # struct { u8 x; u32 a:20; u8 y; s32 s:5; u64 big:40; u16 z; }
    t = ctype_from_desc(["bf2", [["x", "unsigned char"], ["a", "unsigned int", 20],
                                 ["y", "unsigned char"], ["s", "int", 5],
                                 ["big", "unsigned long long", 40], ["z", "unsigned short"]],
                         "struct"])
    v = t()
    v.x, v.a, v.y, v.s, v.big, v.z = 1, 0xABCDE, 2, -3, 0x123456789A, 0xBEEF
    assert bytes(v).hex() == "01debc0a021d00009a7856341200efbe"
    assert (v.s, v.big, t.z.offset) == (-3, 0x123456789A, 14)
    v.a = 0x1FFFFF  # wider than its 20 bits: the neighbours keep theirs
    assert (v.a, v.x, v.y) == (0xFFFFF, 1, 2)


def test_packed_member_of_a_bitfield_struct_aligns_as_in_c():
    t = ctype_from_desc(["o", [["f", "unsigned int", 3], ["inner", K]], "struct"])
    assert (ctypes.sizeof(t), t.inner.offset) == (24, 8)
    w = ctype_from_desc(["w", [["f", "unsigned int", 1], ["big", "__int128"]], "struct"])
    assert (ctypes.sizeof(w), w.big.offset) == (32, 16)


@pytest.mark.parametrize("text, cpus", [
    ("0\n", [0]), ("0-1\n", [0, 1]), ("0-3,5\n", [0, 1, 2, 3, 5]), ("0,2-3", [0, 2, 3]),
])
def test_cpu_lists(text, cpus):
    assert parse_cpu_list(text) == cpus


@pytest.mark.parametrize("size, stride", [(1, 8), (4, 8), (8, 8), (12, 16), (16, 16), (24, 24)])
def test_each_cpus_value_is_padded_to_8_bytes(size, stride):
    assert percpu_stride(size) == stride
