"""Kernel field offsets for the probes: the list is probes/fields.h, the values come from BTF."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .btf import BTF, BTFError
from ..errors import NetprobeError

_FIELD = re.compile(r"^FIELD\(\s*(\w+)\s*,\s*(\w+)\s*,\s*([\w.]+)\s*,\s*(\d+)\s*\)", re.M)
_BITFIELD = re.compile(r"^BITFIELD\(\s*(\w+)\s*,\s*(\w+)\s*,\s*(\w+)\s*\)", re.M)


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
