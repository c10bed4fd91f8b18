import pytest

from netprobe.kernel.facts import Kernel, kernel_version
from netprobe.model import fields
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


@pytest.fixture(params=["kfunc", "probe_read"])
def header_reads(request, monkeypatch):
    """Both ways the probes read a packet's headers (probes/packet.h): cast by the
    bpf_rdonly_cast kfunc, which this kernel has, and copied by bpf_probe_read_kernel, as on
    6.1, which has not"""
    if request.param == "kfunc":
        if kernel_version() < (6, 2):
            pytest.skip("bpf_rdonly_cast came with 6.2: probe_read is this kernel's way")
        kernel = Kernel()
        assert kernel.header_casts, kernel.refused
    else:
        real = fields.load_type_cflags
        monkeypatch.setattr(fields, "load_type_cflags",
                            lambda probes, btf, kfuncs=True: real(probes, btf, kfuncs=False))
    return request.param
