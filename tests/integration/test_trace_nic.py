"""`netprobe trace` across a real NIC driver: only meaningful in the QEMU lab guest (an e1000
whose network ends in QEMU's own TCP echo peer). A connection to the peer must show its skbs
leaving through e1000_xmit_frame, a physical NIC, on the e1000's device, and coming back
through its receive stages."""
import os
import socket

import pytest

from labguest import ECHO, lab_nic
from test_trace import Trace, path

pytestmark = pytest.mark.skipif(not os.environ.get("NETPROBE_LAB_NICS"),
                                reason="needs the QEMU lab guest's e1000 (make lab-qemu)")



def test_a_flow_to_the_qemu_peer_shows_e1000_xmit_frame(bpf_ok, tmp_path):
    dev = lab_nic("e1000")
    t = Trace(tmp_path, "--proto", "tcp", "--host", ECHO[0], "--port", str(ECHO[1]))
    with socket.create_connection(ECHO, timeout=20) as c:
        for _ in range(3):
            c.sendall(b"x" * 100)
            assert c.recv(1000)
    skbs = t.stop(settle=3)
    sent = [s for s in skbs if s["stages"] and s["stages"][0]["stage"] == "ip_output"]
    received = [s for s in skbs if s["stages"] and s["stages"][0]["stage"] == "driver_rx"]
    assert sent and received, [path(s) for s in skbs]
    for skb in sent:
        xmit = [s for s in skb["stages"] if s["stage"] == "driver_xmit"]
        assert xmit, path(skb)
        # a module's function is named with its module: "e1000_xmit_frame [e1000]"
        assert {(s["device"], s["xmit"].split()[0], s["physical"]) for s in xmit} == {
            (dev, "e1000_xmit_frame", True)}, xmit
    for skb in received:
        assert {s["device"] for s in skb["stages"]} == {dev}, skb["stages"]
        assert "loopback_xmit" not in str(skb)
