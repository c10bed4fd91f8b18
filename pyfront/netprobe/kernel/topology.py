"""Throw-away network namespaces joined by veth pairs, for `prove`, tests and benchmarks.

Names start with "np-" and a random tag, addresses are 10.x and fd00:: ranges inside the
namespaces only, and everything is deleted on exit (also on Ctrl-C or an error)."""
from __future__ import annotations

import secrets
import subprocess
from dataclasses import dataclass, field

from ..errors import NetprobeError
from ..model.hosts import Host


def ip(*args: str, netns: str | None = None) -> str:
    cmd = ["ip", *(["-n", netns] if netns else []), *args]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise NetprobeError("`ip` (iproute2) is not installed") from None
    if r.returncode != 0:
        raise NetprobeError(f"{' '.join(cmd)}: {r.stderr.strip()}")
    return r.stdout


@dataclass
class VethPair:
    """Two namespaces, `a` and `b`, joined by one veth pair; lo is up in both."""
    a: Host
    b: Host
    tag: str = field(default_factory=lambda: secrets.token_hex(3))

    @classmethod
    def create(cls, subnet: int | None = None, ipv6: bool = True,
               veth_ipv6: bool = True) -> "VethPair":
        """`ipv6=False`: the namespaces have no IPv6 at all; `veth_ipv6=False`: the veth ends
        have none (lo keeps ::1). Either way the veth sends nothing of its own (router
        solicitations, MLD reports) to mix with a test's packets."""
        tag = secrets.token_hex(3)
        n = subnet if subnet is not None else 64 + secrets.randbelow(128)
        a = Host(f"np-{tag}-a", f"np{tag}a", f"10.{n}.0.1", f"fd00:{n}::1")
        b = Host(f"np-{tag}-b", f"np{tag}b", f"10.{n}.0.2", f"fd00:{n}::2")
        pair = cls(a, b, tag)
        try:
            for h in (a, b):
                ip("netns", "add", h.ns)
                if not ipv6 or not veth_ipv6:
                    # "default" is what devices made from now on get: the veth, not lo
                    subprocess.run(["ip", "netns", "exec", h.ns, "sysctl", "-qw",
                                    *(() if ipv6 else ("net.ipv6.conf.all.disable_ipv6=1",)),
                                    "net.ipv6.conf.default.disable_ipv6=1"], check=True)
                ip("link", "set", "lo", "up", netns=h.ns)
            ip("link", "add", a.dev, "netns", a.ns, "type", "veth", "peer", b.dev, "netns", b.ns)
            for h in (a, b):
                ip("addr", "add", f"{h.addr4}/24", "dev", h.dev, netns=h.ns)
                # nodad: usable at once, not after duplicate address detection's delay
                if ipv6 and veth_ipv6:
                    ip("addr", "add", f"{h.addr6}/64", "dev", h.dev, "nodad", netns=h.ns)
                ip("link", "set", h.dev, "up", netns=h.ns)
        except BaseException:
            pair.delete()
            raise
        return pair

    @property
    def namespaces(self) -> tuple[str, str]:
        return (self.a.ns, self.b.ns)

    def wait_up(self, timeout: float = 2.0) -> None:
        """Wait until both veth ends are operationally up. Until linkwatch has activated a
        device's queueing (asynchronously, after `ip link set up`), what is sent through it is
        dropped, and a lost SYN costs a second."""
        import json
        import time

        deadline = time.monotonic() + timeout
        for h in (self.a, self.b):
            while True:
                state = json.loads(ip("-j", "link", "show", "dev", h.dev, netns=h.ns))[0]
                if state.get("operstate") == "UP":
                    break
                if time.monotonic() > deadline:
                    raise NetprobeError(f"veth {h.dev} in {h.ns} did not come up within {timeout:.0f} s "
                                        f"(operstate {state.get('operstate')})")
                time.sleep(0.02)

    def delete(self) -> None:
        for h in (self.a, self.b):
            subprocess.run(["ip", "netns", "del", h.ns], capture_output=True, check=False)

    def __enter__(self) -> "VethPair":
        return self

    def __exit__(self, *exc) -> None:
        self.delete()


def link_stats(dev: str, netns: str | None = None) -> dict[str, int]:
    """The kernel's own counters for a device (`ip -s link`): tx/rx packets and bytes."""
    import json

    out = json.loads(ip("-s", "-j", "link", "show", "dev", dev, netns=netns))[0]["stats64"]
    return {"tx_packets": out["tx"]["packets"], "tx_bytes": out["tx"]["bytes"],
            "rx_packets": out["rx"]["packets"], "rx_bytes": out["rx"]["bytes"]}
