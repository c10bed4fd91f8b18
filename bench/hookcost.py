"""Per-hook cost of each mechanism netprobe can take at the function stages, on this kernel:
the default (fentry where the kernel takes it), --prefer kprobe and --prefer tp_btf, from
kernel.bpf_stats_enabled (run_time_ns / run_cnt of each program) while 64-byte UDP floods
loopback; and, with bpf_stats off, the flood's rate under each against no probe (the pps
ratio, and datagrams per CPU-second of the flood). For the lab guests, which have kprobes and fentry (the CI host has neither):

    gcc -static -O2 -o .cache/loadgen-static bench/loadgen.c   # the guest has no compiler
    LAB_KERNEL=6.1 lab/qemu/run.sh -- python3 bench/hookcost.py --loadgen .cache/loadgen-static

Configurations run interleaved, `--rounds` times each; the median ns per run of each hook is
reported. bpf_stats' own timing is in every figure. Under TCG (the lab's emulation) every
instruction costs what emulating it costs: compare the mechanisms with each other, not the
figures with a real machine's."""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402

MECHS = {"default": [], "kprobe": ["--prefer", "kprobe"], "tp_btf": ["--prefer", "tp_btf"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--loadgen", required=True)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--secs", type=float, default=3.0, help="each rate measurement")
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    for name, extra in MECHS.items():
        bench.CONFIGS[f"np_{name}"] = (lambda extra: lambda env, tmp: bench._netprobe(extra, tmp))(extra)
    env = {"server": "127.0.0.1", "server_ns": None, "client_ns": None}
    runs: dict[str, dict[str, list]] = {}
    rates: dict[str, list[dict]] = {}
    loadgen = str(Path(args.loadgen).resolve())
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.rounds):
            for cname in ["none"] + [f"np_{m}" for m in MECHS]:
                with bench.CONFIGS[cname](env, Path(tmp)):
                    rates.setdefault(cname, []).append(bench.udp_pps(loadgen, env, args.secs))
            got = bench.per_hook_cost(loadgen, env, Path(tmp),
                                      [f"np_{m}" for m in MECHS])
            for cname, hooks in got.items():
                for hook, v in hooks.items():
                    runs.setdefault(cname, {}).setdefault(hook, []).append(v)
    report = {c: {h: {"ns_per_run": statistics.median(v["ns_per_run"] for v in vs),
                      "runs_per_round": int(statistics.median(v["runs"] for v in vs)),
                      "program": vs[0]["program"]}
                  for h, vs in sorted(hooks.items())} for c, hooks in runs.items()}
    none = statistics.median(r["value"] for r in rates["none"])
    none_cpu = statistics.median(r["per_cpu_s"] for r in rates["none"])
    rate_report = {c: {"pps": statistics.median(r["value"] for r in rs),
                           "ratio": statistics.median(r["value"] for r in rs) / none,
                           "per_cpu_s_ratio": statistics.median(r["per_cpu_s"] for r in rs) / none_cpu}
                       for c, rs in rates.items()}
    print(json.dumps({"per_hook": report, "rates": rate_report}, indent=2))
    for c, r in rate_report.items():
        print(f"{c:<12} {r['pps']:>10,.0f} pkt/s  ratio {r['ratio']:.2f}  "
              f"per CPU-s {r['per_cpu_s_ratio']:.2f}")
    hooks = sorted({h for r in report.values() for h in r})
    print(f"{'hook':<20}" + "".join(f"{c:>26}" for c in report))
    for h in hooks:
        cells = []
        for c in report:
            v = report[c].get(h)
            cells.append(f"{v['ns_per_run']:>8.0f} ns {v['program'][:15]:>15}" if v else f"{'-':>26}")
        print(f"{h:<20}" + "".join(cells))
    if args.out:
        Path(args.out).write_text(json.dumps({"per_hook": report, "rates": rate_report}, indent=2))


if __name__ == "__main__":
    main()
