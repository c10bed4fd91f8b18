"""The compiled-program cache: BCC's output kept on disk, so a later start needs no clang.

A compile costs ~1 s of clang here and ~10 s under emulation (the QEMU lab). What BCC produces
for netprobe is small and plain: per program, its instructions; per map, what BPF_MAP_CREATE
was given and BCC's description of the key and value types. An entry holds exactly that,
with the place of every map reference (an ld_imm64 BPF_PSEUDO_MAP_FD instruction whose
immediate is a map fd) recorded, so a hit creates the maps, writes their fds into the
instructions and loads them with plain system calls (loader.load_entry).

The key is a hash over everything that shapes the output: the program text and flags, the
programs asked for, the kernel (release, build, the hash of its BTF, possible CPUs), BCC's
version, this file's entry format. Entries live in a root-only directory (default
/var/cache/netprobe; NETPROBE_CACHE=off disables the cache, NETPROBE_CACHE=DIR moves it). An
entry is used only when the file is root's and nobody else may write it, its checksum holds
and the key written inside is the one asked for; anything else is ignored with a one-line note
and the program is compiled again. Nothing from a rejected entry is ever loaded.
"""
from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import os
import re
import stat
import struct
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

FORMAT = 1
DEFAULT_DIR = "/var/cache/netprobe"
_MAGIC = b"netprobe-progcache"
_MAX_ENTRY = 64 << 20
_KEEP = 32  # entries kept: one per flow filter in use is typical, and each is ~100 kB

_BPF_LD_IMM64 = 0x18
_BPF_PSEUDO_MAP_FD = 1
# ld_imm64 sources whose immediate means the same thing in any process: a constant, or the
# offset of a BPF-to-BPF function. Any other source (a map value address, an index into an
# fd array, a BTF object) is not something an entry can carry, so such a program is not cached.
_PORTABLE_SOURCES = frozenset({0, 4})


class Rejected(Exception):
    """An entry that must not be used; the message says why, in a few words."""


class Uncacheable(Exception):
    """A compile whose output an entry cannot reproduce."""


@dataclass(frozen=True)
class MapDef:
    name: str            # BCC's table name, the key of Loaded.maps
    type: int
    key_size: int
    value_size: int
    max_entries: int
    flags: int
    kernel_name: str     # the name BCC gave the kernel (at most 15 characters)
    key_desc: object     # BCC's description of the key's C type (bpfmaps.ctype_from_desc)
    leaf_desc: object


@dataclass(frozen=True)
class ProgDef:
    insns: bytes
    map_refs: tuple[tuple[int, str], ...]  # (instruction index, map name)


@dataclass
class Entry:
    license: str
    kern_version: int
    maps: list[MapDef] = field(default_factory=list)
    progs: dict[str, ProgDef] = field(default_factory=dict)  # function name -> program


# -- the key ------------------------------------------------------------------------------
def bcc_version() -> str:
    """BCC's version, read from its package without importing it (importing BCC maps LLVM)."""
    spec = importlib.util.find_spec("bcc")
    for where in (spec and spec.submodule_search_locations) or []:
        try:
            text = (Path(where) / "version.py").read_text()
        except OSError:
            continue
        m = re.search(r"""__version__\s*=\s*['"]([^'"]+)['"]""", text)
        if m:
            return m[1]
    return "none"


def _file_sha256(path: str) -> str:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
    except OSError:
        return "none"
    return h.hexdigest()


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return "none"


def machine_identity() -> dict:
    """The facts about this machine that shape a compile's output."""
    u = os.uname()
    return {"release": u.release, "build": u.version, "arch": u.machine,
            # the kernel's own types: tp_btf targets, and the field offsets in the flags
            "btf": _file_sha256("/sys/kernel/btf/vmlinux"),
            "possible_cpus": _read("/sys/devices/system/cpu/possible"),
            "bcc": bcc_version()}


def derive_key(text: str, cflags: list[str], progs: list[dict], machine: dict) -> str:
    parts = {"format": FORMAT, "text": hashlib.sha256(text.encode()).hexdigest(),
             "cflags": list(cflags), "progs": progs, "machine": machine}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


# -- instructions -------------------------------------------------------------------------
def _ld_imm64s(insns: bytes):
    """(index, source register, immediate) of each ld_imm64; its second slot is skipped."""
    i, n = 0, len(insns) // 8
    while i < n:
        code, regs, _, imm = struct.unpack_from("<BBhi", insns, i * 8)
        if code == _BPF_LD_IMM64:
            yield i, regs >> 4, imm
            i += 2
        else:
            i += 1


def map_refs(insns: bytes, fd_names: dict[int, str]) -> tuple[tuple[int, str], ...]:
    """Where each map is referred to, given which fd is which map in the compiling process."""
    refs = []
    for i, src, imm in _ld_imm64s(insns):
        if src == _BPF_PSEUDO_MAP_FD:
            if imm not in fd_names:
                raise Uncacheable(f"instruction {i} refers to fd {imm}, which is no map of BCC's")
            refs.append((i, fd_names[imm]))
        elif src not in _PORTABLE_SOURCES:
            raise Uncacheable(f"instruction {i} is an ld_imm64 of source {src}")
    return tuple(refs)


def patch(prog: ProgDef, fds: dict[str, int]) -> bytes:
    """The program's instructions with this process's map fds in place."""
    out = bytearray(prog.insns)
    for i, name in prog.map_refs:
        struct.pack_into("<i", out, i * 8 + 4, fds[name])
    return bytes(out)


def _check_prog(fn: str, prog: ProgDef, map_names: set[str]) -> None:
    if not prog.insns or len(prog.insns) % 8:
        raise Rejected(f"program {fn}: {len(prog.insns)} bytes of instructions")
    expected = {i for i, _ in prog.map_refs}
    seen = set()
    for i, src, _ in _ld_imm64s(prog.insns):
        if src == _BPF_PSEUDO_MAP_FD:
            seen.add(i)
        elif src not in _PORTABLE_SOURCES:
            raise Rejected(f"program {fn}: instruction {i} is an ld_imm64 of source {src}")
    # every map reference gets a fresh fd written into it: one left out would load with
    # whatever fd number the entry carried
    if seen != expected:
        raise Rejected(f"program {fn}: its map references do not match the instructions")
    for _, name in prog.map_refs:
        if name not in map_names:
            raise Rejected(f"program {fn} refers to map {name!r}, which the entry lacks")


# -- the file -----------------------------------------------------------------------------
def to_dict(entry: Entry) -> dict:
    return {"license": entry.license, "kern_version": entry.kern_version,
            "maps": [m.__dict__ for m in entry.maps],
            "progs": {fn: {"insns": base64.b64encode(p.insns).decode(),
                           "map_refs": [list(r) for r in p.map_refs]}
                      for fn, p in entry.progs.items()}}


def from_dict(d: dict) -> Entry:
    """The entry `d` describes, checked whole (Rejected otherwise)."""
    try:
        maps = [MapDef(name=str(m["name"]), type=int(m["type"]), key_size=int(m["key_size"]),
                       value_size=int(m["value_size"]), max_entries=int(m["max_entries"]),
                       flags=int(m["flags"]), kernel_name=str(m["kernel_name"]),
                       key_desc=m["key_desc"], leaf_desc=m["leaf_desc"]) for m in d["maps"]]
        progs = {str(fn): ProgDef(base64.b64decode(p["insns"], validate=True),
                                  tuple((int(i), str(n)) for i, n in p["map_refs"]))
                 for fn, p in d["progs"].items()}
        entry = Entry(str(d["license"]), int(d["kern_version"]), maps, progs)
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise Rejected(f"malformed ({type(e).__name__})") from None
    names = {m.name for m in maps}
    if len(names) != len(maps):
        raise Rejected("a map is listed twice")
    for fn, prog in progs.items():
        _check_prog(fn, prog, names)
    return entry


def encode(key: str, entry: Entry) -> bytes:
    body = json.dumps({"key": key, **to_dict(entry)}, sort_keys=True).encode()
    head = b"%s %d %s\n" % (_MAGIC, FORMAT, hashlib.sha256(body).hexdigest().encode())
    return head + body


def decode(data: bytes, key: str) -> Entry:
    """The entry in `data`, or Rejected: it is checked whole before anything is used."""
    head, sep, body = data.partition(b"\n")
    parts = head.split(b" ")
    if not sep or len(parts) != 3 or parts[0] != _MAGIC:
        raise Rejected("not a netprobe cache entry")
    if parts[1] != str(FORMAT).encode():
        raise Rejected(f"entry format {parts[1].decode(errors='replace')}, not {FORMAT}")
    if hashlib.sha256(body).hexdigest().encode() != parts[2]:
        raise Rejected("checksum mismatch")
    try:
        d = json.loads(body)
    except ValueError:
        raise Rejected("malformed (not JSON)") from None
    if not isinstance(d, dict) or d.get("key") != key:
        raise Rejected("its key is not the one asked for")
    return from_dict(d)


def note(text: str) -> None:
    print(f"netprobe: note: compiled-program cache: {text}", file=sys.stderr)


class Cache:
    """The cache directory. Every read checks who owns what it reads."""

    def __init__(self, path: Path):
        self.path = path

    @classmethod
    def from_env(cls) -> "Cache | None":
        """The cache NETPROBE_CACHE asks for; None when it is off or cannot be trusted."""
        setting = os.environ.get("NETPROBE_CACHE", "")
        if setting.lower() in ("off", "0", "no", "false"):
            return None
        if os.geteuid() != 0:
            return None  # only root's entries are trusted, and only root loads programs
        path = Path(setting or DEFAULT_DIR)
        try:
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
            st = os.lstat(path)
        except OSError as e:
            note(f"{path}: {e.strerror}; compiling without it")
            return None
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != 0 or st.st_mode & 0o077:
            note(f"{path} is not a directory only root can use (owner uid {st.st_uid}, mode "
                 f"{stat.S_IMODE(st.st_mode):o}); compiling without it")
            return None
        return cls(path)

    def file(self, key: str) -> Path:
        return self.path / f"{key}.entry"

    def lookup(self, key: str) -> Entry | None:
        """The entry for `key`; None when there is none, or (with a note) when it is unfit."""
        path = self.file(key)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        except OSError as e:
            note(f"ignoring {path}: {e.strerror}; compiling")
            return None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise Rejected("not a regular file")
            if st.st_uid != 0 or st.st_mode & 0o022:
                raise Rejected(f"owned by uid {st.st_uid} with mode {stat.S_IMODE(st.st_mode):o}"
                               ", not root's alone")
            if st.st_size > _MAX_ENTRY:
                raise Rejected(f"{st.st_size} bytes")
            with os.fdopen(fd, "rb", closefd=False) as f:
                entry = decode(f.read(), key)
        except Rejected as e:
            note(f"ignoring {path}: {e}; compiling")
            return None
        finally:
            os.close(fd)
        try:
            os.utime(path)  # most recently used, for pruning
        except OSError:
            pass
        return entry

    def store(self, key: str, entry: Entry) -> None:
        """Write the entry whole or not at all (a rename), then prune the least recently
        used. A failure only costs the next start its compile."""
        try:
            fd, tmp = tempfile.mkstemp(dir=self.path, prefix=".new-")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(encode(key, entry))
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, self.file(key))
            except BaseException:
                os.unlink(tmp)
                raise
        except OSError as e:
            note(f"cannot store an entry in {self.path}: {e.strerror}")
            return
        self._prune()

    def _prune(self) -> None:
        entries = []
        for p in self.path.glob("*.entry"):
            try:
                entries.append((p.stat().st_mtime, p))
            except OSError:
                pass
        for _, p in sorted(entries, reverse=True)[_KEEP:]:
            try:
                p.unlink()
            except OSError:
                pass
