"""`netprobe watch` as a user runs it: started, made ready, fed traffic, stopped by a signal,
and nothing of it left in the kernel afterwards."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from netprobe.kernel.topology import VethPair
from netprobe.kernel.traffic import tcp_flow, udp_flow

ROOT = Path(__file__).resolve().parents[2]
PORT = 47101


def bpf_prog_ids():
    out = subprocess.run(["bpftool", "-j", "prog", "show"], capture_output=True, text=True, check=True)
    return {p["id"] for p in json.loads(out.stdout)}


def bpf_link_ids():
    out = subprocess.run(["bpftool", "-j", "link", "show"], capture_output=True, text=True, check=True)
    return {l["id"] for l in json.loads(out.stdout or "[]")}


def owned_ids(pid: int) -> tuple[set[int], set[int]]:
    """The BPF programs and links this process holds, from its fds: other engineers' and
    tools' BPF loaded meanwhile is not counted (a global before/after diff counted it)."""
    progs, links = set(), set()
    for fdinfo in Path(f"/proc/{pid}/fdinfo").iterdir():
        try:
            text = fdinfo.read_text()
        except OSError:
            continue
        for line in text.splitlines():
            key, _, value = line.partition(":")
            if key == "prog_id":
                progs.add(int(value))
            elif key == "link_id":
                links.add(int(value))
    return progs, links


def wait_gone(progs: set[int], links: set[int], timeout=5.0) -> tuple[set[int], set[int]]:
    """Programs are freed asynchronously once their last fd closes: allow the kernel a moment."""
    deadline = time.monotonic() + timeout
    while True:
        left = progs & bpf_prog_ids(), links & bpf_link_ids()
        if left == (set(), set()) or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


def start_watch(tmp_path, *args):
    ready = tmp_path / "ready"
    env = dict(os.environ, PYTHONPATH=str(ROOT / "pyfront"))
    p = subprocess.Popen([sys.executable, "-m", "netprobe", "watch", "--json", "--ready-file",
                          str(ready), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=env)
    # a failsafe, not a target: under TCG in the lab guest, start-up alone takes 20-40 s
    deadline = time.time() + 180
    while not ready.exists():
        if p.poll() is not None or time.time() > deadline:
            p.kill()
            pytest.fail(f"watch did not become ready: {p.stderr.read()}")
        time.sleep(0.05)
    return p, json.loads(ready.read_text())


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_watch_counts_loopback_and_detaches_everything_on_signal(bpf_ok, tmp_path, sig):
    with VethPair.create() as pair:
        p, mechanisms = start_watch(tmp_path, "--port", str(PORT), "--interval", "0.5", "--all")
        try:
            assert "driver_xmit" in mechanisms
            progs, links = owned_ids(p.pid)
            assert len(progs) >= 5, "no BPF program attached while watching"
            time.sleep(0.6)  # the namespaces are picked up at the next refresh
            tcp_flow(server_addr="127.0.0.1", port=PORT, nbytes=50000, server_ns=pair.a.path,
                     client_ns=pair.a.path)
            udp_flow(server_addr=pair.b.addr4, port=PORT, count=30, server_ns=pair.b.path,
                     client_ns=pair.a.path)
            time.sleep(1.2)
        finally:
            p.send_signal(sig)
            out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    assert "Traceback" not in err
    frames = [json.loads(line) for line in out.splitlines()]
    total = {}
    for f in frames:
        for d in f["devices"]:
            key = (d["netns_name"], d["name"])
            total[key] = total.get(key, 0) + d["stages"]["driver_xmit"]["packets_delta"]
            if key == (pair.a.ns, pair.a.dev):
                assert d["xmit"].split()[0] == "veth_xmit" and d["driver"] == "veth"
    assert total[(pair.a.ns, "lo")] > 0
    assert total[(pair.a.ns, pair.a.dev)] >= 30
    assert total.get(("root", "eth0"), 0) == 0
    # nothing left attached: every program and link netprobe held is gone
    assert wait_gone(progs, links) == (set(), set())


def test_once_prints_one_frame_with_stage_mechanisms(bpf_ok):
    env = dict(os.environ, PYTHONPATH=str(ROOT / "pyfront"))
    r = subprocess.run([sys.executable, "-m", "netprobe", "watch", "--json", "--once", "-i", "0.2"],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    frames = r.stdout.strip().splitlines()
    assert len(frames) == 1
    obj = json.loads(frames[0])
    mech = {s["name"]: s["description"] for s in obj["stages"]}
    assert all(s["attached"] and s["mechanism"] for s in obj["stages"]), mech
    lo = next(d for d in obj["devices"] if d["name"] == "lo" and d["netns_name"] == "root")
    assert lo["xmit"] == "loopback_xmit"


def test_table_view_runs_for_a_duration(bpf_ok):
    env = dict(os.environ, PYTHONPATH=str(ROOT / "pyfront"), COLUMNS="100")
    r = subprocess.run([sys.executable, "-m", "netprobe", "watch", "--duration", "1", "-i", "0.5"],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "loopback_xmit" in r.stdout and "drv_tx" in r.stdout
    assert "stage mechanisms" in r.stdout


def test_ebpf_prints_the_generated_program(bpf_ok):
    env = dict(os.environ, PYTHONPATH=str(ROOT / "pyfront"))
    r = subprocess.run([sys.executable, "-m", "netprobe", "watch", "--ebpf", "--port", "80"],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0
    # hooks.h's macros make the hooks' programs: NP_TX_HOOKS(, ...) makes driver_xmit__raw_tp
    assert "-DNP_FILTER_PORT=20480" in r.stdout and "P##driver_xmit__raw_tp(" in r.stdout
    assert "NP_TX_HOOKS(, NP_HOOK_ON_SKB" in r.stdout
    assert "trace__" not in r.stdout and "lat__" not in r.stdout


def test_piped_table_prints_every_interval(bpf_ok):
    # issue 10 item 6: through a pipe, a Live display printed only the last table
    env = dict(os.environ, PYTHONPATH=str(ROOT / "pyfront"), COLUMNS="100")
    r = subprocess.run([sys.executable, "-m", "netprobe", "watch", "--count", "3", "-i", "0.3",
                        "--device", "lo"], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    titles = [l for l in r.stdout.splitlines() if "netprobe — all traffic — per" in l]
    assert len(titles) == 3, r.stdout
    assert all(l[:8].count(":") == 2 for l in titles)  # each interval headed by its time
    # lo's row in each (the footer may name loopback_xmit too: kprobes on each xmit function)
    assert sum(1 for l in r.stdout.splitlines() if l.startswith("lo ") and "loopback_xmit" in l) == 3
    assert "Tracing... Ctrl-C to end." in r.stderr and "Tracing" not in r.stdout
    assert r.stdout.count("stage mechanisms:") == 1  # with the first table only


def test_device_pattern_matching_nothing_is_named_then_the_device_shows_when_it_comes(
        bpf_ok, tmp_path):
    # issue 10 item 7: `--device eht0` was an empty table and `warnings: []`
    p, _ = start_watch(tmp_path, "--interval", "0.3", "--all", "--device", "eht0",
                       "--device", "npw*")
    try:
        first = json.loads(p.stdout.readline())
        warned = [w for w in first["warnings"] if w.startswith("--device ")]
        assert len(warned) == 2, first["warnings"]
        assert warned[0].startswith("--device 'eht0' matches no device (waiting for one to appear)")
        assert "lo" in warned[0].split("devices: ")[1].split(", ")
        assert first["devices"] == []
        # the device arrives: it is shown and the warning about its pattern goes
        ns = f"npw-{os.getpid()}"
        subprocess.run(["ip", "netns", "add", ns], check=True)
        try:
            subprocess.run(["ip", "-n", ns, "link", "add", "npw0", "type", "veth", "peer",
                            "npw1"], check=True)
            deadline = time.time() + 30
            while True:
                frame = json.loads(p.stdout.readline())
                if any(d["name"] == "npw0" for d in frame["devices"]):
                    break
                assert time.time() < deadline, frame
            assert [w for w in frame["warnings"] if w.startswith("--device 'npw*'")] == []
            # (the list of devices that exist is cut at a dozen: others' namespaces may fill it)
            assert any(w.startswith("--device 'eht0' matches no device")
                       for w in frame["warnings"])
        finally:
            subprocess.run(["ip", "netns", "del", ns], check=True)
    finally:
        p.send_signal(signal.SIGTERM)
        p.communicate(timeout=300)
    assert p.returncode == 0


def test_device_pattern_warning_in_the_table(bpf_ok):
    env = dict(os.environ, PYTHONPATH=str(ROOT / "pyfront"), COLUMNS="300")
    r = subprocess.run([sys.executable, "-m", "netprobe", "watch", "--once", "-i", "0.2",
                        "--device", "eht0"], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "! --device 'eht0' matches no device (waiting for one to appear); devices: " in r.stdout


def test_ebpf_with_latency_times_in_the_counting_programs_and_adds_the_ends(bpf_ok):
    env = dict(os.environ, PYTHONPATH=str(ROOT / "pyfront"))
    r = subprocess.run([sys.executable, "-m", "netprobe", "watch", "--ebpf", "--latency",
                        "--sample", "100"], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "-DNP_LAT_SAMPLE=100" in r.stdout and "-DNP_TIMED" in r.stdout
    assert "NP_END_HOOKS(lat__, NP_LAT_END)" in r.stdout and "np_lat_at(" in r.stdout


def test_sample_without_latency_is_a_usage_error(bpf_ok):
    env = dict(os.environ, PYTHONPATH=str(ROOT / "pyfront"))
    r = subprocess.run([sys.executable, "-m", "netprobe", "watch", "--sample", "10"],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 2 and "--sample applies to --latency" in r.stderr
    assert "Traceback" not in r.stderr


def test_watch_latency_shows_the_hops_and_the_one_path_of_a_ping(bpf_ok, tmp_path):
    from netprobe.kernel.traffic import icmp_echo

    with VethPair.create() as pair:
        p, _ = start_watch(tmp_path, "--latency", "--interval", "0.5")
        try:
            time.sleep(0.8)  # the namespaces are picked up at the next refresh
            assert icmp_echo(addr="127.0.0.1", count=3, ns=pair.a.path) == 3
            time.sleep(1.2)
        finally:
            p.send_signal(signal.SIGTERM)
            out, err = p.communicate(timeout=300)
    assert p.returncode == 0 and "Traceback" not in err, err
    frames = [json.loads(line)["latency"] for line in out.splitlines()]
    # (the veth pair's own IPv6 router solicitations and MLD reports take paths of their own)
    paths = [q for f in frames for q in f["paths"] if q["netns_name"] == pair.a.ns
             and "[lo]" in q["path"]]
    assert {q["path"] for q in paths} == {" > ".join(f"{s}[lo]" for s in (
        "ip_output", "dev_queue_xmit", "driver_xmit", "driver_rx", "netif_receive_skb", "ip_rcv",
        "l4_rcv"))}
    assert sum(q["packets"] for q in paths) == 6 and {q["end"] for q in paths} == {"delivered"}
    hops = [h for f in frames for h in f["hops"] if h["netns_name"] == pair.a.ns]
    handover = [h for h in hops if (h["from"], h["to"]) == ("driver_xmit", "driver_rx")
                and h["device"] == "lo"]
    assert sum(h["count"] for h in handover) == 6
    assert all(0 < h["p50_ns"] <= h["p99_ns"] for h in handover)
