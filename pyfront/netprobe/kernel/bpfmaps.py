"""BPF maps read and written from their file descriptors alone, without importing BCC.

BCC (clang and LLVM, ~200 MB resident) lives only in the short-lived child that compiles and
loads the probes; the parent gets the map fds and BCC's JSON description of each map's key and
value, and rebuilds the ctypes layouts here."""
from __future__ import annotations

import ctypes
import errno
import json
import os
from dataclasses import dataclass

from .bpfsys import _bpf
from ..errors import NetprobeError

BPF_MAP_LOOKUP_ELEM, BPF_MAP_UPDATE_ELEM, BPF_MAP_DELETE_ELEM, BPF_MAP_GET_NEXT_KEY = 1, 2, 3, 4
BPF_OBJ_GET_INFO_BY_FD = 15
PERCPU_MAP_TYPES = frozenset({5, 6, 10})  # PERCPU_HASH, PERCPU_ARRAY, LRU_PERCPU_HASH
ARRAY_MAP_TYPES = frozenset({2, 6})  # ARRAY, PERCPU_ARRAY: keys 0 .. max_entries-1, always


class _Int128(ctypes.Array):  # ctypes has no 128-bit integer: two halves, with C's alignment
    _type_, _length_, _c_align_ = ctypes.c_int64, 2, 16


class _UInt128(ctypes.Array):
    _type_, _length_, _c_align_ = ctypes.c_uint64, 2, 16


_SCALARS = {
    "_Bool": ctypes.c_bool, "char": ctypes.c_char, "signed char": ctypes.c_byte,
    "unsigned char": ctypes.c_ubyte, "wchar_t": ctypes.c_wchar,
    "short": ctypes.c_short, "unsigned short": ctypes.c_ushort,
    "int": ctypes.c_int, "unsigned int": ctypes.c_uint,
    "long": ctypes.c_long, "unsigned long": ctypes.c_ulong,
    "long long": ctypes.c_longlong, "unsigned long long": ctypes.c_ulonglong,
    "float": ctypes.c_float, "double": ctypes.c_double, "long double": ctypes.c_longdouble,
    "__int128": _Int128, "unsigned __int128": _UInt128,
}
_CDATA = (ctypes._SimpleCData, ctypes.Structure, ctypes.Union, ctypes.Array)


def ctype_from_desc(desc):
    """The ctypes type for BCC's description of a map key or value (JSON text or parsed)."""
    if isinstance(desc, bytes):
        desc = desc.decode()
    if isinstance(desc, str):
        try:
            desc = json.loads(desc)
        except ValueError:
            pass  # a bare type name, as in the parsed form: "unsigned int"
    return _decode(desc)


def _decode(desc):
    if isinstance(desc, str):
        if desc not in _SCALARS:
            raise NetprobeError(f"BPF map type {desc!r} has no ctypes equivalent here")
        return _SCALARS[desc]
    name, members, kind = desc[0], desc[1], desc[2] if len(desc) > 2 else "struct"
    if kind == "enum":
        return ctypes.c_uint  # clang's type for an enum without negative enumerators
    if kind not in ("struct", "struct_packed", "union"):
        raise NetprobeError(f"BPF map type {name!r}: unknown kind {kind!r}")
    return _record(name or "anon", members, kind)


def _up(n: int, m: int) -> int:
    return -(-n // m) * m


def _c_align(t) -> int:
    # ctypes reports 1 for the _pack_=1 records built here, which C would align to their members
    if getattr(t, "_c_align_", 0):
        return t._c_align_
    return _c_align(t._type_) if issubclass(t, ctypes.Array) else ctypes.alignment(t)


def _record(name: str, members: list, kind: str):
    """Lay the record out by C's (SysV) rules and give ctypes every offset and padding byte:
    ctypes' own bitfield layout is not C's (after `u32 a:3` it puts a `u8` at 4, C at 1), and
    BCC sends bitfield structs unpadded ("struct"); "struct_packed" comes padded already."""
    union, aligned = kind == "union", kind != "struct_packed"
    placed, bitfields, anonymous = [], {}, []
    end, align = 0, 1  # in bits, and bytes
    for m in members:
        fname, width, extra = m[0], None, m[2] if len(m) == 3 else None
        if isinstance(extra, str):  # an anonymous struct or union, inline
            t = _decode(m)
            if not fname:
                fname = f"__anon{len(anonymous)}"
                anonymous.append(fname)
        else:
            t = _decode(m[1])
            if isinstance(extra, list):  # array dimensions
                for n in reversed(extra):
                    t = t * n
            else:
                width = extra  # bits, or None
        at = 0 if union else end
        if width is None:
            a = _c_align(t)
            at = _up(at, 8 * a if aligned else 8)
            placed.append((fname, t, at // 8))
            at += 8 * ctypes.sizeof(t)
        else:
            unit = 8 * ctypes.sizeof(t)
            a = ctypes.sizeof(t) if fname else 1  # an unnamed bitfield does not align the record
            if width == 0 or at // unit != (at + width - 1) // unit:  # never straddles its type
                at = _up(at, unit)
            if fname:
                bitfields[fname] = _bitfield(t, at, width)
            at += width
        align = max(align, a)
        end = max(end, at)
    size = _up(end, 8 * align if aligned else 8) // 8
    if union:
        fields = [(fname, t) for fname, t, _ in placed] + [("__size", ctypes.c_ubyte * size)]
    else:
        fields, at = [], 0
        for fname, t, off in placed:
            if off > at:
                fields.append((f"__gap{at}", ctypes.c_ubyte * (off - at)))
            fields.append((fname, t))
            at = off + ctypes.sizeof(t)
        if size > at:
            fields.append(("__gap_end", ctypes.c_ubyte * (size - at)))
    base = ctypes.Union if union else ctypes.Structure
    return type(name, (base,), dict(bitfields, _pack_=1, _c_align_=align, _anonymous_=anonymous,
                                    _fields_=fields))


def _bitfield(t, bit: int, width: int) -> property:
    lo, shift, n = bit // 8, bit % 8, (bit % 8 + width + 7) // 8
    mask = (1 << width) - 1
    signed = t is ctypes.c_char or t(-1).value < 0

    def get(self):
        raw = int.from_bytes(ctypes.string_at(ctypes.addressof(self) + lo, n), "little")
        raw = raw >> shift & mask
        return raw - (1 << width) if signed and raw >> (width - 1) else raw

    def put(self, value: int) -> None:
        at = ctypes.addressof(self) + lo
        raw = int.from_bytes(ctypes.string_at(at, n), "little") & ~(mask << shift)
        ctypes.memmove(at, (raw | (value & mask) << shift).to_bytes(n, "little"), n)
    return property(get, put)


def parse_cpu_list(text: str) -> list[int]:
    """The CPU numbers in a kernel CPU list such as "0-3,5"."""
    cpus: list[int] = []
    for part in filter(None, text.strip().split(",")):
        lo, _, hi = part.partition("-")
        cpus += range(int(lo), int(hi or lo) + 1)
    return cpus


def possible_cpus() -> int:
    """How many values a per-CPU map holds for each key: one per possible CPU, packed."""
    with open("/sys/devices/system/cpu/possible") as f:
        return len(parse_cpu_list(f.read()))


def percpu_stride(value_size: int) -> int:
    """The kernel pads each CPU's value to 8 bytes (bpf_percpu_*_copy: round_up(size, 8))."""
    return _up(value_size, 8)


class _ElemAttr(ctypes.Structure):
    _fields_ = [("map_fd", ctypes.c_uint32), ("_pad", ctypes.c_uint32), ("key", ctypes.c_uint64),
                ("value", ctypes.c_uint64), ("flags", ctypes.c_uint64)]


class _InfoAttr(ctypes.Structure):
    _fields_ = [("bpf_fd", ctypes.c_uint32), ("info_len", ctypes.c_uint32),
                ("info", ctypes.c_uint64)]


class _MapInfo(ctypes.Structure):  # the head of struct bpf_map_info; the kernel fills the rest
    _fields_ = [("type", ctypes.c_uint32), ("id", ctypes.c_uint32),
                ("key_size", ctypes.c_uint32), ("value_size", ctypes.c_uint32),
                ("max_entries", ctypes.c_uint32), ("map_flags", ctypes.c_uint32),
                ("name", ctypes.c_char * 16)]


@dataclass(frozen=True)
class MapInfo:
    type: int
    key_size: int
    value_size: int
    max_entries: int
    name: str
    id: int
    flags: int = 0


def map_info(fd: int) -> MapInfo:
    raw = _MapInfo()
    _bpf(BPF_OBJ_GET_INFO_BY_FD, _InfoAttr(bpf_fd=fd, info_len=ctypes.sizeof(raw),
                                           info=ctypes.addressof(raw)))
    return MapInfo(raw.type, raw.key_size, raw.value_size, raw.max_entries,
                   raw.name.decode(errors="replace"), raw.id, raw.map_flags)


def _coerce(obj, ctype):
    if isinstance(obj, _CDATA):
        if ctypes.sizeof(obj) != ctypes.sizeof(ctype):
            raise TypeError(f"{type(obj).__name__} is {ctypes.sizeof(obj)} bytes, "
                            f"{ctype.__name__} {ctypes.sizeof(ctype)}")
        return obj
    if issubclass(ctype, ctypes._SimpleCData):
        return ctype(obj)
    raise TypeError(f"expected a {ctype.__name__}, got {type(obj).__name__}")


class Map:
    """One BPF map; per-CPU maps give and take a list of values, one per possible CPU."""

    def __init__(self, fd: int, key_type, value_type):
        self.fd, self.key_type, self.value_type = fd, key_type, value_type
        self.info = map_info(fd)
        for what, t, size in (("key", key_type, self.info.key_size),
                              ("value", value_type, self.info.value_size)):
            if ctypes.sizeof(t) != size:
                raise NetprobeError(f"BPF map {self.info.name or fd}: its {what}s are {size} "
                                    f"bytes, {t.__name__} is {ctypes.sizeof(t)}")
        self.percpu = self.info.type in PERCPU_MAP_TYPES
        self.ncpus = possible_cpus() if self.percpu else 1
        self._stride = percpu_stride(self.info.value_size) if self.percpu else self.info.value_size

    def _call(self, cmd: int, key, value=None, flags: int = 0) -> bool:
        """False where the kernel says ENOENT: no such key, or no key after this one. Takes the
        ctypes objects themselves, so that they live until the kernel has used them."""
        attr = _ElemAttr(map_fd=self.fd, flags=flags,
                         key=0 if key is None else ctypes.addressof(key),
                         value=0 if value is None else ctypes.addressof(value))
        try:
            _bpf(cmd, attr)
        except OSError as e:
            if e.errno == errno.ENOENT:
                return False
            raise
        return True

    def _buffer(self):
        return (ctypes.c_char * (self._stride * self.ncpus))()

    def _lookup(self, key, buf):
        if not self._call(BPF_MAP_LOOKUP_ELEM, key, buf):
            return None
        if not self.percpu:
            return self.value_type.from_buffer_copy(buf)
        return [self.value_type.from_buffer_copy(buf, i * self._stride) for i in range(self.ncpus)]

    def lookup(self, key):
        return self._lookup(_coerce(key, self.key_type), self._buffer())

    def update(self, key, value, flags: int = 0) -> None:
        k = _coerce(key, self.key_type)
        values = value if self.percpu and isinstance(value, (list, tuple)) else [value] * self.ncpus
        if len(values) != self.ncpus:
            raise ValueError(f"{len(values)} values for {self.ncpus} possible CPUs")
        buf = self._buffer()
        for i, v in enumerate(values):
            ctypes.memmove(ctypes.addressof(buf) + i * self._stride,
                           ctypes.byref(_coerce(v, self.value_type)), self.info.value_size)
        if not self._call(BPF_MAP_UPDATE_ELEM, k, buf, flags):
            raise KeyError(key)  # BPF_EXIST asked for a key that is not there

    def delete(self, key) -> None:
        if not self._call(BPF_MAP_DELETE_ELEM, _coerce(key, self.key_type)):
            raise KeyError(key)

    def keys(self) -> list:
        """Every key, all walked before any is handed out, so the caller may delete as it goes."""
        if self.info.type in ARRAY_MAP_TYPES:  # known without asking the kernel key by key
            return [self.key_type(i) for i in range(self.info.max_entries)]
        found, seen = [], set()
        bufs, prev = (self.key_type(), self.key_type()), None  # a NULL key asks for the first
        # A key deleted under the walk (by a BPF program, an LRU eviction) makes the kernel start
        # again from the first key: repeats are skipped, and a map that keeps changing ends the
        # walk after twice its size in steps rather than never.
        for step in range(2 * self.info.max_entries + 1):
            nxt = bufs[step % 2]
            if not self._call(BPF_MAP_GET_NEXT_KEY, prev, nxt):
                break
            raw = bytes(nxt)
            if raw not in seen:
                seen.add(raw)
                found.append(self.key_type.from_buffer_copy(nxt))
            prev = nxt
        return found

    def delete_where(self, pred) -> None:
        """Delete every key for which pred(key) holds; one deleted meanwhile is no error."""
        for k in self.keys():
            if pred(k):
                try:
                    self.delete(k)
                except KeyError:
                    pass

    def items(self) -> list:
        buf = self._buffer()
        pairs = ((k, self._lookup(k, buf)) for k in self.keys())
        return [(k, v) for k, v in pairs if v is not None]  # None: deleted since the walk

    def values(self) -> list:
        return [v for _, v in self.items()]

    def __iter__(self):
        return iter(self.keys())

    def __getitem__(self, key):
        value = self.lookup(key)
        if value is None:
            raise KeyError(key)
        return value

    def __setitem__(self, key, value) -> None:
        self.update(key, value)

    def __delitem__(self, key) -> None:
        self.delete(key)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
