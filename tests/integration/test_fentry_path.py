"""The fentry path, on a kernel that takes it (the QEMU lab's Debian 6.1 guest, with an e1000):
by default every function stage takes fentry at the functions the kprobes use, driver_xmit
an fentry program per driver function (e1000_xmit_frame through the e1000 module's BTF), and
the counts are the kprobe path's exactly: both run side by side over the same flows.

A kernel that refuses fentry (this project's CI host: EPERM) skips these, and only these: it
is said why, and test_doctor checks that doctor says so."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from labguest import ECHO, lab_nic

from netprobe.kernel.facts import Kernel
from netprobe.kernel.session import ProbeSession
from netprobe.kernel.traffic import tcp_flow
from netprobe.model.catalogue import FENTRY, KPROBE, STAGES
from netprobe.model.flowfilter import FlowFilter

ROOT = Path(__file__).resolve().parents[2]
KERNEL = Kernel()
pytestmark = [
    pytest.mark.skipif(FENTRY not in KERNEL.mechanisms,
                       reason=f"this kernel refuses fentry: {KERNEL.refused.get(FENTRY)}"),
    pytest.mark.skipif(not os.environ.get("NETPROBE_LAB_NICS"),
                       reason="needs the QEMU lab guest: an e1000 NIC"),
]

DEVICE_STAGES = ("ip_output", "dev_queue_xmit", "driver_xmit", "driver_rx", "netif_receive_skb",
                 "ip_rcv", "l4_rcv")


@pytest.fixture(scope="module")
def sessions(bpf_ok):
    """The default choice (fentry) and --prefer kprobe, side by side, counting TCP only"""
    with ProbeSession(flow=FlowFilter(proto="tcp")) as fentry, \
            ProbeSession(flow=FlowFilter(proto="tcp"), prefer=(KPROBE,)) as kprobe:
        yield fentry, kprobe


def test_every_function_stage_takes_fentry_by_default(sessions):
    fentry, _ = sessions
    mech = {name: st.describe() for name, st in fentry.states.items()}
    for stage in STAGES:
        st = fentry.states[stage.name]
        assert not st.fell_back_from, mech
        if st.mechanism == KPROBE:
            # only where the function exists as a gcc clone alone (6.1's
            # __netif_receive_skb_core.constprop.0): a trampoline has no function to attach to
            assert all("." in t for t in st.targets), mech
            assert st.passed_over[0].mechanism == FENTRY and "exact name" in st.passed_over[0].why
        else:
            assert st.mechanism == FENTRY, mech
    assert mech["dev_queue_xmit"] == "fentry __dev_queue_xmit"
    assert mech["ip_rcv"].startswith("fentry ip_rcv_core")
    # e1000_xmit_frame is a module's function: its fentry program names it by e1000's BTF
    assert "e1000_xmit_frame" in mech["driver_xmit"] and "loopback_xmit" in mech["driver_xmit"]
    assert not [w for w in fentry.warnings if "driver_xmit" in w], fentry.warnings


def test_prefer_kprobe_keeps_the_kprobe_path(sessions):
    _, kprobe = sessions
    mech = {name: st.describe() for name, st in kprobe.states.items()}
    assert all(kprobe.states[s.name].mechanism == KPROBE for s in STAGES), mech


def _delta(a, b, dev, stage):
    return (b.values.get((dev.netns, dev.ifindex, stage), (0, 0))[0]
            - a.values.get((dev.netns, dev.ifindex, stage), (0, 0))[0])


def test_fentry_counts_what_kprobes_count_over_lo_and_the_e1000(sessions):
    fentry, kprobe = sessions
    eth = next(d for d in fentry.devices.values() if d.name == lab_nic("e1000"))
    lo = next(d for d in fentry.devices.values() if d.name == "lo" and d.netns_name == "root")
    assert eth.xmit == "e1000_xmit_frame [e1000]"
    before = fentry.read(), kprobe.read()
    tcp_flow(server_addr="127.0.0.1", port=47901, nbytes=30000)
    with socket.create_connection(ECHO, timeout=10) as c:
        for _ in range(20):
            c.sendall(b"x" * 100)
            assert c.recv(1000)
    after = fentry.read(), kprobe.read()
    counted = {}
    for dev in (lo, eth):
        for stage in DEVICE_STAGES:
            f = _delta(before[0], after[0], dev, stage)
            k = _delta(before[1], after[1], dev, stage)
            counted[dev.name, stage] = (f, k)
    # TCP only, and this guest has no other TCP: both paths see exactly the same packets
    assert all(f == k for f, k in counted.values()), counted
    assert all(f > 0 for f, _ in counted.values()), counted
    assert counted[eth.name, "driver_xmit"][0] >= 20
    # the L4 send stage counts sendmsg calls on both paths alike
    f = _delta(before[0], after[0], type("ns", (), {"netns": lo.netns, "ifindex": 0}), "tcp_sendmsg")
    k = _delta(before[1], after[1], type("ns", (), {"netns": lo.netns, "ifindex": 0}), "tcp_sendmsg")
    assert f == k and f >= 20


def test_watch_json_and_doctor_name_fentry(bpf_ok):
    env = dict(os.environ, PYTHONPATH=str(ROOT / "pyfront"))
    r = subprocess.run([sys.executable, "-m", "netprobe", "watch", "--json", "--once", "-i", "0.2"],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    stages = {s["name"]: s["description"] for s in json.loads(r.stdout)["stages"]}
    assert stages["dev_queue_xmit"] == "fentry __dev_queue_xmit"
    r = subprocess.run([sys.executable, "-m", "netprobe", "doctor", "--json"],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert {"name": "fentry", "ok": True, "detail": "works"} in doc["mechanisms"]
    stages = {s["stage"]: s["mechanism"] for s in doc["stages"]}
    assert stages["l4_rcv"] == ("fentry tcp_v4_rcv, udp_rcv, icmp_rcv, tcp_v6_rcv, udpv6_rcv, "
                                "icmpv6_rcv")
    assert stages["driver_xmit"] == "fentry on each device's ndo_start_xmit"
