"""What the event channel's reader sustains and what it costs: a program on raw_syscalls:sys_enter
sends one 32-byte record per system call of a load generator (a Python loop of getppid(),
at a set rate or as fast as it goes); netprobe's EventChannel reads them for SECS seconds.
Reports per (kind, offered rate): records received per second, records lost, and the reader's
own CPU time per wall second and per record. Run as root: python3 bench/events_rate.py."""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "pyfront"))

from netprobe.kernel import bpfsys, events, loader  # noqa: E402
from netprobe.paths import probes_dir  # noqa: E402

PROBE_C = r"""
struct bench_event { u64 ts; u64 id; u32 pid; u32 cpu; u64 pad; };

int on_enter(struct bpf_raw_tracepoint_args *ctx)
{
    u64 pid_tgid = bpf_get_current_pid_tgid();
    if (pid_tgid >> 32 != LOADGEN)
        return 0;
    struct bench_event *e = NP_EVENT_RESERVE(struct bench_event);
    if (!e)
        return 0;
    e->ts = bpf_ktime_get_ns();
    e->id = ctx->args[1];
    e->pid = pid_tgid;
    e->cpu = bpf_get_smp_processor_id();
    e->pad = 0;
    NP_EVENT_SUBMIT(ctx, e);
    return 0;
}
"""

# a paced loop: each millisecond its share of the rate, then sleep to the next tick (0 = flat out)
LOADGEN = r"""
import os, sys, time
rate = int(sys.argv[1]); os.read(0, 1)
per_ms, tick = rate // 1000, time.monotonic()
while True:
    if not rate:
        for _ in range(10000): os.getppid()
        continue
    for _ in range(per_ms): os.getppid()
    tick += 0.001
    delay = tick - time.monotonic()
    if delay > 0: time.sleep(delay)
"""


def run(kind: str, rate: int, secs: float, pages: int) -> dict:
    gen = subprocess.Popen([sys.executable, "-c", LOADGEN, str(rate)], stdin=subprocess.PIPE)
    try:
        text = (probes_dir() / "events.h").read_text() + PROBE_C
        flags = [*events.cflags(kind, pages), f"-DLOADGEN={gen.pid}"]
        loaded = loader.load(text, flags, [loader.ProgSpec("on_enter", "on_enter", 17)])
        try:
            with events.EventChannel.open(loaded.maps["np_events"][0], 32,
                                          loaded.maps["np_events_lost"][0],
                                          pages_per_cpu=pages) as ch:
                link = bpfsys.raw_tracepoint_open(loaded.progs["on_enter"], "sys_enter")
                try:
                    gen.stdin.write(b"g")
                    gen.stdin.flush()
                    cpu0, t0 = time.process_time(), time.monotonic()
                    while time.monotonic() - t0 < secs:
                        ch.poll(0.1)
                    cpu, wall = time.process_time() - cpu0, time.monotonic() - t0
                finally:
                    os.close(link)
                ch.poll(0)
                got, lost = ch.received, ch.lost
        finally:
            loaded.close()
    finally:
        gen.kill()
        gen.wait()
    return {"kind": kind, "offered": rate or "max", "received/s": round(got / wall),
            "lost": lost, "lost%": round(100 * lost / max(1, got + lost), 1),
            "reader cpu%": round(100 * cpu / wall, 1),
            "ns/record": round(1e9 * cpu / max(1, got))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--secs", type=float, default=3.0)
    ap.add_argument("--pages", type=int, default=64)
    ap.add_argument("--rates", default="10000,100000,0", help="records/s offered; 0 = flat out")
    args = ap.parse_args()
    rows = [run(kind, int(r), args.secs, args.pages)
            for kind in (events.RINGBUF, events.PERF) for r in args.rates.split(",")]
    cols = list(rows[0])
    print("  ".join(f"{c:>12}" for c in cols))
    for row in rows:
        print("  ".join(f"{row[c]!s:>12}" for c in cols))


if __name__ == "__main__":
    main()
