"""`netprobe prove` as a user runs it: real probes, real namespaces, real TCP and UDP; every
claim judged from the kernel's counts, and nothing of the run left behind — also when it is
stopped half-way."""
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from netprobe.kernel.bpfsys import in_netns
from netprobe.model.catalogue import STAGES
from netprobe.kernel.topology import VethPair

ROOT = Path(__file__).resolve().parents[2]
ENV = dict(os.environ, PYTHONPATH=str(ROOT / "pyfront"))
PEER_PORT = 47321


def netprobe(*args, netns=None):
    cmd = [sys.executable, "-m", "netprobe", *args]
    if netns:
        cmd = ["ip", "netns", "exec", netns, *cmd]
    return cmd


def run(*args, netns=None):
    return subprocess.run(netprobe(*args, netns=netns), capture_output=True, text=True, env=ENV,
                          timeout=120)


def namespaces() -> set[str]:
    out = subprocess.run(["ip", "-j", "netns", "list"], capture_output=True, text=True).stdout
    return {n["name"] for n in json.loads(out or "[]")}


def bpf_progs() -> dict[int, str]:
    out = subprocess.run(["bpftool", "-j", "prog", "show"], capture_output=True, text=True,
                         check=True).stdout
    return {p["id"]: p.get("name", "") for p in json.loads(out or "[]")}


def wait_gone(ids, timeout=5.0) -> set[int]:
    """Programs are freed asynchronously once their last fd closes: allow the kernel a moment."""
    deadline = time.monotonic() + timeout
    while True:
        left = set(ids) & set(bpf_progs())
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


def wait_for(path: Path, p: subprocess.Popen, timeout=180.0):
    # a failsafe, not a target: under TCG in the lab guest, start-up alone takes 20-40 s
    deadline = time.monotonic() + timeout
    while not path.exists():
        if p.poll() is not None or time.monotonic() > deadline:
            p.kill()
            pytest.fail(f"{p.args} did not become ready: {p.communicate()[1]}")
        time.sleep(0.01)


def test_prove_holds_all_three_claims_and_removes_its_namespaces(bpf_ok):
    r = run("prove", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    out = json.loads(r.stdout)
    assert out["holds"] is True and 20000 <= out["port"] < 32000
    cases = {c["id"]: c for c in out["cases"]}
    assert list(cases) == ["loopback", "own_address", "nic", "where_it_dies"]
    a, b = out["namespaces"]
    for id in ("loopback", "own_address"):
        assert cases[id]["holds"]
        assert [c["holds"] for c in cases[id]["claims"]] == [True, True]  # IPv4 and IPv6
        for c in cases[id]["claims"]:
            assert (c["device"], c["xmit"], c["against"]) == ("lo", "loopback_xmit", 0)
            assert c["count"] > 0
    assert [c["address"] for c in cases["loopback"]["claims"]] == ["127.0.0.1", "::1"]
    nic = cases["nic"]
    assert nic["holds"]
    for c in nic["claims"]:
        assert (c["device"], c["xmit"].split()[0], c["against"]) == (out["veth"][0], "veth_xmit", 0)
    # every flow completed and was counted at the L4 send stage
    for case in out["cases"][:3]:
        assert len(case["flows"]) == 4
        for f in case["flows"]:
            assert f["error"] is None
            assert f["l4_send_calls"] > 0
            # UDP over a fresh IPv6 neighbour may lose the datagram that triggered resolution
            assert f["arrived"] >= f["sent"] - 2, f
    # a loopback flow is seen on lo of prove's own namespace, and nowhere else
    for f in cases["loopback"]["flows"]:
        assert [(d["netns_name"], d["name"]) for d in f["devices"]] == [(a, "lo")]
    # the veth flow leaves through a's end and enters through b's
    for f in nic["flows"]:
        by = {d["name"]: d["stages"] for d in f["devices"]}
        assert by[out["veth"][0]]["driver_xmit"] > 0 and by[out["veth"][1]]["driver_rx"] > 0
    # where it dies: every datagram seen dropped where and why expected, as nftables counted
    dies = cases["where_it_dies"]
    assert dies["holds"]
    assert [c["address"] for c in dies["claims"]][:2] == ["127.0.0.1", "::1"]
    for c in dies["claims"]:
        e = c["expected"]
        right = [d for d in c["drops"] if d["stage"] in e["stages"] and d["reason"] == e["reason"]]
        assert sum(d["packets"] for d in right) == c["sent"] == 16
        if c["why"].startswith("nftables"):
            assert (e["netns_name"], e["device"], c["kernel_count"]) == (b, out["veth"][1], 16)
        else:
            assert (e["netns_name"], e["device"]) == (a, "lo")
    assert not {a, b} & namespaces()


def test_prove_text_shows_four_cases(bpf_ok):
    r = run("prove")
    assert r.returncode == 0, r.stdout + r.stderr
    verdicts = [line for line in r.stdout.splitlines() if line.startswith(("ok ", "FAIL"))]
    assert len(verdicts) == 10 and all(v.startswith("ok ") for v in verdicts)
    assert "127.0.0.1: " in verdicts[0] and "through loopback_xmit, 0 through any NIC driver" in verdicts[0]
    # each claim of the first three cases states the way its packets took: on lo for the
    # loopback and own-address ones, out of the veth for the NIC one
    paths = [line for line in r.stdout.splitlines() if line.startswith("     path: ip_output[")]
    assert len(paths) == 6, paths
    assert all(p.startswith("     path: ip_output[lo] > dev_queue_xmit[lo]") for p in paths[:4])
    assert all("[lo]" not in p for p in paths[4:]), paths
    assert "through veth_xmit" in r.stdout
    assert "NO_SOCKET" in r.stdout and "NETFILTER_DROP" in r.stdout
    assert r.stdout.splitlines()[-1].startswith("All 4 claims hold")
    assert max(len(line) for line in r.stdout.splitlines()) <= 80


def netprobe_prog(name: str) -> bool:
    """A program of netprobe's: bpftool shows the function name, or BCC's 15-character cut."""
    fns = {h.fn for st in STAGES for c in st.candidates for h in c.hooks} | {"netdev_walk"}
    return any(name in (fn, fn[:15]) for fn in fns)


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_mid_run_tears_everything_down(bpf_ok, tmp_path, sig, code):
    ready = tmp_path / "ready"
    before = bpf_progs()
    p = subprocess.Popen(netprobe("prove", "--ready-file", str(ready)), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=ENV)
    wait_for(ready, p)
    # the ready-file is written once the probes are attached, before the first flow; the flows
    # and their reads take over a second, so the signal lands mid-run
    during = {i for i, name in bpf_progs().items() if i not in before and netprobe_prog(name)}
    p.send_signal(sig)
    out, err = p.communicate(timeout=30)
    made = json.loads(ready.read_text())
    assert p.returncode == code, out + err
    assert "Traceback" not in err
    assert "prove stopped by" in err
    assert "All 3 claims hold" not in out
    assert not set(made["namespaces"]) & namespaces()
    assert len(during) >= 5, "prove's probes were not loaded while it ran"
    assert wait_gone(during) == set()


def test_prove_survives_being_killed_before_the_probes_are_attached(bpf_ok):
    before = namespaces()
    p = subprocess.Popen(netprobe("prove"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=ENV)
    # wait for prove's namespaces, then stop it while it compiles the probes
    deadline = time.monotonic() + 60
    made = set()
    while not made and time.monotonic() < deadline:
        made = {n for n in namespaces() - before if n.startswith("np-")}
        time.sleep(0.01)
    assert made, "prove made no namespaces"
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=30)
    assert p.returncode == 143, err
    assert "Traceback" not in err
    assert not made & namespaces()


@contextmanager
def peer_in(ns: str, tmp_path, *args):
    ready = tmp_path / f"peer-{ns}"
    p = subprocess.Popen(netprobe("peer", "--port", str(PEER_PORT), "--ready-file", str(ready),
                                  *args, netns=ns),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        wait_for(ready, p, timeout=60)
        yield p
    finally:
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=10)
    assert p.returncode == 0, err
    assert err == ""


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_prove_against_netprobe_peer_across_a_veth(bpf_ok, tmp_path, family):
    """prove runs in namespace a as if a were a host, the peer in b; the NIC that case 3 leaves
    through is found from the counts (here a's veth end, not a physical NIC)."""
    with VethPair.create() as pair:
        pair.wait_up()
        peer = pair.b.addr4 if family == "ipv4" else pair.b.addr6
        with peer_in(pair.b.ns, tmp_path):
            r = run("prove", "--json", "--peer", peer, "--peer-port", str(PEER_PORT), netns=pair.a.ns)
        assert r.returncode == 0, r.stdout + r.stderr
        out = json.loads(r.stdout)
        nic = out["cases"][2]
        assert out["peer"] == {"addr": peer, "port": PEER_PORT, "protocols": ["tcp", "udp"]}
        assert nic["holds"] and [c["address"] for c in nic["claims"]] == [peer]
        claim = nic["claims"][0]
        assert (claim["device"], claim["xmit"].split()[0], claim["against"]) == (pair.a.dev, "veth_xmit", 0)
        for f in nic["flows"]:
            assert f["echo"] and f["error"] is None and f["note"] is None
            assert f["arrived"] == f["sent"]          # everything came back
            by = {(d["netns_name"], d["name"]): d["stages"] for d in f["devices"]}
            # out through a's veth end and back in through it: the echo crossed the NIC twice
            assert by[(pair.a.ns, pair.a.dev)]["driver_xmit"] > 0
            assert by[(pair.a.ns, pair.a.dev)]["driver_rx"] > 0
            assert by[(pair.b.ns, pair.b.dev)]["driver_xmit"] > 0
        assert all(c["holds"] for c in out["cases"])


def test_prove_against_a_tcp_only_peer(bpf_ok, tmp_path):
    with VethPair.create() as pair:
        pair.wait_up()
        with peer_in(pair.b.ns, tmp_path):
            r = run("prove", "--json", "--peer", pair.b.addr4, "--peer-port", str(PEER_PORT),
                    "--peer-proto", "tcp", netns=pair.a.ns)
    assert r.returncode == 0, r.stdout + r.stderr
    nic = json.loads(r.stdout)["cases"][2]
    assert [f["proto"] for f in nic["flows"]] == ["tcp"]
    assert nic["holds"]


@contextmanager
def tcp_only_echo(ns_path: str, addr: str, port: int):
    """What the QEMU lab's peer is: a TCP echo (guestfwd to `cat`) and nothing on UDP."""
    with in_netns(ns_path):
        lst = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lst.bind((addr, port))
    lst.listen(4)

    def echo(conn):
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data)

    def serve():
        while True:
            try:
                conn, _ = lst.accept()
            except OSError:
                return
            threading.Thread(target=echo, args=(conn,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield
    finally:
        lst.shutdown(socket.SHUT_RDWR)
        lst.close()


def test_udp_against_a_tcp_only_peer_is_a_note_not_a_failure(bpf_ok):
    """The datagrams still cross the NIC, so the claim is judged on them; the note says why no
    echo came back and how to skip UDP."""
    with VethPair.create() as pair:
        pair.wait_up()
        with tcp_only_echo(pair.b.path, pair.b.addr4, PEER_PORT):
            r = run("prove", "--json", "--peer", pair.b.addr4, "--peer-port", str(PEER_PORT),
                    netns=pair.a.ns)
    assert r.returncode == 0, r.stdout + r.stderr
    nic = json.loads(r.stdout)["cases"][2]
    tcp, udp = nic["flows"]
    assert tcp["arrived"] == tcp["sent"]
    assert (udp["sent"], udp["arrived"]) == (3, 0)
    assert "no UDP echo came back" in udp["note"] and "--peer-proto tcp" in udp["note"]
    by = {d["name"]: d["stages"] for d in udp["devices"]}
    assert by[pair.a.dev]["driver_xmit"] == 3    # out through the NIC all the same
    assert by[pair.b.dev]["driver_rx"] == 3
    assert nic["holds"]


def test_a_claim_that_does_not_hold_exits_non_zero(bpf_ok, tmp_path):
    """--peer on a loopback address: case 3's flow never reaches a NIC, and prove says so."""
    with VethPair.create() as pair:
        with peer_in(pair.a.ns, tmp_path, "--listen", "127.0.0.1"):
            r = run("prove", "--peer", "127.0.0.1", "--peer-port", str(PEER_PORT),
                    "--peer-proto", "tcp", netns=pair.a.ns)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    lines = r.stdout.splitlines()
    assert any(line.startswith("FAIL 127.0.0.1: no NIC counted it at driver_xmit, but ")
               for line in lines), r.stdout
    assert lines[-1].startswith("Case 3 does not hold: 3 of 4 claims hold")
