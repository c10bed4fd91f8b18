"""Bad input: one clear line and a non-zero exit, never a traceback."""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def netprobe(*args):
    cmd = [sys.executable, "-m", "netprobe", *args]
    env = {"PYTHONPATH": str(ROOT / "pyfront"), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)


@pytest.mark.parametrize("args, needle", [
    (["watch", "--port", "0"], "--port must be 1-65535"),
    (["watch", "--host", "not-an-ip"], "--host must be an IPv4 or IPv6 address"),
    (["watch", "--proto", "sctp"], "Invalid value for '--proto'"),
    (["watch", "--interval", "-1"], "Invalid value for '-i' / '--interval'"),
    (["nosuchcommand"], "No such command"),
])
def test_bad_arguments(args, needle):
    r = netprobe(*args)
    assert r.returncode != 0
    assert needle in r.stderr
    assert "Traceback" not in r.stderr


def test_not_root_is_one_line(monkeypatch, capsys):
    from netprobe.commands import cli

    monkeypatch.setattr("os.geteuid", lambda: 1000)
    monkeypatch.setattr(sys, "argv", ["netprobe", "watch", "--once"])
    with pytest.raises(SystemExit) as exit:
        cli.main()
    assert exit.value.code == 1
    err = capsys.readouterr().err
    assert err.strip() == "netprobe: error: netprobe loads BPF programs and needs root: run it with sudo"


def test_help_lists_commands():
    r = netprobe("--help")
    assert r.returncode == 0
    for c in ("watch", "doctor", "export", "prove"):
        assert c in r.stdout
