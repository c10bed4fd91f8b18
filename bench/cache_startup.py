"""Start-up to first counts with a cold and a warm compiled-program cache.

Cold: each start gets an empty cache directory, so BCC compiles (and the entry is written).
Warm: the same directory each time, filled by a start before the timed ones, so the programs
load from the entry and no compiler runs. Times are command start to the first line of
`netprobe watch --json --count 1 --interval 0.1` (the method of bench.py's start-up figure).
Runs as root, on the host or in a lab guest:
    python3 bench/cache_startup.py [--runs N]"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WATCH = [sys.executable, "-m", "netprobe", "watch", "--json", "--count", "1", "--interval", "0.1"]


def first_counts(cache: Path) -> float:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "pyfront"), NETPROBE_CACHE=str(cache))
    t0 = time.monotonic()
    p = subprocess.Popen(WATCH, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    line = p.stdout.readline()
    took = time.monotonic() - t0
    p.wait(60)
    if not line.startswith("{"):
        sys.exit(f"cache_startup: netprobe watch printed no counts: {p.stderr.read().strip()}")
    return took


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    runs = ap.parse_args().runs
    top = Path(tempfile.mkdtemp(prefix="netprobe-cache-startup-"))
    try:
        cold = [first_counts(top / f"cold{i}") for i in range(runs)]
        warm_dir = top / "warm"
        first_counts(warm_dir)
        warm = [first_counts(warm_dir) for _ in range(runs)]
    finally:
        shutil.rmtree(top, ignore_errors=True)
    kernel = os.uname().release
    for name, xs in (("cold", cold), ("warm", warm)):
        print(f"{kernel}: start-up to first counts, {name} cache: median "
              f"{statistics.median(xs):.2f} s (min {min(xs):.2f}, max {max(xs):.2f}, n={runs})")


if __name__ == "__main__":
    main()
