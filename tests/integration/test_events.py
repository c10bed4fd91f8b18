"""The event channel on this kernel: a tiny program on net:net_dev_queue sends one record per
skb queued on lo in a namespace of the test's own, through a ring buffer and through a perf buffer;
exactly the packets sent arrive, and what a full buffer loses is counted."""
import ctypes
import os
import time

import pytest
from event_probe import EventProbe

from netprobe.kernel import events
from netprobe.kernel.topology import VethPair
from netprobe.kernel.traffic import udp_flow

PAYLOAD = 64
SKB_LEN = 14 + 20 + 8 + PAYLOAD  # on lo, net_dev_queue sees the Ethernet header too

TEST_C = r"""
struct test_event {
    u64 ts;
    u32 len;
    u32 cpu;
};

int on_queue(struct bpf_raw_tracepoint_args *ctx)
{
    void *skb = (void *)ctx->args[0];
    void *dev = test_dev(skb);
    u32 ifindex = 0;
    if (dev)
        bpf_probe_read_kernel(&ifindex, sizeof(ifindex), dev + OFF_DEV_IFINDEX);
    if (ifindex != 1)  /* lo only: the veth end carries IPv6 autoconf */
        return 0;
    struct test_event *e = NP_EVENT_RESERVE(struct test_event);
    if (!e)
        return 0;
    e->ts = bpf_ktime_get_ns();
    bpf_probe_read_kernel(&e->len, sizeof(e->len), skb + OFF_SKB_LEN);
    e->cpu = bpf_get_smp_processor_id();
    NP_EVENT_SUBMIT(ctx, e);
    return 0;
}
"""


class QueueEvent(ctypes.Structure):
    _fields_ = [("ts", ctypes.c_uint64), ("len", ctypes.c_uint32), ("cpu", ctypes.c_uint32)]


@pytest.fixture(scope="module")
def netns(bpf_ok):
    with VethPair.create() as pair:
        yield pair.a.path


@pytest.fixture
def probe(netns):
    made = []

    def make(kind, pages=64):
        made.append(EventProbe(TEST_C, "on_queue", "net_dev_queue", netns, QueueEvent, kind, pages))
        return made[-1]
    yield make
    for p in made:
        p.close()


def send(netns, n):
    assert udp_flow(server_addr="127.0.0.1", port=40000 + n % 1000, count=n, size=PAYLOAD,
                    server_ns=netns, client_ns=netns) == n


def test_this_kernel_has_ring_buffers(bpf_ok):
    assert events.ringbuf_supported()  # 6.18: the perf path below is forced, not chosen
    assert "-DNP_EVENTS_PERF" not in events.cflags()


@pytest.mark.parametrize("kind", [events.RINGBUF, events.PERF])
def test_exactly_the_packets_sent_arrive(probe, netns, kind):
    p = probe(kind)
    assert p.channel.kind == kind
    send(netns, 300)
    got = p.drain(300)
    assert len(got) == 300 and p.channel.received == 300
    assert all(isinstance(e, QueueEvent) and e.len == SKB_LEN for e in got)
    assert all(e.cpu < os.cpu_count() for e in got)
    assert p.channel.lost == 0 and p.channel.kernel_lost == 0
    # per CPU the records come in order
    for cpu in {e.cpu for e in got}:
        ts = [e.ts for e in got if e.cpu == cpu]
        assert ts == sorted(ts)


def test_a_full_ring_buffer_counts_what_it_loses(probe, netns):
    p = probe(events.RINGBUF, pages=1)  # 4096 bytes: 170 records of 16 + 8 bytes
    send(netns, 2000)  # nobody reads meanwhile
    got = p.drain(2000, timeout=1.0)
    assert 0 < len(got) < 2000 and p.channel.lost > 0
    assert len(got) + p.channel.lost == 2000


@pytest.fixture
def one_cpu():
    """This thread (and the loopback softirq it runs) on CPU 0 only: a perf buffer's loss
    report goes into the ring of the CPU that lost, at that CPU's next output."""
    saved = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {0})
    yield
    os.sched_setaffinity(0, saved)


def test_a_full_perf_buffer_counts_what_it_loses(probe, netns, one_cpu):
    p = probe(events.PERF, pages=1)  # one page per CPU: 128 samples of 32 bytes
    send(netns, 2000)
    got = p.drain(2000, timeout=1.0)
    assert 0 < len(got) < 2000 and p.channel.lost > 0
    assert len(got) + p.channel.lost == 2000
    # the kernel says so too, in a PERF_RECORD_LOST it writes before its next sample
    send(netns, 1)
    got += p.drain(1)
    assert len(got) + p.channel.lost == 2001
    assert p.channel.kernel_lost == p.channel.lost


def test_poll_waits_no_longer_than_its_timeout(probe):
    p = probe(events.RINGBUF)
    t = time.monotonic()
    assert p.channel.poll(0.2) == []
    assert 0.15 < time.monotonic() - t < 1.0
