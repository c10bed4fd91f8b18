"""`netprobe export` given bad input: one clear line, a non-zero exit, no traceback, and all
of it before any probe is compiled (so these need no root and no BPF)."""
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def netprobe(*args):
    env = {"PYTHONPATH": str(ROOT / "pyfront"), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    return subprocess.run([sys.executable, "-m", "netprobe", *args], capture_output=True,
                          text=True, env=env, timeout=60)


def error_line(r) -> str:
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert "Traceback" not in r.stderr
    return lines[-1]


@pytest.mark.parametrize("args, message", [
    (["--web.listen-address", "127.0.0.1"], "has no port"),
    (["--web.listen-address", "::1:9000"], "put an IPv6 address in brackets: [::1]:9000"),
    (["--web.listen-address", "127.0.0.1:70000"], "is not a number from 0 to 65535"),
    (["--web.tls-cert-file", "/nonexistent/cert.pem", "--web.tls-key-file", "/etc/hostname"],
     "Invalid value for '--web.tls-cert-file': File '/nonexistent/cert.pem' does not exist."),
    (["--web.tls-cert-file", "/etc/hostname"], "--web.tls-cert-file and --web.tls-key-file go together"),
    (["--device"], "Option '--device' requires an argument."),
])
def test_usage_errors_exit_2(args, message):
    r = netprobe("export", *args)
    assert r.returncode == 2
    assert message in error_line(r)


def test_port_in_use():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = netprobe("export", "--web.listen-address", f"127.0.0.1:{port}")
    assert r.returncode == 1
    assert r.stderr == f"netprobe: error: listening on 127.0.0.1:{port}: Address already in use\n"


def test_address_not_on_this_host():
    # TEST-NET-1: never assigned to a local interface, and bind() sends nothing
    r = netprobe("export", "--web.listen-address", "192.0.2.1:10435")
    assert r.returncode == 1
    assert r.stderr == "netprobe: error: listening on 192.0.2.1:10435: Cannot assign requested address\n"


def test_unreadable_certificate(tmp_path):
    bad = tmp_path / "cert.pem"
    bad.write_text("-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n")
    r = netprobe("export", "--web.tls-cert-file", str(bad), "--web.tls-key-file", str(bad))
    assert r.returncode == 1
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert r.stderr.startswith(f"netprobe: error: loading TLS certificate {bad} and key {bad}: ")


def test_bad_flow_filter():
    r = netprobe("export", "--proto", "icmp", "--port", "53")
    assert r.returncode == 1
    assert error_line(r) == "netprobe: error: --port cannot be combined with --proto icmp"


def test_help_documents_the_default_address_and_flags():
    r = netprobe("export", "--help")
    assert r.returncode == 0
    for text in ("--web.listen-address", "127.0.0.1:10435", "--web.tls-cert-file",
                 "--web.tls-key-file", "--device", "--exclude-device", "--proto", "--ebpf"):
        assert text in r.stdout
    assert "--ready-file" not in r.stdout
