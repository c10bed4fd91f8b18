"""Hand-made BTF blobs for unit tests: types added one by one, the header written last."""
import struct

from netprobe.model.btf import ENUM, ENUM64, INT, STRUCT


class Builder:
    """`base_strs`: the string section length of the BTF a split (module) blob continues; its
    own strings' offsets start there."""

    def __init__(self, base_strs: int = 0):
        self.types = b""
        self.strs = b"" if base_strs else b"\0"
        self.base_strs = base_strs
        self.n = 0

    def s(self, name):
        if not name:
            return 0
        off = self.base_strs + len(self.strs)
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

    def enum(self, name, values, signed=False):
        tr = b"".join(struct.pack("<Ii" if signed else "<II", self.s(k), v) for k, v in values.items())
        return self.add(ENUM, name, len(values), 4, tr, kflag=int(signed))

    def enum64(self, name, values):
        tr = b"".join(struct.pack("<III", self.s(k), v & 0xFFFFFFFF, v >> 32) for k, v in values.items())
        return self.add(ENUM64, name, len(values), 8, tr)

    def blob(self):
        hdr = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(self.types), len(self.types), len(self.strs))
        return hdr + self.types + self.strs
