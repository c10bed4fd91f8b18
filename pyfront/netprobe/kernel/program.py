"""The BPF program netprobe loads: the C in probes/ plus the -D flags that configure it
(stage ids from the catalogue, field offsets from BTF, the flow filter)."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..model import fields
from ..model.catalogue import stage_cflags
from ..errors import NetprobeError
from ..model.flowfilter import FlowFilter
from .facts import Kernel
from ..paths import probes_dir
from ..model.programsets import ALL, COUNTING_COMMANDS, ProgramSet, sources

# one file per concern; netprobe.h (included first) holds what they share
SOURCES = sources(ALL)


@dataclass(frozen=True)
class Program:
    text: str
    cflags: tuple[str, ...]
    layout_source: str  # "BTF" or "kernel headers (no BTF)"

    def render(self) -> str:
        """The whole program as one C text, flags first: what --ebpf prints."""
        head = "\n".join(f"// cflag: {f}" for f in self.cflags)
        return head + "\n" + self.text


def build(kernel: Kernel, flow: FlowFilter, sets: Sequence[ProgramSet] = COUNTING_COMMANDS,
          probes: Path | None = None, sample: int = 1) -> Program:
    """The C of these program sets only (a set's maps exist only when it is loaded). sample:
    the latency set follows one flow in `sample`."""
    probes = probes or probes_dir()
    if not (probes / "netprobe.h").exists():
        raise NetprobeError(f"probe sources not found in {probes} (set NETPROBE_PROBES)")
    cflags = [*stage_cflags(), *flow.cflags(),
              *(f for s in sets if s.cflags for f in s.cflags(kernel))]
    if sample > 1:
        cflags.append(f"-DNP_LAT_SAMPLE={sample}")
    if kernel.btf is not None:
        cflags += fields.offset_cflags(fields.load_specs(probes), kernel.btf)
        cflags += fields.load_type_cflags(probes, kernel.btf, kfuncs=kernel.header_casts)
        layout = "BTF"
    else:
        cflags.append("-DNP_USE_HEADERS")
        layout = "kernel headers (no BTF)"
    # BCC rewrites map calls (counts.lookup()) and makes programs only in its main file, so
    # probes/ is joined into one text instead of being #included.
    seen: set[str] = set()  # each file once, where it is first included
    text = "".join(_inline(probes, name, seen) for name in ("netprobe.h", *sources(sets)))
    return Program(text, tuple(cflags), layout)



_LOCAL_INCLUDE = re.compile(r'^#include "([^"]+)"\s*$', re.M)


def _inline(probes: Path, name: str, seen: set[str]) -> str:
    if name in seen:
        return ""
    seen.add(name)
    body = _LOCAL_INCLUDE.sub(lambda m: _inline(probes, m[1], seen) if m[1] != "fields.h"
                              else (probes / "fields.h").read_text(), (probes / name).read_text())
    return f"// ---- probes/{name}\n{body}\n"
