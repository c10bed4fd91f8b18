"""The loopback path against the veth path (or a NIC's), hop by hop, on real runs (docs/latency.md).

One netprobe session (counting + latency, filtered to the test port) watches a flow over lo
inside a fresh namespace, then the same flow from one namespace to another over a veth pair;
for each it prints every hop's skbs, p50 and p99, the skbs counted at the hop's destination
stage, the end-to-end median (ip_output → l4_rcv) and the sum of the hop medians.
The flow: UDP datagrams of 64 bytes, each sent when the last was received (--proto udp); or
TCP requests of 64 bytes, each echoed back before the next (--proto tcp, on port 7). In the
QEMU lab guest, `--where lo,e1000 --proto tcp` compares lo with the e1000: the same exchange
with QEMU's TCP echo peer (10.0.2.100:7), through the e1000 driver (ring, NAPI).
Run as root: python3 bench/latency.py [--count N] [--rounds R] [--where lo,veth|e1000]
[--proto udp|tcp] [--json FILE]."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "pyfront"))
sys.path.insert(0, str(ROOT / "tests" / "integration"))  # labguest: the lab guest's NICs

from netprobe.model.flowfilter import FlowFilter  # noqa: E402
from netprobe.model.latency import hop_deltas, path_deltas  # noqa: E402
from netprobe.render.latreport import Names, human_ns, path_rows  # noqa: E402
from netprobe.model.programsets import COUNTING, LATENCY  # noqa: E402
from netprobe.kernel.session import ProbeSession  # noqa: E402
from netprobe.kernel.topology import VethPair  # noqa: E402
import labguest  # noqa: E402
from netprobe.kernel.traffic import tcp_echo_server, tcp_request_response, udp_flow  # noqa: E402

PORT = 47301
ECHO_PORT = 7  # TCP: QEMU's echo peer in the lab guest; lo's echo server takes it too
SIZE = 64
CHAIN = ("ip_output", "dev_queue_xmit", "driver_xmit", "driver_rx", "netif_receive_skb",
         "ip_rcv", "l4_rcv")


def run(session, pair, where, count, proto):
    root = os.stat("/proc/self/ns/net").st_ino  # the e1000 is in this namespace
    if where == "lo":
        server, server_ns, devs = "127.0.0.1", pair.a.path, [(pair.a.ns, "lo")]
    elif where == "veth":
        server, server_ns, devs = pair.b.addr4, pair.b.path, [(pair.a.ns, pair.a.dev),
                                                             (pair.b.ns, pair.b.dev)]
    else:
        nics = labguest.nics()
        if where not in nics:
            sys.exit(f"latency.py: no {where} NIC here (NETPROBE_LAB_NICS: the QEMU lab guest's)")
        server, server_ns, devs = labguest.ECHO[0], None, [(root, nics[where])]
    devices = [next(d for d in session.devices.values()
                    if (d.netns if isinstance(k[0], int) else d.netns_name, d.name) == k)
               for k in devs]
    client_ns = pair.a.path if where != "e1000" else None
    ids = {(d.netns, d.ifindex): d for d in devices}
    before, lb = session.read(), session.read_latency()
    if proto == "udp":
        got = udp_flow(server_addr=server, port=PORT, count=count, server_ns=server_ns,
                       client_ns=client_ns)
    else:
        server_t = tcp_echo_server(port=ECHO_PORT, ns=server_ns) if server_ns else None
        got = tcp_request_response(server_addr=server, port=ECHO_PORT, count=count, size=SIZE,
                                   client_ns=client_ns)
        if server_t:
            server_t.join(5)
    # the flow's last packets (a TCP close's ACKs) land before both reads, which are not one
    time.sleep(0.5)
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
    return {"where": where, "proto": proto, "received": got, "hops": rows, "sum_of_hop_p50_ns": chain,
            "e2e_p50_ns": e2e, "paths": paths}


def show(r):
    what = "datagrams received" if r["proto"] == "udp" else "requests echoed"
    print(f"\n{r['where']}: {r['received']} {what}")
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
    ap.add_argument("--where", default="lo,veth",
                    help="comma-separated: lo, veth, e1000 (the QEMU lab guest's NIC)")
    ap.add_argument("--proto", choices=("udp", "tcp"), default="udp")
    ap.add_argument("--json", metavar="FILE")
    args = ap.parse_args()
    wheres = args.where.split(",")
    if set(wheres) - {"lo", "veth", "e1000"}:
        ap.error(f"--where: lo, veth or e1000, not {args.where}")
    if "e1000" in wheres and args.proto != "tcp":
        ap.error("--where e1000 takes --proto tcp (QEMU's echo peer speaks TCP)")
    results = []
    port = PORT if args.proto == "udp" else ECHO_PORT
    with ProbeSession(sets=(COUNTING, LATENCY), flow=FlowFilter(port=port)) as session, \
            VethPair.create() as pair:
        pair.wait_up()
        session.refresh()
        for rnd in range(args.rounds):
            for where in wheres:
                r = run(session, pair, where, args.count, args.proto)
                r["round"] = rnd + 1
                results.append(r)
                show(r)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
