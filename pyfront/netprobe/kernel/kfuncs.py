"""Kfunc calls in BCC's output. BCC 0.26 cannot write a call to a kernel function (a kfunc such
as bpf_rdonly_cast): a probe calls the kfunc's BTF id as if it were a helper's number
(probes/packet.h, with -DKFUNC_<id>=<BTF id> from fields.h), and before the program loads each
such call is made a kfunc call (src_reg BPF_PSEUDO_KFUNC_CALL, the id in vmlinux's BTF). BTF ids
of vmlinux's functions are far above any helper's number (model/fields.MIN_KFUNC_ID), so a
helper call is never taken for one."""
from __future__ import annotations

import re
import struct
from typing import Iterable

_CALL = 0x85  # BPF_JMP | BPF_CALL
_PSEUDO_KFUNC_CALL = 2
_FLAG = re.compile(r"^-DKFUNC_\w+=(\d+)$")


def ids(cflags: Iterable[str]) -> frozenset[int]:
    """The kfuncs a program compiled with these flags may call"""
    return frozenset(int(m[1]) for f in cflags if (m := _FLAG.match(f)))


def resolve(insns: bytes, kfunc_ids: frozenset[int]) -> bytes:
    """The instructions with each helper call to a kfunc's id made a kfunc call"""
    if not kfunc_ids:
        return insns
    out = bytearray(insns)
    for i in range(0, len(out) - 7, 8):
        code, regs, off, imm = struct.unpack_from("<BBhi", out, i)
        if code == _CALL and regs == 0 and imm in kfunc_ids:
            # dst_reg 0, src_reg the kfunc marker; off 0: the id is vmlinux's, not a module's
            struct.pack_into("<BBhi", out, i, code, _PSEUDO_KFUNC_CALL << 4, 0, imm)
    return bytes(out)
