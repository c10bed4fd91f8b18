"""Drop rows and the devices' own counters from two reads, without a kernel: names, rates,
order, the device filter, a row that restarted, and the JSON and text they make."""
from rich.console import Console

from netprobe.model.catalogue import BY_NAME
from netprobe.model.devices import Device
from netprobe.model.dropcounts import NO_DEVICE, DropCounts, DropKey
from netprobe.render.dropreport import drop_lines, drops_json, link_lines
from netprobe.render.dropview import render_drops
from netprobe.kernel.linkstats import LinkDrops, LinkDropsRead
from netprobe.render.report import DeviceSelector
from netprobe.model.stagestate import StageState

DEVICES = {(7, 1): Device(7, 1, "lo", "loopback", False, "loopback_xmit", 0, "np-a"),
           (8, 2): Device(8, 2, "veth1", "veth", False, "veth_xmit", 0, "np-b")}
NAMES = {7: "np-a", 8: "np-b", 1: "root"}
UDP = DropKey(7, 1, "l4_rcv", "NO_SOCKET", "__udp4_lib_rcv")
NFT = DropKey(8, 2, "ip_rcv", "NETFILTER_DROP", "nft_do_chain")
PURGE = DropKey(1, 0, "other", "QUEUE_PURGE", "sk_stream_kill_queues")
GONE = DropKey(8, 9, "l4_rcv", "NO_SOCKET", "__udp6_lib_rcv")


def reads():
    before = DropCounts(0.0, {UDP: (4, 40), NFT: (10, 1000), GONE: (50, 0)}, 0)
    now = DropCounts(2.0, {UDP: (10, 100), NFT: (10, 1000), PURGE: (3, 0), GONE: (2, 0)}, 1)
    return now, before


def test_rows_named_rated_and_busiest_first():
    now, before = reads()
    lines = drop_lines(now, before, 2.0, DEVICES, NAMES)
    assert [(d.device, d.netns_name, d.packets, d.packets_delta, d.pps) for d in lines] == [
        ("lo", "np-a", 10, 6, 3.0),
        ("no device", "root", 3, 3, 1.5),
        ("if9", "np-b", 2, 2, 1.0),        # unknown device, and a row that restarted
        ("veth1", "np-b", 10, 0, 0.0),
    ]


def test_device_filter_applies_to_drops():
    now, before = reads()
    only_lo = drop_lines(now, before, 2.0, DEVICES, NAMES, DeviceSelector(("lo",)))
    assert [d.key for d in only_lo] == [UDP]
    no_devless = drop_lines(now, before, 2.0, DEVICES, NAMES, DeviceSelector((), (NO_DEVICE,)))
    assert PURGE not in [d.key for d in no_devless]


def test_link_lines_only_devices_with_drops_and_their_deltas():
    b = LinkDropsRead({(8, 2): LinkDrops(8, 2, "veth1", 0, 3, 0)}, {})
    n = LinkDropsRead({(8, 2): LinkDrops(8, 2, "veth1", 0, 7, 0),
                       (7, 1): LinkDrops(7, 1, "lo", 0, 0, 0),
                       (7, 3): LinkDrops(7, 3, "eth0", 2, 0, 5)}, {9: "gone"})
    lines = link_lines(n, b, 1.0, NAMES)
    assert [(x.link.name, dict(x.deltas)) for x in lines] == [
        ("eth0", {"rx_dropped": 0, "tx_dropped": 0, "rx_missed_errors": 0}),  # new: no delta
        ("veth1", {"rx_dropped": 0, "tx_dropped": 4, "rx_missed_errors": 0}),
    ]


def state():
    return StageState(BY_NAME["drop"], "tp_btf", ("skb:kfree_skb",))


def test_json():
    now, before = reads()
    lines = drop_lines(now, before, 2.0, DEVICES, NAMES)
    obj = drops_json(lines[:1], [], state=state(), reasons=True, lost=1)
    assert obj["stage"]["mechanism"] == "tp_btf" and obj["reasons"] and obj["lost"] == 1
    assert obj["rows"] == [{"netns": 7, "netns_name": "np-a", "ifindex": 1, "device": "lo",
                            "stage": "l4_rcv", "reason": "NO_SOCKET",
                            "function": "__udp4_lib_rcv", "packets": 10, "bytes": 100,
                            "packets_delta": 6, "pps": 3.0}]


def text(group) -> str:
    c = Console(width=80, record=True, file=open("/dev/null", "w"))
    c.print(group)
    return c.export_text()


def test_text_fits_80_columns_and_says_when_the_kernel_gives_no_reasons():
    now, before = reads()
    lines = drop_lines(now, before, 2.0, DEVICES, NAMES)
    links = link_lines(LinkDropsRead({(8, 2): LinkDrops(8, 2, "veth1", 0, 7, 0)}, {}), None, 1.0,
                       NAMES)
    out = text(render_drops(lines, links, reasons=True, lost=0, attached=True, describe=""))
    assert max(map(len, out.splitlines())) <= 80
    assert "lo @np-a" in out and "NO_SOCKET" in out and "__udp4_lib_rcv" in out
    assert "l4_rcv" in out and "tx_dropped" in out
    out = text(render_drops(lines, [], reasons=False, lost=2, attached=True, describe=""))
    assert "no drop reasons (before 5.17" in out and "2 drops not counted" in out
    out = text(render_drops([], [], reasons=True, lost=0, attached=False,
                            describe="unavailable (tp_btf: no tracepoint skb:kfree_skb)"))
    assert "drops: unavailable" in out
