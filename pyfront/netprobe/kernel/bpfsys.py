"""The bpf(2), perf_event_open(2) and setns(2) calls netprobe makes itself.

BCC compiles and loads the programs in a short-lived child process (loader.py); everything
after that — attaching raw tracepoints, BTF raw tracepoints, kprobes and netfilter links,
running the device inventory, entering namespaces — happens here, in a process that never
maps LLVM. Also what BCC 0.26 cannot do at all: load a BTF raw tracepoint (tp_btf) program,
netfilter links (kernel >= 6.4)."""
from __future__ import annotations

import ctypes
import errno
import functools
import os
from contextlib import contextmanager
from dataclasses import dataclass

from ..errors import NetprobeError

_libc = ctypes.CDLL(None, use_errno=True)


@dataclass(frozen=True)
class Syscalls:
    bpf: int
    setns: int
    perf_event_open: int


# System-call numbers differ per architecture, and a wrong one is another call, not an error.
# x86_64: arch/x86/entry/syscalls/syscall_64.tbl; aarch64 uses the generic table,
# include/uapi/asm-generic/unistd.h. The ioctl numbers and attr layouts used here are the same
# on both (the generic _IOC encoding, fixed-width uapi structs).
SYSCALLS = {
    "x86_64": Syscalls(bpf=321, setns=308, perf_event_open=298),
    "aarch64": Syscalls(bpf=280, setns=268, perf_event_open=241),
}


def syscalls_for(machine: str) -> Syscalls:
    """The numbers for `machine` (as os.uname().machine spells it), or a one-line error."""
    try:
        return SYSCALLS[machine]
    except KeyError:
        raise NetprobeError(f"netprobe runs on {' and '.join(SYSCALLS)} only, "
                            f"not on {machine}") from None


def this_machine() -> Syscalls:
    """This machine's numbers; netprobe asks at start, so that an unknown architecture is a
    one-line error before anything is loaded."""
    return syscalls_for(os.uname().machine)


_nr = functools.cache(this_machine)


BPF_MAP_CREATE = 0
BPF_PROG_LOAD = 5
BPF_PROG_TEST_RUN = 10
BPF_RAW_TRACEPOINT_OPEN = 17
BPF_LINK_CREATE = 28
BPF_PROG_TYPE_KPROBE = 2
BPF_PROG_TYPE_RAW_TRACEPOINT = 17
BPF_PROG_TYPE_TRACING = 26
BPF_PROG_TYPE_NETFILTER = 32
BPF_OBJ_GET_INFO_BY_FD = 15
BPF_BTF_GET_FD_BY_ID = 19
BPF_BTF_GET_NEXT_ID = 23
BPF_TRACE_RAW_TP = 23  # enum bpf_attach_type
BPF_TRACE_FENTRY = 24
BPF_NETFILTER = 45
CLONE_NEWNET = 0x40000000

NFPROTO = {"ipv4": 2, "ipv6": 10}
NF_HOOKS = {"PRE_ROUTING": 0, "LOCAL_IN": 1, "FORWARD": 2, "LOCAL_OUT": 3, "POST_ROUTING": 4}
# Where in each hook's chain netprobe's program runs: POST_ROUTING and LOCAL_IN last, so packets
# another hook drops are not counted as reaching the device or L4; PRE_ROUTING first, as close
# to ip_rcv as a hook gets. (INT_MIN/INT_MAX themselves are reserved by the kernel.)
NF_PRIORITY = {"PRE_ROUTING": -(2**31) + 2, "LOCAL_IN": 2**31 - 2, "POST_ROUTING": 2**31 - 2}


class _LinkCreateNF(ctypes.Structure):
    _fields_ = [("prog_fd", ctypes.c_uint32), ("target_fd", ctypes.c_uint32),
                ("attach_type", ctypes.c_uint32), ("flags", ctypes.c_uint32),
                ("pf", ctypes.c_uint32), ("hooknum", ctypes.c_uint32),
                ("priority", ctypes.c_int32), ("nf_flags", ctypes.c_uint32),
                ("_pad", ctypes.c_uint64 * 8)]


class _ProgLoad(ctypes.Structure):
    _fields_ = [("prog_type", ctypes.c_uint32), ("insn_cnt", ctypes.c_uint32),
                ("insns", ctypes.c_uint64), ("license", ctypes.c_uint64),
                ("log_level", ctypes.c_uint32), ("log_size", ctypes.c_uint32),
                ("log_buf", ctypes.c_uint64), ("kern_version", ctypes.c_uint32),
                ("prog_flags", ctypes.c_uint32), ("prog_name", ctypes.c_char * 16),
                ("prog_ifindex", ctypes.c_uint32), ("expected_attach_type", ctypes.c_uint32),
                ("prog_btf_fd", ctypes.c_uint32), ("func_info_rec_size", ctypes.c_uint32),
                ("func_info", ctypes.c_uint64), ("func_info_cnt", ctypes.c_uint32),
                ("line_info_rec_size", ctypes.c_uint32), ("line_info", ctypes.c_uint64),
                ("line_info_cnt", ctypes.c_uint32), ("attach_btf_id", ctypes.c_uint32),
                ("attach_prog_fd", ctypes.c_uint32), ("_pad", ctypes.c_uint64 * 8)]


class _MapCreate(ctypes.Structure):
    _fields_ = [("map_type", ctypes.c_uint32), ("key_size", ctypes.c_uint32),
                ("value_size", ctypes.c_uint32), ("max_entries", ctypes.c_uint32),
                ("map_flags", ctypes.c_uint32), ("inner_map_fd", ctypes.c_uint32),
                ("numa_node", ctypes.c_uint32), ("map_name", ctypes.c_char * 16),
                ("_pad", ctypes.c_uint64 * 8)]


class _RawTpOpen(ctypes.Structure):
    _fields_ = [("name", ctypes.c_uint64), ("prog_fd", ctypes.c_uint32),
                ("_pad0", ctypes.c_uint32), ("_pad", ctypes.c_uint64 * 4)]


class PerfEventAttr(ctypes.Structure):  # PERF_ATTR_SIZE_VER5
    _fields_ = [("type", ctypes.c_uint32), ("size", ctypes.c_uint32),
                ("config", ctypes.c_uint64), ("sample_period", ctypes.c_uint64),
                ("sample_type", ctypes.c_uint64), ("read_format", ctypes.c_uint64),
                ("flags", ctypes.c_uint64), ("wakeup_events", ctypes.c_uint32),
                ("bp_type", ctypes.c_uint32), ("kprobe_func", ctypes.c_uint64),
                ("probe_offset", ctypes.c_uint64), ("_rest", ctypes.c_uint8 * 40)]


class _TestRun(ctypes.Structure):
    _fields_ = [("prog_fd", ctypes.c_uint32), ("retval", ctypes.c_uint32),
                ("data_size_in", ctypes.c_uint32), ("data_size_out", ctypes.c_uint32),
                ("data_in", ctypes.c_uint64), ("data_out", ctypes.c_uint64),
                ("repeat", ctypes.c_uint32), ("duration", ctypes.c_uint32),
                ("ctx_size_in", ctypes.c_uint32), ("ctx_size_out", ctypes.c_uint32),
                ("ctx_in", ctypes.c_uint64), ("ctx_out", ctypes.c_uint64),
                ("flags", ctypes.c_uint32), ("cpu", ctypes.c_uint32),
                ("batch_size", ctypes.c_uint32), ("_pad", ctypes.c_uint32 * 3)]


def _errno_error() -> OSError:
    """The failed libc call's errno, as Python's own calls raise it"""
    err = ctypes.get_errno()
    return OSError(err, os.strerror(err))


def _bpf(cmd: int, attr: ctypes.Structure) -> int:
    ret = _libc.syscall(_nr().bpf, cmd, ctypes.byref(attr), ctypes.sizeof(attr))
    if ret < 0:
        raise _errno_error()
    return ret


def netfilter_link(prog_fd: int, family: str, hook: str) -> int:
    """Attach a BPF_PROG_TYPE_NETFILTER program at `hook` in the calling thread's network
    namespace; returns the link fd (closing it detaches)."""
    # The kernel lets one BPF program hold a (family, hook, priority) slot and answers EBUSY
    # to the next: a second netprobe (watch beside an exporter) takes the neighbouring slot,
    # one step further from the edge of the chain.
    step = 1 if NF_PRIORITY[hook] < 0 else -1
    for i in range(64):
        attr = _LinkCreateNF(prog_fd=prog_fd, attach_type=BPF_NETFILTER, pf=NFPROTO[family],
                             hooknum=NF_HOOKS[hook], priority=NF_PRIORITY[hook] + step * i)
        try:
            return _bpf(BPF_LINK_CREATE, attr)
        except OSError as e:
            if e.errno != errno.EBUSY:
                raise
    raise OSError(errno.EBUSY, f"64 other BPF programs hold the {family} {hook} slots")


def map_create(map_type: int, key_size: int, value_size: int, max_entries: int,
               flags: int = 0, name: str = "") -> int:
    """A new BPF map; returns its fd."""
    return _bpf(BPF_MAP_CREATE, _MapCreate(map_type=map_type, key_size=key_size,
                                           value_size=value_size, max_entries=max_entries,
                                           map_flags=flags, map_name=name[:15].encode()))


def load_program(insns: bytes, name: str, prog_type: int, expected_attach_type: int = 0,
                 attach_btf_id: int = 0, license: str = "GPL", kern_version: int = 0,
                 attach_btf_obj_fd: int = 0) -> int:
    """Load compiled instructions whose map references already hold this process's map fds;
    returns the program fd. A refusal raises OSError carrying the verifier's last words.
    `attach_btf_obj_fd`: the module BTF object whose split ids `attach_btf_id` is one of (an
    fentry program on a module's function); 0 for vmlinux's."""
    code = ctypes.create_string_buffer(insns, len(insns))
    lic = ctypes.create_string_buffer(license.encode())
    log = ctypes.create_string_buffer(1 << 16)
    attr = _ProgLoad(prog_type=prog_type, insn_cnt=len(insns) // 8,
                     insns=ctypes.addressof(code), license=ctypes.addressof(lic),
                     kern_version=kern_version, prog_name=name[:15].encode(),
                     expected_attach_type=expected_attach_type, attach_btf_id=attach_btf_id,
                     attach_prog_fd=attach_btf_obj_fd)  # a union: attach_btf_obj_fd
    try:
        return _bpf(BPF_PROG_LOAD, attr)
    except OSError:
        # again with the verifier's log, which says why
        attr.log_level, attr.log_size, attr.log_buf = 1, len(log), ctypes.addressof(log)
        try:
            return _bpf(BPF_PROG_LOAD, attr)
        except OSError as e:
            tail = log.value.decode(errors="replace").strip().splitlines()[-2:]
            raise OSError(e.errno, " / ".join([e.strerror, *tail])) from None


def load_tp_btf(insns: bytes, name: str, btf_type_id: int) -> int:
    """Load compiled instructions as a BTF raw tracepoint program (BPF_PROG_TYPE_TRACING,
    BPF_TRACE_RAW_TP) for the tracepoint whose btf_trace_<event> typedef has id `btf_type_id`;
    returns the program fd. BCC 0.26 cannot load this type, but its instructions already have
    their map references resolved to fds, so they load as they are."""
    return load_program(insns, name, BPF_PROG_TYPE_TRACING, BPF_TRACE_RAW_TP, btf_type_id)


def load_fentry(insns: bytes, name: str, func_btf_id: int, btf_obj_fd: int = 0,
                license: str = "GPL", kern_version: int = 0) -> int:
    """Load compiled instructions as an fentry program (BPF_PROG_TYPE_TRACING,
    BPF_TRACE_FENTRY) for the kernel function whose BTF_KIND_FUNC has id `func_btf_id` (in the
    module BTF object `btf_obj_fd`, for a module's function); attach with
    raw_tracepoint_open(fd). Loading builds nothing yet: the trampoline comes with the attach."""
    return load_program(insns, name, BPF_PROG_TYPE_TRACING, BPF_TRACE_FENTRY, func_btf_id,
                        license, kern_version, btf_obj_fd)


# The smallest program, `r0 = 0; exit`: a trial of whether the kernel lets a program type load
# and attach at all, apart from what netprobe's own programs ask of the verifier
NOOP_INSNS = bytes.fromhex("b700000000000000" "9500000000000000")


class _IdAttr(ctypes.Structure):  # BPF_*_GET_NEXT_ID and BPF_*_GET_FD_BY_ID
    _fields_ = [("id", ctypes.c_uint32), ("next_id", ctypes.c_uint32),
                ("open_flags", ctypes.c_uint32), ("_pad", ctypes.c_uint32 * 5)]


class _InfoAttr(ctypes.Structure):
    _fields_ = [("bpf_fd", ctypes.c_uint32), ("info_len", ctypes.c_uint32),
                ("info", ctypes.c_uint64)]


class _BtfInfo(ctypes.Structure):  # struct bpf_btf_info
    _fields_ = [("btf", ctypes.c_uint64), ("btf_size", ctypes.c_uint32), ("id", ctypes.c_uint32),
                ("name", ctypes.c_uint64), ("name_len", ctypes.c_uint32),
                ("kernel_btf", ctypes.c_uint32)]


def kernel_btf_fd(name: str) -> int:
    """An fd of the kernel's BTF object called `name` ("vmlinux", or a module's: "e1000"),
    found by walking the loaded BTF objects; OSError(ENOENT) when there is none."""
    start = 0
    while True:
        attr = _IdAttr(id=start)
        try:
            _bpf(BPF_BTF_GET_NEXT_ID, attr)
        except OSError as e:
            if e.errno == errno.ENOENT:
                raise OSError(errno.ENOENT, f"no kernel BTF object {name}") from None
            raise
        start = attr.next_id
        try:
            fd = _bpf(BPF_BTF_GET_FD_BY_ID, _IdAttr(id=start))
        except OSError as e:
            if e.errno == errno.ENOENT:  # unloaded between the two calls
                continue
            raise
        buf = ctypes.create_string_buffer(64)
        info = _BtfInfo(name=ctypes.addressof(buf), name_len=len(buf))
        try:
            _bpf(BPF_OBJ_GET_INFO_BY_FD, _InfoAttr(bpf_fd=fd, info_len=ctypes.sizeof(info),
                                                   info=ctypes.addressof(info)))
        except OSError:
            os.close(fd)
            raise
        if info.kernel_btf and buf.value.decode() == name:
            return fd
        os.close(fd)


def raw_tracepoint_open(prog_fd: int, event: str | None = None) -> int:
    """Attach a raw tracepoint program to `event` ("net_dev_queue"), or a BTF raw tracepoint
    program to the tracepoint it was loaded for, or an fentry program to its function (event
    None); returns the link fd."""
    name = ctypes.create_string_buffer(event.encode()) if event else None
    return _bpf(BPF_RAW_TRACEPOINT_OPEN,
                _RawTpOpen(name=ctypes.addressof(name) if name else 0, prog_fd=prog_fd))


_PERF_FLAG_FD_CLOEXEC = 8
PERF_EVENT_IOC_ENABLE = 0x2400
PERF_EVENT_IOC_SET_BPF = 0x40042408
KPROBE_PMU_TYPE = "/sys/bus/event_source/devices/kprobe/type"


def perf_event_open(attr: PerfEventAttr, cpu: int = -1, pid: int = -1,
                    ioctls: tuple[tuple[int, int], ...] = ()) -> int:
    """A perf event for `attr` on one CPU (or any, -1), with these ioctls made on it; returns
    its fd, closed again if an ioctl fails."""
    attr.size = ctypes.sizeof(PerfEventAttr)
    fd = _libc.syscall(_nr().perf_event_open, ctypes.byref(attr), pid, cpu, -1,
                       _PERF_FLAG_FD_CLOEXEC)
    if fd < 0:
        raise _errno_error()
    for request, arg in ioctls:
        if _libc.ioctl(fd, request, arg) != 0:
            e = _errno_error()
            os.close(fd)
            raise e
    return fd


def kprobe_attach(prog_fd: int, symbol: str) -> int:
    """A kprobe on `symbol` running `prog_fd`, made through the kprobe PMU (kernel >= 4.17):
    nothing is written to kprobe_events, so closing the returned fd removes the probe and a
    killed netprobe leaves none behind."""
    try:
        with open(KPROBE_PMU_TYPE) as f:
            pmu = int(f.read())
    except OSError:
        raise OSError(errno.ENOTSUP, "no kprobe PMU (kernel older than 4.17?)") from None
    func = ctypes.create_string_buffer(symbol.encode())
    attr = PerfEventAttr(type=pmu, sample_period=1, wakeup_events=1,
                          kprobe_func=ctypes.addressof(func))
    return perf_event_open(attr, cpu=0, ioctls=((PERF_EVENT_IOC_SET_BPF, prog_fd),
                                                (PERF_EVENT_IOC_ENABLE, 0)))


def test_run(prog_fd: int) -> int:
    """Run a raw tracepoint program once in this thread's context; returns its return value."""
    ctx = (ctypes.c_uint64 * 1)()
    attr = _TestRun(prog_fd=prog_fd, ctx_size_in=ctypes.sizeof(ctx),
                    ctx_in=ctypes.addressof(ctx))
    _bpf(BPF_PROG_TEST_RUN, attr)
    return attr.retval


@contextmanager
def in_netns(path: str):
    """Run the block with this thread in the network namespace at `path`, then come back."""
    try:
        own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    except OSError as e:
        raise NetprobeError(f"opening own network namespace: {e.strerror}") from None
    try:
        try:
            target = os.open(path, os.O_RDONLY)
        except OSError as e:
            raise NetprobeError(f"opening network namespace {path}: {e.strerror}") from None
        try:
            _setns(target, path)
        finally:
            os.close(target)
        try:
            yield
        finally:
            _setns(own, "own namespace")
    finally:
        os.close(own)


def _setns(fd: int, what: str) -> None:
    if _libc.syscall(_nr().setns, fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise NetprobeError(f"entering network namespace {what}: {os.strerror(err)}")
