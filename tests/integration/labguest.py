"""The QEMU lab guest's NICs, as lab/qemu/guest-init.sh names them in NETPROBE_LAB_NICS
(driver=dev:addr:peer ...), for the tests that only mean something there."""
import os

import pytest

ECHO = ("10.0.2.100", 7)  # QEMU's own TCP echo peer, reachable only through the e1000


def lab_nic(driver: str) -> str:
    for item in os.environ.get("NETPROBE_LAB_NICS", "").split():
        name, rest = item.split("=")
        if name == driver:
            return rest.split(":")[0]
    pytest.fail(f"no {driver} NIC in this lab guest (NETPROBE_LAB_NICS)")
