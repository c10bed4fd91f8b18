"""The exporter's metric families, built from a Counts and devices without a kernel."""
import shutil
import subprocess

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from netprobe.model.catalogue import STAGES
from netprobe.model.devices import Device
from netprobe.render.exporter import (DEFAULT_LISTEN, DEFAULT_PORT, METRICS, BuildInfo, Scrape,
                                      families, format_address, landing_page, parse_listen_address,
                                      stable_netns_names)
from netprobe.model.stagestate import StageState
from netprobe.render.report import DeviceSelector
from netprobe.model.counting import Counts

ROOT_NS, NS2 = 4026531840, 4026532999
LO = Device(ROOT_NS, 1, "lo", "loopback", False, "loopback_xmit", 0xA1, "root")
ETH = Device(ROOT_NS, 2, "eth0", "virtio_net", True, "start_xmit [virtio_net]", 0xA2, "root")
VETH = Device(NS2, 7, "veth0", "veth", False, "veth_xmit", 0xA3, "pid:77")
DEVICES = {d.key: d for d in (LO, ETH, VETH)}
NAMES = {ROOT_NS: "root", NS2: "blue"}
BUILD = BuildInfo("0.1.0", "3.11.2", "0.26.0", "6.18.0", "all traffic")
COUNTS = Counts(0.0, {
    (ROOT_NS, 1, "driver_xmit"): (10, 1000),
    (ROOT_NS, 1, "driver_rx"): (10, 860),
    (NS2, 7, "ip_output"): (2, 200),
    (ROOT_NS, 0, "tcp_sendmsg"): (3, 300),
    (ROOT_NS, 99, "driver_xmit"): (5, 500),  # a device that appeared after the refresh
}, dropped=4)


def all_attached(unavailable=()):
    return [StageState(s, None if s.name in unavailable else "raw_tracepoint") for s in STAGES]


def scrape(counts=COUNTS, devices=DEVICES, names=NAMES, stages=None, errors=None):
    return Scrape(counts, devices, names, stages or all_attached(), errors or {}, 0.002)


def samples(fams):
    """{(sample name, sorted labels): value}"""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in fams for s in f.samples}


def value(smp, name, **labels):
    return smp[(name, tuple(sorted(labels.items())))]


def names_with(smp, name):
    return [dict(k[1]) for k in smp if k[0] == name]


def test_device_counters_carry_netns_device_stage_and_direction():
    smp = samples(families(scrape(), BUILD))
    assert value(smp, "netprobe_skbs_total", netns="root", device="lo", netstage="driver_xmit",
                 direction="tx") == 10
    assert value(smp, "netprobe_skb_bytes_total", netns="root", device="lo",
                 netstage="driver_xmit", direction="tx") == 1000
    assert value(smp, "netprobe_skbs_total", netns="root", device="lo", netstage="driver_rx",
                 direction="rx") == 10
    # namespaces are named by the scrape's names, not by what the walk called them
    assert value(smp, "netprobe_skbs_total", netns="blue", device="veth0", netstage="ip_output",
                 direction="tx") == 2


def test_every_attached_stage_of_every_known_device_is_exported_with_zeros():
    smp = samples(families(scrape(stages=all_attached(unavailable={"l4_rcv"})), BUILD))
    eth = names_with(smp, "netprobe_skbs_total")
    eth = {l["netstage"] for l in eth if l["device"] == "eth0"}
    device_stages = {s.name for s in STAGES if s.per_device}
    assert eth == device_stages - {"l4_rcv"}  # an unavailable stage has no series at all
    assert value(smp, "netprobe_skbs_total", netns="root", device="eth0", netstage="ip_rcv",
                 direction="rx") == 0
    assert len(names_with(smp, "netprobe_skbs_total")) == 3 * (len(device_stages) - 1)


def test_rows_of_unknown_devices_wait_for_the_next_refresh():
    smp = samples(families(scrape(), BUILD))
    assert all(l["device"] != "if99" for l in names_with(smp, "netprobe_skbs_total"))
    assert len(names_with(smp, "netprobe_device_info")) == 3


def test_device_info_joins_driver_kind_and_ifindex():
    smp = samples(families(scrape(), BUILD))
    assert value(smp, "netprobe_device_info", netns="root", device="eth0", ifindex="2",
                 driver="virtio_net", kind="physical", xmit="start_xmit [virtio_net]") == 1
    assert value(smp, "netprobe_device_info", netns="blue", device="veth0", ifindex="7",
                 driver="veth", kind="virtual", xmit="veth_xmit") == 1


def test_l4_send_series_have_no_device_and_zero_fill_the_other_protocol():
    smp = samples(families(scrape(), BUILD))
    assert value(smp, "netprobe_l4_send_calls_total", netns="root", protocol="tcp") == 3
    assert value(smp, "netprobe_l4_send_bytes_total", netns="root", protocol="tcp") == 300
    assert value(smp, "netprobe_l4_send_calls_total", netns="root", protocol="udp") == 0
    # a namespace that sent nothing has no L4 series
    assert all(l["netns"] == "root" for l in names_with(smp, "netprobe_l4_send_calls_total"))


def test_device_selector_bounds_device_series_not_l4_ones():
    sel = DeviceSelector(include=("lo", "veth*"), exclude=("veth*",))
    smp = samples(families(scrape(), BUILD, sel))
    assert {l["device"] for l in names_with(smp, "netprobe_skbs_total")} == {"lo"}
    assert {l["device"] for l in names_with(smp, "netprobe_device_info")} == {"lo"}
    assert value(smp, "netprobe_l4_send_calls_total", netns="root", protocol="tcp") == 3


def test_stage_attach_status_names_the_mechanism_and_is_zero_when_unavailable():
    smp = samples(families(scrape(stages=all_attached(unavailable={"driver_xmit"})), BUILD))
    assert value(smp, "netprobe_stage_attached", netstage="driver_xmit", layer="driver",
                 direction="tx", mechanism="none") == 0
    assert value(smp, "netprobe_stage_attached", netstage="ip_rcv", layer="L3", direction="rx",
                 mechanism="raw_tracepoint") == 1
    assert len(names_with(smp, "netprobe_stage_attached")) == len(STAGES)


def test_map_full_drops_and_read_errors():
    smp = samples(families(scrape(errors={"read": 2}), BUILD))
    assert value(smp, "netprobe_map_full_drops_total", map="counts") == 4
    assert value(smp, "netprobe_map_read_errors_total", operation="read") == 2
    assert value(smp, "netprobe_map_read_errors_total", operation="refresh") == 0


def test_namespaces_without_netfilter_links_are_named():
    s = scrape()
    assert names_with(samples(families(s, BUILD)), "netprobe_netns_unprobed") == []
    s = Scrape(s.counts, s.devices, s.netns_names, s.stages, s.read_errors, s.seconds,
               unprobed_netns=[NS2])
    smp = samples(families(s, BUILD))
    assert names_with(smp, "netprobe_netns_unprobed") == [{"netns": "blue"}]
    assert value(smp, "netprobe_netns_unprobed", netns="blue") == 1


def test_a_failed_read_exports_no_counts_but_everything_else():
    fams = families(scrape(counts=None, errors={"read": 1}), BUILD)
    smp = samples(fams)
    for name in ("netprobe_skbs_total", "netprobe_skb_bytes_total",
                 "netprobe_l4_send_calls_total", "netprobe_map_full_drops_total"):
        assert names_with(smp, name) == []
    assert value(smp, "netprobe_map_read_errors_total", operation="read") == 1
    assert len(names_with(smp, "netprobe_stage_attached")) == len(STAGES)
    assert [f.name for f in fams] == [m.family_name for m in METRICS]


def test_build_and_exporter_info_and_scrape_duration():
    smp = samples(families(scrape(), BUILD))
    assert value(smp, "netprobe_build_info", version="0.1.0", pythonversion="3.11.2",
                 bccversion="0.26.0") == 1
    assert value(smp, "netprobe_exporter_info", flow_filter="all traffic", kernel="6.18.0") == 1
    assert value(smp, "netprobe_scrape_duration_seconds") == 0.002


def test_unnamed_namespace_falls_back_to_its_inode():
    smp = samples(families(scrape(names={ROOT_NS: "root"}), BUILD))
    assert {l["netns"] for l in names_with(smp, "netprobe_device_info")} == {"root", f"ns:{NS2}"}


def test_no_label_is_named_like_a_target_label():
    reserved = {"job", "instance", "stage", "service", "env", "environment", "cluster", "region"}
    for m in METRICS:
        assert not reserved & set(m.labels), m.name
        assert not any(l.startswith("__") for l in m.labels)
        if m.kind == "counter":
            assert m.name.endswith("_total")
        if m.kind == "info":
            assert m.name.endswith("_info")


class _Static:
    def __init__(self, fams):
        self.fams = fams

    def collect(self):
        return self.fams


def exposition(fams) -> str:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(_Static(fams))
    return generate_latest(reg).decode()


def test_text_exposition_has_exactly_the_catalogued_names():
    text = exposition(families(scrape(), BUILD))
    typed = [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")]
    assert typed == [m.name for m in METRICS]


@pytest.mark.skipif(not shutil.which("promtool"), reason="promtool (Debian: prometheus) not installed")
def test_promtool_finds_nothing_to_lint():
    text = exposition(families(scrape(stages=all_attached(unavailable={"l4_rcv"})), BUILD))
    r = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0 and r.stdout == "" and r.stderr == "", r.stdout + r.stderr


@pytest.mark.parametrize("previous, current, expected", [
    ({}, {1: "root", 2: "pid:10"}, {1: "root", 2: "pid:10"}),
    # the process that named it is gone: keep the name the series already have
    ({2: "pid:10"}, {2: "pid:33"}, {2: "pid:10"}),
    # a real name replaces a pid name, once
    ({2: "pid:10"}, {2: "blue"}, {2: "blue"}),
    ({2: "blue"}, {2: "pid:33"}, {2: "blue"}),
    ({2: "blue"}, {2: "green"}, {2: "blue"}),
    # a namespace that is gone is forgotten; its inode may come back as a new one
    ({2: "blue"}, {1: "root"}, {1: "root"}),
])
def test_stable_netns_names(previous, current, expected):
    assert stable_netns_names(previous, current) == expected


@pytest.mark.parametrize("text, expected", [
    ("127.0.0.1:10435", ("127.0.0.1", 10435)),
    ("[::1]:9999", ("::1", 9999)),
    ("[fe80::1%eth0]:9999", ("fe80::1%eth0", 9999)),  # link-local, with its scope
    (":10435", ("", 10435)),
    ("localhost:80", ("localhost", 80)),
    ("0.0.0.0:0", ("0.0.0.0", 0)),
    (" 127.0.0.1:1 ", ("127.0.0.1", 1)),
])
def test_parse_listen_address(text, expected):
    assert parse_listen_address(text) == expected


@pytest.mark.parametrize("text, message", [
    ("127.0.0.1", "has no port"),
    ("::1:9000", "put an IPv6 address in brackets: [::1]:9000"),
    ("[::1]9000", "is not [IPv6]:PORT"),
    ("[::1:9000", "is not [IPv6]:PORT"),
    ("[127.0.0.1]:9000", "is not an IPv6 address"),
    ("127.0.0.1:65536", "is not a number from 0 to 65535"),
    ("127.0.0.1:http", "is not a number from 0 to 65535"),
    ("127.0.0.1:", "is not a number from 0 to 65535"),
    ("bad host!:80", "neither an IP address nor a host name"),
    ("", "has no port"),
])
def test_parse_listen_address_errors_say_what_is_wrong(text, message):
    with pytest.raises(ValueError) as e:
        parse_listen_address(text)
    assert message in str(e.value)


def test_format_address_round_trips():
    for host, port in (("::1", 1), ("127.0.0.1", 2), ("", 3)):
        assert parse_listen_address(format_address(host, port)) == (host, port)


def test_default_port_clashes_with_no_well_known_exporter():
    assert DEFAULT_LISTEN.startswith("127.0.0.1:")
    assert DEFAULT_PORT not in (9090, 9091, 9093, 9100, 9435) and not 9100 <= DEFAULT_PORT <= 9999


def test_landing_page_links_the_metrics_and_escapes():
    page = landing_page(BuildInfo("0.1.0", "3", "0.26", "6.18", "host <x>"), all_attached()).decode()
    assert '<a href="metrics">' in page and "host &lt;x&gt;" in page and "driver_xmit" in page
