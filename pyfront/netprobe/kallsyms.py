"""Kernel function symbols from /proc/kallsyms: does a function exist (can it be kprobed), and
what is the name of a code address (a device's ndo_start_xmit)."""
from __future__ import annotations

import bisect
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import NetprobeError

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


class Kallsyms:
    def __init__(self, text: str):
        funcs: list[Symbol] = []
        for line in text.splitlines():
            parts = line.split()
            if len(parts) < 3 or parts[1] not in "tTwW":
                continue
            module = parts[3].strip("[]") if len(parts) > 3 else ""
            funcs.append(Symbol(int(parts[0], 16), parts[2], module))
        if funcs and all(s.addr == 0 for s in funcs[:100]):
            raise NetprobeError("/proc/kallsyms shows zero addresses: run as root "
                                "(or set kernel.kptr_restrict=0)")
        funcs.sort(key=lambda s: s.addr)
        self._funcs = funcs
        self._addrs = [s.addr for s in funcs]
        self._by_name: dict[str, list[Symbol]] = {}
        for s in funcs:
            self._by_name.setdefault(s.name, []).append(s)

    @classmethod
    def load(cls, path: Path = KALLSYMS) -> "Kallsyms":
        try:
            return cls(path.read_text())
        except OSError as e:
            raise NetprobeError(f"reading {path}: {e.strerror}") from None

    def symbolize(self, addr: int) -> Symbol | None:
        """The function that starts at `addr` (function pointers point at a start)."""
        i = bisect.bisect_right(self._addrs, addr) - 1
        if i >= 0 and self._funcs[i].addr == addr:
            return self._funcs[i]
        return None

    def probe_name(self, name: str) -> str | None:
        """The symbol to kprobe for function `name`: itself, or its only gcc clone
        (e.g. __netif_receive_skb_core.constprop.0). None when absent or ambiguous."""
        if name in self._by_name:
            return name if len(self._by_name[name]) == 1 else None
        clones = {s.name for s in self._clones(name) if not s.name.endswith(".cold")
                  and ".cold." not in s.name}
        return clones.pop() if len(clones) == 1 else None

    def _clones(self, name: str):
        prefix = name + "."
        i = bisect.bisect_left(sorted_names := self._sorted_names(), prefix)
        while i < len(sorted_names) and sorted_names[i].startswith(prefix):
            m = _CLONE.match(sorted_names[i])
            if m and m.group("base") == name:
                yield from self._by_name[sorted_names[i]]
            i += 1

    def _sorted_names(self) -> list[str]:
        if not hasattr(self, "_names_sorted"):
            self._names_sorted = sorted(self._by_name)
        return self._names_sorted

    def is_unique(self, name: str) -> bool:
        return len(self._by_name.get(name, ())) == 1
