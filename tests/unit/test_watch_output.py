"""What `watch` says about --device patterns that match nothing (issue 10, item 7), and the
piped form of its table (item 6); pure, no root."""
from rich.console import Console

from netprobe.model.devices import Device
from netprobe.render.view import render
from netprobe.commands.watch import NAMES_SHOWN, unmatched_device_warnings


def dev(name, ns="root", ifindex=1):
    return Device(netns=1, ifindex=ifindex, name=name, driver="", physical=False, xmit="",
                  xmit_addr=0, netns_name=ns)


DEVICES = [dev("lo"), dev("eth0", ifindex=2), dev("veth-a", ns="np-a", ifindex=3)]


def test_patterns_that_match_a_device_say_nothing():
    assert unmatched_device_warnings(("lo", "eth*", "veth-?"), DEVICES) == []
    assert unmatched_device_warnings((), DEVICES) == []


def test_a_pattern_that_matches_nothing_is_named_with_what_exists():
    assert unmatched_device_warnings(("lo", "eht0"), DEVICES) == [
        "--device 'eht0' matches no device (waiting for one to appear); "
        "devices: eth0, lo, veth-a@np-a"]


def test_a_long_device_list_is_cut_short():
    many = [dev(f"d{i:03}", ifindex=i) for i in range(40)]
    w, = unmatched_device_warnings(("x",), many)
    assert w.endswith(f"d{NAMES_SHOWN - 1:03} and {40 - NAMES_SHOWN} more")


def test_no_devices_at_all():
    w, = unmatched_device_warnings(("x",), [])
    assert w.endswith("devices: none")


def text(group) -> str:
    console = Console(width=100, record=True, file=open("/dev/null", "w"))
    console.print(group)
    return console.export_text()


def test_piped_frames_carry_the_time_and_leave_tracing_to_stderr():
    live = text(render([], [], {}, flow="all", seconds=1.0, dropped=0, warnings=["w1"]))
    piped = text(render([], [], {}, flow="all", seconds=1.0, dropped=0, warnings=["w1"],
                        at="12:34:56"))
    assert "Tracing... Ctrl-C to end." in live and "Tracing" not in piped
    assert piped.startswith("12:34:56 netprobe — all — per 1.0s")
    assert "! w1" in piped
