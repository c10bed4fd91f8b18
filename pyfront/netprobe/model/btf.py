"""Struct layouts of the running kernel, read from its BTF.

The probes never include kernel headers: the headers on a machine may belong to another kernel
(Debian's 6.1 headers under a 6.18 kernel put `net_device.name` at 0 instead of 280), so every
field a probe reads takes its byte offset from /sys/kernel/btf/vmlinux through this module.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from ..errors import NetprobeError

VMLINUX_BTF = Path("/sys/kernel/btf/vmlinux")

_MAGIC = 0xEB9F
# BTF kinds (include/uapi/linux/btf.h)
INT, PTR, ARRAY, STRUCT, UNION, ENUM, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT = range(1, 12)
FUNC, FUNC_PROTO, VAR, DATASEC, FLOAT, DECL_TAG, TYPE_TAG, ENUM64 = range(12, 20)
_MODIFIERS = (TYPEDEF, VOLATILE, CONST, RESTRICT, TYPE_TAG)
# bytes that follow the 12-byte common header, per kind: (fixed, per vlen entry)
_TRAILER = {INT: (4, 0), ARRAY: (12, 0), STRUCT: (0, 12), UNION: (0, 12), ENUM: (0, 8),
            FUNC_PROTO: (0, 8), VAR: (4, 0), DATASEC: (0, 12), DECL_TAG: (4, 0), ENUM64: (0, 12)}


@dataclass(frozen=True)
class Field:
    offset: int   # bytes from the start of the outer struct
    size: int     # bytes


class BTFError(NetprobeError):
    pass


class BTF:
    """A parsed BTF blob: just enough to answer 'where is field X of struct Y'."""

    def __init__(self, blob: bytes, base: "BTF | None" = None):
        """`base`: the vmlinux BTF a module's split BTF continues (its string offsets go on
        from the base's strings); a split BTF answers enum lookups only."""
        if len(blob) < 24:
            raise BTFError("BTF blob is too short")
        magic, _ver, _flags, hdr_len, type_off, type_len, str_off, str_len = struct.unpack_from(
            "<HBBIIIII", blob, 0)
        if magic != _MAGIC:
            raise BTFError("not a BTF blob (bad magic)")
        self._blob = blob
        self._base = base
        self._types_at = hdr_len + type_off
        self._strs_at = hdr_len + str_off
        self._strs_end = self._strs_at + str_len
        self._str_len = str_len + (base._str_len if base else 0)
        # type id -> byte position of its header; id 0 is 'void'
        self._pos: list[int] = [0]
        self._by_name: dict[str, list[int]] = {}
        self._enums: dict[str, int] = {}  # enum name -> byte position of its header
        # a split BTF's functions by name, with their kernel-wide type ids (the ids go on
        # from the base's last one): what an fentry program on a module's function names
        self._funcs: dict[str, int] = {}
        self._index(self._types_at, self._types_at + type_len)

    @classmethod
    def load(cls, path: Path = VMLINUX_BTF) -> "BTF":
        try:
            return cls(path.read_bytes())
        except OSError as e:
            raise BTFError(f"reading BTF from {path}: {e.strerror}") from None

    def _index(self, pos: int, end: int) -> None:
        blob, unpack = self._blob, struct.unpack_from
        names = self._by_name
        while pos < end:
            name_off, info = unpack("<II", blob, pos)
            kind = (info >> 24) & 0x1F
            vlen = info & 0xFFFF
            tid = len(self._pos)
            self._pos.append(pos)
            if name_off and kind in (ENUM, ENUM64):
                self._enums.setdefault(self._str(name_off), pos)
            elif name_off and kind in (STRUCT, UNION, FUNC, TYPEDEF) and self._base is None:
                names.setdefault(self._str(name_off), []).append(tid)
            elif name_off and kind == FUNC:
                self._funcs.setdefault(self._str(name_off), len(self._base._pos) - 1 + tid)
            fixed, per = _TRAILER.get(kind, (0, 0))
            pos += 12 + fixed + per * vlen

    def _str(self, off: int) -> str:
        if self._base is not None:
            if off < self._base._str_len:
                return self._base._str(off)
            off -= self._base._str_len
        start = self._strs_at + off
        return self._blob[start:self._blob.index(b"\0", start, self._strs_end)].decode()

    def _hdr(self, tid: int) -> tuple[int, int, int, int, int]:
        """(kind, vlen, kind_flag, name_off, size_or_type)"""
        name_off, info, st = struct.unpack_from("<III", self._blob, self._pos[tid])
        return (info >> 24) & 0x1F, info & 0xFFFF, info >> 31, name_off, st

    def _resolve(self, tid: int) -> int:
        while tid and self._hdr(tid)[0] in _MODIFIERS:
            tid = self._hdr(tid)[4]
        return tid

    def _sizeof(self, tid: int) -> int:
        tid = self._resolve(tid)
        kind, _vlen, _kf, _n, st = self._hdr(tid)
        if kind in (INT, STRUCT, UNION, ENUM, ENUM64, FLOAT):
            return st
        if kind == PTR:
            return 8
        if kind == ARRAY:
            elem, _idx, nelems = struct.unpack_from("<III", self._blob, self._pos[tid] + 12)
            return self._sizeof(elem) * nelems
        raise BTFError(f"type {tid} has no size")

    def _members(self, tid: int):
        kind, vlen, kflag, _n, _st = self._hdr(tid)
        base = self._pos[tid] + 12
        for i in range(vlen):
            name_off, mtype, moff = struct.unpack_from("<III", self._blob, base + 12 * i)
            bitsize, bitoff = (moff >> 24, moff & 0xFFFFFF) if kflag else (0, moff)
            yield (self._str(name_off) if name_off else ""), mtype, bitoff, bitsize

    def _find_member(self, tid: int, name: str,
                     bits: bool = False) -> tuple[int, int, int] | None:
        """(bit offset, member type, bit size: 0 unless a bitfield) of `name` in struct/union
        `tid`, looking through the anonymous structs and unions the kernel uses to group
        fields. A bitfield is refused unless `bits`: probes read whole bytes."""
        for mname, mtype, bitoff, bitsize in self._members(tid):
            if mname == name:
                if (bitsize or bitoff % 8) and not bits:
                    raise BTFError(f"{name} is a bitfield; probes read whole bytes only")
                return bitoff, mtype, bitsize
            if not mname and self._hdr(self._resolve(mtype))[0] in (STRUCT, UNION):
                inner = self._find_member(self._resolve(mtype), name, bits)
                if inner is not None:
                    return bitoff + inner[0], inner[1], inner[2]
        return None

    def struct_id(self, name: str) -> int:
        for tid in self._by_name.get(name, ()):
            if self._hdr(tid)[0] in (STRUCT, UNION):
                return tid
        raise BTFError(f"struct {name} is not in this kernel's BTF")

    def field(self, struct_name: str, path: str) -> Field:
        """Offset and size of a dotted member path such as ('net_device', 'nd_net.net')."""
        tid = self.struct_id(struct_name)
        offset = 0
        for part in path.split("."):
            tid = self._resolve(tid)
            if self._hdr(tid)[0] not in (STRUCT, UNION):
                raise BTFError(f"{struct_name}.{path}: '{part}' is not inside a struct")
            found = self._find_member(tid, part)
            if found is None:
                raise BTFError(f"struct {struct_name} has no field {path} in this kernel")
            offset += found[0] // 8
            tid = found[1]
        return Field(offset, self._sizeof(tid))

    def bitfield(self, struct_name: str, member: str) -> tuple[int, int]:
        """(byte offset, mask within that byte) of a bitfield member of at most 8 bits that
        does not cross a byte, such as ('sk_buff', 'cloned')."""
        found = self._find_member(self._resolve(self.struct_id(struct_name)), member, bits=True)
        if found is None:
            raise BTFError(f"struct {struct_name} has no field {member} in this kernel")
        bitoff, _t, bitsize = found
        if not bitsize or bitoff // 8 != (bitoff + bitsize - 1) // 8:
            raise BTFError(f"{struct_name}.{member} is not a bitfield within one byte")
        return bitoff // 8, ((1 << bitsize) - 1) << (bitoff % 8)

    def struct_size(self, name: str) -> int:
        return self._sizeof(self.struct_id(name))

    def func_params(self, name: str) -> list[str]:
        """C-ish spelling of each parameter type of function `name` ('struct sk_buff **')."""
        for tid in self._by_name.get(name, ()):
            kind, _v, _kf, _n, proto = self._hdr(tid)
            if kind == FUNC:
                _k, vlen, _kf, _n, _ret = self._hdr(proto)
                base = self._pos[proto] + 12
                return [self.type_name(struct.unpack_from("<II", self._blob, base + 8 * i)[1])
                        for i in range(vlen)]
        raise BTFError(f"function {name} is not in this kernel's BTF")

    def tracepoint_params(self, event: str) -> list[str] | None:
        """The argument types of tracepoint `event` as a BTF raw tracepoint sees them: its
        btf_trace_<event> typedef is a pointer to void (*)(void *__data, args...); the leading
        __data is left off. None where this kernel has no such tracepoint."""
        tid = self.type_id(f"btf_trace_{event}", TYPEDEF)
        if tid is None:
            return None
        proto = self._resolve(tid)
        while self._hdr(proto)[0] == PTR:
            proto = self._resolve(self._hdr(proto)[4])
        kind, vlen, _kf, _n, _ret = self._hdr(proto)
        if kind != FUNC_PROTO:
            return None
        base = self._pos[proto] + 12
        return [self.type_name(struct.unpack_from("<II", self._blob, base + 8 * i)[1])
                for i in range(1, vlen)]

    def type_name(self, tid: int) -> str:
        stars = ""
        while True:
            tid = self._resolve(tid)
            if tid == 0:  # void: type 0 has no header of its own
                return "void" + (f" {stars}" if stars else "")
            kind, _v, _kf, name_off, st = self._hdr(tid)
            if kind != PTR:
                break
            stars += "*"
            tid = st
        prefix = {STRUCT: "struct ", UNION: "union ", ENUM: "enum "}.get(kind, "")
        name = self._str(name_off) if name_off else "?"
        return f"{prefix}{name}" + (f" {stars}" if stars else "")

    def type_id(self, name: str, kind: int) -> int | None:
        """The id of the type called `name` of this kind, e.g. a tracepoint's btf_trace_<event>
        typedef, which a BTF raw tracepoint program names as its attach target."""
        return next((t for t in self._by_name.get(name, ()) if self._hdr(t)[0] == kind), None)

    def func_id(self, name: str) -> int | None:
        """The kernel-wide type id of the function `name` (BTF_KIND_FUNC), in a vmlinux or a
        module's split BTF: an fentry program's attach_btf_id"""
        if self._base is not None:
            return self._funcs.get(name)
        return self.type_id(name, FUNC)

    def has(self, name: str, kind: int) -> bool:
        return self.type_id(name, kind) is not None

    def enum_names(self) -> list[str]:
        return list(self._enums)

    def enum_values(self, name: str) -> dict[str, int] | None:
        """Enumerator name -> value of `enum name`, or None where this BTF has no such enum."""
        pos = self._enums.get(name)
        if pos is None:
            return None
        _n, info = struct.unpack_from("<II", self._blob, pos)
        kind, vlen, signed = (info >> 24) & 0x1F, info & 0xFFFF, info >> 31
        values = {}
        for i in range(vlen):
            if kind == ENUM:
                off, value = struct.unpack_from("<Ii" if signed else "<II", self._blob,
                                                pos + 12 + 8 * i)
            else:
                off, lo, hi = struct.unpack_from("<III", self._blob, pos + 12 + 12 * i)
                value = hi << 32 | lo
                if signed and hi >> 31:
                    value -= 1 << 64
            values[self._str(off)] = value
        return values
