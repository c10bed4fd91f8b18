"""latreport.py: hop and path rows named after devices, and watch's JSON, without root."""
import pytest

from netprobe.model.devices import Device
from netprobe.model.latency import BUCKETS, STATS, Histogram, HopKey, Latency, Path, Step
from netprobe.render.latreport import Names, hop_rows, human_ns, interval_rows, path_rows, to_json

LO = Device(7, 1, "lo", "loopback", False, "loopback_xmit", 0, "np-a")
VB = Device(8, 2, "npb", "veth", False, "veth_xmit", 0, "np-b")
NAMES = Names({d.key: d for d in (LO, VB)}, {7: "np-a", 8: "np-b"})


def hist(n, b=10, sum_ns=None):
    buckets = [0] * BUCKETS
    buckets[b] = n
    return Histogram(tuple(buckets), sum_ns if sum_ns is not None else n * 700)


def test_hops_sort_by_device_then_path_order_with_the_end_to_end_last():
    hops = {HopKey(7, 1, "ip_rcv", "l4_rcv"): hist(1),
            HopKey(7, 1, "ip_output", "l4_rcv", True): hist(1),
            HopKey(7, 1, "ip_output", "dev_queue_xmit"): hist(1),
            HopKey(7, 1, "l4_rcv", "read"): hist(1),
            HopKey(8, 2, "driver_xmit", "driver_rx"): hist(1),
            HopKey(7, 9, "ip_output", "dev_queue_xmit"): hist(0)}  # nothing: no row
    rows = hop_rows(hops, NAMES)
    assert [(r.device, r.key.src, r.key.dst, r.key.span) for r in rows] == [
        ("lo", "ip_output", "dev_queue_xmit", False), ("lo", "ip_rcv", "l4_rcv", False),
        ("lo", "l4_rcv", "read", False), ("lo", "ip_output", "l4_rcv", True),
        ("npb", "driver_xmit", "driver_rx", False)]
    assert [r.device for r in hop_rows(hops, NAMES, lambda name: name != "lo")] == ["npb"]


def test_a_path_names_devices_of_other_namespaces_with_their_namespace():
    p = Path((Step("driver_xmit", 7, 1), Step("driver_rx", 8, 2), Step("ip_rcv", 8, 5)), 3,
             "delivered", 9)
    [row] = path_rows([p], NAMES)
    assert row.text == "driver_xmit[lo] > driver_rx[npb@np-b] > ip_rcv[if5@np-b]"
    assert (row.netns_name, row.end, row.packets) == ("np-a", "delivered", 9)


def test_json_gives_the_interval_and_the_tables_state():
    k = HopKey(7, 1, "ip_output", "dev_queue_xmit")
    stats = dict.fromkeys(STATS, 0) | {"followed": 12, "ended": 10, "inferred": 4}
    before = Latency(0, {k: hist(2)}, (), stats, 0)
    now = Latency(1, {k: hist(6)}, (Path((Step("ip_output", 7, 1),), 1, "consumed", 3),), stats,
                  in_flight=1, sample=10)
    obj = to_json(now, *interval_rows(now, before, NAMES))
    [hop] = obj["hops"]
    assert (hop["device"], hop["from"], hop["to"], hop["count"]) == ("lo", "ip_output",
                                                                    "dev_queue_xmit", 4)
    assert hop["p50_ns"] == 768.0 and hop["mean_ns"] == 700.0
    assert obj["paths"] == [{"netns": 7, "netns_name": "np-a", "path": "ip_output[lo]",
                             "end": "consumed", "packets": 3}]
    assert (obj["sample"], obj["in_flight"], obj["evicted"], obj["ends_inferred"]) == (10, 1, 1, 4)


@pytest.mark.parametrize("ns, text", [(None, "-"), (850, "850ns"), (1234, "1.2µs"),
                                      (3.4e6, "3.4ms"), (1.1e9, "1.1s"), (250e3, "250µs")])
def test_human_ns(ns, text):
    assert human_ns(ns) == text
