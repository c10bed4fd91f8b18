"""End to end: `netprobe export` scraped every second by a real Prometheus (Debian's
/usr/bin/prometheus, its own config and storage in a temp dir, on 127.0.0.1), checked through
Prometheus's query API against loopback and veth traffic and the kernel's own counters."""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from netprobe.kernel.topology import VethPair, link_stats
from netprobe.kernel.traffic import tcp_flow, udp_flow

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
DASHBOARD = ROOT / "packaging" / "grafana" / "netprobe-dashboard.json"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url: str, timeout: float = 10) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        assert r.status == 200
        return r.read().decode()


def stop(p: subprocess.Popen, sig=signal.SIGTERM, timeout=20) -> None:
    if p.poll() is None:
        p.send_signal(sig)
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(10)


class Exporter:
    def __init__(self, tmp: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ready = tmp / "exporter-ready"
        self.log = open(tmp / "exporter.log", "w+")
        env = dict(os.environ, PYTHONPATH=str(ROOT / "pyfront"))
        self.proc = subprocess.Popen(
            # --latency: the dashboard's latency row is checked against real metrics too
            [sys.executable, "-m", "netprobe", "export", "--web.listen-address",
             f"127.0.0.1:{self.port}", "--ready-file", str(self.ready), "--latency"],
            stdout=self.log, stderr=subprocess.STDOUT, env=env)

    def wait_ready(self, timeout=60):
        deadline = time.time() + timeout
        while not self.ready.exists():
            if self.proc.poll() is not None or time.time() > deadline:
                pytest.fail(f"netprobe export did not become ready: {self.output()}")
            time.sleep(0.05)

    def output(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def metrics(self) -> str:
        return http_get(self.url + "/metrics")


class Prometheus:
    def __init__(self, tmp: Path, target: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        (tmp / "prometheus.yml").write_text(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n"
            "scrape_configs:\n  - job_name: netprobe\n    static_configs:\n"
            f"      - targets: ['{target}']\n")
        self.log = open(tmp / "prometheus.log", "w+")
        self.proc = subprocess.Popen(
            [PROMETHEUS, f"--config.file={tmp / 'prometheus.yml'}",
             f"--storage.tsdb.path={tmp / 'data'}", f"--web.listen-address=127.0.0.1:{self.port}",
             "--log.level=warn"], stdout=self.log, stderr=subprocess.STDOUT, cwd=tmp)

    def api(self, path: str, **params):
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            body = json.loads(http_get(url))
        except urllib.error.HTTPError as e:  # a bad query: show Prometheus's reason
            pytest.fail(f"{params}: {e.code} {e.read().decode()}")
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list:
        return self.api("query", query=expr)["result"]

    def scalar(self, expr: str) -> float | None:
        r = self.query(expr)
        return float(r[0]["value"][1]) if r else None

    def wait(self, expr: str, ok, timeout=30, what=""):
        deadline = time.time() + timeout
        v = None
        while time.time() < deadline:
            v = self.scalar(expr)
            if v is not None and ok(v):
                return v
            time.sleep(0.5)
        pytest.fail(f"{what or expr}: last value {v}")

    def wait_up(self, timeout=60):
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                targets = self.api("targets")["activeTargets"]
                if targets and targets[0]["health"] == "up":
                    return
            except OSError:
                pass
            if self.proc.poll() is not None:
                break
            time.sleep(0.3)
        self.log.seek(0)
        pytest.fail(f"Prometheus never scraped the exporter: {self.log.read()[-2000:]}")


@pytest.fixture(scope="module")
def stack(bpf_ok, tmp_path_factory):
    if not os.access(PROMETHEUS, os.X_OK):
        pytest.fail(f"{PROMETHEUS} missing: apt-get install prometheus")
    tmp = tmp_path_factory.mktemp("export-e2e")
    exporter = Exporter(tmp)
    prom = None
    try:
        exporter.wait_ready()
        prom = Prometheus(tmp, f"127.0.0.1:{exporter.port}")
        prom.wait_up()
        yield exporter, prom
    finally:
        if prom is not None:
            stop(prom.proc)
        stop(exporter.proc)
    assert exporter.proc.returncode == 0, exporter.output()
    assert "Traceback" not in exporter.output()


def series(text: str) -> dict:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def test_promtool_check_metrics_reports_nothing_on_a_real_scrape(stack):
    exporter, _ = stack
    text = exporter.metrics()
    assert "netprobe_skbs_total{" in text
    r = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True,
                       text=True, timeout=30)
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")


def test_loopback_driver_xmit_rate_is_positive(stack):
    _, prom = stack
    expr = 'rate(netprobe_skbs_total{netns="root",device="lo",netstage="driver_xmit"}[10s])'
    port = free_port()
    deadline = time.time() + 3
    while time.time() < deadline:  # a few seconds of traffic, so several scrapes see it grow
        assert udp_flow(server_addr="127.0.0.1", port=port, count=100) >= 95
        time.sleep(0.2)
    assert prom.wait(expr, lambda v: v > 0, what="lo driver_xmit rate") > 0
    assert prom.scalar('netprobe_device_info{netns="root",device="lo"}') == 1
    assert prom.query('netprobe_device_info{netns="root",device="lo",driver="loopback",kind="virtual"}')


def latest(prom: Prometheus, expr: str, since: float, until: float) -> float | None:
    """The newest raw sample of `expr` scraped between two wall-clock times."""
    rows = prom.query(f"{expr}[15s]")
    assert len(rows) <= 1, rows
    if not rows:
        return None
    inside = [float(v) for ts, v in rows[0]["values"] if since <= float(ts) <= until]
    return inside[-1] if inside else None


def test_veth_series_match_the_kernels_own_counters(stack):
    _, prom = stack
    port = free_port()
    with VethPair.create() as pair:
        a, b = pair.a, pair.b
        tx = f'{{netns="{a.ns}",device="{a.dev}",netstage="driver_xmit"}}'
        rx = f'{{netns="{b.ns}",device="{b.dev}",netstage="driver_rx"}}'
        # the new devices appear by themselves at a scrape, with zeros before any traffic
        prom.wait(f"netprobe_skbs_total{tx}", lambda v: v >= 0, what="veth series")
        assert prom.query(f'netprobe_device_info{{netns="{a.ns}",device="{a.dev}",driver="veth",xmit="veth_xmit"}}')
        got = udp_flow(server_addr=b.addr4, port=port, count=300, size=200,
                       server_ns=b.path, client_ns=a.path)
        assert got >= 295
        assert tcp_flow(server_addr=b.addr6, port=port, nbytes=300_000, server_ns=b.path,
                        client_ns=a.path) == 300_000
        # Compare in a quiet moment: kernel counters read twice around a scrape and unchanged
        # in between (IPv6 neighbour/MLD chatter on a fresh link comes and goes).
        deadline, last = time.time() + 40, None
        while time.time() < deadline:
            t0, k0 = time.time(), (link_stats(a.dev, a.ns), link_stats(b.dev, b.ns))
            time.sleep(2.2)
            k1, t1 = (link_stats(a.dev, a.ns), link_stats(b.dev, b.ns)), time.time()
            if k0 != k1:
                continue
            ka, kb = k0
            last = {
                "tx packets": (latest(prom, f"netprobe_skbs_total{tx}", t0, t1), ka["tx_packets"]),
                "tx bytes": (latest(prom, f"netprobe_skb_bytes_total{tx}", t0, t1), ka["tx_bytes"]),
                "peer rx packets": (latest(prom, f"netprobe_skbs_total{rx}", t0, t1), kb["rx_packets"]),
            }
            if all(ours == theirs for ours, theirs in last.values()):
                break
        else:
            pytest.fail(f"exporter (via Prometheus) vs ip -s link never agreed: {last}")
        assert last["tx packets"][1] >= 300 + 300_000 // 65536  # our traffic is in there
        rate = prom.wait(f"rate(netprobe_skbs_total{tx}[30s])", lambda v: v > 0)
        assert rate > 0
    # gone with the namespaces: the next scrapes no longer have them
    prom.wait(f'count(netprobe_device_info{{netns="{a.ns}"}}) or vector(0)', lambda v: v == 0,
              what="vanished devices still exported")


def test_counters_never_decrease_and_scrapes_survive_device_churn(stack):
    exporter, prom = stack
    started = time.time()
    errors: list[BaseException] = []
    done = threading.Event()

    def churn():
        try:
            for _ in range(6):
                with VethPair.create() as pair:
                    udp_flow(server_addr=pair.b.addr4, port=9, count=20,
                             server_ns=pair.b.path, client_ns=pair.a.path)
                    time.sleep(0.2)
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            errors.append(e)
        finally:
            done.set()

    t = threading.Thread(target=churn)
    t.start()
    scrapes, before, decreased = 0, {}, []
    try:
        while not done.is_set() or scrapes < 10:
            now = series(exporter.metrics())  # raises (and fails) on anything but 200
            scrapes += 1
            for key, v in now.items():
                if key[0].endswith("_total") and key in before and v < before[key]:
                    decreased.append((key, before[key], v))
            before = now
            time.sleep(0.05)
    finally:
        t.join(120)
    assert not errors, errors
    assert not decreased, decreased[:5]
    assert scrapes >= 10
    # and as Prometheus saw it: every scrape succeeded, no counter ever reset
    window = f"{int(time.time() - started) + 5}s"
    time.sleep(1.5)
    assert prom.scalar(f'min_over_time(up{{job="netprobe"}}[{window}])') == 1
    for counter in ("netprobe_skbs_total", "netprobe_skb_bytes_total", "netprobe_l4_send_calls_total",
                    "netprobe_l4_send_bytes_total", "netprobe_map_full_drops_total"):
        assert prom.scalar(f"sum(resets({counter}[{window}]))") == 0, counter
    assert prom.scalar("sum(netprobe_map_read_errors_total)") == 0


def test_every_dashboard_query_runs_on_prometheus_over_real_metrics(stack):
    exporter, prom = stack
    d = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in d["panels"] for t in p.get("targets", [])]
    text = exporter.metrics()
    # a family with no sample yet (netprobe_netns_unprobed, when every namespace is probed)
    # is still declared, by its HELP and TYPE lines
    names = {key[0] for key in series(text)}
    families = list(text_string_to_metric_families(text))
    names |= {f.name for f in families}
    names |= {f.name + "_total" for f in families if f.type == "counter"}  # declared, no sample
    names |= {n[:-len("_total")] for n in names if n.endswith("_total")}
    for e in exprs:
        q = e.replace("$__rate_interval", "10s").replace("$__range", "1m")
        q = re.sub(r"\$\w+", ".*", q)
        prom.query(q)  # status "success", or the assertion in api() fails
        for metric in re.findall(r"\b((?:netprobe|process)_[a-z_]+)\b", e):
            assert metric in names, f"{metric} in the dashboard but not in /metrics"
    # the panels that matter have data (Prometheus's own scrapes are loopback traffic)
    prom.wait('count(sum by (netstage) (rate(netprobe_skbs_total{netns=~".*", device=~".*", direction="tx"}[10s])))',
              lambda v: v == 3, what="tx path panel")
    assert prom.scalar('sum(netprobe_stage_attached) / count(netprobe_stage_attached)') == 1
