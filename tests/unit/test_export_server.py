"""The exporter's HTTP side and its collector, over a fake session: no kernel, loopback only."""
import shutil
import socket
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
from contextlib import contextmanager

import pytest
from prometheus_client import CollectorRegistry

from netprobe.model.catalogue import STAGES
from netprobe.model.devices import Device
from netprobe.errors import NetprobeError
from netprobe.commands.export_server import (MAX_CONNECTIONS, MetricsServer, SessionCollector,
                                             make_app, tls_context)
from netprobe.render.exporter import BuildInfo
from netprobe.kernel.netns import Netns
from netprobe.model.counting import Counts
from netprobe.model.stagestate import StageState

ROOT_NS = 4026531840
BUILD = BuildInfo("0.1.0", "3.11.2", "0.26.0", "6.18.0", "all traffic")


class FakeSession:
    """What SessionCollector uses of a ProbeSession: states, stages, namespaces, devices,
    refresh(), read() and netfilter_unattached(). Each read counts one more packet on lo."""

    def __init__(self, fail_refresh=False, fail_read=False):
        self.stages = STAGES
        self.states = {s.name: StageState(s, "raw_tracepoint") for s in STAGES}
        self.namespaces = {ROOT_NS: Netns(ROOT_NS, "/proc/1/ns/net", "root")}
        self.devices = {}
        self.fail_refresh, self.fail_read = fail_refresh, fail_read
        self.packets = 0
        self.in_use = 0
        self.overlapped = False

    def unlisted_netns(self):
        return []

    def netfilter_unattached(self):
        return []

    def refresh(self):
        self.in_use += 1
        self.overlapped |= self.in_use > 1
        try:
            if self.fail_refresh:
                raise Exception("listing devices of netns root: No such device")
            lo = Device(ROOT_NS, 1, "lo", "loopback", False, "loopback_xmit", 0xA1, "root")
            self.devices = {lo.key: lo}
        finally:
            self.in_use -= 1

    def read(self):
        if self.fail_read:
            raise KeyError("counts")
        self.packets += 1
        return Counts(0.0, {(ROOT_NS, 1, "driver_xmit"): (self.packets, 100 * self.packets)}, 0)


def lo_packets(fams):
    for f in fams:
        for s in f.samples:
            if s.name == "netprobe_skbs_total" and s.labels["netstage"] == "driver_xmit":
                return s.value
    return None


def errors(fams):
    return {s.labels["operation"]: s.value for f in fams for s in f.samples
            if s.name == "netprobe_map_read_errors_total"}


def test_collector_refreshes_then_reads_at_every_scrape():
    s = FakeSession()
    c = SessionCollector(s, BUILD)
    assert lo_packets(c.collect()) == 1
    assert lo_packets(c.collect()) == 2
    assert errors(c.collect()) == {"refresh": 0, "read": 0}


def test_failed_reads_are_counted_and_reported_not_raised():
    warnings = []
    s = FakeSession(fail_refresh=True, fail_read=True)
    c = SessionCollector(s, BUILD, warn=warnings.append)
    c.collect()
    fams = c.collect()
    assert errors(fams) == {"refresh": 2, "read": 2}
    assert lo_packets(fams) is None
    assert warnings[0] == "refreshing devices: listing devices of netns root: No such device"
    assert warnings[1] == "reading the counts map: 'counts'"


def test_overlapping_scrapes_take_turns():
    s = FakeSession()
    c = SessionCollector(s, BUILD)
    seen = []

    def scrape():
        for _ in range(50):
            seen.append(lo_packets(c.collect()))

    threads = [threading.Thread(target=scrape) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not s.overlapped
    assert sorted(seen) == list(range(1, 401))  # every scrape saw its own, whole read


@contextmanager
def serving(host="127.0.0.1", tls=None):
    server = MetricsServer(host, 0, tls)
    reg = CollectorRegistry(auto_describe=False)
    reg.register(SessionCollector(FakeSession(), BUILD))
    server.set_app(make_app(reg, b"<html>netprobe</html>"))
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def get(url, context=None):
    try:
        with urllib.request.urlopen(url, timeout=10, context=context) as r:
            return r.status, r.headers.get("Content-Type"), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type"), e.read().decode()


def test_serves_metrics_landing_page_and_404():
    with serving() as server:
        status, ctype, body = get(server.url + "/metrics")
        assert status == 200 and ctype.startswith("text/plain; version=0.0.4")
        assert 'netprobe_skbs_total{device="lo",direction="tx",netns="root",netstage="driver_xmit"} 1.0' in body
        assert get(server.url + "/")[:2] == (200, "text/html; charset=utf-8")
        assert get(server.url + "/nope")[0] == 404


def test_serves_ipv6_literal():
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    with serving("::1") as server:
        assert server.url.startswith("http://[::1]:")
        assert get(server.url + "/metrics")[0] == 200


def test_port_in_use_is_one_line():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(NetprobeError, match=rf"^listening on 127.0.0.1:{port}: Address already in use$"):
            MetricsServer("127.0.0.1", port)


@pytest.fixture
def cert(tmp_path):
    if not shutil.which("openssl"):
        pytest.skip("openssl not installed")
    key, crt = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-keyout", str(key), "-out", str(crt), "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    return str(crt), str(key)


def test_tls(cert):
    crt, key = cert
    with serving(tls=tls_context(crt, key)) as server:
        assert server.url.startswith("https://127.0.0.1:")
        ctx = ssl.create_default_context(cafile=crt)
        status, _, body = get(server.url + "/metrics", ctx)
        assert status == 200 and "netprobe_build_info" in body
        # a client that speaks plain HTTP to it gets nothing, and the server carries on
        with pytest.raises((urllib.error.URLError, ConnectionError)):
            get(server.url.replace("https", "http") + "/metrics")
        assert get(server.url + "/metrics", ctx)[0] == 200


def test_tls_with_a_bad_key_is_one_line(cert, tmp_path):
    crt, _ = cert
    bad = tmp_path / "bad.pem"
    bad.write_text("not a key\n")
    with pytest.raises(NetprobeError, match="not a PEM certificate and its matching private key"):
        tls_context(crt, str(bad))


def _http_get(port: int, path: str = "/metrics", timeout: float = 20) -> tuple[float, bytes]:
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        connected = time.monotonic() - t0
        s.sendall(f"GET {path} HTTP/1.0\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return connected, data


def test_listen_queue_holds_a_fleet_of_scrapers():
    # issue 10 item 13: socketserver's default backlog of 5 overflowed with 16 scrapers
    with serving() as server:
        port = server.server_address[1]
        out = subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True,
                             text=True, check=True).stdout.split()
        assert int(out[2]) >= 128  # a listening socket's Send-Q is its backlog


def test_64_concurrent_scrapes_are_all_answered_without_a_syn_retry():
    with serving() as server:
        port = server.server_address[1]
        results, barrier = [], threading.Barrier(64)

        def client():
            barrier.wait()
            results.append(_http_get(port))

        threads = [threading.Thread(target=client) for _ in range(64)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert len(results) == 64
    assert all(data.startswith(b"HTTP/1.0 200") and b"netprobe_build_info" in data
               for _, data in results)
    # a dropped SYN is retried after 1 s: every connect well under that
    assert max(connected for connected, _ in results) < 0.9


def test_connections_served_at_once_are_bounded():
    release = threading.Event()
    busy = []

    def slow_app(environ, start_response):
        busy.append(1)
        release.wait(20)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok\n"]

    server = MetricsServer("127.0.0.1", 0)
    server.set_app(slow_app)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    n = MAX_CONNECTIONS + 36
    results = []
    clients = [threading.Thread(target=lambda: results.append(_http_get(port, "/")))
               for _ in range(n)]
    try:
        threads_before = threading.active_count()
        for t in clients:
            t.start()
        deadline = time.monotonic() + 10
        while len(busy) < MAX_CONNECTIONS and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.3)
        assert len(busy) == MAX_CONNECTIONS  # the rest wait in the listen queue
        assert threading.active_count() - threads_before <= n + MAX_CONNECTIONS
        release.set()
        for t in clients:
            t.join(30)
    finally:
        release.set()
        server.shutdown()
        server.server_close()
    assert len(results) == n and all(d.endswith(b"ok\n") for _, d in results)
