"""Compiling and loading in a child process, so that netprobe never maps LLVM.

BCC compiles in-process with clang/LLVM: ~200 MB of resident memory that stays after the
compile (LLVM's touched pages and the compiler's kept state). netprobe runs for days as an
exporter, so the compile happens in a child (`python -m netprobe.kernel.loader`): it compiles the
program, loads each program the plan may attach and sends the program and map file
descriptors back over a unix socket, then exits. The kernel keeps every program and map alive
through the descriptors the parent now holds; the parent attaches (bpfsys) and reads the maps
(bpfmaps) with plain system calls.

The parent asks with one JSON message: {"text", "cflags", "progs": [{"key", "fn", "type",
"attach_type", "btf_id", "late"}], "cache": bool}; the child answers with one JSON message and
the fds: {"maps": {name: {"fd": i, "key": desc, "leaf": desc}}, "progs": {key: {"fd": i} or
{"late": {"insns": hex, "refs": [[index, map]]}} or {"error": text}}, "cache": entry or
{"error": text}, "license": text, "kern_version": n} or {"error": text} — `i` indexes the fds
sent along,
`desc` is BCC's description of a table's C type (bpfmaps.ctype_from_desc), `entry` what the
compiled-program cache keeps (progcache.to_dict), asked for when the cache is on.

With a cache entry for the request (progcache), no child is started: the maps are created and
the programs loaded here, from the entry's instructions (load_entry).
"""
from __future__ import annotations

import ctypes
import errno
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from . import bpfsys, kfuncs, progcache
from .bpfmaps import map_info
from ..errors import NetprobeError, one_line

_MAX_FDS = 250  # SCM_RIGHTS carries at most 253 descriptors per message


@dataclass(frozen=True)
class ProgSpec:
    """One program to load: `key` names it in the answer (a tp_btf program is loaded once per
    tracepoint, so its key carries the event)."""
    key: str
    fn: str
    type: int
    attach_type: int = -1
    btf_id: int = 0
    # not loaded now but kept as instructions, for the parent to load once it knows the target:
    # an fentry program on each device's ndo_start_xmit, bound to that function at load time
    late: bool = False


@dataclass
class Loaded:
    maps: dict[str, tuple[int, object, object]] = field(default_factory=dict)  # fd, key, leaf
    progs: dict[str, int] = field(default_factory=dict)     # key -> fd
    errors: dict[str, str] = field(default_factory=dict)    # key -> why it did not load
    source: str = "compiled"                                # or "cache"
    late: dict[str, progcache.ProgDef] = field(default_factory=dict)  # fn -> its instructions
    license: str = "GPL"
    kern_version: int = 0

    def load_fentry(self, fn: str, func_btf_id: int, btf_obj_fd: int = 0) -> int:
        """A late program (ProgSpec.late) loaded now as fentry at that function; the caller
        owns the returned fd."""
        if fn not in self.late:
            raise OSError(errno.EINVAL, f"{fn} was not compiled")
        insns = progcache.patch(self.late[fn], {name: m[0] for name, m in self.maps.items()})
        return bpfsys.load_fentry(insns, fn, func_btf_id, btf_obj_fd, self.license,
                                  self.kern_version)

    def close(self) -> None:
        for fd in [*self.progs.values(), *(m[0] for m in self.maps.values())]:
            try:
                os.close(fd)
            except OSError:
                pass
        self.progs.clear()
        self.maps.clear()


# -- parent side -------------------------------------------------------------------------
def load(text: str, cflags: list[str], progs: list[ProgSpec]) -> Loaded:
    cache = progcache.Cache.from_env()
    if cache is None:
        return _compile(text, cflags, progs, None)[0]
    key = progcache.derive_key(text, cflags, [p.__dict__ for p in progs],
                               progcache.machine_identity())
    entry = cache.lookup(key)
    if entry is not None:
        try:
            return load_entry(entry, progs)
        except (OSError, KeyError) as e:
            why = e.strerror if isinstance(e, OSError) else f"no program {e}"
            progcache.note(f"entry {cache.file(key)} did not load ({why}); compiling")
    loaded, material = _compile(text, cflags, progs, cache)
    if material is not None:
        if "error" in material:
            progcache.note(f"not kept: {material['error']}")
        else:
            try:
                cache.store(key, progcache.from_dict(material))
            except progcache.Rejected as e:
                progcache.note(f"not kept: {e}")
    return loaded


def load_entry(entry: progcache.Entry, progs: list[ProgSpec]) -> Loaded:
    """Create the entry's maps and load the programs asked for from its instructions, as the
    child would have from BCC's: a program the kernel refuses is an error, not a failure."""
    out = Loaded(source="cache", license=entry.license, kern_version=entry.kern_version)
    try:
        fds = {}
        for m in entry.maps:
            fds[m.name] = bpfsys.map_create(m.type, m.key_size, m.value_size, m.max_entries,
                                            m.flags, m.kernel_name)
            out.maps[m.name] = (fds[m.name], m.key_desc, m.leaf_desc)
        for p in progs:
            if p.late:
                out.late[p.fn] = entry.progs[p.fn]
                continue
            insns = progcache.patch(entry.progs[p.fn], fds)
            try:
                out.progs[p.key] = bpfsys.load_program(
                    insns, p.fn, p.type, max(p.attach_type, 0), p.btf_id, entry.license,
                    entry.kern_version)
            except OSError as e:
                out.errors[p.key] = e.strerror or str(e)
    except BaseException:
        out.close()
        raise
    return out


def _compile(text: str, cflags: list[str], progs: list[ProgSpec],
             cache: progcache.Cache | None) -> tuple[Loaded, dict | None]:
    """BCC's compile and load in the child; with a cache, also what an entry keeps."""
    request = json.dumps({"text": text, "cflags": cflags, "cache": cache is not None,
                          "progs": [p.__dict__ for p in progs]}).encode()
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    env = dict(os.environ)
    package_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    try:
        child = subprocess.Popen([sys.executable, "-m", "netprobe.kernel.loader",
                                  str(theirs.fileno())],
                                 pass_fds=[theirs.fileno()], env=env, stdin=subprocess.DEVNULL)
    except OSError as e:
        ours.close()
        theirs.close()
        raise NetprobeError(f"starting the BPF compiler process: {e.strerror}") from None
    theirs.close()
    try:
        with ours:
            _send(ours, request, [])
            answer, fds = _receive(ours)
    except BaseException:  # Ctrl-C or SIGTERM while compiling: the compile is not waited for
        child.kill()
        raise
    finally:
        child.wait()
    if answer is None:
        for fd in fds:
            os.close(fd)
        raise NetprobeError(f"the BPF compiler process died (exit status {child.returncode})")
    if "error" in answer:
        for fd in fds:
            os.close(fd)
        raise NetprobeError(answer["error"])
    out = Loaded(license=answer.get("license", "GPL"), kern_version=answer.get("kern_version", 0))
    for name, m in answer["maps"].items():
        out.maps[name] = (fds[m["fd"]], m["key"], m["leaf"])
    for key, p in answer["progs"].items():
        if "fd" in p:
            out.progs[key] = fds[p["fd"]]
        elif "late" in p:
            out.late[key] = progcache.ProgDef(bytes.fromhex(p["late"]["insns"]),
                                              tuple(map(tuple, p["late"]["refs"])))
        else:
            out.errors[key] = p["error"]
    return out, answer.get("cache")


# -- the wire: a length-prefixed JSON message, then the fds in batches ------------------
def _send(sock: socket.socket, payload: bytes, fds: list[int]) -> None:
    sock.sendall(struct.pack("=II", len(payload), len(fds)) + payload)
    for i in range(0, len(fds), _MAX_FDS):
        socket.send_fds(sock, [b"F"], fds[i:i + _MAX_FDS])


def _recv_exact(sock: socket.socket, n: int) -> bytes | None:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def _receive(sock: socket.socket) -> tuple[dict | None, list[int]]:
    head = _recv_exact(sock, 8)
    if head is None:
        return None, []
    size, nfds = struct.unpack("=II", head)
    body = _recv_exact(sock, size)
    if body is None:
        return None, []
    fds: list[int] = []
    while len(fds) < nfds:
        _, got, _, _ = socket.recv_fds(sock, 1, min(_MAX_FDS, nfds - len(fds)))
        if not got:
            return None, fds
        fds += got
    return json.loads(body), fds


# -- child side --------------------------------------------------------------------------
@contextmanager
def stderr_captured():
    """File descriptor 2 into a temporary file for the block, which it yields: clang and
    libbpf write to the descriptor, past Python's sys.stderr."""
    with tempfile.TemporaryFile() as f:
        saved = os.dup(2)
        os.dup2(f.fileno(), 2)
        try:
            yield f
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _compile_and_load(request: dict) -> tuple[dict, list[int]]:
    try:
        from bcc import BPF, lib
    except ImportError:
        return {"error": "BCC's Python module is missing: install python3-bpfcc (make setup) "
                         "and run netprobe with /usr/bin/python3"}, []
    # clang writes its diagnostics to stderr: kept, so that a failure names its first error
    # in one line and a success does not print the compiler's warnings at the user
    with stderr_captured() as diag:
        try:
            b = BPF(text=request["text"], cflags=request["cflags"])
        except Exception as e:  # BCC raises bare Exception("Failed to compile BPF module")
            diag.seek(0)
            errors = [ln for ln in diag.read().decode(errors="replace").splitlines()
                      if "error:" in ln]
            why = errors[0] if errors else one_line(e)
            return {"error": f"compiling probes: {why}"}, []
    # BCC's Python binding does not declare these two; without it the name pointer is cut to
    # an int
    lib.bpf_num_tables.restype, lib.bpf_num_tables.argtypes = ctypes.c_ulonglong, [ctypes.c_void_p]
    lib.bpf_table_name.restype = ctypes.c_char_p
    lib.bpf_table_name.argtypes = [ctypes.c_void_p, ctypes.c_ulonglong]
    fds: list[int] = []
    maps = {}
    for i in range(lib.bpf_num_tables(b.module)):
        name = lib.bpf_table_name(b.module, i)
        maps[name.decode()] = {"fd": len(fds), "key": json.loads(lib.bpf_table_key_desc(b.module, name)),
                               "leaf": json.loads(lib.bpf_table_leaf_desc(b.module, name))}
        fds.append(lib.bpf_table_fd(b.module, name))
    answer = {"maps": maps, "license": lib.bpf_module_license(b.module).decode(),
              "kern_version": lib.bpf_module_kern_version(b.module)}
    fd_names = {fds[m["fd"]]: name for name, m in maps.items()}
    if request.get("cache"):
        try:
            answer["cache"] = progcache.to_dict(_cache_entry(b, lib, maps, fds, request["progs"],
                                                            request["cflags"]))
        except Exception as e:  # Uncacheable, or BCC's bare Exception from dump_func
            answer["cache"] = {"error": one_line(e)}
    progs = {}
    for p in request["progs"]:
        try:
            insns = _insns(b, p["fn"], request["cflags"])
            if p.get("late"):
                progs[p["key"]] = {"late": {"insns": insns.hex(),
                                            "refs": progcache.map_refs(insns, fd_names)}}
                continue
            # loaded as a cache entry's are: BCC 0.26 loads neither tp_btf programs nor kfunc calls
            fd = bpfsys.load_program(insns, p["fn"], p["type"], max(p["attach_type"], 0),
                                     p["btf_id"], answer["license"], answer["kern_version"])
        except OSError as e:
            progs[p["key"]] = {"error": e.strerror or str(e)}
            continue
        except Exception as e:  # BCC's load_func raises bare Exception with the verifier's words
            progs[p["key"]] = {"error": one_line(e)}
            continue
        progs[p["key"]] = {"fd": len(fds)}
        fds.append(fd)
    answer["progs"] = progs
    return answer, fds


def _insns(b, fn: str, cflags: list[str]) -> bytes:
    """BCC's instructions for program `fn`, its kfunc calls made such (kfuncs.py)"""
    return kfuncs.resolve(b.dump_func(fn), kfuncs.ids(cflags))


def _cache_entry(b, lib, maps: dict, fds: list[int], progs: list[dict],
                 cflags: list[str]) -> progcache.Entry:
    """What a later start needs to do without BCC: each map as the kernel was asked to create
    it, and each program's instructions with the places that hold a map's fd."""
    defs, fd_names = [], {}
    for name, m in maps.items():
        fd = fds[m["fd"]]
        info = map_info(fd)
        fd_names[fd] = name
        defs.append(progcache.MapDef(name, info.type, info.key_size, info.value_size,
                                     info.max_entries, info.flags, info.name, m["key"], m["leaf"]))
    entry = progcache.Entry(lib.bpf_module_license(b.module).decode(),
                            lib.bpf_module_kern_version(b.module), defs)
    for p in progs:
        if p["fn"] not in entry.progs:
            insns = _insns(b, p["fn"], cflags)
            entry.progs[p["fn"]] = progcache.ProgDef(insns, progcache.map_refs(insns, fd_names))
    return entry


def _child(sock_fd: int) -> None:
    # die with the parent, and leave Ctrl-C to it: the parent reports, the child just goes
    ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sock = socket.socket(fileno=sock_fd)
    request, _ = _receive(sock)
    if request is None:
        return
    answer, fds = _compile_and_load(request)
    _send(sock, json.dumps(answer).encode(), fds)


if __name__ == "__main__":
    try:
        _child(int(sys.argv[1]))
    except Exception as e:  # the parent says the child died; this says why, in one line
        print(f"netprobe loader: {type(e).__name__}: {e}", file=sys.stderr)
        os._exit(1)
    sys.stdout.flush()
    # not sys.exit: BCC's atexit cleanup would close what the parent now holds (harmless,
    # the kernel keeps them) and LLVM's teardown only costs time
    os._exit(0)
