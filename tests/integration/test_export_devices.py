"""The exporter's collector over a real ProbeSession: devices come and go between scrapes,
and an ifindex taken over by a new device does not inherit the old one's counts."""
import json
import threading

import pytest

from netprobe.commands.export_server import SessionCollector, build_info
from netprobe.model.flowfilter import FlowFilter
from netprobe.render.report import DeviceSelector
from netprobe.kernel.topology import ip, link_stats
from netprobe.kernel.traffic import udp_flow

PORT = 47301


def scrape(collector) -> dict:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in collector.collect() for s in f.samples}


def skbs(smp, netns, device, stage="driver_xmit"):
    for (name, labels), v in smp.items():
        l = dict(labels)
        if name == "netprobe_skbs_total" and (l["netns"], l["device"], l["netstage"]) == (netns, device, stage):
            return v
    return None


def devices(smp) -> set:
    return {(dict(l)["netns"], dict(l)["device"]) for (name, l) in smp if name == "netprobe_device_info"}


def ifindex(dev, netns) -> int:
    return json.loads(ip("-j", "link", "show", "dev", dev, netns=netns))[0]["ifindex"]


@pytest.fixture
def collector(session):
    return SessionCollector(session, build_info(FlowFilter()))


def test_vanished_devices_stop_and_a_reused_ifindex_starts_from_zero(collector, veth):
    a, b = veth.a, veth.b
    first = scrape(collector)
    assert {(a.ns, a.dev), (b.ns, b.dev), (a.ns, "lo")} <= devices(first)
    assert udp_flow(server_addr=b.addr4, port=PORT, count=400, server_ns=b.path, client_ns=a.path) >= 395
    old = skbs(scrape(collector), a.ns, a.dev)
    assert old >= 400

    # Between two scrapes the veth pair goes and a new pair takes a's ifindex (and name-wise
    # is a different device): the map row (netns, ifindex) still holds the old device's counts.
    index = ifindex(a.dev, a.ns)
    ip("link", "del", a.dev, netns=a.ns)
    new_a, new_b = f"np{veth.tag}x", f"np{veth.tag}y"
    ip("link", "add", new_a, "index", str(index), "type", "veth", "peer", "name", new_b,
       "netns", b.ns, netns=a.ns)
    assert ifindex(new_a, a.ns) == index

    after = scrape(collector)
    assert (a.ns, a.dev) not in devices(after) and (b.ns, b.dev) not in devices(after)
    assert skbs(after, a.ns, a.dev) is None
    assert skbs(after, a.ns, new_a) == 0  # not `old`: the row was dropped at this scrape

    for dev, ns, addr in ((new_a, a.ns, a.addr4), (new_b, b.ns, b.addr4)):
        ip("addr", "add", f"{addr}/24", "dev", dev, netns=ns)
        ip("link", "set", dev, "up", netns=ns)
    assert udp_flow(server_addr=b.addr4, port=PORT, count=50, server_ns=b.path, client_ns=a.path) >= 48
    smp = scrape(collector)
    new = skbs(smp, a.ns, new_a)
    kernel = link_stats(new_a, a.ns)["tx_packets"]
    assert 50 <= new < old
    assert new <= kernel  # the kernel also counts packets sent before the scrape took the row
    info = [dict(l) for (name, l) in smp if name == "netprobe_device_info" and dict(l)["device"] == new_a]
    assert info == [{"netns": a.ns, "device": new_a, "ifindex": str(index), "driver": "veth",
                     "kind": "virtual", "xmit": "veth_xmit"}]


def test_device_patterns_select_what_is_exported(session, veth):
    c = SessionCollector(session, build_info(FlowFilter()),
                         DeviceSelector(include=("lo", "np*"), exclude=(veth.b.dev,)))
    smp = scrape(c)
    names = {d for _, d in devices(smp)}
    assert "lo" in names and veth.a.dev in names and veth.b.dev not in names
    assert all(d == "lo" or d.startswith("np") for d in names)
    assert skbs(smp, veth.b.ns, veth.b.dev, "driver_rx") is None
    assert skbs(smp, veth.a.ns, veth.a.dev) is not None


def test_overlapping_scrapes_are_safe_and_monotonic(collector, veth):
    errors, seen = [], {}
    stop = threading.Event()

    def traffic():
        while not stop.is_set():
            udp_flow(server_addr=veth.b.addr4, port=PORT + 1, count=20,
                     server_ns=veth.b.path, client_ns=veth.a.path)

    def scraper(i):
        last = {}
        try:
            for _ in range(25):
                for key, v in scrape(collector).items():
                    if key[0].endswith("_total") and v < last.get(key, 0):
                        errors.append((i, key, last[key], v))
                    last[key] = v
        except Exception as e:  # noqa: BLE001
            errors.append((i, repr(e)))
        seen[i] = last

    t = threading.Thread(target=traffic)
    t.start()
    threads = [threading.Thread(target=scraper, args=(i,)) for i in range(6)]
    for s in threads:
        s.start()
    for s in threads:
        s.join(120)
    stop.set()
    t.join(30)
    assert not errors, errors[:5]
    assert len(seen) == 6
    read_errors = [v for (name, _), v in scrape(collector).items() if name == "netprobe_map_read_errors_total"]
    assert read_errors == [0, 0]
