"""`netprobe export --latency`'s metrics: the hop histograms as real Prometheus histograms and
the census of paths as counters. Pure, like exporter.py, whose MetricSpec they use.

Each histogram has the kernel's log2 buckets (le = 2^b ns, 1 ns to ~275 s, then +Inf):
cumulative since attach, read at each scrape. Under --sample N they count one flow in N, which
netprobe_latency_sample_one_in says; the skb counts stay exact."""
from __future__ import annotations

from prometheus_client.core import Metric
from prometheus_client.utils import floatToGoString

from .exporter import COUNTER, GAUGE, HISTOGRAM, MetricSpec, netns_label
from ..model.latency import Histogram, Latency
from .latreport import Names, hop_rows, path_rows
from .report import DeviceSelector

HOP_LABELS = ("netns", "device", "from", "to")

STAGE_LATENCY = MetricSpec(
    "netprobe_stage_latency_seconds", HISTOGRAM,
    "Time an sk_buff took from one stage to the next, on the next stage's device (the "
    "receiving device for the hand-over from driver_xmit to driver_rx); sampled when "
    "netprobe_latency_sample_one_in > 1.",
    HOP_LABELS)
PATH_LATENCY = MetricSpec(
    "netprobe_path_latency_seconds", HISTOGRAM,
    "Time from an sk_buff's first stage (`from`, e.g. ip_output) to L4 delivery (l4_rcv), on "
    "the receiving device: the end to end that the stage latencies add up to.",
    HOP_LABELS)
PATHS = MetricSpec(
    "netprobe_paths_total", COUNTER,
    "sk_buffs that ended (delivered to L4, consumed, dropped) after taking this path of "
    "stage[device] steps, from the namespace it began in; path=\"other\" counts those that did "
    "not fit the kernel's table of paths.",
    ("netns", "path", "end"))
SAMPLE = MetricSpec(
    "netprobe_latency_sample_one_in", GAUGE,
    "The latency metrics follow one flow in this many (--sample), chosen in the kernel by a "
    "hash of the flow's addresses and ports; 1: every sk_buff.")
EVICTED = MetricSpec(
    "netprobe_latency_evicted_total", COUNTER,
    "sk_buffs followed whose end was never seen: pushed out of the kernel's in-flight table.")

LATENCY_METRICS: tuple[MetricSpec, ...] = (STAGE_LATENCY, PATH_LATENCY, PATHS, SAMPLE, EVICTED)


def _buckets(h: Histogram) -> tuple[list[tuple[str, int]], float]:
    cum = h.cumulative()
    return [(floatToGoString(le), n) for le, n in cum], h.sum_ns / 1e9


def latency_families(lat: Latency, names: Names, netns_names,
                     selector: DeviceSelector = DeviceSelector()) -> list[Metric]:
    fams = {spec.name: spec.family() for spec in LATENCY_METRICS}
    for r in hop_rows(lat.hops, names, selector.wants):
        spec = PATH_LATENCY if r.key.span else STAGE_LATENCY
        spec.add(fams[spec.name], [netns_label(r.key.netns, netns_names), r.device, r.key.src,
                                   r.key.dst], _buckets(r.hist))
    # two kernel paths may read alike (a device since renamed or gone): one series, summed
    paths: dict[tuple[str, str, str], int] = {}
    for p in path_rows(lat.paths, names):
        key = (netns_label(p.netns, netns_names), p.text, p.end)
        paths[key] = paths.get(key, 0) + p.packets
    for labels, n in paths.items():
        PATHS.add(fams[PATHS.name], labels, n)
    for end, n in lat.other.items():
        PATHS.add(fams[PATHS.name], ["", "other", end], n)
    SAMPLE.add(fams[SAMPLE.name], [], lat.sample)
    EVICTED.add(fams[EVICTED.name], [], lat.evicted)
    return [fams[spec.name] for spec in LATENCY_METRICS]

