"""`netprobe export` as a user (or systemd) runs it: started, scraped, stopped by a signal
with everything detached; over TLS and IPv6; with filters; with only the systemd unit's
capabilities."""
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from netprobe.model.catalogue import BY_NAME, STAGES

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "packaging" / "systemd" / "netprobe-exporter.service"


def free_port(host="127.0.0.1") -> int:
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(fam) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class Running:
    """A `netprobe export` subprocess, always stopped (and killed if need be) on exit."""

    def __init__(self, tmp_path, *args, prefix=()):
        self.ready = tmp_path / f"ready-{time.monotonic_ns()}"
        self.log = open(tmp_path / f"export-{time.monotonic_ns()}.log", "w+")
        env = dict(os.environ, PYTHONPATH=str(ROOT / "pyfront"))
        self.proc = subprocess.Popen([*prefix, sys.executable, "-m", "netprobe", "export",
                                      "--ready-file", str(self.ready), *args],
                                     stdout=self.log, stderr=subprocess.STDOUT, env=env)

    def __enter__(self):
        deadline = time.time() + 60
        while not self.ready.exists():
            if self.proc.poll() is not None or time.time() > deadline:
                self.stop(signal.SIGKILL)
                pytest.fail(f"export did not become ready: {self.output()}")
            time.sleep(0.05)
        self.info = json.loads(self.ready.read_text())
        return self

    def __exit__(self, *exc):
        self.stop()

    def stop(self, sig=signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode

    def output(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def get(self, path="/metrics", context=None) -> str:
        with urllib.request.urlopen(self.info["url"] + path, timeout=10, context=context) as r:
            assert r.status == 200
            return r.read().decode()


def samples(text):
    return [s for f in text_string_to_metric_families(text) for s in f.samples]


def bpf_ids(pid: int) -> tuple[set, set]:
    """BPF programs and links a process holds open (from /proc/PID/fdinfo)."""
    progs, links = set(), set()
    for fd in os.listdir(f"/proc/{pid}/fdinfo"):
        try:
            text = Path(f"/proc/{pid}/fdinfo/{fd}").read_text()
        except OSError:
            continue
        if m := re.search(r"^prog_id:\s+(\d+)", text, re.M):
            (links if "link_id:" in text else progs).add(int(m.group(1)))
        if m := re.search(r"^link_id:\s+(\d+)", text, re.M):
            links.add(int(m.group(1)))
    return progs, links


def bpftool_ids(kind: str) -> set:
    out = subprocess.run(["bpftool", "-j", kind, "show"], capture_output=True, text=True, check=True)
    return {x["id"] for x in json.loads(out.stdout or "[]")}


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_exits_zero_with_everything_detached(bpf_ok, tmp_path, sig):
    port = free_port()
    with Running(tmp_path, "--web.listen-address", f"127.0.0.1:{port}") as ex:
        assert ex.info["url"] == f"http://127.0.0.1:{port}"
        assert "netprobe_skbs_total{" in ex.get()
        assert "netprobe exporter" in ex.get("/")
        progs, links = bpf_ids(ex.proc.pid)
        assert progs and links, "no BPF program or link held while exporting"
        rc = ex.stop(sig)
        out = ex.output()
    assert rc == 0, out
    assert "Traceback" not in out
    assert out.splitlines()[0] == f"Serving http://127.0.0.1:{port}/metrics ... Ctrl-C to end."
    # (other programs may come and go on this machine; ours must not be among them)
    assert not progs & bpftool_ids("prog")
    assert not links & bpftool_ids("link")
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


@pytest.fixture
def cert(tmp_path):
    key, crt = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-keyout", str(key), "-out", str(crt), "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:::1"], check=True, capture_output=True)
    return str(crt), str(key)


def test_tls_on_an_ipv6_literal(bpf_ok, tmp_path, cert):
    crt, key = cert
    port = free_port("::1")
    with Running(tmp_path, "--web.listen-address", f"[::1]:{port}", "--web.tls-cert-file", crt,
                 "--web.tls-key-file", key) as ex:
        assert ex.info["url"] == f"https://[::1]:{port}"
        text = ex.get(context=ssl.create_default_context(cafile=crt))
        assert 'netprobe_skbs_total{device="lo",direction="tx",netns="root",netstage="driver_xmit"}' in text
        assert ex.stop() == 0


def test_flow_filter_and_device_patterns(bpf_ok, tmp_path):
    port = free_port()
    with Running(tmp_path, "--web.listen-address", f"127.0.0.1:{port}", "--proto", "udp",
                 "--device", "l*", "--exclude-device", "eth*") as ex:
        smp = samples(ex.get())
        devs = {s.labels["device"] for s in smp if s.name == "netprobe_skbs_total"}
        assert devs == {"lo"}
        info = next(s for s in smp if s.name == "netprobe_exporter_info")
        assert info.labels["flow_filter"] == "udp"
        assert ex.stop() == 0


def test_ebpf_prints_the_program(bpf_ok):
    env = dict(os.environ, PYTHONPATH=str(ROOT / "pyfront"))
    r = subprocess.run([sys.executable, "-m", "netprobe", "export", "--ebpf", "--proto", "tcp"],
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    # hooks.h writes the programs once for every feature; counting expands them unprefixed
    assert "-DNP_FILTER_PROTO=6" in r.stdout and "int P##driver_xmit__raw_tp" in r.stdout
    assert "NP_TX_HOOKS(, NP_HOOK_ON_SKB" in r.stdout


CAP_NUMBERS = {"net_admin": 12, "sys_ptrace": 19, "sys_admin": 21, "syslog": 34, "perfmon": 38,
               "bpf": 39}


def unit_capabilities() -> list[str]:
    line = next(l for l in UNIT.read_text().splitlines() if l.startswith("CapabilityBoundingSet="))
    return [c.removeprefix("CAP_").lower() for c in line.split("=", 1)[1].split()]


@pytest.mark.skipif(not shutil.which("setpriv"), reason="setpriv (util-linux) not installed")
def test_the_systemd_units_capabilities_are_enough(bpf_ok, tmp_path, veth):
    """Run as systemd would: only the unit's bounding set, no new privileges. Namespaces of
    every owner are found, root is named, symbols resolve, every stage attaches."""
    caps = ",".join(f"+{c}" for c in unit_capabilities())
    prefix = ["setpriv", f"--bounding-set=-all,{caps}", "--inh-caps=-all", "--no-new-privs"]
    port = free_port()
    with Running(tmp_path, "--web.listen-address", f"127.0.0.1:{port}", prefix=prefix) as ex:
        status = Path(f"/proc/{ex.proc.pid}/status").read_text()
        bounding = int(re.search(r"^CapBnd:\s+([0-9a-f]+)$", status, re.M).group(1), 16)
        assert bounding == sum(1 << CAP_NUMBERS[c] for c in unit_capabilities())
        smp = samples(ex.get())
        attached = {s.labels["netstage"]: s.value for s in smp if s.name == "netprobe_stage_attached"}
        assert attached == {s.name: 1 for s in (*STAGES, BY_NAME["drop"])}
        info = {(s.labels["netns"], s.labels["device"]): s.labels for s in smp
                if s.name == "netprobe_device_info"}
        assert info[("root", "lo")]["xmit"] == "loopback_xmit"
        assert info[(veth.a.ns, veth.a.dev)]["xmit"] == "veth_xmit"
        assert ex.stop() == 0


def test_latency_histograms_and_paths_of_a_ping_scrape_promtool_clean(bpf_ok, tmp_path):
    from netprobe.kernel.topology import VethPair
    from netprobe.kernel.traffic import icmp_echo

    with VethPair.create() as pair, \
            Running(tmp_path, "--web.listen-address", f"127.0.0.1:{free_port()}",
                    "--latency") as run:
        run.get()  # the namespaces are picked up at a scrape
        assert icmp_echo(addr="127.0.0.1", count=2, ns=pair.a.path) == 2
        text = run.get()
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    hop = [s for s in fams["netprobe_stage_latency_seconds"].samples
           if s.labels["netns"] == pair.a.ns and s.labels["from"] == "driver_xmit"
           and s.name.endswith("_count") and s.labels["device"] == "lo"]
    assert [(s.labels["device"], s.labels["to"], s.value) for s in hop] == [("lo", "driver_rx", 4)]
    # (the veth pair's own IPv6 router solicitations and MLD reports take paths of their own)
    paths = [s for s in fams["netprobe_paths"].samples if s.labels["netns"] == pair.a.ns
             and "[lo]" in s.labels["path"]]
    assert [(s.labels["end"], s.value) for s in paths] == [("delivered", 4)]
    assert paths[0].labels["path"].startswith("ip_output[lo] > dev_queue_xmit[lo]")
    assert fams["netprobe_latency_sample_one_in"].samples[0].value == 1
    if shutil.which("promtool"):
        r = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True,
                           text=True, timeout=30)
        assert r.returncode == 0 and r.stdout == "" and r.stderr == "", r.stdout + r.stderr
