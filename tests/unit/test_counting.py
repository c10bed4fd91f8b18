"""counting.py's rules, without a kernel: which per-CPU slot speaks for which device, and what
counts as a device change the probes must be told of."""
from netprobe.model.counting import (CountKey, DevSlot, NetSlot, aggregate, device_changes,
                                     slot_counts)
from netprobe.model.devices import Device

STAGES = ("ip_output", "driver_xmit", "tcp_sendmsg")
LO = Device(1, 1, "lo", "loopback", False, "loopback_xmit", 0xa, "root", addr=0x1000)
VETH = Device(2, 5, "veth0", "veth", False, "veth_xmit", 0xb, "ns2", addr=0x2000)


def slot(dev, netns, ifindex, *packets):
    return DevSlot(dev, netns, ifindex, [(p, 100 * p) for p in packets])


def test_hash_rows_and_slots_of_live_devices_add_up():
    got = aggregate([(1, 1, 1, 3, 300)], [slot(0x1000, 1, 1, 0, 2, 0), slot(0x1000, 1, 1, 1, 0, 0)],
                    [NetSlot(0x9, 2, [(0, 0), (0, 0), (4, 40)])], [LO, VETH], set(), {1, 2}, STAGES)
    assert got == {CountKey(1, 1, "driver_xmit"): (5, 500), CountKey(1, 1, "ip_output"): (1, 100),
                   CountKey(2, 0, "tcp_sendmsg"): (4, 40)}


def test_a_slot_not_yet_reread_after_its_address_was_reused_is_not_counted():
    # 0x1000 is veth0 now; the slot still says (1, 1): the vanished lo's numbers
    moved = Device(2, 5, "veth0", "veth", False, "veth_xmit", 0xb, "ns2", addr=0x1000)
    assert not slot_counts(slot(0x1000, 1, 1, 7), {0x1000: (2, 5, 0)}, {(2, 5): 0x1000}, set())
    assert aggregate([], [slot(0x1000, 1, 1, 7)], [], [moved], set(), {2}, STAGES) == {}


def test_a_device_netprobe_cannot_list_counts_until_it_is_released():
    # a namespace netprobe cannot enter: its device is not listed, but its slot is counted...
    assert slot_counts(slot(0x3000, 7, 2, 1), {}, {}, set())
    # ...unless the device vanished (its address was released to the probes)
    assert not slot_counts(slot(0x3000, 7, 2, 1), {}, {}, {0x3000})
    # ...or the listed device at that (netns, ifindex) is another net_device
    assert not slot_counts(slot(0x3000, 7, 2, 1), {}, {(7, 2): 0x4000}, set())


def test_slots_of_vanished_namespaces_are_dropped():
    ns = [NetSlot(0x9, 3, [(0, 0), (0, 0), (4, 40)])]
    assert aggregate([], [], ns, [], set(), {1}, STAGES) == {}


def test_device_changes():
    assert device_changes({}, {LO.key: LO}) == ([], True)  # the first listing: tell the probes
    assert device_changes({LO.key: LO}, {LO.key: LO}) == ([], False)
    renamed = Device(1, 1, "lo2", "loopback", False, "loopback_xmit", 0xa, "root", addr=0x1000)
    assert device_changes({LO.key: LO}, {LO.key: renamed}) == ([LO], False)
    other = Device(1, 1, "lo", "loopback", False, "loopback_xmit", 0xa, "root", addr=0x5000)
    assert device_changes({LO.key: LO}, {LO.key: other}) == ([LO], True)
    assert device_changes({LO.key: LO, VETH.key: VETH}, {LO.key: LO}) == ([VETH], True)


def test_a_device_in_a_namespace_made_anew_is_another_device():
    """Same netns inode (reused), same ifindex, same net_device address: only the namespace's
    cookie tells the new device from the vanished one, whose counts it must not inherit."""
    old = Device(2, 2, "v0", "veth", False, "veth_xmit", 0xb, "ns", addr=0x2000, cookie=41)
    new = Device(2, 2, "v0", "veth", False, "veth_xmit", 0xb, "ns", addr=0x2000, cookie=42)
    assert device_changes({old.key: old}, {new.key: new}) == ([old], True)
    stale = DevSlot(0x2000, 2, 2, [(0, 0), (101, 0), (0, 0)], cookie=41)
    assert aggregate([], [stale], [], [new], set(), {2}, STAGES) == {}
    fresh = DevSlot(0x2000, 2, 2, [(0, 0), (101, 0), (0, 0)], cookie=42)
    assert aggregate([], [fresh], [], [new], set(), {2}, STAGES) == {
        CountKey(2, 2, "driver_xmit"): (101, 0)}
