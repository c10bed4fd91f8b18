"""Controlled TCP and UDP flows between sockets that may live in different namespaces.

A socket belongs to the namespace its thread was in when it was made, so each socket is
created inside bpfsys.in_netns() and then used from this thread as usual."""
from __future__ import annotations

import socket
import threading
from contextlib import ExitStack, contextmanager, nullcontext

from .bpfsys import in_netns


def _ns(path: str | None):
    return in_netns(path) if path else nullcontext()


def _family(addr: str) -> int:
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def udp_flow(*, server_addr: str, port: int, count: int, size: int = 64,
             server_ns: str | None = None, client_ns: str | None = None,
             client_addr: str | None = None) -> int:
    """Send `count` datagrams of `size` bytes; returns how many the server received."""
    fam = _family(server_addr)
    with ExitStack() as stack:
        with _ns(server_ns):
            srv = stack.enter_context(socket.socket(fam, socket.SOCK_DGRAM))
        srv.bind((server_addr, port))
        srv.settimeout(1.0)
        with _ns(client_ns):
            cli = stack.enter_context(socket.socket(fam, socket.SOCK_DGRAM))
        if client_addr:
            cli.bind((client_addr, 0))
        cli.connect((server_addr, port))
        got = 0
        payload = b"n" * size
        for _ in range(count):
            cli.send(payload)
            # keep the socket buffer from overflowing: received == sent is checked by callers
            try:
                srv.recv(65536)
                got += 1
            except socket.timeout:
                pass
        return got


def tcp_flow(*, server_addr: str, port: int, nbytes: int, chunk: int = 1000,
             server_ns: str | None = None, client_ns: str | None = None,
             client_addr: str | None = None) -> int:
    """Connect, send `nbytes` in `chunk`-sized writes, close; returns bytes the server read."""
    fam = _family(server_addr)
    received = 0
    with ExitStack() as stack:
        with _ns(server_ns):
            lst = stack.enter_context(socket.socket(fam, socket.SOCK_STREAM))
        lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lst.bind((server_addr, port))
        lst.listen(1)
        lst.settimeout(5.0)

        def serve():
            nonlocal received
            # the caller unwinding (Ctrl-C mid-flow) closes the sockets under this thread: what
            # was received is the answer, and a thread traceback would only be noise
            try:
                conn, _ = lst.accept()
                with conn:
                    conn.settimeout(5.0)
                    while True:
                        data = conn.recv(65536)
                        if not data:
                            break
                        received += len(data)
            except OSError:
                pass

        t = threading.Thread(target=serve, daemon=True)
        t.start()
        with _ns(client_ns):
            cli = socket.socket(fam, socket.SOCK_STREAM)
        with cli:
            if client_addr:
                cli.bind((client_addr, 0))
            cli.connect((server_addr, port))
            left = nbytes
            while left > 0:
                n = min(chunk, left)
                cli.sendall(b"t" * n)
                left -= n
        t.join(10)
    return received


def tcp_echo(*, server_addr: str, port: int, nbytes: int, chunk: int = 1000,
             timeout: float = 5.0, client_ns: str | None = None) -> int:
    """Send `nbytes` to a TCP echo server (`netprobe peer`, or a `cat` behind a port) while
    reading the echo back, then close; returns the bytes that came back."""
    fam = _family(server_addr)
    with _ns(client_ns):
        cli = socket.socket(fam, socket.SOCK_STREAM)
    with cli:
        cli.settimeout(timeout)
        cli.connect((server_addr, port))
        failed: list[OSError] = []

        def send():
            # a writer of its own: an echo server that writes back as it reads would block
            # both sides once the socket buffers fill, if sending and reading took turns
            try:
                left = nbytes
                while left > 0:
                    n = min(chunk, left)
                    cli.sendall(b"e" * n)
                    left -= n
                cli.shutdown(socket.SHUT_WR)
            except OSError as e:
                failed.append(e)

        t = threading.Thread(target=send, daemon=True)
        t.start()
        got = 0
        while got < nbytes:
            data = cli.recv(65536)
            if not data:
                break
            got += len(data)
        t.join(timeout)
        if failed:
            raise failed[0]
    return got


def tcp_echo_server(*, port: int, ns: str | None = None) -> threading.Thread:
    """A TCP echo server on every address of namespace `ns`, for one connection; returns its
    thread, which ends when the client closes"""
    with _ns(ns):
        srv = socket.create_server(("0.0.0.0", port))

    def serve():
        with srv:
            conn, _ = srv.accept()
            with conn:
                while data := conn.recv(65536):
                    conn.sendall(data)
    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return t


def tcp_request_response(*, server_addr: str, port: int, count: int, size: int = 64,
                         client_ns: str | None = None) -> int:
    """`count` requests of `size` bytes to a TCP echo server, each echoed back whole before the
    next is sent (no Nagle); returns the exchanges completed"""
    with _ns(client_ns):
        cli = socket.create_connection((server_addr, port), timeout=10)
    done = 0
    with cli:
        cli.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(count):
            cli.sendall(b"r" * size)
            got = 0
            while got < size:
                data = cli.recv(size - got)
                if not data:
                    return done
                got += len(data)
            done += 1
    return done


def udp_echo(*, server_addr: str, port: int, count: int, size: int = 64, timeout: float = 0.5,
             give_up_after: int = 3, client_ns: str | None = None) -> tuple[int, int]:
    """Send up to `count` datagrams to a UDP echo server, each waiting up to `timeout` for its
    echo; returns (sent, echoed). Stops after `give_up_after` unanswered datagrams when none was
    answered yet: a peer that does not echo UDP (a TCP-only echo) costs little time."""
    fam = _family(server_addr)
    with _ns(client_ns):
        cli = socket.socket(fam, socket.SOCK_DGRAM)
    with cli:
        cli.settimeout(timeout)
        cli.connect((server_addr, port))
        payload = b"u" * size
        sent = echoed = 0
        for _ in range(count):
            cli.send(payload)
            sent += 1
            try:
                cli.recv(65536)
                echoed += 1
            except (socket.timeout, ConnectionRefusedError):
                # refused: an ICMP port unreachable for an earlier datagram
                if echoed == 0 and sent >= give_up_after:
                    break
        return sent, echoed


def udp_send(*, addr: str, port: int, count: int, size: int = 64,
             client_ns: str | None = None) -> int:
    """Send `count` datagrams to a place that does not answer (a closed port, a firewall that
    drops): unconnected, so no ICMP error comes back to the socket; returns how many were sent."""
    with _ns(client_ns):
        cli = socket.socket(_family(addr), socket.SOCK_DGRAM)
    with cli:
        for _ in range(count):
            cli.sendto(b"d" * size, (addr, port))
    return count


def icmp_echo(*, addr: str, count: int, ns: str | None = None, timeout: float = 1.0) -> int:
    """Ping `addr` `count` times from an ICMP datagram socket in namespace `ns`, as ping(8)
    does; returns the replies received. The socket's namespace must allow root's group to make
    such sockets (net.ipv4.ping_group_range), which a fresh namespace does not: it is widened
    there first, for that namespace only."""
    fam = _family(addr)
    with _ns(ns):
        if ns:
            with open("/proc/sys/net/ipv4/ping_group_range", "w") as f:
                f.write("0 0")
        proto = socket.IPPROTO_ICMP if fam == socket.AF_INET else socket.IPPROTO_ICMPV6
        sock = socket.socket(fam, socket.SOCK_DGRAM, proto)
    with sock:
        sock.settimeout(timeout)
        got = 0
        echo = 8 if fam == socket.AF_INET else 128
        for seq in range(count):
            # type, code, checksum (the kernel fills it in), id (the kernel's), sequence
            sock.sendto(bytes([echo, 0, 0, 0, 0, 0, seq >> 8, seq & 0xff]) + b"netprobe", (addr, 0))
            try:
                sock.recv(1024)
                got += 1
            except socket.timeout:
                pass
        return got
