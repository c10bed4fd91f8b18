"""The loopback path against the veth path, hop by hop, on real runs (docs/latency.md).

One netprobe session (counting + latency, filtered to the test port) watches a UDP flow of
64-byte datagrams over lo inside a fresh namespace, then the same flow from one namespace to
another over a veth pair; for each it prints every hop's skbs, p50 and p99, the skbs counted at
the hop's destination stage, the end-to-end median (ip_output → l4_rcv) and the sum of the hop
medians. Run as root: python3 bench/latency.py [--count N] [--rounds R] [--json FILE]."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "pyfront"))

from netprobe.model.flowfilter import FlowFilter  # noqa: E402
from netprobe.model.latency import hop_deltas, path_deltas  # noqa: E402
from netprobe.render.latreport import Names, human_ns, path_rows  # noqa: E402
from netprobe.model.programsets import COUNTING, LATENCY  # noqa: E402
from netprobe.kernel.session import ProbeSession  # noqa: E402
from netprobe.kernel.topology import VethPair  # noqa: E402
from netprobe.kernel.traffic import udp_flow  # noqa: E402

PORT = 47301
CHAIN = ("ip_output", "dev_queue_xmit", "driver_xmit", "driver_rx", "netif_receive_skb",
         "ip_rcv", "l4_rcv")


def run(session, pair, where, count):
    if where == "lo":
        server, server_ns, devs = "127.0.0.1", pair.a.path, [(pair.a.ns, "lo")]
    else:
        server, server_ns, devs = pair.b.addr4, pair.b.path, [(pair.a.ns, pair.a.dev),
                                                             (pair.b.ns, pair.b.dev)]
    devices = [next(d for d in session.devices.values() if (d.netns_name, d.name) == k)
               for k in devs]
    ids = {(d.netns, d.ifindex): d for d in devices}
    before, lb = session.read(), session.read_latency()
    got = udp_flow(server_addr=server, port=PORT, count=count, server_ns=server_ns,
                   client_ns=pair.a.path)
    after, la = session.read(), session.read_latency()
    hops = {k: h for k, h in hop_deltas(la.hops, lb.hops).items() if (k.netns, k.ifindex) in ids}
    rows = []
    for k, h in sorted(hops.items(), key=lambda kv: (kv[0].span, CHAIN.index(kv[0].dst)
                                                      if kv[0].dst in CHAIN else 99)):
        d = ids[(k.netns, k.ifindex)]
        counted = (after.values.get((k.netns, k.ifindex, k.dst), (0, 0))[0]
                   - before.values.get((k.netns, k.ifindex, k.dst), (0, 0))[0])
        rows.append({"device": d.name, "from": k.src, "to": k.dst, "span": k.span,
                     "skbs": h.count, "counted_at_to": counted if k.dst in CHAIN else None,
                     "p50_ns": h.quantile(0.5), "p99_ns": h.quantile(0.99),
                     "mean_ns": h.sum_ns / h.count})
    chain = sum(r["p50_ns"] for r in rows if not r["span"] and r["to"] in CHAIN[1:])
    e2e = next((r["p50_ns"] for r in rows if r["span"]), None)
    names = Names(session.devices, {ns.inum: ns.name for ns in session.namespaces.values()})
    paths = [{"path": p.text, "end": p.end, "skbs": p.packets}
             for p in path_rows(path_deltas(la.paths, lb.paths), names)
             if p.netns in {d.netns for d in devices}]
    return {"where": where, "received": got, "hops": rows, "sum_of_hop_p50_ns": chain,
            "e2e_p50_ns": e2e, "paths": paths}


def show(r):
    print(f"\n{r['where']}: {r['received']} datagrams received")
    print(f"  {'device':10} {'from':18} {'to':18} {'skbs':>6} {'counted':>7} {'p50':>8} {'p99':>8}")
    for h in r["hops"]:
        arrow = " ⇒" if h["span"] else ""
        counted = "" if h["counted_at_to"] is None else h["counted_at_to"]
        print(f"  {h['device']:10} {h['from'] + arrow:18} {h['to']:18} {h['skbs']:>6} "
              f"{counted:>7} {human_ns(h['p50_ns']):>8} {human_ns(h['p99_ns']):>8}")
    print(f"  sum of hop p50s ip_output→l4_rcv: {human_ns(r['sum_of_hop_p50_ns'])}; "
          f"end-to-end p50: {human_ns(r['e2e_p50_ns'])}")
    for p in r["paths"]:
        print(f"  {p['skbs']:>6} {p['end']:9} {p['path']}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", metavar="FILE")
    args = ap.parse_args()
    results = []
    with ProbeSession(sets=(COUNTING, LATENCY), flow=FlowFilter(port=PORT)) as session, \
            VethPair.create() as pair:
        pair.wait_up()
        session.refresh()
        for rnd in range(args.rounds):
            for where in ("lo", "veth"):
                r = run(session, pair, where, args.count)
                r["round"] = rnd + 1
                results.append(r)
                show(r)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
