"""A pcapng file of raw IP packets, each with a comment (the path netprobe saw it take), that
tcpdump and Wireshark read. Pure: writes to any binary file object."""
from __future__ import annotations

import struct
from typing import BinaryIO

LINKTYPE_RAW = 101  # the packet starts at its IPv4 or IPv6 header
_SHB, _IDB, _EPB = 0x0A0D0D0A, 0x00000001, 0x00000006
_BYTE_ORDER_MAGIC = 0x1A2B3C4D
_OPT_END, _OPT_COMMENT, _IF_TSRESOL = 0, 1, 9


def _pad4(b: bytes) -> bytes:
    return b + b"\0" * (-len(b) % 4)


def _option(code: int, value: bytes) -> bytes:
    return struct.pack("<HH", code, len(value)) + _pad4(value)


def _block(btype: int, body: bytes) -> bytes:
    n = 12 + len(body)
    return struct.pack("<II", btype, n) + body + struct.pack("<I", n)


class PcapngWriter:
    def __init__(self, f: BinaryIO, snaplen: int, linktype: int = LINKTYPE_RAW):
        self._f = f
        self.packets = 0
        shb = struct.pack("<IHHq", _BYTE_ORDER_MAGIC, 1, 0, -1) + _option(_OPT_END, b"")
        # if_tsresol 9: timestamps in nanoseconds
        idb = (struct.pack("<HHI", linktype, 0, snaplen)
               + _option(_IF_TSRESOL, bytes([9])) + _option(_OPT_END, b""))
        f.write(_block(_SHB, shb) + _block(_IDB, idb))

    def write(self, ts_ns: int, data: bytes, orig_len: int, comment: str = "") -> None:
        opts = (_option(_OPT_COMMENT, comment.encode()) + _option(_OPT_END, b"")) if comment else b""
        body = (struct.pack("<IIIII", 0, ts_ns >> 32, ts_ns & 0xFFFFFFFF, len(data),
                            max(orig_len, len(data))) + _pad4(data) + opts)
        self._f.write(_block(_EPB, body))
        self.packets += 1

    def flush(self) -> None:
        self._f.flush()
