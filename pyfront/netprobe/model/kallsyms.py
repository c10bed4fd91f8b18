"""Kernel function symbols from /proc/kallsyms: does a function exist (can it be kprobed), and
what is the name of a code address (a device's ndo_start_xmit)."""
from __future__ import annotations

import bisect
import re
import sys
from array import array
from dataclasses import dataclass
from pathlib import Path

from ..errors import NetprobeError

KALLSYMS = Path("/proc/kallsyms")
# gcc clones a function under these suffixes; a kprobe on the clone is a kprobe on the function
_CLONE = re.compile(r"^(?P<base>[^.]+)(?P<suffix>(\.(isra|constprop|part|cold|lto_priv)\.?\d*)*)$")


@dataclass(frozen=True)
class Symbol:
    addr: int
    name: str
    module: str  # "" for vmlinux

    def __str__(self) -> str:
        return f"{self.name} [{self.module}]" if self.module else self.name


# a function symbol's line: address, type t/T (text) or w/W (weak), name, [module]
_FUNC_LINE = re.compile(r"^([0-9a-f]+) [tTwW] (\S+)(?:\t\[(\S+)\])?$", re.M)


class Kallsyms:
    """~120k functions, kept as parallel arrays (addresses, names, modules) and one sorted name
    list rather than an object and a dict entry per symbol: the long-running netprobe keeps
    this table, and as objects it cost ~50 MB and 0.3 s to build."""

    def __init__(self, text: str):
        rows = sorted((int(m[1], 16), m[2], sys.intern(m[3] or "")) for m in _FUNC_LINE.finditer(text))
        if rows and all(addr == 0 for addr, _, _ in rows[:100]):
            raise NetprobeError("/proc/kallsyms shows zero addresses: run as root "
                                "(or set kernel.kptr_restrict=0)")
        self._addrs = array("Q", (r[0] for r in rows))
        self._names = [r[1] for r in rows]
        self._modules = [r[2] for r in rows]
        self._sorted_names = sorted(self._names)  # the same str objects, for bisect by name

    @classmethod
    def load(cls, path: Path = KALLSYMS) -> "Kallsyms":
        try:
            return cls(path.read_text())
        except OSError as e:
            raise NetprobeError(f"reading {path}: {e.strerror}") from None

    def symbolize(self, addr: int) -> Symbol | None:
        """The function that starts at `addr` (function pointers point at a start)."""
        i = bisect.bisect_right(self._addrs, addr) - 1
        if i >= 0 and self._addrs[i] == addr:
            return Symbol(addr, self._names[i], self._modules[i])
        return None

    def function_at(self, addr: int) -> Symbol | None:
        """The function whose code holds `addr` (a return address, a drop location): the
        nearest function start at or below it."""
        i = bisect.bisect_right(self._addrs, addr) - 1
        if i < 0:
            return None
        return Symbol(self._addrs[i], self._names[i], self._modules[i])

    def _count(self, name: str) -> int:
        return (bisect.bisect_right(self._sorted_names, name)
                - bisect.bisect_left(self._sorted_names, name))

    def probe_name(self, name: str) -> str | None:
        """The symbol to kprobe for function `name`: itself, or its only gcc clone
        (e.g. __netif_receive_skb_core.constprop.0). None when absent or ambiguous."""
        n = self._count(name)
        if n:
            return name if n == 1 else None
        clones = {c for c in self._clones(name) if not c.endswith(".cold") and ".cold." not in c}
        return clones.pop() if len(clones) == 1 else None

    def _clones(self, name: str):
        """Names of gcc clones of `name`, once per symbol"""
        prefix = name + "."
        i = bisect.bisect_left(self._sorted_names, prefix)
        while i < len(self._sorted_names) and self._sorted_names[i].startswith(prefix):
            m = _CLONE.match(self._sorted_names[i])
            if m and m.group("base") == name:
                yield self._sorted_names[i]
            i += 1

    def is_unique(self, name: str) -> bool:
        return self._count(name) == 1


def base_name(name: str) -> str:
    """A function's own name without gcc's clone suffixes: __udp4_lib_rcv.isra.0 -> __udp4_lib_rcv"""
    m = _CLONE.match(name)
    return m.group("base") if m else name
