"""Devices and namespaces that come and go while netprobe runs (issue 10, items 4, 9-12): every
count lands on the device that made it, a new device starts from zero, nothing is lost
without being counted, and netprobe keeps no namespace alive."""
import secrets
import subprocess
import sys
import time

import pytest

from netprobe.kernel.session import ProbeSession
from netprobe.kernel.topology import ip

# One raw Ethernet frame out of each named device (AF_PACKET goes through dev_queue_xmit and
# the driver's xmit, here veth_xmit): a count per device that nothing else adds to.
_SEND = r"""
import socket, sys
for dev in sys.argv[1:]:
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((dev, 0))
    s.send(b"\xff" * 6 + b"\x02\x00\x00\x00\x00\x01" + b"\x88\xb5" + b"netprobe churn".ljust(46))
    s.close()
"""


def _batch(ns: str, lines: list[str]) -> None:
    subprocess.run(["ip", "-n", ns, "-batch", "-"], input="\n".join(lines) + "\n", text=True, check=True,
                   capture_output=True)


class ChurnNs:
    def __init__(self):
        self.name = f"np-churn-{secrets.token_hex(3)}"
        ip("netns", "add", self.name)

    def make_pairs(self, n: int) -> list[str]:
        devs = [f"c{i}a" for i in range(n)]
        _batch(self.name, [f"link add c{i}a type veth peer name c{i}b" for i in range(n)])
        # no IPv6 on them: router solicitations and DAD would add frames of their own
        subprocess.run(["ip", "netns", "exec", self.name, "sysctl", "-qw",
                        "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"],
                       check=True)
        _batch(self.name, [f"link set c{i}{e} up" for i in range(n) for e in "ab"])
        return devs

    def delete_pairs(self, n: int) -> None:
        _batch(self.name, [f"link del c{i}a" for i in range(n)])

    def send(self, devs: list[str]) -> None:
        subprocess.run(["ip", "netns", "exec", self.name, sys.executable, "-c", _SEND, *devs],
                       check=True)

    def delete(self) -> None:
        subprocess.run(["ip", "netns", "del", self.name], check=False)


@pytest.fixture
def churn_ns():
    ns = ChurnNs()
    try:
        yield ns
    finally:
        ns.delete()


def _xmit_by_name(session, counts, ns_name):
    return {d.name: counts.values.get((d.netns, d.ifindex, "driver_xmit"), (0, 0))[0]
            for d in session.devices.values() if d.netns_name == ns_name}


def test_no_count_is_lost_when_veth_pairs_are_deleted_and_recreated(bpf_ok, churn_ns):
    """200 pairs, three generations: each a-end sends one frame, and counts exactly one."""
    n = 200
    with ProbeSession() as s:
        for gen in range(3):
            devs = churn_ns.make_pairs(n)
            s.refresh()
            churn_ns.send(devs)
            got = _xmit_by_name(s, s.read(), churn_ns.name)
            wrong = {d: got.get(d) for d in devs if got.get(d) != 1}
            assert not wrong, f"generation {gen}: {len(wrong)} of {n} devices miscounted: " \
                              f"{dict(list(wrong.items())[:8])}, map full: {s.read().dropped}"
            churn_ns.delete_pairs(n)
            s.refresh()


def _exists(dev: str) -> bool:
    return subprocess.run(["ip", "link", "show", dev], capture_output=True).returncode == 0


def test_a_deleted_namespace_is_let_go_at_once(bpf_ok):
    """A netfilter link holds its namespace: netprobe must close it when the namespace is
    deleted, or the veth peer in the root namespace lives on and its name stays taken."""
    tag = secrets.token_hex(3)
    ns, inner, outer = f"np-del-{tag}", f"npd{tag}a", f"npd{tag}b"
    ip("netns", "add", ns)
    try:
        ip("link", "add", inner, "netns", ns, "type", "veth", "peer", outer)
        with ProbeSession() as s:
            s.refresh()
            assert any(n.name == ns for n in s.namespaces.values())
            ip("netns", "del", ns)
            deadline = time.monotonic() + 3
            while _exists(outer) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not _exists(outer), "the deleted namespace's veth peer still lives after 3 s"
            ip("link", "add", outer, "type", "veth", "peer", f"npd{tag}c")  # the name is free
            ip("link", "del", outer)
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        subprocess.run(["ip", "link", "del", outer], capture_output=True)


def test_a_namespace_made_while_running_is_linked_at_once_and_its_gap_reported(bpf_ok):
    from netprobe.model.flowfilter import FlowFilter
    with ProbeSession(flow=FlowFilter(proto="icmp")) as s:
        ns = f"np-late-{secrets.token_hex(3)}"
        t0 = time.time()
        ip("netns", "add", ns)
        try:
            ip("link", "set", "lo", "up", netns=ns)
            deadline = time.monotonic() + 2  # a loaded 2-vCPU VM: typically 10-50 ms
            late = []
            while not late and time.monotonic() < deadline:
                late = [n for n in s._attachments.late_namespaces() if n.name == ns]
                time.sleep(0.01)
            assert late, "no netfilter links in the new namespace within 2 s"
            assert late[0].since - t0 < 2.0
            assert set(late[0].stages) == {st.name for st in s.states.values()
                                           if st.mechanism == "netfilter"}
            assert any(w.startswith(f"netns {ns}: ") and "count from" in w for w in s.warnings)
            subprocess.run(["ip", "netns", "exec", ns, "ping", "-q", "-c", "20", "-i", "0.01",
                            "127.0.0.1"], check=True, capture_output=True)
            s.refresh()
            c = s.read().values
            lo = next(d for d in s.devices.values() if d.netns_name == ns and d.name == "lo")
            at = {st: c.get((lo.netns, lo.ifindex, st), (0, 0))[0]
                  for st in ("ip_output", "driver_xmit", "ip_rcv", "l4_rcv")}
            assert at == dict.fromkeys(at, 40), at
        finally:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def test_a_device_in_a_namespace_made_anew_starts_from_zero(bpf_ok):
    """Delete a namespace and make it again: its inode number, the veth's ifindex and often
    the net_device's address come back the same. 50 cycles, each counting exactly what it
    sent."""
    sent = 101
    with ProbeSession() as s:
        wrong = []
        for cycle in range(50):
            ns = ChurnNs()
            try:
                devs = ns.make_pairs(1)
                ns.send(devs * sent)
                s.refresh()
                got = _xmit_by_name(s, s.read(), ns.name).get(devs[0])
                if got != sent:
                    wrong.append((cycle, got))
            finally:
                ns.delete()
        assert not wrong, f"(cycle, counted) for {sent} sent: {wrong}"


def test_a_namespace_of_600_devices_is_listed_whole(bpf_ok, churn_ns):
    """More devices than one page of the walk (256) and than the old fixed table (512)."""
    devs = churn_ns.make_pairs(300)
    with ProbeSession() as s:
        listed = {d.name for d in s.devices.values() if d.netns_name == churn_ns.name}
        assert len(listed) == 601 and {"c299a", "c299b", "lo"} <= listed
        churn_ns.send([devs[-1]] * 3)
        assert _xmit_by_name(s, s.read(), churn_ns.name)["c299a"] == 3
        assert not s.unlisted_netns() and not any("devices; those beyond" in w for w in s.warnings)
