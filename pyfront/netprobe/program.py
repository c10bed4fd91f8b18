"""The BPF program netprobe loads: the C in probes/ plus the -D flags that configure it
(stage ids from the catalogue, field offsets from BTF, the flow filter)."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from . import fields
from .catalogue import stage_cflags
from .errors import NetprobeError
from .flowfilter import FlowFilter
from .kernel import Kernel
from .paths import probes_dir

# one file per concern; netprobe.h (included first) holds what they share
SOURCES = ("l4_send.c", "dev_tx.c", "dev_rx.c", "netfilter.c", "netdev_walk.c")


@dataclass(frozen=True)
class Program:
    text: str
    cflags: tuple[str, ...]
    layout_source: str  # "BTF" or "kernel headers (no BTF)"

    def render(self) -> str:
        """The whole program as one C text, flags first: what --ebpf prints."""
        head = "\n".join(f"// cflag: {f}" for f in self.cflags)
        return head + "\n" + self.text


def build(kernel: Kernel, flow: FlowFilter, probes: Path | None = None) -> Program:
    probes = probes or probes_dir()
    if not (probes / "netprobe.h").exists():
        raise NetprobeError(f"probe sources not found in {probes} (set NETPROBE_PROBES)")
    cflags = [*stage_cflags(), *flow.cflags()]
    if kernel.btf is not None:
        cflags += fields.offset_cflags(fields.load_specs(probes), kernel.btf)
        layout = "BTF"
    else:
        cflags.append("-DNP_USE_HEADERS")
        layout = "kernel headers (no BTF)"
    # BCC rewrites map calls (counts.lookup()) and makes programs only in its main file, so
    # probes/ is joined into one text instead of being #included.
    text = "".join(_inline(probes, name, set()) for name in ("netprobe.h", *SOURCES))
    return Program(text, tuple(cflags), layout)



_LOCAL_INCLUDE = re.compile(r'^#include "([^"]+)"\s*$', re.M)


def _inline(probes: Path, name: str, seen: set[str]) -> str:
    if name in seen:
        return ""
    seen.add(name)
    body = _LOCAL_INCLUDE.sub(lambda m: _inline(probes, m[1], seen) if m[1] != "fields.h"
                              else (probes / "fields.h").read_text(), (probes / name).read_text())
    return f"// ---- probes/{name}\n{body}\n"
