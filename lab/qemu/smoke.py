#!/usr/bin/env python3
"""Smoke check of the QEMU lab, run inside the guest:

    lab/qemu/run.sh -- python3 lab/qemu/smoke.py

BCC kprobes on e1000_xmit_frame and loopback_xmit count calls while the check makes TCP
traffic, first over loopback only, then to QEMU's echo peer through the e1000. It passes when
loopback traffic is counted at loopback_xmit and never at e1000_xmit_frame, and traffic to
the peer is counted at e1000_xmit_frame. Exit 0 on pass, 1 on failure.
"""
import os
import socket
import sys
import threading
import time

# No kernel headers: under emulation BCC compiles this in seconds, not a minute.
BPF_TEXT = r"""
BPF_ARRAY(hits, u64, 2);

int on_e1000_xmit(struct pt_regs *ctx)
{
    u32 key = 0;
    hits.atomic_increment(key);
    return 0;
}

int on_loopback_xmit(struct pt_regs *ctx)
{
    u32 key = 1;
    hits.atomic_increment(key);
    return 0;
}
"""
PROBES = (("e1000_xmit_frame", "on_e1000_xmit"), ("loopback_xmit", "on_loopback_xmit"))
MESSAGES = 30
PAYLOAD = b"netprobe-lab " * 8


class SmokeError(Exception):
    """The lab cannot run the check at all (no BCC, no e1000, no peer)."""


def e1000_nic(lab_nics):
    """(device, peer address) of the e1000 from NETPROBE_LAB_NICS (driver=dev:addr:peer ...)."""
    for item in lab_nics.split():
        driver, _, rest = item.partition("=")
        fields = rest.split(":")
        if driver == "e1000" and len(fields) == 3:
            return fields[0], fields[2]
    raise SmokeError(f"no e1000 in NETPROBE_LAB_NICS={lab_nics!r}; run this through lab/qemu/run.sh")


def echo_exchange(sock, count):
    """Send count messages and read each echo back whole."""
    for _ in range(count):
        sock.sendall(PAYLOAD)
        got = b""
        while len(got) < len(PAYLOAD):
            chunk = sock.recv(len(PAYLOAD) - len(got))
            if not chunk:
                raise SmokeError("the echo peer closed the connection")
            got += chunk
        if got != PAYLOAD:
            raise SmokeError("the echo peer sent back something else")


def loopback_traffic(count):
    """A TCP echo exchange between two sockets on 127.0.0.1."""
    with socket.create_server(("127.0.0.1", 0)) as server:

        def serve():
            conn, _ = server.accept()
            with conn:
                while data := conn.recv(65536):
                    conn.sendall(data)

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        with socket.create_connection(server.getsockname(), timeout=10) as client:
            echo_exchange(client, count)
        thread.join(timeout=10)


def e1000_traffic(device, peer, count):
    """A TCP echo exchange with QEMU's echo peer, pinned to the e1000 device."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, device.encode())
        sock.settimeout(10)
        try:
            sock.connect((peer, 7))
        except OSError as err:
            raise SmokeError(f"cannot reach the echo peer {peer}:7 through {device}: {err}") from err
        echo_exchange(sock, count)


def load_probes():
    try:
        from bcc import BPF
    except ImportError as err:
        raise SmokeError(f"BCC is not importable: {err}") from err
    for func, _ in PROBES:
        if not BPF.get_kprobe_functions(f"^{func}$".encode()):
            raise SmokeError(f"{func} is not a kprobe-able function here (module not loaded?)")
    t0 = time.monotonic()
    bpf = BPF(text=BPF_TEXT)
    t1 = time.monotonic()
    for func, handler in PROBES:
        bpf.attach_kprobe(event=func, fn_name=handler)
    print(f"smoke: BCC compiled in {t1 - t0:.1f} s, kprobes attached in {time.monotonic() - t1:.2f} s")
    return bpf


def read_counts(bpf):
    hits = bpf["hits"]
    return {func: hits[hits.Key(i)].value for i, (func, _) in enumerate(PROBES)}


def delta(after, before):
    return {k: after[k] - before[k] for k in after}


def run():
    device, peer = e1000_nic(os.environ.get("NETPROBE_LAB_NICS", ""))
    bpf = load_probes()
    try:
        c0 = read_counts(bpf)
        loopback_traffic(MESSAGES)
        c1 = read_counts(bpf)
        e1000_traffic(device, peer, MESSAGES)
        c2 = read_counts(bpf)
    finally:
        bpf.cleanup()
    phases = (("loopback 127.0.0.1", delta(c1, c0)), (f"{device} -> {peer}:7", delta(c2, c1)))
    print(f"smoke: {MESSAGES} TCP echoes per phase; kprobe hits per phase")
    print(f"  {'phase':<24}{'e1000_xmit_frame':>18}{'loopback_xmit':>15}")
    for name, d in phases:
        print(f"  {name:<24}{d['e1000_xmit_frame']:>18}{d['loopback_xmit']:>15}")
    lo, nic = phases[0][1], phases[1][1]
    checks = (
        ("loopback traffic is counted at loopback_xmit", lo["loopback_xmit"] > 0),
        ("loopback traffic never reaches e1000_xmit_frame", lo["e1000_xmit_frame"] == 0),
        ("traffic to the peer is counted at e1000_xmit_frame", nic["e1000_xmit_frame"] > 0),
    )
    for what, ok in checks:
        print(f"smoke: {'ok  ' if ok else 'FAIL'} {what}")
    return all(ok for _, ok in checks)


def main():
    try:
        ok = run()
    except SmokeError as err:
        print(f"smoke: FAIL {err}", file=sys.stderr)
        return 1
    print("smoke: PASS" if ok else "smoke: FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
