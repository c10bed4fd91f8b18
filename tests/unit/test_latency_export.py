"""export --latency's metrics from a made-up read: real histograms, paths, promtool-clean."""
import shutil
import subprocess

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from netprobe.model.devices import Device
from netprobe.model.latency import BUCKETS, STATS, Histogram, HopKey, Latency, Path, Step
from netprobe.render.latexport import LATENCY_METRICS, latency_families
from netprobe.render.latreport import Names

LO = Device(7, 1, "lo", "loopback", False, "loopback_xmit", 0, "np-a")
VA = Device(7, 2, "npa", "veth", False, "veth_xmit", 0, "np-a")
VB = Device(8, 2, "npb", "veth", False, "veth_xmit", 0, "np-b")
DEVICES = {d.key: d for d in (LO, VA, VB)}
NETNS = {7: "np-a", 8: "np-b"}


def hist(b, n, sum_ns):
    buckets = [0] * BUCKETS
    buckets[b] = n
    return Histogram(tuple(buckets), sum_ns)


def read(sample=1):
    hops = {HopKey(8, 2, "driver_xmit", "driver_rx"): hist(10, 4, 3000),
            HopKey(7, 1, "ip_output", "dev_queue_xmit"): hist(11, 2, 3000),
            HopKey(8, 2, "ip_output", "l4_rcv", True): hist(13, 4, 20000)}
    veth = Path((Step("ip_output", 7, 2), Step("driver_xmit", 7, 2), Step("driver_rx", 8, 2)),
                3, "delivered", 4)
    lo = Path((Step("ip_output", 7, 1),), 1, "dropped", 1)
    stats = dict.fromkeys(STATS, 0) | {"followed": 10, "ended": 9, "other_consumed": 3}
    return Latency(0, hops, (veth, lo), stats, in_flight=0, sample=sample)


class _Static:
    def __init__(self, fams):
        self.fams = fams

    def collect(self):
        return self.fams


def exposition(lat):
    reg = CollectorRegistry(auto_describe=False)
    reg.register(_Static(latency_families(lat, Names(DEVICES, NETNS), NETNS)))
    return generate_latest(reg).decode()


def test_hops_are_histograms_with_log2_buckets_and_paths_are_named_by_device():
    fams = {f.name: f for f in text_string_to_metric_families(exposition(read(sample=100)))}
    assert [m.name for m in LATENCY_METRICS] == ["netprobe_stage_latency_seconds",
                                                 "netprobe_path_latency_seconds",
                                                 "netprobe_paths_total",
                                                 "netprobe_latency_sample_one_in",
                                                 "netprobe_latency_evicted_total"]
    hop = fams["netprobe_stage_latency_seconds"]
    assert hop.type == "histogram"
    handover = [s for s in hop.samples if s.labels.get("from") == "driver_xmit"]
    count = next(s for s in handover if s.name.endswith("_count"))
    assert count.value == 4 and count.labels["device"] == "npb" and count.labels["netns"] == "np-b"
    le = {s.labels["le"]: s.value for s in handover if s.name.endswith("_bucket")}
    assert le["5.12e-07"] == 0 and le["1.024e-06"] == 4 and le["+Inf"] == 4
    assert len(le) == BUCKETS
    e2e = fams["netprobe_path_latency_seconds"].samples
    assert {(s.labels["from"], s.labels["to"]) for s in e2e} == {("ip_output", "l4_rcv")}
    paths = {(s.labels["path"], s.labels["end"]): s.value for s in fams["netprobe_paths"].samples
             if s.name == "netprobe_paths_total"}
    assert paths[("ip_output[npa] > driver_xmit[npa] > driver_rx[npb@np-b]", "delivered")] == 4
    assert paths[("other", "consumed")] == 3
    assert fams["netprobe_latency_sample_one_in"].samples[0].value == 100
    assert fams["netprobe_latency_evicted"].samples[0].value == 1


@pytest.mark.skipif(not shutil.which("promtool"), reason="promtool (Debian: prometheus) not installed")
def test_promtool_finds_nothing_to_lint():
    r = subprocess.run(["promtool", "check", "metrics"], input=exposition(read()),
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and r.stdout == "" and r.stderr == "", r.stdout + r.stderr
