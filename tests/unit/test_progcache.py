"""The compiled-program cache's pure parts: the key, the map references, the entry's checks."""
import struct

import pytest

from netprobe.kernel import progcache
from netprobe.kernel.progcache import Entry, MapDef, ProgDef, Rejected, Uncacheable


def insn(code, dst=0, src=0, off=0, imm=0):
    return struct.pack("<BBhi", code, (src << 4) | dst, off, imm)


def ld_map_fd(fd, dst=1):  # ld_imm64 BPF_PSEUDO_MAP_FD: two slots
    return insn(0x18, dst, 1, 0, fd) + insn(0, 0, 0, 0, 0)


EXIT = insn(0x95)
MOV_R0_0 = insn(0xb7)
MACHINE = {"release": "6.1.0-56-amd64", "build": "#1 SMP Debian", "arch": "x86_64",
           "btf": "ab" * 32, "possible_cpus": "0-1", "bcc": "0.26.0"}
PROGS = [{"key": "netdev_walk", "fn": "netdev_walk", "type": 17, "attach_type": -1, "btf_id": 0}]


def key(**change):
    parts = {"text": "int f(void *c) { return 0; }", "cflags": ["-DA=1"], "progs": PROGS,
             "machine": MACHINE}
    for k, v in change.items():
        if k in MACHINE:
            parts["machine"] = {**MACHINE, k: v}
        else:
            parts[k] = v
    return progcache.derive_key(**parts)


def test_the_key_is_stable_and_ignores_the_order_of_machine_facts():
    assert key() == key()
    assert key() == progcache.derive_key("int f(void *c) { return 0; }", ["-DA=1"], PROGS,
                                         dict(reversed(list(MACHINE.items()))))


@pytest.mark.parametrize("change", [
    {"text": "int f(void *c) { return 1; }"},
    {"cflags": ["-DA=2"]},
    {"cflags": ["-DA=1", "-DB=1"]},
    {"progs": [{**PROGS[0], "btf_id": 7}]},
    {"progs": []},
    {"release": "6.12.118+deb12-amd64"},
    {"build": "#2 SMP Debian"},
    {"btf": "cd" * 32},
    {"bcc": "0.29.1"},
    {"possible_cpus": "0-3"},
    {"arch": "aarch64"},
])
def test_every_part_of_the_key_changes_it(change):
    assert key(**change) != key()


def test_map_references_are_found_and_a_second_slot_is_not_an_instruction():
    # the second slot carries the constant's upper half: any bytes, here those of a map
    # reference to fd 5, which is no map
    wide = insn(0x18, 1, 0, 0, 1) + insn(0x18, 0, 1, 0, 5)
    insns = ld_map_fd(7) + wide + ld_map_fd(9) + MOV_R0_0 + EXIT
    refs = progcache.map_refs(insns, {7: "counts", 9: "slots"})
    assert refs == ((0, "counts"), (4, "slots"))


def test_a_reference_to_an_fd_that_is_no_map_is_not_cached():
    with pytest.raises(Uncacheable):
        progcache.map_refs(ld_map_fd(5) + EXIT, {7: "counts"})


@pytest.mark.parametrize("src", [2, 3, 5, 6])
def test_an_ld_imm64_that_no_entry_can_carry_is_not_cached(src):
    with pytest.raises(Uncacheable):
        progcache.map_refs(insn(0x18, 1, src, 0, 3) + insn(0) + EXIT, {3: "counts"})


def test_patch_writes_this_process_fds_into_the_references():
    prog = ProgDef(ld_map_fd(7) + ld_map_fd(9) + EXIT, ((0, "counts"), (2, "slots")))
    out = progcache.patch(prog, {"counts": 31, "slots": 32})
    assert [imm for _, _, imm in progcache._ld_imm64s(out)] == [31, 32]
    assert out[32:] == prog.insns[32:] and len(out) == len(prog.insns)


def entry():
    counts = MapDef("counts", 5, 16, 16, 10240, 0, "counts", ["np_key", [["a", "int"]]], "int")
    return Entry("GPL", 0x060100, [counts],
                 {"f": ProgDef(ld_map_fd(4) + MOV_R0_0 + EXIT, ((0, "counts"),))})


def test_an_entry_reads_back_as_it_was_written():
    k = key()
    got = progcache.decode(progcache.encode(k, entry()), k)
    assert got == entry()


def _flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 1]) + data[at + 1:]


@pytest.mark.parametrize("damage, why", [
    (lambda d: _flip(d, len(d) - 10), "checksum"),
    (lambda d: _flip(d, len(d) // 2), "checksum"),
    (lambda d: d[:-1], "checksum"),
    (lambda d: d[:40], "entry"),
    (lambda d: b"", "entry"),
    (lambda d: d.replace(b"progcache 1 ", b"progcache 9 ", 1), "format"),
    (lambda d: b"#!/bin/sh\n" + d, "entry"),
])
def test_a_damaged_entry_is_rejected(damage, why):
    k = key()
    with pytest.raises(Rejected, match=why):
        progcache.decode(damage(progcache.encode(k, entry())), k)


def test_an_entry_for_another_key_is_rejected():
    with pytest.raises(Rejected, match="key"):
        progcache.decode(progcache.encode(key(), entry()), key(release="6.12.118+deb12-amd64"))


def test_a_map_reference_the_entry_does_not_list_is_rejected():
    """Its fd would be loaded as it was written: whatever that number is in this process."""
    e = entry()
    e.progs["f"] = ProgDef(ld_map_fd(4) + ld_map_fd(4) + EXIT, ((0, "counts"),))
    with pytest.raises(Rejected, match="map references"):
        progcache.decode(progcache.encode(key(), e), key())


@pytest.mark.parametrize("refs, why", [
    (((1, "counts"),), "map references"),      # not an ld_imm64
    (((0, "nothere"),), "lacks"),
])
def test_listed_references_must_be_real(refs, why):
    e = entry()
    e.progs["f"] = ProgDef(e.progs["f"].insns, refs)
    with pytest.raises(Rejected, match=why):
        progcache.decode(progcache.encode(key(), e), key())


def test_a_well_formed_checksum_over_a_malformed_body_is_rejected():
    body = b'{"key": "%s", "maps": 3}' % key().encode()
    import hashlib
    data = b"netprobe-progcache 1 " + hashlib.sha256(body).hexdigest().encode() + b"\n" + body
    with pytest.raises(Rejected, match="malformed"):
        progcache.decode(data, key())


def test_instructions_that_are_not_whole_are_rejected():
    e = entry()
    e.progs["f"] = ProgDef(EXIT + b"\x00", ())
    with pytest.raises(Rejected, match="bytes of instructions"):
        progcache.decode(progcache.encode(key(), e), key())


@pytest.mark.parametrize("setting", ["off", "OFF", "0", "no"])
def test_the_cache_can_be_turned_off(monkeypatch, setting):
    monkeypatch.setenv("NETPROBE_CACHE", setting)
    assert progcache.Cache.from_env() is None
