"""`netprobe peer`: TCP and UDP echo servers, the far end of `netprobe prove --peer`.

They run on another host so that prove's NIC case crosses a real NIC. Listening on `::` takes
IPv4 too (dual-stack sockets, IPV6_V6ONLY off). Nothing here needs BPF or root (above port 1024).
"""
from __future__ import annotations

import ipaddress
import socket
import threading
from typing import Callable

from ..errors import NetprobeError

DEFAULT_PORT = 7777


def _bind(listen: str, port: int, kind: int) -> socket.socket:
    fam = socket.AF_INET6 if ipaddress.ip_address(listen).version == 6 else socket.AF_INET
    s = socket.socket(fam, kind)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if fam == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        s.bind((listen, port))
    except OSError as e:
        s.close()
        proto = "tcp" if kind == socket.SOCK_STREAM else "udp"
        where = f"[{listen}]:{port}" if fam == socket.AF_INET6 else f"{listen}:{port}"
        raise NetprobeError(f"listening on {where}/{proto}: {e.strerror or e}") from None
    return s


class EchoServer:
    """A TCP and a UDP echo server on one address and port, each served by its own threads."""

    def __init__(self, listen: str = "::", port: int = DEFAULT_PORT,
                 log: Callable[[str], None] = lambda line: None):
        try:
            addr = ipaddress.ip_address(listen)
        except ValueError:
            raise NetprobeError(f"--listen must be an IPv4 or IPv6 address, not {listen!r}") from None
        self.listen, self.port, self.log = str(addr), port, log
        self.dual_stack = addr.version == 6 and addr.is_unspecified
        self._tcp = _bind(self.listen, port, socket.SOCK_STREAM)
        try:
            self._udp = _bind(self.listen, port, socket.SOCK_DGRAM)
        except BaseException:
            self._tcp.close()
            raise
        self._tcp.listen(16)
        self._closed = threading.Event()

    def describe(self) -> str:
        where = f"[{self.listen}]:{self.port}" if ":" in self.listen else f"{self.listen}:{self.port}"
        fams = "IPv4 and IPv6" if self.dual_stack else ("IPv6" if ":" in self.listen else "IPv4")
        return f"TCP and UDP echo on {where} ({fams})"

    def start(self) -> "EchoServer":
        for target in (self._accept_loop, self._udp_loop):
            threading.Thread(target=target, daemon=True).start()
        return self

    def close(self) -> None:
        self._closed.set()
        # shutdown() wakes the thread blocked in accept(); close() alone would not
        for s in (self._tcp, self._udp):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def __enter__(self) -> "EchoServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                conn, peer = self._tcp.accept()
            except OSError:
                return
            threading.Thread(target=self._echo_tcp, args=(conn, peer), daemon=True).start()

    def _echo_tcp(self, conn: socket.socket, peer) -> None:
        total = 0
        with conn:
            conn.settimeout(30)
            try:
                while True:
                    data = conn.recv(65536)
                    if not data:
                        break
                    conn.sendall(data)
                    total += len(data)
            except OSError as e:
                self.log(f"tcp {_fmt(peer)}: {e.strerror or e} after {total:,} bytes")
                return
        self.log(f"tcp {_fmt(peer)}: echoed {total:,} bytes")

    def _udp_loop(self) -> None:
        while not self._closed.is_set():
            try:
                data, peer = self._udp.recvfrom(65536)
                if self._closed.is_set():
                    return  # woken by shutdown(): an empty read from no one
                self._udp.sendto(data, peer)
            except OSError:
                if self._closed.is_set():
                    return


def _fmt(peer) -> str:
    host, port = peer[0], peer[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
