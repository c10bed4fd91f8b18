"""The few bpf(2) and setns(2) calls BCC 0.26 does not offer: netfilter links (kernel >= 6.4),
running a program once with BPF_PROG_TEST_RUN, and entering a network namespace."""
from __future__ import annotations

import ctypes
import errno
import os
from contextlib import contextmanager

from .errors import NetprobeError

_libc = ctypes.CDLL(None, use_errno=True)
_NR_BPF = 321  # x86_64
_NR_SETNS = 308
BPF_PROG_TEST_RUN = 10
BPF_LINK_CREATE = 28
BPF_PROG_TYPE_NETFILTER = 32
BPF_NETFILTER = 45  # enum bpf_attach_type
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


class _TestRun(ctypes.Structure):
    _fields_ = [("prog_fd", ctypes.c_uint32), ("retval", ctypes.c_uint32),
                ("data_size_in", ctypes.c_uint32), ("data_size_out", ctypes.c_uint32),
                ("data_in", ctypes.c_uint64), ("data_out", ctypes.c_uint64),
                ("repeat", ctypes.c_uint32), ("duration", ctypes.c_uint32),
                ("ctx_size_in", ctypes.c_uint32), ("ctx_size_out", ctypes.c_uint32),
                ("ctx_in", ctypes.c_uint64), ("ctx_out", ctypes.c_uint64),
                ("flags", ctypes.c_uint32), ("cpu", ctypes.c_uint32),
                ("batch_size", ctypes.c_uint32), ("_pad", ctypes.c_uint32 * 3)]


def _bpf(cmd: int, attr: ctypes.Structure) -> int:
    ret = _libc.syscall(_NR_BPF, cmd, ctypes.byref(attr), ctypes.sizeof(attr))
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
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
    if _libc.syscall(_NR_SETNS, fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise NetprobeError(f"entering network namespace {what}: {os.strerror(err)}")
