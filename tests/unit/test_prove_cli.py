"""`netprobe prove` / `netprobe peer` on the command line without BPF: bad input is one line and a
non-zero exit; `peer` echoes TCP and UDP on loopback and exits 0 on SIGTERM and Ctrl-C."""
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from netprobe.commands.peer import EchoServer
from netprobe.kernel.traffic import tcp_echo, udp_echo

ROOT = Path(__file__).resolve().parents[2]
ENV = {"PYTHONPATH": str(ROOT / "pyfront"), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
PORT = 47311


def netprobe(*args):
    return subprocess.run([sys.executable, "-m", "netprobe", *args], capture_output=True,
                          text=True, env=ENV, timeout=60)


@pytest.mark.parametrize("args, code, needle", [
    (["prove", "--peer", "not-an-ip"], 1, "netprobe: error: --peer must be an IPv4 or IPv6 address, not 'not-an-ip'"),
    (["prove", "--peer-port", "7"], 2, "--peer-port and --peer-proto need --peer"),
    (["prove", "--peer", "::1", "--peer-port", "0"], 2, "Invalid value for '--peer-port'"),
    (["prove", "--peer", "::1", "--peer-proto", "sctp"], 2, "Invalid value for '--peer-proto'"),
    (["prove", "--prefer", "kfunc"], 2, "Invalid value for '--prefer'"),
    (["peer", "--listen", "localhost"], 1, "netprobe: error: --listen must be an IPv4 or IPv6 address, not 'localhost'"),
    (["peer", "--port", "70000"], 2, "Invalid value for '--port'"),
])
def test_bad_input_is_one_clear_line(args, code, needle):
    r = netprobe(*args)
    assert r.returncode == code
    assert needle in r.stderr
    assert "Traceback" not in r.stderr


def test_prove_needs_root_and_says_so_in_one_line(monkeypatch, capsys):
    from netprobe.commands import cli

    monkeypatch.setattr("os.geteuid", lambda: 1000)
    monkeypatch.setattr(sys, "argv", ["netprobe", "prove"])
    with pytest.raises(SystemExit) as exit:
        cli.main()
    assert exit.value.code == 1
    assert capsys.readouterr().err.strip() == (
        "netprobe: error: netprobe loads BPF programs and needs root: run it with sudo")


def test_port_in_use_is_one_line():
    with EchoServer("127.0.0.1", PORT):
        r = netprobe("peer", "--listen", "127.0.0.1", "--port", str(PORT))
    assert r.returncode == 1
    assert r.stderr.strip() == f"netprobe: error: listening on 127.0.0.1:{PORT}/tcp: Address already in use"


def test_echo_server_answers_tcp_and_udp_over_ipv4_and_ipv6_when_dual_stack():
    with EchoServer("::", PORT) as s:
        assert s.describe() == f"TCP and UDP echo on [::]:{PORT} (IPv4 and IPv6)"
        for addr in ("127.0.0.1", "::1"):
            assert tcp_echo(server_addr=addr, port=PORT, nbytes=300_000, chunk=4096) == 300_000
            assert udp_echo(server_addr=addr, port=PORT, count=20, size=512) == (20, 20)


def test_udp_echo_gives_up_quickly_on_a_peer_that_does_not_answer_udp():
    t0 = time.monotonic()
    sent, echoed = udp_echo(server_addr="127.0.0.1", port=PORT, count=100, timeout=0.2)
    assert (sent, echoed) == (3, 0)
    assert time.monotonic() - t0 < 2


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_peer_command_echoes_until_a_signal_then_exits_0(tmp_path, sig):
    ready = tmp_path / "ready"
    p = subprocess.Popen([sys.executable, "-m", "netprobe", "peer", "--listen", "::1", "--port",
                          str(PORT), "--ready-file", str(ready)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        deadline = time.monotonic() + 20
        while not ready.exists():
            assert p.poll() is None and time.monotonic() < deadline, p.stderr.read()
            time.sleep(0.02)
        assert tcp_echo(server_addr="::1", port=PORT, nbytes=10_000) == 10_000
        assert udp_echo(server_addr="::1", port=PORT, count=5) == (5, 5)
        time.sleep(0.3)  # the server logs the connection once it has seen the client close
    finally:
        p.send_signal(sig)
        out, err = p.communicate(timeout=10)
    assert p.returncode == 0, err
    assert err == ""
    first, log = out.splitlines()
    assert first == f"netprobe peer: TCP and UDP echo on [::1]:{PORT} (IPv6). Ctrl-C to end."
    assert log.startswith("netprobe peer: tcp [::1]:") and log.endswith(": echoed 10,000 bytes")
