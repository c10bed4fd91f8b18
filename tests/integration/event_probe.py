"""A small test program (its own C) on a raw tracepoint, sending records through the event
channel: compiled by loader.load, attached with bpfsys, read with events.EventChannel."""
import os
import time

from netprobe.kernel import bpfsys, events, loader
from netprobe.model import fields
from netprobe.kernel.facts import Kernel
from netprobe.paths import probes_dir

# what every test program filters on: the skb's device, when it is in the test's namespace
PRELUDE = r"""
static __always_inline void *test_dev(void *skb)
{
    void *dev = 0, *net = 0;
    u32 inum = 0;
    bpf_probe_read_kernel(&dev, sizeof(dev), skb + OFF_SKB_DEV);
    if (!dev)
        return 0;
    bpf_probe_read_kernel(&net, sizeof(net), dev + OFF_DEV_NET);
    bpf_probe_read_kernel(&inum, sizeof(inum), net + OFF_NET_INUM);
    return inum == TEST_NETNS ? dev : 0;
}
"""


class EventProbe:
    def __init__(self, c_text: str, fn: str, event: str, netns: str, record,
                 kind: str | None = None, pages: int = 64):
        text = (probes_dir() / "events.h").read_text() + PRELUDE + c_text
        flags = [*events.cflags(kind, pages), f"-DTEST_NETNS={os.stat(netns).st_ino}",
                 *fields.offset_cflags(fields.load_specs(probes_dir()), Kernel().btf)]
        self.loaded = loader.load(text, flags, [loader.ProgSpec(fn, fn, 17)])
        self.channel = self.link = None
        try:
            assert not self.loaded.errors, self.loaded.errors
            self.channel = events.EventChannel.open(self.loaded.maps["np_events"][0], record,
                                                    self.loaded.maps["np_events_lost"][0],
                                                    pages_per_cpu=pages)
            self.link = bpfsys.raw_tracepoint_open(self.loaded.progs[fn], event)
        except BaseException:
            self.close()
            raise

    def drain(self, expect: int, timeout: float = 3.0) -> list:
        """Records until `expect` came or `timeout` passed, and then whatever follows at once"""
        got, deadline = [], time.monotonic() + timeout
        while len(got) < expect and time.monotonic() < deadline:
            got += self.channel.poll(0.2)
        got += self.channel.poll(0.05)
        return got

    def close(self) -> None:
        if self.link is not None:
            os.close(self.link)
        if self.channel is not None:
            self.channel.close()
        self.loaded.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
