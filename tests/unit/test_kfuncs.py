"""Kfunc calls: the flags that name them (fields.h's KFUNC and BTF_STRUCT lines) and the
rewrite of BCC's helper-numbered calls into kfunc calls."""
import struct

import pytest

from netprobe.errors import NetprobeError
from netprobe.kernel import kfuncs
from netprobe.model import fields
from netprobe.model.btf import BTFError


def insn(code, dst=0, src=0, off=0, imm=0):
    return struct.pack("<BBhi", code, (src << 4) | dst, off, imm)


CALL = 0x85


def test_ids_come_from_the_kfunc_flags_only():
    assert kfuncs.ids(["-DOFF_SKB_DEV=16", "-DKFUNC_RDONLY_CAST=64911", "-DBTF_IPHDR=27260",
                       "-DNP_LAT_SAMPLE=100"]) == {64911}
    assert kfuncs.ids([]) == frozenset()


def test_a_call_to_a_kfunc_id_becomes_a_kfunc_call_and_nothing_else_changes():
    prog = (insn(0xb7, dst=2, imm=27260)       # r2 = 27260: the same number, not a call
            + insn(CALL, imm=64911)            # the kfunc, as BCC writes it
            + insn(CALL, imm=1)                # map_lookup_elem, a helper
            + insn(CALL, src=1, imm=64911)     # a BPF-to-BPF call: src_reg 1, left alone
            + insn(0x95))
    out = kfuncs.resolve(prog, frozenset({64911}))
    assert len(out) == len(prog)
    got = [struct.unpack_from("<BBhi", out, i) for i in range(0, len(out), 8)]
    assert got[1] == (CALL, 2 << 4, 0, 64911)
    assert [g for i, g in enumerate(got) if i != 1] == \
        [struct.unpack_from("<BBhi", prog, i) for i in range(0, len(prog), 8) if i != 8]


def test_without_kfuncs_the_instructions_are_untouched():
    prog = insn(CALL, imm=64911) + insn(0x95)
    assert kfuncs.resolve(prog, frozenset()) is prog


class FakeBTF:
    def __init__(self, structs, funcs):
        self.structs, self.funcs = structs, funcs

    def struct_id(self, name):
        if name not in self.structs:
            raise BTFError(f"struct {name} is not in this kernel's BTF")
        return self.structs[name]

    def func_id(self, name):
        return self.funcs.get(name)


SPEC = "BTF_STRUCT(IPHDR, iphdr)\nKFUNC(RDONLY_CAST, bpf_rdonly_cast)\n"


def test_type_flags_name_the_structs_and_the_kfuncs_this_kernel_has():
    btf = FakeBTF({"iphdr": 27260}, {"bpf_rdonly_cast": 64911})
    assert fields.type_cflags(SPEC, btf) == ["-DBTF_IPHDR=27260", "-DKFUNC_RDONLY_CAST=64911"]


def test_a_kfunc_this_kernel_lacks_is_left_out_so_the_probe_does_without():
    # 6.1 has no bpf_rdonly_cast: packet.h copies the headers with bpf_probe_read_kernel
    assert fields.type_cflags(SPEC, FakeBTF({"iphdr": 5}, {})) == ["-DBTF_IPHDR=5"]


def test_a_kfunc_id_a_helper_could_have_is_not_used():
    btf = FakeBTF({"iphdr": 5}, {"bpf_rdonly_cast": 200})
    assert fields.type_cflags(SPEC, btf) == ["-DBTF_IPHDR=5"]


def test_a_missing_struct_is_a_clear_error():
    with pytest.raises(NetprobeError, match="iphdr"):
        fields.type_cflags(SPEC, FakeBTF({}, {}))
