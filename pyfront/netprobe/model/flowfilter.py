"""The --proto/--port/--host flow filter, turned into the -D flags probes/flow_filter.h reads."""
from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

from ..errors import NetprobeError

PROTOCOLS = {"tcp": 6, "udp": 17, "icmp": 1}


@dataclass(frozen=True)
class FlowFilter:
    proto: str | None = None
    port: int | None = None
    host: str | None = None

    def __post_init__(self):
        if self.proto is not None and self.proto not in PROTOCOLS:
            raise NetprobeError(f"--proto must be one of {', '.join(PROTOCOLS)}, not {self.proto!r}")
        if self.port is not None and not 0 < self.port < 65536:
            raise NetprobeError(f"--port must be 1-65535, not {self.port}")
        if self.port is not None and self.proto == "icmp":
            raise NetprobeError("--port cannot be combined with --proto icmp")
        if self.host is not None:
            try:
                ipaddress.ip_address(self.host)
            except ValueError:
                raise NetprobeError(f"--host must be an IPv4 or IPv6 address, not {self.host!r}") from None

    @property
    def active(self) -> bool:
        return any(v is not None for v in (self.proto, self.port, self.host))

    def describe(self) -> str:
        parts = []
        if self.proto:
            parts.append(self.proto)
        if self.port:
            parts.append(f"port {self.port}")
        if self.host:
            parts.append(f"host {self.host}")
        return " and ".join(parts) or "all traffic"

    def cflags(self) -> list[str]:
        """Constants are the little-endian words the packet's bytes read as, so the probes
        compare without byte swaps."""
        flags = []
        if self.proto:
            flags.append(f"-DNP_FILTER_PROTO={PROTOCOLS[self.proto]}")
        if self.port:
            flags.append(f"-DNP_FILTER_PORT={struct.unpack('<H', struct.pack('>H', self.port))[0]}")
        if self.host:
            addr = ipaddress.ip_address(self.host)
            # ::ffff:a.b.c.d names an IPv4 peer of a dual-stack socket: on the wire, and in
            # the socket's IPv4 view, it is a.b.c.d (probes/flow_filter.h matches the mapped
            # form of a socket's addresses too)
            addr = getattr(addr, "ipv4_mapped", None) or addr
            words = struct.unpack(f"<{len(addr.packed) // 4}I", addr.packed)
            if addr.version == 4:
                flags.append(f"-DNP_FILTER_HOST4={words[0]}U")
            else:
                flags += [f"-DNP_FILTER_HOST6_{i}={w}U" for i, w in enumerate(words)]
        return flags
