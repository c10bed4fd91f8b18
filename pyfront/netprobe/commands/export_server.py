"""`netprobe export`: attach, then serve /metrics. The kernel is read only when Prometheus
asks: each scrape refreshes the device list (dropping the rows of vanished devices) and reads
the counts map; nothing is polled in the background, cached or reset.

Run sequence: check the TLS files → bind the listen address → attach the probes → serve →
on Ctrl-C or SIGTERM stop serving, then detach everything.
"""
from __future__ import annotations

import importlib.metadata
import platform
import socket
import socketserver
import ssl
import sys
import threading
import time
from socketserver import ThreadingMixIn
from typing import Callable, Sequence
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from prometheus_client import CollectorRegistry, ProcessCollector, make_wsgi_app

from .. import __version__
from ..kernel import linkstats
from .cli_options import write_ready_file
from ..errors import NetprobeError, one_line
from ..render.exporter import (READ_OPERATIONS, BuildInfo, Scrape, families, format_address,
                               landing_page, stable_netns_names)
from ..model.flowfilter import FlowFilter
from ..kernel.facts import Kernel, require_root, require_trusted_layouts
from ..render.report import DeviceSelector
from ..model.stagestate import to_json as state_json, unavailable

# A scraper that stops talking (or never finishes a TLS handshake) gives up its thread after this.
CONNECTION_TIMEOUT_S = 30
# The listen queue: socketserver's default of 5 overflowed with 16 scrapers at once (each SYN
# dropped costs the client a 1 s retransmit: p99 1.09 s) and lost 2,763 of 10,000 connects.
# The kernel caps it at net.core.somaxconn (4096 by default since Linux 5.4), as Go servers ask.
LISTEN_BACKLOG = 4096
# Connections served at once, a thread each; more wait in the listen queue, not as threads.
# Scrapes take turns on the maps anyway (SessionCollector), so more would only add threads.
MAX_CONNECTIONS = 64


class SessionCollector:
    """A prometheus_client collector over a ProbeSession. Scrapes may overlap (one thread per
    request); they take turns, so each sees one consistent refresh + read."""

    def __init__(self, session, build: BuildInfo, selector: DeviceSelector = DeviceSelector(),
                 warn: Callable[[str], None] = lambda msg: None, latency: bool = False):
        self.session = session
        self.latency = latency  # the session follows skbs too (--latency)
        self.build = build
        self.selector = selector
        self._warn = warn
        self._lock = threading.Lock()
        self._netns_names: dict[int, str] = {}
        self._errors = {op: 0 for op in READ_OPERATIONS}

    def stages(self):
        states = self.session.states
        return [states.get(s.name) or unavailable(s) for s in self.session.stages]

    def scrape(self) -> Scrape:
        with self._lock:
            start = time.monotonic()
            # a failed scrape (a map read, a namespace that vanished mid-walk) is counted and
            # reported, never fatal
            try:
                self.session.refresh()
            except Exception as e:
                self._errors["refresh"] += 1
                self._warn(f"refreshing devices: {one_line(e)}")
            counts = latency = None
            try:
                counts = self.session.read()
                if self.latency:
                    latency = self.session.read_latency()
            except Exception as e:
                self._errors["read"] += 1
                self._warn(f"reading the counts map: {one_line(e)}")
            drops = link_drops = None
            if getattr(self.session, "counts_drops", False):  # a session of the drops set
                try:
                    drops = self.session.read_drops()
                except Exception as e:
                    self._errors["read"] += 1
                    self._warn(f"reading the drops map: {one_line(e)}")
                link_drops = linkstats.read(self.session.namespaces.values())
                for why in link_drops.errors.values():
                    self._warn(f"reading the devices' drop counters: {why}")
            self._netns_names = stable_netns_names(
                self._netns_names, {ns.inum: ns.name for ns in self.session.namespaces.values()})
            return Scrape(counts, dict(self.session.devices), dict(self._netns_names),
                          self.stages(), dict(self._errors), time.monotonic() - start,
                          self.session.netfilter_unattached(), drops, link_drops,
                          self.session.unlisted_netns(), latency)

    def collect(self):
        scrape = self.scrape()
        fams = families(scrape, self.build, self.selector)
        if scrape.latency is not None:
            from ..render.latexport import latency_families
            from ..render.latreport import Names

            fams += latency_families(scrape.latency, Names(scrape.devices, scrape.netns_names),
                                     scrape.netns_names, self.selector)
        return fams


def build_info(flow: FlowFilter) -> BuildInfo:
    # from the package's metadata: importing bcc would map libbcc and LLVM into the exporter,
    # which leaves compiling to a child process (loader.py) so as never to hold them
    try:
        bcc_version = importlib.metadata.version("bcc")
    except importlib.metadata.PackageNotFoundError:
        bcc_version = "none"
    return BuildInfo(__version__, platform.python_version(), bcc_version, platform.release(),
                     flow.describe())


# -- HTTP ------------------------------------------------------------------------------------
class _Handler(WSGIRequestHandler):
    timeout = CONNECTION_TIMEOUT_S

    def log_message(self, format, *args):  # no access log: Prometheus scrapes every few seconds
        pass


class _Once:
    """A call made at most once, whoever calls it first"""

    def __init__(self, fn):
        self._fn, self._lock, self._done = fn, threading.Lock(), False

    def __call__(self) -> None:
        with self._lock:
            if self._done:
                return
            self._done = True
        self._fn()


class MetricsServer(ThreadingMixIn, WSGIServer):
    """wsgiref's server, one thread per connection up to MAX_CONNECTIONS, with a listen queue
    that holds a fleet's scrapers, per-connection TLS (the handshake runs in the connection's
    thread, so a slow client cannot hold up accept()) and without HTTPServer's getfqdn(),
    which may send a DNS query about the listen address."""
    daemon_threads = True
    request_queue_size = LISTEN_BACKLOG

    def __init__(self, host: str, port: int, tls: ssl.SSLContext | None = None):
        self.tls = tls
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self._releases: dict[int, _Once] = {}  # id(request) -> its slot's release
        family, sockaddr = _resolve(host, port)
        self.address_family = family
        self._dual_stack = family == socket.AF_INET6 and host == ""
        try:
            super().__init__(sockaddr, _Handler)
        except OSError as e:
            raise NetprobeError(f"listening on {format_address(host, port)}: "
                                f"{e.strerror or e}") from None
        self.set_app(_not_ready)

    def server_bind(self):
        if self._dual_stack:
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]
        self.setup_environ()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        shown = {"::": "::1", "0.0.0.0": "127.0.0.1"}.get(host, host)  # where a local client goes
        return f"{'https' if self.tls else 'http'}://{format_address(shown, port)}"

    def process_request(self, request, client_address):
        self._slots.acquire()  # all busy: accept() waits, and the kernel queues the rest
        # the slot goes back once: by the request's thread when it ends, or here when the
        # thread never started. A signal's exception can come after the thread started, and a
        # second release raised "Semaphore released too many times" at Ctrl-C
        release = _Once(self._slots.release)
        self._releases[id(request)] = release
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._releases.pop(id(request), None)
            release()
            raise

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            release = self._releases.pop(id(request), None)
            if release is not None:
                release()

    def finish_request(self, request, client_address):
        if self.tls is None:
            return super().finish_request(request, client_address)
        request.settimeout(CONNECTION_TIMEOUT_S)
        try:
            conn = self.tls.wrap_socket(request, server_side=True)
        except (OSError, ssl.SSLError):
            return  # a failed handshake concerns only that client
        try:
            super().finish_request(conn, client_address)
        finally:
            conn.close()

    def handle_error(self, request, client_address):
        e = sys.exc_info()[1]
        if isinstance(e, (ConnectionError, TimeoutError, ssl.SSLError)):
            return  # the scraper went away; nothing to fix here
        print(f"netprobe export: serving {client_address[0]}: {type(e).__name__}: "
              f"{one_line(e)}", file=sys.stderr)


def _resolve(host: str, port: int) -> tuple[int, tuple]:
    if host == "":
        return (socket.AF_INET6, ("::", port)) if socket.has_ipv6 and _ipv6_enabled() \
            else (socket.AF_INET, ("0.0.0.0", port))
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise NetprobeError(f"listening on {format_address(host, port)}: {e.strerror}") from None
    family, _, _, _, sockaddr = infos[0]
    return family, sockaddr


def _ipv6_enabled() -> bool:
    try:
        socket.socket(socket.AF_INET6, socket.SOCK_STREAM).close()
        return True
    except OSError:
        return False


def _not_ready(environ, start_response):
    start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
    return [b"netprobe is attaching its probes\n"]


def make_app(registry: CollectorRegistry, landing: bytes):
    metrics = make_wsgi_app(registry)

    def app(environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            return metrics(environ, start_response)
        if path == "/":
            start_response("200 OK", [("Content-Type", "text/html; charset=utf-8")])
            return [landing]
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found: see /metrics\n"]

    return app


def tls_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    def no_passphrase():
        # without a password callback OpenSSL asks for the passphrase on the terminal, and a
        # service waits there forever; the callback runs only for an encrypted key
        raise NetprobeError(f"loading TLS key {key_file}: it is encrypted with a passphrase, "
                            f"which netprobe does not ask for: give it the key decrypted "
                            f"(openssl pkey -in {key_file} -out KEY.pem), readable by root only")

    try:
        ctx.load_cert_chain(cert_file, key_file, password=no_passphrase)
    except ssl.SSLError as e:  # a subclass of OSError: first
        raise NetprobeError(f"loading TLS certificate {cert_file} and key {key_file}: not a PEM "
                            f"certificate and its matching private key"
                            + (f" ({e.reason})" if e.reason else "")) from None
    except OSError as e:
        raise NetprobeError(f"loading TLS certificate {cert_file} and key {key_file}: "
                            f"{e.strerror or e}") from None
    return ctx


def run_export(*, host: str, port: int, flow: FlowFilter, selector: DeviceSelector,
               prefer: Sequence[str], tls_cert: str | None, tls_key: str | None,
               ready_file: str | None, sets: Sequence = (), sample: int = 1) -> None:
    tls = tls_context(tls_cert, tls_key) if tls_cert else None
    # bind before the (slower) attach, so a taken port is reported at once
    server = MetricsServer(host, port, tls)
    try:
        require_root()
        kernel = Kernel()
        require_trusted_layouts(kernel)
        from ..model.programsets import COUNTING, DROPS, LATENCY
        from ..kernel.session import ProbeSession

        with ProbeSession(flow=flow, prefer=prefer, sets=sets or (COUNTING, DROPS),
                          sample=sample, kernel=kernel) as session:
            if not any(st.attached for st in session.states.values()):
                raise NetprobeError("no stage could be attached on this kernel: run `netprobe doctor`")
            collector = SessionCollector(
                session, build_info(flow), selector,
                warn=lambda msg: print(f"netprobe export: scrape: {msg}", file=sys.stderr),
                latency=LATENCY in session.sets)
            registry = CollectorRegistry(auto_describe=False)
            registry.register(collector)
            ProcessCollector(registry=registry)
            server.set_app(make_app(registry, landing_page(collector.build, collector.stages())))
            for w in session.warnings:
                print(f"netprobe export: ! {w}", file=sys.stderr)
            write_ready_file(ready_file, {"url": server.url, "stages": {
                name: state_json(st) for name, st in session.states.items()}})
            print(f"Serving {server.url}/metrics ... Ctrl-C to end.", file=sys.stderr, flush=True)
            try:
                server.serve_forever()
            except KeyboardInterrupt:
                pass
            finally:
                server.server_close()  # no new scrape starts while the probes detach
    finally:
        server.server_close()
