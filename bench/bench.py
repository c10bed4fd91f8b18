"""`make bench`: what netprobe costs the traffic it watches.

Interleaved A/B rounds on loopback and on a veth pair between two namespaces: in every round each
configuration is started, every workload runs under it, and it is stopped; the report gives the
median and min-max per (workload, configuration) and the ratio to no probe. Also: start-up time,
the frontend's CPU share and peak RSS at a 1 s refresh, and the in-kernel cost per hook from
kernel.bpf_stats_enabled. Run as root: `make bench` (ROUNDS=5 SECS=2 by default)."""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "pyfront"))

from netprobe.topology import VethPair  # noqa: E402

PORT = 5201
PY = sys.executable
NETPROBE = [PY, "-m", "netprobe"]
ENV = dict(os.environ, PYTHONPATH=str(ROOT / "pyfront"))
BPFTRACE_PROG = ("tracepoint:net:net_dev_queue,tracepoint:net:net_dev_start_xmit,"
                 "tracepoint:net:netif_rx,tracepoint:net:napi_gro_receive_entry,"
                 "tracepoint:net:netif_receive_skb { @[probe, str(args->name)] = count(); }")


def sh(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def in_ns(ns, cmd):
    return (["ip", "netns", "exec", ns] if ns else []) + cmd


# -- workloads: each returns one number, bigger is better ------------------------------------
def udp_pps(loadgen, env, secs):
    srv = subprocess.Popen(in_ns(env["server_ns"], ["taskset", "-c", "1", loadgen, "udp-sink",
                                                     env["server"], str(PORT), str(secs)]),
                           stdout=subprocess.PIPE, text=True)
    assert srv.stdout.readline().strip() == "ready"
    sh(in_ns(env["client_ns"], ["taskset", "-c", "0", loadgen, "udp-flood", env["server"],
                                str(PORT), str(secs + 0.5), "64"]))
    out, _ = srv.communicate(timeout=secs + 10)
    return float(out.strip())


def tcp_bulk(loadgen, env, secs):
    srv = subprocess.Popen(in_ns(env["server_ns"], ["iperf3", "-s", "-1", "-p", str(PORT)]),
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.2)
    try:
        r = sh(in_ns(env["client_ns"], ["iperf3", "-c", env["server"], "-p", str(PORT), "-t",
                                        str(secs), "-J"]), timeout=secs + 20)
        return json.loads(r.stdout)["end"]["sum_received"]["bits_per_second"]
    finally:
        srv.kill()
        srv.wait()


def tcp_rr(loadgen, env, secs):
    srv = subprocess.Popen(in_ns(env["server_ns"], ["taskset", "-c", "1", loadgen, "rr-server",
                                                     env["server"], str(PORT)]),
                           stdout=subprocess.PIPE, text=True)
    try:
        assert srv.stdout.readline().strip() == "ready"
        r = sh(in_ns(env["client_ns"], ["taskset", "-c", "0", loadgen, "rr-client", env["server"],
                                        str(PORT), str(secs)]), timeout=secs + 20)
        return float(r.stdout.strip())
    finally:
        srv.kill()
        srv.wait()


WORKLOADS = {"udp_64B_pps": udp_pps, "tcp_bulk_bps": tcp_bulk, "tcp_rr_per_s": tcp_rr}


# -- configurations: context managers that run something beside the traffic -------------------
def _wait_file(path, proc, what, limit=60):
    deadline = time.time() + limit
    while not Path(path).exists():
        if proc.poll() is not None or time.time() > deadline:
            raise RuntimeError(f"{what} did not start: {proc.stderr.read() if proc.stderr else ''}")
        time.sleep(0.05)


@contextmanager
def _process(cmd, ready=None, ready_line=None, what=""):
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE if ready_line else subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        if ready:
            _wait_file(ready, p, what)
        if ready_line:
            deadline = time.time() + 60
            while time.time() < deadline:
                line = p.stdout.readline()
                if not line or ready_line in line:
                    break
        time.sleep(0.3)
        yield p
    finally:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def config_none(env, tmp):
    @contextmanager
    def cm():
        yield None
    return cm()


def config_floor(env, tmp):
    ready = tmp / f"floor.{time.time_ns()}"
    return _process([PY, str(HERE / "floor.py"), str(ready)], ready=ready, what="floor")


def _netprobe(args, tmp):
    ready = tmp / f"np.{time.time_ns()}"
    return _process(NETPROBE + ["watch", "--json", "-i", "1", "--ready-file", str(ready), *args],
                    ready=ready, what="netprobe")


def config_netprobe(env, tmp):
    return _netprobe([], tmp)


def config_netprobe_filtered(env, tmp):
    return _netprobe(["--port", str(PORT)], tmp)


def config_bpftrace(env, tmp):
    return _process(["bpftrace", "-e", BPFTRACE_PROG], ready_line="Attaching", what="bpftrace")


def config_tcpdump(env, tmp):
    cmd = in_ns(env["client_ns"], ["tcpdump", "-i", env["tcpdump_if"], "-w", "/dev/null", "-U"])
    p_ready = tmp / f"td.{time.time_ns()}"

    @contextmanager
    def cm():
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            # tcpdump says "listening on" once its socket is bound
            deadline = time.time() + 20
            while time.time() < deadline and "listening" not in p.stderr.readline():
                pass
            time.sleep(0.3)
            yield p
        finally:
            p.terminate()
            p.wait()
    return cm()


CONFIGS = {"none": config_none, "empty_programs": config_floor, "netprobe": config_netprobe,
           "netprobe_port_filter": config_netprobe_filtered, "bpftrace": config_bpftrace,
           "tcpdump": config_tcpdump}


# -- the rest of the measurements ---------------------------------------------------------------
def startup_times(tmp, n=3):
    out = []
    for _ in range(n):
        ready = tmp / f"st.{time.time_ns()}"
        t0 = time.monotonic()
        p = subprocess.Popen(NETPROBE + ["watch", "--json", "-i", "5", "--ready-file", str(ready)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=ENV)
        _wait_file(ready, p, "netprobe")
        out.append(time.monotonic() - t0)
        p.send_signal(signal.SIGTERM)
        p.wait(10)
    return out


def frontend_cost(loadgen, env, tmp, secs=12):
    """CPU share and peak RSS of `netprobe watch -i 1` while loopback UDP runs under it."""
    ready = tmp / f"fe.{time.time_ns()}"
    p = subprocess.Popen(NETPROBE + ["watch", "--json", "-i", "1", "--ready-file", str(ready)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=ENV)
    _wait_file(ready, p, "netprobe")
    tick = os.sysconf("SC_CLK_TCK")

    def cpu():
        f = Path(f"/proc/{p.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / tick
    c0, t0 = cpu(), time.monotonic()
    end = t0 + secs
    while time.monotonic() < end:
        udp_pps(loadgen, env, 1)
    c1, t1 = cpu(), time.monotonic()
    hwm = next(int(l.split()[1]) for l in Path(f"/proc/{p.pid}/status").read_text().splitlines()
               if l.startswith("VmHWM"))
    p.send_signal(signal.SIGTERM)
    p.wait(10)
    return {"cpu_share_of_a_core": (c1 - c0) / (t1 - t0), "peak_rss_mb": hwm / 1024}


def per_hook_cost(loadgen, env, tmp):
    """run_time_ns / run_cnt of each netprobe program while loopback UDP runs."""
    old = Path("/proc/sys/kernel/bpf_stats_enabled").read_text().strip()
    Path("/proc/sys/kernel/bpf_stats_enabled").write_text("1")
    try:
        with config_netprobe(env, tmp) as p:
            before = _prog_stats()
            udp_pps(loadgen, env, 2)
            after = _prog_stats()
    finally:
        Path("/proc/sys/kernel/bpf_stats_enabled").write_text(old)
    out = {}
    for pid, (name, ns, cnt) in after.items():
        n0, c0 = before.get(pid, (name, 0, 0))[1:]
        if cnt - c0 > 0:
            out[name] = {"ns_per_run": round((ns - n0) / (cnt - c0), 1), "runs": cnt - c0}
    return out


def _prog_stats():
    progs = json.loads(sh(["bpftool", "-j", "prog", "show"]).stdout or "[]")
    return {p["id"]: (p.get("name", "?"), p.get("run_time_ns", 0), p.get("run_cnt", 0))
            for p in progs}


# -- driver -------------------------------------------------------------------------------------
def build_loadgen(tmp) -> str:
    out = tmp / "loadgen"
    r = sh(["gcc", "-O2", "-o", str(out), str(HERE / "loadgen.c")])
    if r.returncode:
        sys.exit(f"bench: compiling loadgen: {r.stderr}")
    return str(out)


def summarize(samples):
    return {"median": statistics.median(samples), "min": min(samples), "max": max(samples),
            "n": len(samples)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=int(os.environ.get("ROUNDS", 5)))
    ap.add_argument("--secs", type=float, default=float(os.environ.get("SECS", 2)))
    ap.add_argument("--envs", default=os.environ.get("ENVS", "loopback,veth"))
    ap.add_argument("--configs", default=os.environ.get("CONFIGS", ",".join(CONFIGS)))
    ap.add_argument("--out", default=str(HERE / "results"))
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench: run as root (make bench)")
    for tool in ("iperf3", "bpftrace", "tcpdump", "bpftool", "gcc", "taskset"):
        if not shutil.which(tool):
            sys.exit(f"bench: {tool} is missing (make bench installs it)")
    configs = args.configs.split(",")
    tmp = Path(tempfile.mkdtemp(prefix="npbench."))
    loadgen = build_loadgen(tmp)
    results: dict = {}
    pair = VethPair.create()
    try:
        pair.wait_up() if hasattr(pair, "wait_up") else time.sleep(1)
        envs = {"loopback": {"server": "127.0.0.1", "server_ns": None, "client_ns": None,
                             "tcpdump_if": "lo"},
                "veth": {"server": pair.b.addr4, "server_ns": pair.b.ns, "client_ns": pair.a.ns,
                         "tcpdump_if": pair.a.dev}}
        envs = {k: v for k, v in envs.items() if k in args.envs.split(",")}
        for rnd in range(args.rounds):
            for cname in configs:
                for ename, env in envs.items():
                    with CONFIGS[cname](env, tmp):
                        for wname, work in WORKLOADS.items():
                            v = work(loadgen, env, args.secs)
                            results.setdefault(ename, {}).setdefault(wname, {}).setdefault(cname, []).append(v)
                            print(f"round {rnd + 1}/{args.rounds} {ename:8} {cname:20} {wname:13} {v:,.0f}",
                                  flush=True)
        extra = {"startup_s": summarize(startup_times(tmp)),
                 "frontend": frontend_cost(loadgen, envs.get("loopback") or next(iter(envs.values())), tmp),
                 "per_hook_ns": per_hook_cost(loadgen, envs.get("loopback") or next(iter(envs.values())), tmp)}
    finally:
        pair.delete()
        shutil.rmtree(tmp, ignore_errors=True)
    report = make_report(results, extra, args)
    print(render(report))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "latest.json").write_text(json.dumps(report, indent=2))
    with open(out / "latest.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["env", "workload", "config", "median", "min", "max", "ratio_to_none"])
        for row in report["rows"]:
            w.writerow([row[k] for k in ("env", "workload", "config", "median", "min", "max", "ratio")])
    print(f"\nwritten: {out / 'latest.json'}, {out / 'latest.csv'}")
    # a missed target is a finding, reported above; the run itself succeeded
    return 0


def make_report(results, extra, args):
    rows = []
    ratio = {}
    for ename, works in results.items():
        for wname, confs in works.items():
            base = statistics.median(confs["none"]) if "none" in confs else None
            for cname, samples in confs.items():
                s = summarize(samples)
                r = s["median"] / base if base else None
                ratio[(ename, wname, cname)] = r
                rows.append({"env": ename, "workload": wname, "config": cname, **s,
                             "ratio": round(r, 3) if r else None})

    def R(e, w, c):
        return ratio.get((e, w, c))

    targets = []

    def target(name, value, ok):
        targets.append({"target": name, "value": value, "met": ok})
    np_udp, fl_udp = R("loopback", "udp_64B_pps", "netprobe"), R("loopback", "udp_64B_pps", "empty_programs")
    if np_udp is not None:
        target("loopback UDP 64 B >= 0.92 of no probe", round(np_udp, 3), np_udp >= 0.92)
    bulk = R("loopback", "tcp_bulk_bps", "netprobe")
    if bulk is not None:
        target("loopback TCP bulk >= 0.98 of no probe", round(bulk, 3), bulk >= 0.98)
    if np_udp is not None and fl_udp is not None:
        added, floor = 1 - np_udp, 1 - fl_udp
        v = added / floor if floor > 0 else float("inf")
        target("added cost <= 1.5x empty programs' (loopback UDP)", round(v, 2), v <= 1.5)
    for other in ("bpftrace", "tcpdump"):
        o = R("loopback", "udp_64B_pps", other)
        if np_udp is not None and o is not None:
            target(f"ahead of {other} (loopback UDP)", f"{np_udp:.3f} vs {o:.3f}", np_udp > o)
    st = extra["startup_s"]["median"]
    target("start-up to first counts <= 3 s", round(st, 2), st <= 3)
    fe = extra["frontend"]
    target("frontend < 2% of a core at 1 s refresh", f"{fe['cpu_share_of_a_core'] * 100:.2f}%",
           fe["cpu_share_of_a_core"] < 0.02)
    target("peak RSS < 150 MB", f"{fe['peak_rss_mb']:.0f} MB", fe["peak_rss_mb"] < 150)
    return {
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"kernel": platform.release(), "cpus": os.cpu_count(),
                    "cpu": _cpu_model(), "python": platform.python_version()},
        "rounds": args.rounds, "seconds_per_run": args.secs,
        "rows": rows, "targets": targets, **extra,
    }


def _cpu_model():
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.machine()


def _fmt(workload, v):
    if v is None:
        return "-"
    if workload.endswith("bps"):
        return f"{v / 1e9:.2f}G"
    return f"{v / 1e3:.1f}k"


def render(report) -> str:
    lines = [f"netprobe overhead — {report['machine']['kernel']}, {report['machine']['cpus']} CPUs "
             f"({report['machine']['cpu']}), {report['rounds']} rounds x {report['seconds_per_run']} s",
             f"{'env':8} {'workload':13} {'config':21} {'median':>8} {'min-max':>17} {'ratio':>6}"]
    for r in report["rows"]:
        lines.append(f"{r['env']:8} {r['workload']:13} {r['config']:21} {_fmt(r['workload'], r['median']):>8} "
                     f"{_fmt(r['workload'], r['min']) + '-' + _fmt(r['workload'], r['max']):>17} "
                     f"{r['ratio'] if r['ratio'] is not None else '-':>6}")
    lines.append("")
    lines.append(f"start-up to first counts: median {report['startup_s']['median']:.2f} s "
                 f"(min {report['startup_s']['min']:.2f}, max {report['startup_s']['max']:.2f})")
    fe = report["frontend"]
    lines.append(f"frontend at 1 s refresh: {fe['cpu_share_of_a_core'] * 100:.2f}% of a core, "
                 f"peak RSS {fe['peak_rss_mb']:.0f} MB")
    lines.append("in-kernel cost per hook (bpf_stats, loopback UDP):")
    for name, v in sorted(report["per_hook_ns"].items()):
        lines.append(f"  {name:18} {v['ns_per_run']:7.1f} ns/run  ({v['runs']:,} runs)")
    lines.append("targets:")
    for t in report["targets"]:
        mark = "met " if t["met"] else "MISS"
        lines.append(f"  {mark} {t['target']}: {t['value']}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
