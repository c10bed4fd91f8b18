import pytest

from netprobe.kernel.session import ProbeSession
from netprobe.kernel.topology import VethPair


@pytest.fixture(scope="module")
def session(bpf_ok):
    """One attached netprobe for a test module (compiling once keeps the suite quick)."""
    with ProbeSession() as s:
        yield s


@pytest.fixture
def veth():
    with VethPair.create() as pair:
        yield pair
