"""The QEMU lab guest's NICs, as lab/qemu/guest-init.sh names them in NETPROBE_LAB_NICS
(driver=dev:addr:peer ...), for the tests and benchmarks that only mean something there."""
import os

ECHO = ("10.0.2.100", 7)  # QEMU's own TCP echo peer, reachable only through the e1000


def nics() -> dict[str, str]:
    """driver -> device name; empty outside the lab guest"""
    return {name: rest.split(":")[0] for name, rest in
            (item.split("=") for item in os.environ.get("NETPROBE_LAB_NICS", "").split())}


def lab_nic(driver: str) -> str:
    import pytest
    dev = nics().get(driver)
    if dev is None:
        pytest.fail(f"no {driver} NIC in this lab guest (NETPROBE_LAB_NICS)")
    return dev
