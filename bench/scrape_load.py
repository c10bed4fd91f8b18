"""The exporter under a fleet of scrapers (issue 10, item 13): scrape latency with N concurrent
clients, then connect/close cycles, against a real `netprobe export` (root, BPF).

    sudo python bench/scrape_load.py [--pyfront DIR] [--clients 16] [--scrapes 50]
                                     [--cycles 10000] [--budget 240]

--pyfront runs another tree's netprobe (e.g. a `git archive` of an older commit) for a before/
after. Listen-queue overflows are the kernel's TcpExtListenOverflows/ListenDrops over the run:
system-wide counters, so others' traffic on this machine may add to them.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def listen_overflows() -> dict[str, int]:
    lines = Path("/proc/net/netstat").read_text().splitlines()
    for head, values in zip(lines[::2], lines[1::2]):
        if head.startswith("TcpExt:"):
            row = dict(zip(head.split()[1:], map(int, values.split()[1:])))
            return {k: row[k] for k in ("ListenOverflows", "ListenDrops")}
    return {}


def scrape(port: int, timeout: float = 30.0) -> tuple[float, float]:
    """(seconds to connect, seconds to the whole answer): a connect of 1 s or more is a SYN
    the listen queue dropped and the client sent again"""
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        connected = time.monotonic() - t0
        s.sendall(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        head = s.recv(12)
        while s.recv(65536):
            pass
    if not head.startswith(b"HTTP/1.0 200") and not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"answer {head!r}")
    return connected, time.monotonic() - t0


def in_parallel(n: int, work) -> None:
    threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def percentiles(values: list[float]) -> dict:
    values = sorted(values)
    q = statistics.quantiles(values, n=100) if len(values) > 1 else values * 99
    return {"p50_ms": round(q[49] * 1000, 1), "p99_ms": round(q[98] * 1000, 1),
            "max_ms": round(values[-1] * 1000, 1)}


def scrape_latency(port: int, clients: int, scrapes: int) -> dict:
    latencies: list[tuple[float, float]] = []
    errors: list[str] = []
    lock = threading.Lock()

    def client(i):
        for _ in range(scrapes):
            try:
                dt = scrape(port)
            except Exception as e:
                with lock:
                    errors.append(repr(e))
                continue
            with lock:
                latencies.append(dt)

    before = listen_overflows()
    in_parallel(clients, client)
    after = listen_overflows()
    return {"clients": clients, "scrapes": len(latencies), "errors": len(errors),
            "scrape": percentiles([total for _, total in latencies]),
            "connect": percentiles([c for c, _ in latencies]),
            "connects_over_1s": sum(c >= 1.0 for c, _ in latencies),
            "listen_overflows": {k: after[k] - before[k] for k in after}}


def connect_cycles(port: int, cycles: int, clients: int, budget_s: float) -> dict:
    done = [0]
    failed = [0]
    lock = threading.Lock()
    deadline = time.monotonic() + budget_s

    def client(i):
        for _ in range(cycles // clients):
            if time.monotonic() > deadline:
                return
            try:
                socket.create_connection(("127.0.0.1", port), timeout=10).close()
                ok = True
            except OSError:
                ok = False
            with lock:
                done[0] += ok
                failed[0] += not ok

    before = listen_overflows()
    t0 = time.monotonic()
    in_parallel(clients, client)
    seconds = time.monotonic() - t0
    after = listen_overflows()
    return {"cycles": cycles, "completed": done[0], "failed": failed[0],
            "seconds": round(seconds, 1), "budget_s": budget_s,
            "listen_overflows": {k: after[k] - before[k] for k in after}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pyfront", default=str(ROOT / "pyfront"))
    ap.add_argument("--port", type=int, default=10497)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--scrapes", type=int, default=50, help="per client")
    ap.add_argument("--cycles", type=int, default=10000)
    ap.add_argument("--budget", type=float, default=240.0, help="seconds for the cycles")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        ready = Path(tmp) / "ready"
        env = dict(os.environ, PYTHONPATH=args.pyfront)
        p = subprocess.Popen([sys.executable, "-m", "netprobe", "export", "--web.listen-address",
                              f"127.0.0.1:{args.port}", "--ready-file", str(ready)],
                             env=env, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 180
            while not ready.exists():
                if p.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"export did not start: {p.stderr.read() if p.poll() is not None else 'timeout'}")
                time.sleep(0.1)
            time.sleep(0.5)
            scrape(args.port)  # warm: the first scrape names every device
            result = {"pyfront": args.pyfront, "loadavg": os.getloadavg()[0],
                      "latency": scrape_latency(args.port, args.clients, args.scrapes)}
            if args.cycles:
                result["connect_close"] = connect_cycles(args.port, args.cycles, args.clients,
                                                         args.budget)
        finally:
            p.terminate()
            p.wait(timeout=60)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
