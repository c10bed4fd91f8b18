"""The kernel-facing half of prove's fourth case, "where it dies": in prove's namespaces, UDP to
a closed port on 127.0.0.1 and ::1 (it must die at l4_rcv on lo, NO_SOCKET), and UDP across the
veth into the peer namespace, where an nftables rule drops it (at l4_rcv on the peer's veth:
an input-hook drop, NETFILTER_DROP, as many as the rule's own counter). The rule's table is
deleted with the namespace."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import replace

from ..model.prove_drops import DropExpect, DropVerdict, delta, judge
from .prove_run import settled
from ..kernel.topology import Host, VethPair
from ..kernel.traffic import udp_send

COUNT = 16
NFT_TABLE = "netprobe_prove"


def _nft(ns: str, *args: str, stdin: str | None = None) -> str:
    r = subprocess.run(["ip", "netns", "exec", ns, "nft", *args], input=stdin,
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise OSError(r.returncode, f"nft {' '.join(args)}: {r.stderr.strip()}")
    return r.stdout


def _drop_rule(host: Host, port: int) -> None:
    _nft(host.ns, "-f", "-", stdin=(
        f"table inet {NFT_TABLE} {{\n chain input {{\n"
        f"  type filter hook input priority 0; udp dport {port} counter drop;\n }}\n}}\n"))


def _rule_counter(host: Host) -> int:
    out = json.loads(_nft(host.ns, "-j", "list", "table", "inet", NFT_TABLE))
    return next(e["counter"]["packets"] for item in out["nftables"] if "rule" in item
                for e in item["rule"]["expr"] if "counter" in e)


def _ifindex(host: Host, dev: str) -> int:
    out = subprocess.run(["ip", "-n", host.ns, "-j", "link", "show", "dev", dev],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)[0]["ifindex"]


TITLE = ("where it dies: UDP to a closed port on 127.0.0.1 and ::1 in {a}, and across veth "
         "{dev} to {b4} and {b6}, dropped by an nftables input rule in {b}")


def run_drop_case(session, pair: VethPair, port: int) -> DropVerdict:
    a, b = pair.a, pair.b
    a_ns, b_ns = os.stat(a.path).st_ino, os.stat(b.path).st_ino
    reason = (lambda name: name) if session.drops_reasons else (lambda name: None)
    rule_error = ""
    if shutil.which("nft") is None:
        rule_error = "cannot tell: nft (nftables) is not installed"
    else:
        try:
            _drop_rule(b, port)
        except OSError as e:
            rule_error = f"cannot tell: the nftables rule could not be made ({e.strerror})"
    veth_b = _ifindex(b, b.dev)
    expects = [DropExpect(addr, "closed port", a_ns, a.ns, 1, "lo", ("l4_rcv",),
                          reason("NO_SOCKET")) for addr in ("127.0.0.1", "::1")]
    # an input-hook (LOCAL_IN) drop: received and routed, so l4_rcv (dropcounts.netfilter_stage)
    expects += [DropExpect(addr, "nftables input rule", b_ns, b.ns, veth_b, b.dev,
                           ("l4_rcv",), reason("NETFILTER_DROP"), error=rule_error, by_rule=True)
                for addr in (b.addr4, b.addr6)]
    session.refresh()
    measured, drops = [], []
    before = settled(session.read_drops)
    counted = 0
    for e in expects:
        if e.error:
            measured.append(e)
            drops.append({})
            continue
        try:
            sent = udp_send(addr=e.addr, port=port, count=COUNT, client_ns=a.path)
        except OSError as err:
            measured.append(replace(e, error=f"sending failed: {err.strerror}"))
            drops.append({})
            continue
        now = settled(session.read_drops)
        kernel = None
        if e.by_rule:
            total = _rule_counter(b)
            kernel, counted = total - counted, total
        measured.append(replace(e, sent=sent, kernel_count=kernel))
        drops.append(delta(now.values, before.values))
        before = now
    names = {d.key: d.name for d in session.devices.values()}
    title = TITLE.format(a=a.ns, b=b.ns, dev=a.dev, b4=b.addr4, b6=b.addr6)
    state = session.states.get("drop")
    return judge(title, measured, drops, names,
                 counted_with=state.describe() if state else "not attached")

