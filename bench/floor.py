"""The floor of the benchmark: netprobe's own session (same stages, same hooks, same
per-namespace netfilter links) with every hook's body emptied, so what it costs is what the
attach mechanisms alone cost. Run as a process: `python bench/floor.py READY_FILE [STAGE,...]`
(a subset of stages splits the floor by mechanism)."""
from __future__ import annotations

import re
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pyfront"))

from netprobe.model.catalogue import BY_NAME, NETFILTER, STAGES  # noqa: E402
from netprobe.kernel.program import Program  # noqa: E402
from netprobe.kernel.session import ProbeSession  # noqa: E402

HOOK_FN = re.compile(r"^int (\w+)\(([^)]*)\)\n\{.*?^\}\n", re.M | re.S)


def empty_hooks(program: Program) -> Program:
    """Every hook function keeps its name and signature; only its body goes."""
    nf = {h.fn for s in STAGES for c in s.candidates if c.mechanism == NETFILTER for h in c.hooks}

    def body(m):
        if m[1] == "netdev_walk":  # the device inventory still runs: it is not per packet
            return m[0]
        return f"int {m[1]}({m[2]})\n{{\n    return {1 if m[1] in nf else 0};\n}}\n"
    return Program(HOOK_FN.sub(body, program.text), program.cflags, program.layout_source)


class FloorSession(ProbeSession):
    def build_program(self) -> Program:
        return empty_hooks(super().build_program())


def main() -> None:
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
    stages = [BY_NAME[n] for n in sys.argv[2].split(",") if n] if len(sys.argv) > 2 else STAGES
    with FloorSession(stages=stages) as s:
        Path(sys.argv[1]).write_text("ready")
        try:
            while True:
                time.sleep(1)
                s.refresh()
                s.read()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
