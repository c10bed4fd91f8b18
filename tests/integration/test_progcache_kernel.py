"""The compiled-program cache against the real kernel: a hit loads without BCC and counts
exactly what a compile counts; an entry that is corrupt or not root's alone is never loaded."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from netprobe.kernel import progcache
from netprobe.model.flowfilter import FlowFilter
from netprobe.kernel.session import ProbeSession
from netprobe.kernel.topology import VethPair
from netprobe.kernel.traffic import udp_flow

from following import linked

ROOT = Path(__file__).resolve().parents[2]
PORT = 47301
STAGES_TX = ("ip_output", "dev_queue_xmit", "driver_xmit")
STAGES_RX = ("driver_rx", "netif_receive_skb", "ip_rcv", "l4_rcv")


@pytest.fixture
def cache(bpf_ok, tmp_path, monkeypatch):
    path = tmp_path / "cache"  # created by netprobe, 0700
    monkeypatch.setenv("NETPROBE_CACHE", str(path))
    return path


def entries(path: Path) -> list[Path]:
    return sorted(path.glob("*.entry"))


def counted(flow: FlowFilter) -> tuple[str, dict]:
    """One session's source and its counts of 100 UDP datagrams across a fresh veth pair."""
    with VethPair.create() as pair, ProbeSession(flow=flow) as s:
        pair.wait_up()
        linked([s], pair.a.path, pair.b.path)
        va = next(d for d in s.devices.values() if d.netns_name == pair.a.ns and d.name == pair.a.dev)
        vb = next(d for d in s.devices.values() if d.netns_name == pair.b.ns and d.name == pair.b.dev)
        before = s.read()
        got = udp_flow(server_addr=pair.b.addr4, port=PORT, count=100, server_ns=pair.b.path,
                       client_ns=pair.a.path)
        after = s.read()
        assert got == 100
        counts = {}
        for d, stages in ((va, STAGES_TX), (vb, STAGES_RX)):
            for stage in stages:
                k = (d.netns, d.ifindex, stage)
                counts[f"{d.name[-1]} {stage}"] = (after.values.get(k, (0, 0))[0]
                                                  - before.values.get(k, (0, 0))[0])
        k = (va.netns, 0, "udp_sendmsg")
        counts["udp_sendmsg"] = after.values.get(k, (0, 0))[0] - before.values.get(k, (0, 0))[0]
        return s._loaded.source, counts


def test_a_hit_loads_without_bcc_and_counts_exactly_as_a_compile(cache):
    flow = FlowFilter(port=PORT)
    miss_source, miss = counted(flow)
    assert miss_source == "compiled" and len(entries(cache)) == 1
    hit_source, hit = counted(flow)
    assert hit_source == "cache"
    assert miss == hit
    assert set(miss.values()) == {100}, miss


_HIT_WITHOUT_BCC = r"""
import sys
from netprobe.kernel.session import ProbeSession
with ProbeSession() as s:
    maps = open("/proc/self/maps").read()
    assert s.read().values is not None
    print(s._loaded.source, "bcc" in sys.modules, "libLLVM" in maps or "libclang" in maps)
"""


def test_a_hit_starts_no_compiler_and_a_changed_key_compiles_again(cache):
    def run(**env):
        r = subprocess.run([sys.executable, "-c", _HIT_WITHOUT_BCC], capture_output=True,
                           text=True, timeout=120,
                           env={"PYTHONPATH": str(ROOT / "pyfront"), "PATH": "/usr/bin:/bin",
                                "NETPROBE_CACHE": str(cache), **env})
        assert r.returncode == 0, r.stderr
        return r.stdout.split()

    assert run() == ["compiled", "False", "False"]
    assert run() == ["cache", "False", "False"]
    # another program text is another key: compiled, and kept beside the first
    with ProbeSession(flow=FlowFilter(port=PORT + 1)) as s:
        assert s._loaded.source == "compiled"
    assert len(entries(cache)) == 2


def _corrupt(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x20
    path.write_bytes(bytes(data))


def _foreign(path: Path) -> None:
    os.chown(path, 1000, 1000)


def _writable_by_others(path: Path) -> None:
    os.chmod(path, 0o666)


@pytest.mark.parametrize("spoil, why", [(_corrupt, "checksum mismatch"),
                                        (_foreign, "owned by uid 1000"),
                                        (_writable_by_others, "mode 666")])
def test_a_spoiled_entry_is_ignored_with_a_note_and_compiled_again(cache, capfd, spoil, why):
    with ProbeSession() as s:
        assert s._loaded.source == "compiled"
    [entry] = entries(cache)
    spoil(entry)
    capfd.readouterr()
    with ProbeSession() as s:
        assert s._loaded.source == "compiled"
        assert s.read().values is not None
    notes = [ln for ln in capfd.readouterr().err.splitlines() if "cache" in ln]
    assert len(notes) == 1 and why in notes[0] and str(entry) in notes[0], notes
    # the compile replaced it with a sound entry of root's, used by the next start
    st = entry.stat()
    assert st.st_uid == 0 and st.st_mode & 0o077 == 0
    with ProbeSession() as s:
        assert s._loaded.source == "cache"


def test_a_cache_directory_others_may_use_is_not_used(cache, capfd):
    cache.mkdir(mode=0o755)
    os.chmod(cache, 0o755)
    with ProbeSession() as s:
        assert s._loaded.source == "compiled"
    assert "not a directory only root can use" in capfd.readouterr().err
    assert entries(cache) == []


def test_off_means_no_cache_at_all(cache, monkeypatch):
    monkeypatch.setenv("NETPROBE_CACHE", "off")
    for _ in range(2):
        with ProbeSession() as s:
            assert s._loaded.source == "compiled"
    assert not cache.exists()


def test_the_cache_directory_is_made_root_only(cache):
    assert progcache.Cache.from_env() is not None
    st = cache.stat()
    assert st.st_uid == 0 and st.st_mode & 0o777 == 0o700
