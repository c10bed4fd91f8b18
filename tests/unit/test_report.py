from netprobe.model.devices import Device, WalkRecord, describe
from netprobe.model.kallsyms import Kallsyms
from netprobe.model.catalogue import BY_NAME
from netprobe.model.stagestate import StageState
from netprobe.render.report import (DeviceSelector, active_rows, device_rows, human, protocol_rows,
                                    to_json)

LO = Device(1, 1, "lo", "loopback", False, "loopback_xmit", 0x10, "root")
ETH = Device(1, 2, "eth0", "virtio_net", True, "start_xmit [virtio_net]", 0x20, "root")
NS_LO = Device(2, 1, "lo", "loopback", False, "loopback_xmit", 0x10, "ns-a")
DEVS = {d.key: d for d in (LO, ETH, NS_LO)}


def test_rates_and_totals_per_device_and_stage():
    before = {(1, 1, "driver_xmit"): (100, 6400)}
    now = {(1, 1, "driver_xmit"): (300, 19200), (2, 1, "driver_xmit"): (5, 320)}
    rows = {(r.device.netns, r.device.name): r for r in device_rows(now, before, 2.0, DEVS)}
    c = rows[(1, "lo")].cells["driver_xmit"]
    assert (c.packets, c.packets_delta, c.pps, c.bps) == (300, 200, 100.0, 6400.0)
    assert rows[(2, "lo")].cells["driver_xmit"].packets == 5   # lo of two namespaces: two rows
    assert rows[(1, "eth0")].cells["driver_xmit"].packets == 0


def test_root_namespace_first_and_quiet_devices_of_other_namespaces_hidden():
    rows = device_rows({(1, 1, "driver_xmit"): (1, 1)}, {}, 1.0, DEVS)
    assert [r.device.netns_name for r in rows][0] == "root"
    shown = active_rows(rows)
    assert {(r.device.netns_name, r.device.name) for r in shown} == {("root", "lo"), ("root", "eth0")}


def test_device_selector_globs():
    sel = DeviceSelector(include=("veth*", "lo"), exclude=("veth9",))
    assert sel.wants("lo") and sel.wants("veth1") and not sel.wants("veth9") and not sel.wants("eth0")
    rows = device_rows({}, {}, 1.0, DEVS, DeviceSelector(exclude=("eth*",)))
    assert "eth0" not in {r.device.name for r in rows}


def test_counter_reset_does_not_go_negative():
    rows = device_rows({(1, 1, "ip_rcv"): (3, 30)}, {(1, 1, "ip_rcv"): (10, 100)}, 1.0, DEVS)
    lo = next(r for r in rows if r.device.name == "lo" and r.device.netns == 1)
    assert lo.cells["ip_rcv"].packets_delta == 3


def test_unknown_device_still_gets_a_row():
    rows = device_rows({(9, 7, "driver_rx"): (1, 60)}, {}, 1.0, {}, netns_names={9: "x"})
    assert rows[0].device.name == "if7" and rows[0].device.netns_name == "x"


def test_protocol_rows_and_json():
    now = {(1, 0, "tcp_sendmsg"): (4, 4000), (1, 1, "driver_xmit"): (8, 800)}
    prows = protocol_rows(now, {}, 1.0, {1: "root"})
    assert [(r.protocol, r.cells["tcp_sendmsg"].packets) for r in prows] == [("tcp", 4)]
    obj = to_json(device_rows(now, {}, 1.0, DEVS), prows, time="t", seconds=1.0,
                  states={"driver_xmit": StageState(BY_NAME["driver_xmit"], "raw_tracepoint",
                                                    ("net:net_dev_start_xmit",))},
                  flow="all traffic", dropped=0)
    lo = next(d for d in obj["devices"] if d["name"] == "lo" and d["netns"] == 1)
    assert lo["xmit"] == "loopback_xmit" and lo["stages"]["driver_xmit"]["packets"] == 8
    assert obj["protocols"][0]["stages"]["tcp_sendmsg"]["bytes"] == 4000
    assert {s["name"] for s in obj["stages"]} >= {"driver_xmit", "ip_rcv"}


def test_human():
    assert [human(x) for x in (5, 1234, 2_500_000, 123_000_000)] == ["5", "1.2k", "2.5M", "123M"]


def test_describe_device_from_walk_record():
    ks = Kallsyms("ffffffffc0001000 t start_xmit\t[virtio_net]\nffffffff81000000 t loopback_xmit\n")
    nic = describe(WalkRecord(1, 2, 0x1003, True, "eth0", "", "virtio_net", 0xffffffffc0001000),
                   ks.symbolize)
    assert (nic.driver, nic.kind, nic.xmit) == ("virtio_net", "physical", "start_xmit [virtio_net]")
    lo = describe(WalkRecord(1, 1, 0x8 | 0x1, False, "lo", "", "", 0xffffffff81000000), ks.symbolize)
    assert (lo.driver, lo.kind, lo.xmit) == ("loopback", "virtual", "loopback_xmit")
    veth = describe(WalkRecord(1, 5, 0x1003, False, "veth0", "veth", "", 0x1234), ks.symbolize)
    assert (veth.driver, veth.xmit) == ("veth", "0x1234")
