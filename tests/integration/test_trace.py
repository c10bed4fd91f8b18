"""`netprobe trace` as a user runs it: started, made ready, fed traffic in namespaces of the
test's own, stopped by a signal; its JSON (one object per skb) and pcapng checked against what
the traffic must have done."""
import json
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from netprobe.kernel.topology import VethPair
from netprobe.kernel.traffic import udp_flow

ROOT = Path(__file__).resolve().parents[2]
LOOPBACK_PATH = ["ip_output", "dev_queue_xmit", "driver_xmit", "driver_rx", "netif_receive_skb",
                 "ip_rcv", "l4_rcv"]
RX = ["driver_rx", "netif_receive_skb", "ip_rcv", "l4_rcv"]


class Trace:
    def __init__(self, tmp_path, *args):
        ready = tmp_path / "ready"
        env = dict(os.environ, PYTHONPATH=str(ROOT / "pyfront"))
        self.p = subprocess.Popen([sys.executable, "-m", "netprobe", "trace", "--json",
                                   "--ready-file", str(ready), *args], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, env=env)
        deadline = time.time() + 180  # a failsafe: under TCG start-up alone takes 20-40 s
        while not ready.exists():
            if self.p.poll() is not None or time.time() > deadline:
                self.p.kill()
                pytest.fail(f"trace did not become ready: {self.p.stderr.read()}")
            time.sleep(0.05)

    def stop(self, settle: float = 1.5):
        """The skbs traced, after the traffic's last ones ended or went idle"""
        time.sleep(settle)
        self.p.send_signal(signal.SIGINT)
        out, err = self.p.communicate(timeout=60)
        assert self.p.returncode == 0, err
        self.footer = err
        return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def path(skb):
    return [s["stage"] for s in skb["stages"]]


def ns_inode(name):
    return os.stat(f"/run/netns/{name}").st_ino


def test_one_ping_on_lo_is_two_skbs_each_through_loopback_xmit_and_delivered(bpf_ok, tmp_path):
    with VethPair.create() as pair:
        ns = pair.a.ns
        inum = ns_inode(ns)
        # an ICMP datagram socket, so the reply is delivered to ping itself (a raw socket gets
        # a clone, and the original is dropped as NO_SOCKET: see docs/trace.md)
        subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-qw",
                        "net.ipv4.ping_group_range=0 2147483647"], check=True)
        pcap = tmp_path / "ping.pcapng"
        t = Trace(tmp_path, "--netns", ns, "--proto", "icmp", "--host", "127.0.0.1",
                  "--pcap", str(pcap))
        subprocess.run(["ip", "netns", "exec", ns, "ping", "-c", "1", "-W", "2", "127.0.0.1"],
                       check=True, capture_output=True)
        skbs = t.stop()
    assert [s["flow"]["flags"] for s in skbs] == ["echo-request", "echo-reply"]
    for skb in skbs:
        assert path(skb) == LOOPBACK_PATH
        assert {s["device"] for s in skb["stages"]} == {"lo"}
        assert {s["netns"] for s in skb["stages"]} == {inum}
        xmit = next(s for s in skb["stages"] if s["stage"] == "driver_xmit")
        assert xmit["xmit"] == "loopback_xmit" and xmit["physical"] is False
        assert skb["end"]["how"] == "delivered"
        # after loopback_xmit's netif_rx, the receive stages run in a softirq
        assert {s["context"] for s in skb["stages"][4:]} == {"softirq"}
    assert skbs[0]["process"]["comm"] == "ping"
    assert "lost events: 0" in t.footer
    out = subprocess.run(["tcpdump", "-n", "-r", str(pcap)], capture_output=True, text=True,
                         check=True).stdout.splitlines()
    assert len(out) == 2
    assert "ICMP echo request" in out[0] and "ICMP echo reply" in out[1]
    assert packet_comments(pcap.read_bytes()) == [
        "ip_output[lo] > dev_queue_xmit[lo] > driver_xmit[lo, loopback_xmit] > driver_rx[lo] > "
        "netif_receive_skb[lo] > ip_rcv[lo] > l4_rcv[lo] > delivered"] * 2


def packet_comments(data: bytes) -> list[str]:
    """The comment of each enhanced packet block (type 6) of a pcapng file"""
    out, at = [], 0
    while at < len(data):
        btype, n = struct.unpack_from("<II", data, at)
        if btype == 6:
            cap = struct.unpack_from("<I", data, at + 20)[0]
            opt = at + 28 + (cap + 3) // 4 * 4
            code, length = struct.unpack_from("<HH", data, opt)
            out.append(data[opt + 4:opt + 4 + length].decode() if code == 1 else "")
        at += n
    return out


SERVER = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(1); print("up", flush=True)
c, _ = s.accept()
while c.recv(65536): pass
c.close()
"""
CLIENT = """
import socket, sys
c = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
c.sendall(b"x" * 1000); c.shutdown(socket.SHUT_WR); c.recv(10); c.close()
"""


def test_tcp_over_lo_shows_handshake_data_and_fins_in_order_with_their_processes(bpf_ok, tmp_path):
    port = 47211
    with VethPair.create() as pair:
        ns = pair.a.ns
        t = Trace(tmp_path, "--netns", ns, "--proto", "tcp", "--port", str(port))
        run = ["ip", "netns", "exec", ns, sys.executable, "-c"]
        server = subprocess.Popen([*run, SERVER, str(port)], stdout=subprocess.PIPE, text=True)
        assert server.stdout.readline().strip() == "up"
        client = subprocess.run([*run, CLIENT, str(port)], check=True)
        server.wait(timeout=10)
        skbs = t.stop()
    assert client.returncode == 0
    flags = [s["flow"]["flags"] for s in skbs]
    # the handshake, then data, then both FINs
    assert flags[:3] == ["SYN", "SYN-ACK", "ACK"], flags
    data = [s for s in skbs if s["flow"]["payload"] > 0]
    assert [d["flow"]["payload"] for d in data] == [1000]
    fins = [s for s in skbs if "FIN" in s["flow"]["flags"]]
    assert len(fins) == 2 and skbs.index(data[0]) < skbs.index(fins[0])
    for skb in skbs:
        assert path(skb) == LOOPBACK_PATH
    # TCP transmits clones of what it keeps queued for retransmission (SYN, data, FIN); a
    # pure ACK is made to be sent and kept by no one
    assert [skbs[0]["clone"], skbs[2]["clone"], data[0]["clone"]] == [True, False, True]
    assert all(f["clone"] for f in fins)
    client_port = skbs[0]["flow"]["sport"]
    # sent in a process's context, by the process that sent it: the client's SYN and data,
    # the server's FIN (its close)
    assert skbs[0]["stages"][0]["comm"].startswith("python")
    client_pid = skbs[0]["stages"][0]["pid"]
    assert data[0]["stages"][0]["pid"] == client_pid
    server_fin = next(f for f in fins if f["flow"]["dport"] == client_port)
    assert server_fin["stages"][0]["context"] == "process"
    # `ip netns exec` execs the interpreter: its pid is the server's
    assert server_fin["stages"][0]["pid"] == server.pid != client_pid


def test_veth_flow_shows_veth_xmit_on_one_side_and_the_peers_rx_stages_on_the_other(bpf_ok, tmp_path):
    port = 47212
    with VethPair.create() as pair:
        pair.wait_up()
        # the datagrams are sent by this process (udp_flow's client thread): --pid picks them
        t = Trace(tmp_path, "--netns", pair.a.ns, "--proto", "udp", "--port", str(port),
                  "--pid", str(os.getpid()))
        udp_flow(server_addr=pair.b.addr4, port=port, count=3, server_ns=pair.b.path,
                 client_ns=pair.a.path)
        skbs = t.stop()
        a, b = ns_inode(pair.a.ns), ns_inode(pair.b.ns)
    assert len(skbs) == 3
    for skb in skbs:
        assert path(skb) == ["ip_output", "dev_queue_xmit", "driver_xmit", *RX]
        tx, rx = skb["stages"][:3], skb["stages"][3:]
        assert {(s["netns"], s["device"]) for s in tx} == {(a, pair.a.dev)}
        # "veth_xmit [veth]" where veth is a module (Debian's kernels), as kallsyms names it
        assert tx[2]["xmit"] in ("veth_xmit", "veth_xmit [veth]")
        assert rx[0]["handed_over_by"] == tx[2]["xmit"]
        assert {(s["netns"], s["device"]) for s in rx} == {(b, pair.b.dev)}


def own_programs(pid):
    ids = set()
    for info in Path(f"/proc/{pid}/fdinfo").iterdir():
        try:
            ids |= {int(l.split()[1]) for l in info.read_text().splitlines() if l.startswith("prog_id:")}
        except (OSError, ValueError):
            continue
    return ids


def prog_ids():
    out = subprocess.run(["bpftool", "-j", "prog", "show"], capture_output=True, text=True, check=True)
    return {p["id"] for p in json.loads(out.stdout)}


def test_max_rate_engages_says_so_and_nothing_stays_attached(bpf_ok, tmp_path):
    port = 47213
    with VethPair.create() as pair:
        t = Trace(tmp_path, "--netns", pair.a.ns, "--proto", "udp", "--port", str(port),
                  "--max-rate", "5")
        mine = own_programs(t.p.pid)
        assert mine, "trace holds no BPF program"
        udp_flow(server_addr="127.0.0.1", port=port, count=60, server_ns=pair.a.path,
                 client_ns=pair.a.path)
        skbs = t.stop()
    # 5 a second: the flow takes well under 2 s, so at most two windows' worth
    assert 1 <= len(skbs) <= 10
    assert "--max-rate 5/s engaged" in t.footer
    limited = int(t.footer.split("--max-rate 5/s engaged: ")[-1].split()[0])
    assert limited >= 60 - len(skbs) - 2  # the datagrams' skbs not followed (a few may be lost to the server's start)
    # the kernel frees a program after its last reference, an RCU grace period later: under
    # load that takes a moment
    deadline = time.time() + 10
    while mine & prog_ids() and time.time() < deadline:
        time.sleep(0.2)
    assert not mine & prog_ids(), "programs outlived netprobe trace"


@pytest.mark.parametrize("args, message", [
    (["--netns", "no-such-namespace-here"], "--netns no-such-namespace-here: No such file"),
    (["--device", "a-name-longer-than-15"], "--device must be an interface name"),
    (["--pcap", "/nonexistent-dir/x.pcapng"], "--pcap /nonexistent-dir/x.pcapng: No such file"),
])
def test_bad_input_is_one_line_and_exit_1(bpf_ok, args, message):
    r = subprocess.run([sys.executable, "-m", "netprobe", "trace", *args], capture_output=True,
                       text=True, env=dict(os.environ, PYTHONPATH=str(ROOT / "pyfront")), timeout=120)
    assert r.returncode == 1
    assert r.stderr.count("\n") == 1 and message in r.stderr, r.stderr


def test_pid_filter_passes_over_another_process_s_skbs(bpf_ok, tmp_path):
    port = 47214
    with VethPair.create() as pair:
        t = Trace(tmp_path, "--netns", pair.a.ns, "--proto", "udp", "--port", str(port),
                  "--pid", "1")
        udp_flow(server_addr="127.0.0.1", port=port, count=5, server_ns=pair.a.path,
                 client_ns=pair.a.path)
        assert t.stop() == []
    assert "0 skbs traced" in t.footer
