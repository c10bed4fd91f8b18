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

from netprobe.topology import VethPair
from netprobe.traffic import tcp_flow, udp_flow

ROOT = Path(__file__).resolve().parents[2]
PORT = 47101


def bpf_prog_ids():
    out = subprocess.run(["bpftool", "-j", "prog", "show"], capture_output=True, text=True, check=True)
    return {p["id"] for p in json.loads(out.stdout)}


def bpf_link_ids():
    out = subprocess.run(["bpftool", "-j", "link", "show"], capture_output=True, text=True, check=True)
    return {l["id"] for l in json.loads(out.stdout or "[]")}


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
    progs0, links0 = bpf_prog_ids(), bpf_link_ids()
    with VethPair.create() as pair:
        p, mechanisms = start_watch(tmp_path, "--port", str(PORT), "--interval", "0.5", "--all")
        try:
            assert "driver_xmit" in mechanisms
            assert bpf_prog_ids() - progs0, "no BPF program attached while watching"
            time.sleep(0.6)  # the namespaces are picked up at the next refresh
            tcp_flow(server_addr="127.0.0.1", port=PORT, nbytes=50000, server_ns=pair.a.path,
                     client_ns=pair.a.path)
            udp_flow(server_addr=pair.b.addr4, port=PORT, count=30, server_ns=pair.b.path,
                     client_ns=pair.a.path)
            time.sleep(1.2)
        finally:
            p.send_signal(sig)
            out, err = p.communicate(timeout=60)
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
    # nothing left attached: every program and link netprobe made is gone
    assert bpf_prog_ids() - progs0 == set()
    assert bpf_link_ids() - links0 == set()


def test_once_prints_one_frame_with_stage_mechanisms(bpf_ok):
    env = dict(os.environ, PYTHONPATH=str(ROOT / "pyfront"))
    r = subprocess.run([sys.executable, "-m", "netprobe", "watch", "--json", "--once", "-i", "0.2"],
                       capture_output=True, text=True, env=env, timeout=60)
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
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "loopback_xmit" in r.stdout and "drv_tx" in r.stdout
    assert "stage mechanisms" in r.stdout


def test_ebpf_prints_the_generated_program(bpf_ok):
    env = dict(os.environ, PYTHONPATH=str(ROOT / "pyfront"))
    r = subprocess.run([sys.executable, "-m", "netprobe", "watch", "--ebpf", "--port", "80"],
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0
    assert "-DNP_FILTER_PORT=20480" in r.stdout and "int driver_xmit__raw_tp" in r.stdout
