"""`netprobe export` exposes where sk_buffs die: UDP to a closed port in a namespace of the
test's own appears in netprobe_skb_drops_total on that namespace's lo, at l4_rcv, with this
kernel's reason, as many as were sent; a veth whose peer is down drops what it is given, and
its own tx_dropped shows in netprobe_device_drops_total; promtool accepts the scrape."""
import shutil
import subprocess
import time

from test_export_run import Running, free_port, samples

from netprobe.kernel.topology import VethPair, ip
from netprobe.kernel.traffic import udp_send


def test_drops_and_device_counters_in_a_scrape(bpf_ok, tmp_path):
    port = free_port()
    # no IPv6 on the veth: its own router solicitations and MLD reports, dropped like the
    # test's datagrams once the peer is down, would add to them (CI once saw 5 for 3); lo
    # keeps ::1
    with VethPair.create(veth_ipv6=False) as pair:
        pair.wait_up()
        with Running(tmp_path, "--web.listen-address", f"127.0.0.1:{port}") as ex:
            ex.get()  # the scrape that finds the new namespaces
            udp_send(addr="127.0.0.1", port=9, count=5, client_ns=pair.a.path)
            udp_send(addr="::1", port=9, count=4, client_ns=pair.a.path)
            ip("neigh", "add", pair.b.addr4, "lladdr", "02:00:00:00:00:01", "dev", pair.a.dev,
               netns=pair.a.ns)
            ip("link", "set", pair.b.dev, "down", netns=pair.b.ns)
            udp_send(addr=pair.b.addr4, port=9, count=3, client_ns=pair.a.path)
            time.sleep(0.3)
            text = ex.get()
        got = samples(text)
    drops = {(s.labels["device"], s.labels["netstage"], s.labels["reason"]): s.value
             for s in got if s.name == "netprobe_skb_drops_total"
             and s.labels["netns"] == pair.a.ns}
    reason = "NO_SOCKET" if drops.get(("lo", "l4_rcv", "NO_SOCKET")) else "unknown"
    assert drops[("lo", "l4_rcv", reason)] == 9, drops
    # the veth with its peer down: dropped in veth_xmit's hand-over (driver_xmit), or, once
    # linkwatch has seen the carrier go, by the deactivated qdisc (dev_queue_xmit)
    assert sum(v for (dev, stage, _), v in drops.items() if dev == pair.a.dev
               and stage in ("driver_xmit", "dev_queue_xmit")) == 3, drops
    own = {s.labels["counter"]: s.value for s in got if s.name == "netprobe_device_drops_total"
           and (s.labels["netns"], s.labels["device"]) == (pair.a.ns, pair.a.dev)}
    assert own["tx_dropped"] >= 3 and set(own) == {"rx_dropped", "tx_dropped", "rx_missed_errors"}
    if shutil.which("promtool"):
        r = subprocess.run(["promtool", "check", "metrics"], input=text.encode(),
                           capture_output=True, timeout=60)
        assert r.returncode == 0, r.stdout.decode() + r.stderr.decode()
    (tmp_path / "scrape.txt").write_text(text)
