"""Kernel field offsets for the probes, and the struct type ids and kfuncs they use: the list is
probes/fields.h, the values come from BTF."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .btf import BTF, BTFError
from ..errors import NetprobeError

_FIELD = re.compile(r"^FIELD\(\s*(\w+)\s*,\s*(\w+)\s*,\s*([\w.]+)\s*,\s*(\d+)\s*\)", re.M)
_BITFIELD = re.compile(r"^BITFIELD\(\s*(\w+)\s*,\s*(\w+)\s*,\s*(\w+)\s*\)", re.M)
_BTF_STRUCT = re.compile(r"^BTF_STRUCT\(\s*(\w+)\s*,\s*(\w+)\s*\)", re.M)
_KFUNC = re.compile(r"^KFUNC\(\s*(\w+)\s*,\s*(\w+)\s*\)", re.M)
# A kfunc is called by its BTF id where BCC writes a helper's number (kernel/kfuncs.py): an id
# this low could be taken for a helper's, so such a kfunc is treated as missing. vmlinux's
# function ids are in the tens of thousands; helpers number ~210 on 6.18.
MIN_KFUNC_ID = 4096


@dataclass(frozen=True)
class FieldSpec:
    id: str
    struct: str
    path: str
    size: int  # bytes; 0: a bitfield (-DOFF_<id> its byte, -DBIT_<id> its mask in it)


def parse_fields_h(text: str) -> list[FieldSpec]:
    return ([FieldSpec(m[1], m[2], m[3], int(m[4])) for m in _FIELD.finditer(text)]
            + [FieldSpec(m[1], m[2], m[3], 0) for m in _BITFIELD.finditer(text)])


def offset_cflags(specs: list[FieldSpec], btf: BTF) -> list[str]:
    """-DOFF_<id>=<offset> for every field, checked against the size the probe reads."""
    flags = []
    for f in specs:
        try:
            if f.size == 0:
                byte, mask = btf.bitfield(f.struct, f.path)
                flags += [f"-DOFF_{f.id}={byte}", f"-DBIT_{f.id}={mask:#x}"]
                continue
            found = btf.field(f.struct, f.path)
        except BTFError as e:
            raise NetprobeError(f"reading kernel layout from BTF: {e}") from None
        if found.size != f.size:
            raise NetprobeError(f"struct {f.struct}.{f.path} is {found.size} bytes on this kernel; "
                                f"probes/fields.h expects {f.size}")
        flags.append(f"-DOFF_{f.id}={found.offset}")
    return flags


def load_specs(probes: Path) -> list[FieldSpec]:
    return parse_fields_h((probes / "fields.h").read_text())


def type_cflags(text: str, btf: BTF, kfuncs: bool = True) -> list[str]:
    """-DBTF_<id>=<type id> for every BTF_STRUCT of fields.h's text, and -DKFUNC_<id>=<function
    id> for every KFUNC this kernel has (a probe does without the others; without all of them
    when `kfuncs` is false: the kernel refused a call to one)."""
    flags = []
    for m in _BTF_STRUCT.finditer(text):
        try:
            flags.append(f"-DBTF_{m[1]}={btf.struct_id(m[2])}")
        except BTFError as e:
            raise NetprobeError(f"reading kernel types from BTF: {e}") from None
    for m in _KFUNC.finditer(text) if kfuncs else ():
        fid = btf.func_id(m[2])
        if fid is not None and fid >= MIN_KFUNC_ID:
            flags.append(f"-DKFUNC_{m[1]}={fid}")
    return flags


def load_type_cflags(probes: Path, btf: BTF, kfuncs: bool = True) -> list[str]:
    return type_cflags((probes / "fields.h").read_text(), btf, kfuncs)
