"""Network namespaces: which exist, a handle (a path) to enter each, and a name to show.

Counts are keyed by the namespace's inode number (net->ns.inum in the kernel, st_ino of
/proc/PID/ns/net here), so `lo` of two namespaces is two rows."""
from __future__ import annotations

import os
import socket
import struct
from dataclasses import dataclass
from pathlib import Path

RUN_NETNS = Path("/run/netns")


@dataclass(frozen=True)
class Netns:
    inum: int
    path: str   # something setns() can open
    name: str   # "root", the `ip netns` name, or "pid:<pid>"


def _inum(path: str) -> int | None:
    """The namespace's inode number, or None when `path` is not a network namespace (yet:
    `ip netns add` creates its /run/netns file a moment before it bind-mounts the namespace
    there)"""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino if st.st_dev == _NSFS_DEV else None


def _nsfs_dev() -> int | None:
    try:
        return os.stat("/proc/self/ns/net").st_dev
    except OSError:
        return None


_NSFS_DEV = _nsfs_dev()


def root_handle() -> str | None:
    """init_net: pid 1's namespace, or kthreadd's (pid 2) where pid 1's is hidden from us
    (a sandboxed init); kernel threads always live in init_net."""
    for path in ("/proc/1/ns/net", "/proc/2/ns/net"):
        if _inum(path) is not None:
            return path
    return None


def scan() -> dict[int, Netns]:
    """Every namespace reachable through a named mount (/run/netns, other nsfs mounts) or a
    process; the first handle found for each wins, named ones first."""
    found: dict[int, Netns] = {}
    root = root_handle()
    if root is not None:
        found[_inum(root)] = Netns(_inum(root), root, "root")
    try:
        for entry in sorted(os.listdir(RUN_NETNS)):
            path = str(RUN_NETNS / entry)
            inum = _inum(path)
            if inum is not None and inum not in found:
                found[inum] = Netns(inum, path, entry)
    except OSError:
        pass
    for path in _nsfs_mounts():
        inum = _inum(path)
        if inum is not None and inum not in found:
            found[inum] = Netns(inum, path, os.path.basename(path))
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        path = f"/proc/{pid}/ns/net"
        inum = _inum(path)
        if inum is not None and inum not in found:
            found[inum] = Netns(inum, path, f"pid:{pid}")
    return found


def _nsfs_mounts() -> list[str]:
    out = []
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                fields = line.split()
                # mount point is field 5; the filesystem type follows the " - " separator
                if " - nsfs " in line and fields[3].startswith("net:"):
                    out.append(fields[4])
    except OSError:
        pass
    return out


SO_NETNS_COOKIE = 71  # asm-generic/socket.h (x86_64 and arm64 alike), Linux >= 5.14


def current_cookie() -> int | None:
    """The cookie of this thread's network namespace (net->net_cookie). Unlike the inode
    number, which a new namespace may take over as soon as the old one is gone, it is never
    reused. None where the kernel has no SO_NETNS_COOKIE."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            return struct.unpack("=Q", s.getsockopt(socket.SOL_SOCKET, SO_NETNS_COOKIE, 8))[0]
    except OSError:
        return None
