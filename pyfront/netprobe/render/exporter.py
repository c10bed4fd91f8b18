"""`netprobe export`'s metrics: one scrape's read of the counters, turned into Prometheus metric
families. Pure logic (no kernel, no HTTP), so every metric is tested without root; the parts
that touch the kernel and the network are in export_server.py.

Label names: the stage label is `netstage`, not `stage`, because `stage` (like `env`,
`service`, `job`, `instance`) is a label Prometheus users commonly attach to whole targets;
an exporter label of the same name would be overwritten or renamed to `exported_stage` at
ingestion. Every label set is bounded: by devices x stages, namespaces x protocols, devices x
stages x the kernel's drop reasons, or by the catalogue.
"""
from __future__ import annotations

import html
import ipaddress
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

from prometheus_client.core import (CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily,
                                    InfoMetricFamily, Metric)

from ..model.devices import Device
from .report import DeviceSelector
from ..model.counting import Counts
from ..model.dropcounts import DropCounts
from .dropreport import device_name
from ..model.linkdrops import COUNTERS as LINK_COUNTERS, LinkDropsRead
from ..model.stagestate import StageState

# The Prometheus wiki's exporter range (9100-9999) has been fully allocated since 2023, so
# every port in it belongs to some registered exporter; 10435 lies outside it, clear of
# node_exporter (9100), ebpf_exporter (9435), Linux's ephemeral ports (32768-60999) and
# /etc/services.
DEFAULT_PORT = 10435
DEFAULT_LISTEN = f"127.0.0.1:{DEFAULT_PORT}"

COUNTER, GAUGE, INFO, HISTOGRAM = "counter", "gauge", "info", "histogram"
NO_MECHANISM = "none"
READ_OPERATIONS = ("refresh", "read")  # ProbeSession calls a scrape makes, for the error counter


@dataclass(frozen=True)
class MetricSpec:
    """One metric the exporter emits: the single definition that the families are built from
    and that the docs and dashboard tests check against. `name` is the exposed name."""
    name: str
    kind: str
    help: str
    labels: tuple[str, ...] = ()

    @property
    def family_name(self) -> str:
        # prometheus_client adds _total to counters and _info to info metrics itself
        suffix = {COUNTER: "_total", INFO: "_info"}.get(self.kind, "")
        return self.name[:-len(suffix)] if suffix else self.name

    def family(self) -> Metric:
        if self.kind == INFO:
            # an info metric's labels are its value; it is a gauge of 1 in the text format
            return InfoMetricFamily(self.family_name, self.help)
        cls = {COUNTER: CounterMetricFamily, HISTOGRAM: HistogramMetricFamily}.get(
            self.kind, GaugeMetricFamily)
        return cls(self.family_name, self.help, labels=self.labels)

    def add(self, family: Metric, values: Sequence[str], value=1) -> None:
        """value: a number; for a histogram, (cumulative [(le, count)], sum)"""
        if self.kind == INFO:
            family.add_metric([], dict(zip(self.labels, values)))
        elif self.kind == HISTOGRAM:
            buckets, total = value
            family.add_metric(list(values), buckets, total)
        else:
            family.add_metric(list(values), value)


DEVICE_LABELS = ("netns", "device", "netstage", "direction")

SKBS = MetricSpec(
    "netprobe_skbs_total", COUNTER,
    "sk_buffs seen at a kernel network stage on a device, since the exporter attached.",
    DEVICE_LABELS)
SKB_BYTES = MetricSpec(
    "netprobe_skb_bytes_total", COUNTER,
    "Bytes (skb->len as the stage sees it) of the sk_buffs in netprobe_skbs_total.",
    DEVICE_LABELS)
L4_CALLS = MetricSpec(
    "netprobe_l4_send_calls_total", COUNTER,
    "Successful TCP/UDP sendmsg calls per network namespace; these run before a device is "
    "chosen, so they carry no device label.",
    ("netns", "protocol"))
L4_BYTES = MetricSpec(
    "netprobe_l4_send_bytes_total", COUNTER,
    "Bytes passed to the sendmsg calls in netprobe_l4_send_calls_total.",
    ("netns", "protocol"))
DEVICE_INFO = MetricSpec(
    "netprobe_device_info", INFO,
    "A device netprobe counts; join on netns and device for driver and kind.",
    ("netns", "device", "ifindex", "driver", "kind", "xmit"))
STAGE_ATTACHED = MetricSpec(
    "netprobe_stage_attached", GAUGE,
    "1 when the stage's probes are attached, 0 when no mechanism could reach it "
    "(mechanism=\"none\").",
    ("netstage", "layer", "direction", "mechanism"))
MAP_FULL = MetricSpec(
    "netprobe_map_full_drops_total", COUNTER,
    "Probe hits not counted because the named BPF map was full.",
    ("map",))
READ_ERRORS = MetricSpec(
    "netprobe_map_read_errors_total", COUNTER,
    "Scrapes whose device refresh or counts-map read failed, by operation.",
    ("operation",))
NETNS_UNPROBED = MetricSpec(
    "netprobe_netns_unprobed", GAUGE,
    "1 for a network namespace where the netfilter stages (ip_output, ip_rcv, l4_rcv on "
    "kernels without kprobes) could not be attached: its packets are missing from them. The "
    "exporter's log says why.",
    ("netns",))
NETNS_UNLISTED = MetricSpec(
    "netprobe_netns_devices_unlisted", GAUGE,
    "1 for a network namespace holding more devices than netprobe lists (65,536): the devices "
    "beyond are still counted, but carry no name (device=\"ifN\").",
    ("netns",))
SCRAPE_SECONDS = MetricSpec(
    "netprobe_scrape_duration_seconds", GAUGE,
    "Time this scrape spent refreshing devices and reading the BPF maps.")
BUILD_INFO = MetricSpec(
    "netprobe_build_info", INFO,
    "netprobe's version and the Python and BCC it runs on.",
    ("version", "pythonversion", "bccversion"))
EXPORTER_INFO = MetricSpec(
    "netprobe_exporter_info", INFO,
    "This exporter's flow filter and the kernel it probes.",
    ("flow_filter", "kernel"))

SKB_DROPS = MetricSpec(
    "netprobe_skb_drops_total", COUNTER,
    "sk_buffs freed as drops (skb:kfree_skb) since the exporter attached, by the stage whose "
    "function freed them (netstage=\"other\": none of netprobe's) and the kernel's reason "
    "(reason=\"unknown\" on kernels before 5.17); device=\"no device\" when the skb had none.",
    ("netns", "device", "netstage", "reason"))
DEVICE_DROPS = MetricSpec(
    "netprobe_device_drops_total", COUNTER,
    "The device's own drop counters from the kernel's link statistics (counter=rx_dropped, "
    "tx_dropped, rx_missed_errors), since the device was created: drops in a NIC's rings "
    "never reach kfree_skb. Devices with all three at zero are left out.",
    ("netns", "device", "counter"))

METRICS: tuple[MetricSpec, ...] = (SKBS, SKB_BYTES, L4_CALLS, L4_BYTES, DEVICE_INFO,
                                   SKB_DROPS, DEVICE_DROPS,
                                   STAGE_ATTACHED, NETNS_UNPROBED, NETNS_UNLISTED, MAP_FULL,
                                   READ_ERRORS,
                                   SCRAPE_SECONDS,
                                   BUILD_INFO, EXPORTER_INFO)


@dataclass(frozen=True)
class BuildInfo:
    version: str
    python: str
    bcc: str
    kernel: str
    flow_filter: str


@dataclass(frozen=True)
class Scrape:
    """What one scrape read. `counts` is None when reading the counts map failed."""
    counts: Counts | None
    devices: Mapping[tuple[int, int], Device]
    netns_names: Mapping[int, str]
    stages: Sequence[StageState]
    read_errors: Mapping[str, int]  # cumulative, per READ_OPERATIONS entry
    seconds: float
    unprobed_netns: Sequence[int] = ()  # namespaces without the netfilter stages' links
    drops: DropCounts | None = None        # None: not read (no drops set, or the read failed)
    link_drops: LinkDropsRead | None = None
    unlisted_netns: Sequence[int] = ()  # namespaces with more devices than the walk lists
    latency: object = None  # a latency.Latency under --latency (latexport.py's families)


def netns_label(inum: int, names: Mapping[int, str]) -> str:
    return names.get(inum) or f"ns:{inum}"


def families(scrape: Scrape, build: BuildInfo,
             selector: DeviceSelector = DeviceSelector()) -> list[Metric]:
    """Every metric family, in METRICS order; a family with nothing to report still appears
    (HELP and TYPE, no samples)."""
    fams = {spec.name: spec.family() for spec in METRICS}

    def add(spec: MetricSpec, labels: Sequence[str], value: float = 1) -> None:
        spec.add(fams[spec.name], labels, value)

    names = scrape.netns_names
    attached = [s.stage for s in scrape.stages if s.attached]
    devices = sorted((d for d in scrape.devices.values() if selector.wants(d.name)),
                     key=lambda d: (netns_label(d.netns, names) != "root",
                                    netns_label(d.netns, names), d.ifindex))
    for d in devices:
        add(DEVICE_INFO, [netns_label(d.netns, names), d.name, str(d.ifindex), d.driver, d.kind,
                          d.xmit])

    if scrape.counts is not None:
        values = scrape.counts.values
        # every attached stage of every known device, zeros included: a series that exists
        # before its first packet lets rate() see that packet
        for d in devices:
            for st in (st for st in attached if st.per_device):
                packets, nbytes = values.get((d.netns, d.ifindex, st.name), (0, 0))
                labels = [netns_label(d.netns, names), d.name, st.name, st.direction]
                add(SKBS, labels, packets)
                add(SKB_BYTES, labels, nbytes)
        for ns in sorted({ns for (ns, ifx, _) in values if ifx == 0}):
            for st in (st for st in attached if not st.per_device):
                calls, nbytes = values.get((ns, 0, st.name), (0, 0))
                labels = [netns_label(ns, names), st.protocol or st.name]
                add(L4_CALLS, labels, calls)
                add(L4_BYTES, labels, nbytes)
        add(MAP_FULL, ["counts"], scrape.counts.dropped)

    if scrape.drops is not None:
        for (netns, device, stage, reason), packets in sorted(drop_series(
                scrape.drops, scrape.devices, names, selector).items()):
            add(SKB_DROPS, [netns, device, stage, reason], packets)
        add(MAP_FULL, ["drops"], scrape.drops.lost)
    if scrape.link_drops is not None:
        for link in sorted(scrape.link_drops.values.values(),
                           key=lambda x: (netns_label(x.netns, names), x.ifindex)):
            if selector.wants(link.name) and any(getattr(link, c) for c in LINK_COUNTERS):
                for c in LINK_COUNTERS:
                    add(DEVICE_DROPS, [netns_label(link.netns, names), link.name, c],
                        getattr(link, c))

    for s in scrape.stages:
        add(STAGE_ATTACHED, [s.stage.name, s.stage.layer, s.stage.direction,
                             s.mechanism or NO_MECHANISM],
            1 if s.attached else 0)
    for inum in sorted(scrape.unprobed_netns):
        add(NETNS_UNPROBED, [netns_label(inum, names)], 1)
    for inum in sorted(scrape.unlisted_netns):
        add(NETNS_UNLISTED, [netns_label(inum, names)], 1)
    for op in READ_OPERATIONS:
        add(READ_ERRORS, [op], scrape.read_errors.get(op, 0))
    add(SCRAPE_SECONDS, [], scrape.seconds)
    add(BUILD_INFO, [build.version, build.python, build.bcc])
    add(EXPORTER_INFO, [build.flow_filter, build.kernel])
    return [fams[spec.name] for spec in METRICS]


def drop_series(drops: DropCounts, devices: Mapping[tuple[int, int], Device],
                names: Mapping[int, str], selector: DeviceSelector = DeviceSelector()
                ) -> dict[tuple[str, str, str, str], int]:
    """Drops summed over the functions that freed them: the label set stays bounded by
    devices x stages x reasons, and the function is in `watch`."""
    out: dict[tuple[str, str, str, str], int] = {}
    for k, (packets, _bytes) in drops.values.items():
        dev = device_name(k.netns, k.ifindex, devices)
        if selector.wants(dev):
            key = (netns_label(k.netns, names) if k.netns else "unknown", dev, k.stage, k.reason)
            out[key] = out.get(key, 0) + packets
    return out


def stable_netns_names(previous: Mapping[int, str], current: Mapping[int, str]) -> dict[int, str]:
    """Namespace names for labels, stable while the exporter runs. An unnamed namespace is
    reached through some process ("pid:1234"), and which process comes first can change from
    one scan to the next; a new name would start new series. So a namespace keeps the name it
    was first exported under, except that a "pid:" name gives way to a real one (`ip netns`
    or a bind mount), once. Namespaces no longer present are forgotten."""
    out = {}
    for inum, name in current.items():
        old = previous.get(inum)
        if old is None or (old.startswith("pid:") and not name.startswith("pid:")):
            out[inum] = name
        else:
            out[inum] = old
    return out


def parse_listen_address(text: str) -> tuple[str, int]:
    """'HOST:PORT', '[IPv6]:PORT' or ':PORT' (every interface) -> (host, port); host '' means
    every interface. Raises ValueError with a message fit for a person."""
    text = text.strip()
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or not text[end + 1:].startswith(":"):
            raise ValueError(f"{text!r} is not [IPv6]:PORT")
        host, port_s = text[1:end], text[end + 2:]
        try:
            if ipaddress.ip_address(host).version != 6:
                raise ValueError
        except ValueError:
            raise ValueError(f"{host!r} in brackets is not an IPv6 address") from None
    else:
        host, sep, port_s = text.rpartition(":")
        if not sep:
            raise ValueError(f"{text!r} has no port: use HOST:PORT, e.g. {DEFAULT_LISTEN}")
        if ":" in host:
            raise ValueError(f"put an IPv6 address in brackets: [{host}]:{port_s}")
    if not port_s.isdigit() or not 0 <= int(port_s) <= 65535:
        raise ValueError(f"port {port_s!r} is not a number from 0 to 65535")
    if host and not _valid_host(host):
        raise ValueError(f"{host!r} is neither an IP address nor a host name")
    return host, int(port_s)


def _valid_host(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    labels = host.rstrip(".").split(".")
    return all(0 < len(label) < 64 and label.replace("-", "").isalnum()
               and not label.startswith("-") for label in labels)


def format_address(host: str, port: int) -> str:
    """The inverse of parse_listen_address, for URLs and messages."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def landing_page(build: BuildInfo, stages: Iterable[StageState]) -> bytes:
    """The small page at `/`: what this is, where the metrics are, what each stage uses."""
    rows = "".join(
        f"<tr><td>{html.escape(s.stage.name)}</td><td>{html.escape(s.stage.direction)}</td>"
        f"<td>{html.escape(s.mechanism or NO_MECHANISM)}</td></tr>" for s in stages)
    page = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>netprobe exporter</title></head>
<body>
<h1>netprobe exporter</h1>
<p>Per-device, per-stage sk_buff counts from eBPF, read from the kernel at each scrape.</p>
<p><a href="metrics">Metrics</a></p>
<p>version {html.escape(build.version)}, kernel {html.escape(build.kernel)},
flow filter: {html.escape(build.flow_filter)}</p>
<table><tr><th>stage</th><th>direction</th><th>mechanism</th></tr>{rows}</table>
</body></html>
"""
    return page.encode()
