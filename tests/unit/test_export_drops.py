"""The drop metrics built from a DropCounts and link counters without a kernel: summed over the
freeing functions, device filter, no-device rows, the device counters, lost drops; the
dashboard and the alert use them; promtool accepts the exposition."""
import json
import shutil
import subprocess

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from test_export_metrics import BUILD, DEVICES, NAMES, NS2, ROOT_NS, all_attached, samples, value

from netprobe.model.dropcounts import DropCounts, DropKey
from netprobe.render.exporter import Scrape, families
from netprobe.kernel.linkstats import LinkDrops, LinkDropsRead
from netprobe.render.report import DeviceSelector
from test_export_packaging import DASHBOARD, RULES

DROPS = DropCounts(0.0, {
    DropKey(ROOT_NS, 1, "l4_rcv", "NO_SOCKET", "__udp4_lib_rcv"): (4, 40),
    DropKey(ROOT_NS, 1, "l4_rcv", "NO_SOCKET", "__udp6_lib_rcv"): (3, 30),  # summed with ^
    DropKey(NS2, 7, "ip_rcv", "NETFILTER_DROP", "nft_do_chain"): (9, 900),
    DropKey(ROOT_NS, 0, "other", "QUEUE_PURGE", "sk_stream_kill_queues"): (2, 0),
    DropKey(0, 0, "other", "NOT_SPECIFIED", "udp_destruct_common"): (1, 0),
}, lost=5)
LINKS = LinkDropsRead({(NS2, 7): LinkDrops(NS2, 7, "veth0", 0, 3, 0),
                       (ROOT_NS, 1): LinkDrops(ROOT_NS, 1, "lo", 0, 0, 0)}, {})


def scrape(selector=DeviceSelector()):
    from test_export_metrics import COUNTS
    s = Scrape(COUNTS, DEVICES, NAMES, all_attached(), {}, 0.001, (), DROPS, LINKS)
    return samples(families(s, BUILD, selector))


def test_drops_by_netns_device_stage_and_reason():
    smp = scrape()
    name = "netprobe_skb_drops_total"
    assert value(smp, name, netns="root", device="lo", netstage="l4_rcv", reason="NO_SOCKET") == 7
    assert value(smp, name, netns="blue", device="veth0", netstage="ip_rcv",
                 reason="NETFILTER_DROP") == 9
    assert value(smp, name, netns="root", device="no device", netstage="other",
                 reason="QUEUE_PURGE") == 2
    assert value(smp, name, netns="unknown", device="no device", netstage="other",
                 reason="NOT_SPECIFIED") == 1
    assert value(smp, "netprobe_map_full_drops_total", map="drops") == 5


def test_device_counters_only_where_not_all_zero():
    smp = scrape()
    got = {(dict(k)["device"], dict(k)["counter"]): v for (n, k), v in smp.items()
           if n == "netprobe_device_drops_total"}
    assert got == {("veth0", "rx_dropped"): 0, ("veth0", "tx_dropped"): 3,
                   ("veth0", "rx_missed_errors"): 0}


def test_device_filter_applies():
    smp = scrape(DeviceSelector(("lo",)))
    devs = {dict(k)["device"] for (n, k) in smp if n in ("netprobe_skb_drops_total",
                                                          "netprobe_device_drops_total")}
    assert devs == {"lo"}


def test_no_drops_read_no_drop_series():
    from test_export_metrics import COUNTS
    s = Scrape(COUNTS, DEVICES, NAMES, all_attached(), {}, 0.001)
    smp = samples(families(s, BUILD))
    assert not [k for k in smp if k[0] == "netprobe_skb_drops_total"]


def test_dashboard_and_alert_use_the_drop_metrics():
    exprs = [t["expr"] for p in json.loads(DASHBOARD.read_text())["panels"]
             for t in p.get("targets", [])]
    assert any("netprobe_skb_drops_total" in e for e in exprs)
    assert any("netprobe_device_drops_total" in e for e in exprs)
    assert "netprobe_skb_drops_total" in RULES.read_text()


@pytest.mark.skipif(not shutil.which("promtool"), reason="promtool (Debian: prometheus) not installed")
def test_promtool_accepts_the_exposition(tmp_path):
    from test_export_metrics import COUNTS

    class One:
        def collect(self):
            return families(Scrape(COUNTS, DEVICES, NAMES, all_attached(), {}, 0.001, (),
                                   DROPS, LINKS), BUILD)

    reg = CollectorRegistry(auto_describe=False)
    reg.register(One())
    r = subprocess.run(["promtool", "check", "metrics"], input=generate_latest(reg),
                       capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr.decode() + r.stdout.decode()
