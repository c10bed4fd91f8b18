"""`netprobe export` given bad input: one clear line, a non-zero exit, no traceback, and all
of it before any probe is compiled (so these need no root and no BPF)."""
import os
import socket
import subprocess
import sys
import time
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


def test_encrypted_key_is_one_line_not_a_passphrase_prompt(tmp_path):
    # issue 10 item 16: OpenSSL asked for the passphrase on the terminal and waited there;
    # run on a terminal of its own, so that a prompt would show (and block)
    import fcntl
    import select
    import termios

    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-keyout", str(key),
                    "-passout", "pass:secret", "-out", str(cert), "-subj", "/CN=netprobe-test",
                    "-days", "1"], check=True, capture_output=True)
    master, slave = os.openpty()

    def own_terminal():
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    env = {"PYTHONPATH": str(ROOT / "pyfront"), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    p = subprocess.Popen([sys.executable, "-m", "netprobe", "export", "--web.tls-cert-file",
                          str(cert), "--web.tls-key-file", str(key)], stdin=slave,
                         stdout=slave, stderr=slave, env=env, start_new_session=True,
                         preexec_fn=own_terminal)
    os.close(slave)
    out = b""
    try:
        deadline = time.monotonic() + 20
        while p.poll() is None and time.monotonic() < deadline:
            if select.select([master], [], [], 0.1)[0]:
                try:
                    out += os.read(master, 4096)
                except OSError:  # EIO: the terminal's last holder has gone
                    break
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pytest.fail(f"still waiting after 20 s: {out!r}")
    finally:
        if p.poll() is None:
            p.kill()
        p.wait()
        os.close(master)
    text = out.decode().replace("\r\n", "\n")
    assert p.returncode == 1
    assert "pass phrase" not in text.lower()
    assert text == (f"netprobe: error: loading TLS key {key}: it is encrypted with a passphrase, "
                    f"which netprobe does not ask for: give it the key decrypted "
                    f"(openssl pkey -in {key} -out KEY.pem), readable by root only\n")
