"""Hearing of namespaces as they come and go, instead of at the next refresh.

The netfilter stages need a link in each namespace; until netprobe makes it, that namespace's
packets pass ip_output, ip_rcv and l4_rcv unseen. And a link holds its namespace alive: a
deleted namespace (and the veth peer whose other end it holds) lives on until netprobe closes
the link. So a thread waits for what the kernel does tell: a change of the mount table (`ip
netns add` and `ip netns del`, container runtimes, bind-mount a namespace; poll() on
/proc/self/mountinfo wakes on each) and entries in /run/netns (inotify), and looks again at
once. A namespace no mount names (a process's `unshare -n`) has no such signal: the thread
also looks every `period` seconds."""
from __future__ import annotations

import ctypes
import os
import select
import threading
from typing import Callable

from .netns import RUN_NETNS

_libc = ctypes.CDLL(None, use_errno=True)
_IN_NONBLOCK = 0o4000
_IN_CLOEXEC = 0o2000000
_IN_EVENTS = 0x100 | 0x200 | 0x40 | 0x80 | 0x4  # CREATE, DELETE, MOVED_FROM/TO, ATTRIB


class NetnsWatcher:
    def __init__(self, on_change: Callable[[], None], period: float = 1.0):
        self._on_change = on_change
        self._period = period
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.errors = 0  # on_change calls that raised (the next one tries again)

    def start(self) -> "NetnsWatcher":
        self._thread = threading.Thread(target=self._run, name="netprobe-netns", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        poller = select.poll()
        mounts = _open("/proc/self/mountinfo")
        if mounts is not None:
            poller.register(mounts, select.POLLPRI | select.POLLERR)
        ino = _libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
        if ino >= 0:
            poller.register(ino, select.POLLIN)
        watching = False
        try:
            while not self._stop.is_set():
                if ino >= 0 and not watching:  # /run/netns appears with the first `ip netns add`
                    watching = _libc.inotify_add_watch(ino, str(RUN_NETNS).encode(), _IN_EVENTS) >= 0
                for fd, _ in poller.poll(int(self._period * 1000)):
                    if fd == mounts:  # re-read to re-arm the notification
                        os.lseek(mounts, 0, os.SEEK_SET)
                        while os.read(mounts, 65536):
                            pass
                    elif fd == ino:
                        try:
                            os.read(ino, 65536)
                        except BlockingIOError:
                            pass
                if self._stop.is_set():
                    break
                try:
                    self._on_change()
                except Exception:
                    self.errors += 1
        finally:
            for fd in (mounts, ino):
                if fd is not None and fd >= 0:
                    os.close(fd)


def _open(path: str) -> int | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    while os.read(fd, 65536):  # poll() reports changes made after the first full read
        pass
    return fd
