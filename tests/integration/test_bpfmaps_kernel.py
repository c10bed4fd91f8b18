"""bpfmaps.Map on real kernel maps: ones made with BPF_MAP_CREATE, and ones BCC made and wrote."""
import ctypes
import errno
import os

import pytest

from netprobe.kernel import bpfsys
from netprobe.kernel.bpfmaps import (BPF_MAP_DELETE_ELEM, BPF_MAP_GET_NEXT_KEY, Map,
                                     ctype_from_desc, possible_cpus)
from netprobe.errors import NetprobeError

HASH, ARRAY, PERCPU_HASH, PERCPU_ARRAY = 1, 2, 5, 6
BPF_NOEXIST, BPF_EXIST = 1, 2


class _CreateAttr(ctypes.Structure):
    _fields_ = [("map_type", ctypes.c_uint32), ("key_size", ctypes.c_uint32),
                ("value_size", ctypes.c_uint32), ("max_entries", ctypes.c_uint32),
                ("map_flags", ctypes.c_uint32), ("inner_map_fd", ctypes.c_uint32),
                ("numa_node", ctypes.c_uint32), ("map_name", ctypes.c_char * 16)]


class Val(ctypes.Structure):  # 16 bytes: a u32, 4 bytes of padding, a u64
    _fields_ = [("a", ctypes.c_uint32), ("b", ctypes.c_uint64)]


class Val12(ctypes.Structure):  # 12 bytes: each CPU's copy padded to 16 by the kernel
    _fields_ = [("x", ctypes.c_uint32), ("y", ctypes.c_uint32), ("z", ctypes.c_uint32)]


@pytest.fixture
def new_map(bpf_ok):
    made = []

    def make(map_type, key_type, value_type, max_entries=64):
        fd = bpfsys._bpf(0, _CreateAttr(map_type=map_type, key_size=ctypes.sizeof(key_type),
                                        value_size=ctypes.sizeof(value_type),
                                        max_entries=max_entries, map_name=b"np_test"))
        made.append(Map(fd, key_type, value_type))
        return made[-1]
    yield make
    for m in made:
        m.close()


def test_hash_every_method(new_map):
    m = new_map(HASH, ctypes.c_uint32, Val)
    assert (m.info.type, m.info.key_size, m.info.value_size, m.info.max_entries, m.info.name) \
        == (HASH, 4, 16, 64, "np_test") and m.info.id > 0 and not m.percpu
    assert m.lookup(1) is None and m.keys() == [] and m.items() == []
    m.update(1, Val(a=10, b=2**40))
    m[ctypes.c_uint32(2)] = Val(a=20, b=3)
    assert (m.lookup(1).a, m.lookup(1).b) == (10, 2**40)
    assert m[2].a == 20
    assert sorted(k.value for k in m.keys()) == [1, 2]
    assert sorted((k.value, v.a) for k, v in m.items()) == [(1, 10), (2, 20)]
    assert sorted(v.b for v in m.values()) == [3, 2**40]
    with pytest.raises(OSError) as e:
        m.update(1, Val(), flags=BPF_NOEXIST)
    assert e.value.errno == errno.EEXIST and e.value.strerror
    with pytest.raises(KeyError):
        m.update(3, Val(), flags=BPF_EXIST)
    del m[1]
    with pytest.raises(KeyError):
        m[1]
    with pytest.raises(KeyError):
        m.delete(1)
    with pytest.raises(TypeError):
        m.update(3, 5)  # an int cannot stand for a struct
    assert [k.value for k in m] == [2]


def test_array_keys_are_every_index(new_map):
    m = new_map(ARRAY, ctypes.c_uint32, ctypes.c_uint64, max_entries=8)
    assert [k.value for k in m.keys()] == list(range(8))
    assert all(v.value == 0 for v in m.values())
    m[3] = 42  # ints stand for scalar keys and values
    assert m[3].value == 42 and m.lookup(8) is None
    with pytest.raises(OSError) as e:
        del m[3]  # array slots cannot be deleted
    assert e.value.errno == errno.EINVAL


def test_percpu_hash_pads_each_cpus_value(new_map):
    n = possible_cpus()
    m = new_map(PERCPU_HASH, ctypes.c_uint64, Val12)
    assert m.percpu and m.ncpus == n
    m[7] = [Val12(x=i, y=100 + i, z=200 + i) for i in range(n)]
    got = m[7]
    assert [(v.x, v.y, v.z) for v in got] == [(i, 100 + i, 200 + i) for i in range(n)]
    m.update(8, Val12(z=5))  # one value: the same on every CPU
    assert [v.z for v in m[8]] == [5] * n
    with pytest.raises(ValueError):
        m[9] = [Val12()] * (n + 1)
    assert sorted((k.value, len(v)) for k, v in m.items()) == [(7, n), (8, n)]
    del m[7]
    assert m.lookup(7) is None


def test_percpu_array(new_map):
    n = possible_cpus()
    m = new_map(PERCPU_ARRAY, ctypes.c_uint32, ctypes.c_uint64, max_entries=256)
    m[255] = list(range(1, n + 1))
    assert [v.value for v in m[255]] == list(range(1, n + 1))
    items = m.items()
    assert len(items) == 256 and all(len(v) == n for _, v in items)
    assert sum(sum(x.value for x in v) for _, v in items) == n * (n + 1) // 2


def test_deleting_while_iterating(new_map):
    m = new_map(HASH, ctypes.c_uint32, ctypes.c_uint32)
    for i in range(50):
        m[i] = i
    for k in m.keys():
        if k.value % 2:
            del m[k]
    assert sorted(k.value for k in m.keys()) == list(range(0, 50, 2))


def test_walk_survives_keys_deleted_under_it(new_map):
    """A key deleted by someone else mid-walk sends the kernel back to the first key."""
    m = new_map(HASH, ctypes.c_uint32, ctypes.c_uint32)
    for i in range(40):
        m[i] = i
    steps, lost = [0], []
    real_call = m._call

    def racing_call(cmd, key, value=None, flags=0):
        if cmd == BPF_MAP_GET_NEXT_KEY and key is not None:
            steps[0] += 1
            if steps[0] in (5, 17, 30):  # delete the key the walk stands on
                lost.append(key.value)
                real_call(BPF_MAP_DELETE_ELEM, key)
        return real_call(cmd, key, value, flags)
    m._call = racing_call  # the one seam where another deleter can step in between calls
    walked = [k.value for k in m.keys()]
    assert len(walked) == len(set(walked))
    assert set(walked) >= set(range(40)) - set(lost) and len(lost) == 3
    assert steps[0] > 40  # the kernel did start over: a walk of 40 keys takes 40 steps


def test_a_value_type_of_the_wrong_size_is_refused(new_map):
    m = new_map(HASH, ctypes.c_uint32, Val)
    with pytest.raises(NetprobeError, match="16 bytes"):
        Map(os.dup(m.fd), ctypes.c_uint32, ctypes.c_uint64)
    with pytest.raises(NetprobeError, match="keys are 4 bytes"):
        Map(os.dup(m.fd), ctypes.c_uint64, Val)


BCC_SRC = r"""
struct v { u64 packets; u32 bytes; char name[5]; u8 flag; };
struct k { u32 netns; u8 stage; u64 x; };
struct bf { u32 a:3; u32 b:13; u8 c; union { u32 u; u16 h[2]; }; };
BPF_PERCPU_ARRAY(a, struct v, 4);
BPF_HASH(h, struct k, u64);
BPF_HASH(bits, u32, struct bf);

int fill(void *ctx) {
    u32 zero = 0;
    struct bf v = {};
    v.a = 5; v.b = 1000; v.c = 7; v.u = 0xdeadbeef;
    bits.update(&zero, &v);
    return 0;
}
"""


def test_layouts_match_what_bcc_and_clang_wrote(bpf_ok):
    from bcc import BPF, lib

    b = BPF(text=BCC_SRC)

    def ours(name):
        key = lib.bpf_table_key_desc(b.module, name.encode())
        leaf = lib.bpf_table_leaf_desc(b.module, name.encode())
        return Map(os.dup(b[name].map_fd), ctype_from_desc(key), ctype_from_desc(leaf))
    try:
        a, h = b["a"], b["h"]
        per_cpu = a.Leaf()
        for i, v in enumerate(per_cpu):
            v.packets, v.bytes, v.name, v.flag = 10 + i, 1500 * i, b"lo%d" % i, 1
        a[a.Key(2)] = per_cpu
        h[h.Key(netns=4026531840, stage=3, x=2**60)] = ctypes.c_ulonglong(99)
        with ours("a") as ma, ours("h") as mh:
            got = ma[2]
            assert len(got) == len(per_cpu) == possible_cpus()
            for mine, theirs in zip(got, per_cpu):
                assert bytes(mine) == bytes(theirs)
                assert (mine.packets, mine.bytes, mine.name, mine.flag) == \
                    (theirs.packets, theirs.bytes, theirs.name, theirs.flag)
            [(key, value)] = mh.items()
            assert (key.netns, key.stage, key.x, value.value) == (4026531840, 3, 2**60, 99)
            key.stage = 4
            mh[key] = 7  # and back: BCC reads what bpfmaps wrote
            assert h[h.Key(netns=4026531840, stage=4, x=2**60)].value == 7
        # BCC's own decoder lays bitfield structs out as ctypes does, not as clang does; the
        # program's own write is the reference here
        bpfsys.test_run(b.load_func("fill", BPF.RAW_TRACEPOINT).fd)
        with ours("bits") as mb:
            v = mb[0]
            assert (v.a, v.b, v.c, v.u, v.h[1]) == (5, 1000, 7, 0xDEADBEEF, 0xDEAD)
    finally:
        b.cleanup()
