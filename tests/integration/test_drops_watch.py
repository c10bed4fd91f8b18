"""`netprobe watch --json` names where sk_buffs die: UDP to a closed port in a namespace of the
test's own shows up in the drops section on that namespace's lo, at l4_rcv, with this kernel's
reason, as many as were sent; the flow filter keeps another port's drops out."""
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from netprobe.kernel import bpfsys
from netprobe.kernel.topology import VethPair

ROOT = Path(__file__).resolve().parents[2]
PORT = 47109


def test_watch_json_drops_section(bpf_ok, tmp_path):
    ready = tmp_path / "ready"
    env = dict(os.environ, PYTHONPATH=str(ROOT / "pyfront"))
    with VethPair.create() as pair:
        p = subprocess.Popen([sys.executable, "-m", "netprobe", "watch", "--json", "--ready-file",
                              str(ready), "--port", str(PORT), "--interval", "0.5"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        try:
            deadline = time.time() + 180
            while not ready.exists():
                if p.poll() is not None or time.time() > deadline:
                    pytest.fail(f"watch did not become ready: {p.stderr.read()}")
                time.sleep(0.05)
            assert "drop" in json.loads(ready.read_text())
            time.sleep(0.6)  # the namespaces are picked up at the next refresh
            with bpfsys.in_netns(pair.a.path):
                s4 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                s6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            with s4, s6:
                for _ in range(6):
                    s4.sendto(b"x", ("127.0.0.1", PORT))
                    s6.sendto(b"x", ("::1", PORT))
                    s4.sendto(b"x", ("127.0.0.1", PORT + 1))  # filtered out
            time.sleep(1.2)
        finally:
            p.terminate()
            out, err = p.communicate(timeout=30)
        assert p.returncode == 0, err
        inum = os.stat(pair.a.path).st_ino
        last = json.loads(out.strip().splitlines()[-1])["drops"]
        assert last["stage"]["attached"] and last["lost"] == 0
        mine = [r for r in last["rows"] if r["netns"] == inum]
        reason = "NO_SOCKET" if last["reasons"] else "unknown"
        got = {r["function"]: r["packets"] for r in mine
               if (r["device"], r["stage"], r["reason"]) == ("lo", "l4_rcv", reason)}
        assert got == {"__udp4_lib_rcv": 6, "__udp6_lib_rcv": 6}, mine
        assert sum(r["packets"] for r in mine) == 12  # port+1's drops were filtered out
        assert {r["netns_name"] for r in mine} == {pair.a.ns}
