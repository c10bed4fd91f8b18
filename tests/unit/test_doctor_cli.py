"""`netprobe doctor` without privilege (issue 10, item 16): what it can see, then one line
that says it needs root; never a PermissionError. Run as an unprivileged user (setpriv
when the tests run as root)."""
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] if os.geteuid() == 0 else []


@pytest.fixture(scope="module")
def tree():
    """The project's Python and probes where the unprivileged user can read them: a checkout
    may sit in a directory only root can enter (`git clone` into `mktemp -d`, mode 0700)"""
    top = Path(tempfile.mkdtemp(prefix="netprobe-doctor-"))
    try:
        top.chmod(0o755)
        for d in ("pyfront", "probes"):
            shutil.copytree(ROOT / d, top / d, ignore=shutil.ignore_patterns("__pycache__"))
        yield top
    finally:
        shutil.rmtree(top)


def doctor(tree, *args):
    env = {"PYTHONPATH": str(tree / "pyfront"), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    return subprocess.run([*NOBODY, sys.executable, "-m", "netprobe", "doctor", *args],
                          capture_output=True, text=True, env=env, timeout=60, cwd="/")


def test_doctor_without_root_says_needs_root_in_one_line(tree):
    r = doctor(tree)
    assert r.returncode == 1
    assert r.stderr == ("netprobe: doctor loads and attaches BPF programs and needs root: "
                        "run it with sudo\n")
    assert "NO  root" in r.stdout
    # tracefs is root's: not readable is not "not mounted"
    assert "not mounted" not in r.stdout


def test_doctor_json_without_root_is_json_on_stdout(tree):
    r = doctor(tree, "--json")
    assert r.returncode == 1
    rep = json.loads(r.stdout)
    assert rep["usable"] is False
    assert {"name": "root", "ok": False, "detail": "no: run `sudo netprobe doctor`"} in rep["facts"]
    assert "needs root" in r.stderr and "Traceback" not in r.stderr
