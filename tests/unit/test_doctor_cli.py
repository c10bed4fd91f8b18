"""`netprobe doctor` without privilege (issue 10, item 16): what it can see, then one line
that says it needs root; never a PermissionError. Run as an unprivileged user (setpriv
when the tests run as root)."""
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] if os.geteuid() == 0 else []


def doctor(*args):
    env = {"PYTHONPATH": str(ROOT / "pyfront"), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    return subprocess.run([*NOBODY, sys.executable, "-m", "netprobe", "doctor", *args],
                          capture_output=True, text=True, env=env, timeout=60, cwd="/")


def test_doctor_without_root_says_needs_root_in_one_line():
    r = doctor()
    assert r.returncode == 1
    assert r.stderr == ("netprobe: doctor loads and attaches BPF programs and needs root: "
                        "run it with sudo\n")
    assert "NO  root" in r.stdout
    # tracefs is root's: not readable is not "not mounted"
    assert "not mounted" not in r.stdout


def test_doctor_json_without_root_is_json_on_stdout():
    r = doctor("--json")
    assert r.returncode == 1
    rep = json.loads(r.stdout)
    assert rep["usable"] is False
    assert {"name": "root", "ok": False, "detail": "no: run `sudo netprobe doctor`"} in rep["facts"]
    assert "needs root" in r.stderr and "Traceback" not in r.stderr
