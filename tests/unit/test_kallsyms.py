import pytest

from netprobe.errors import NetprobeError
from netprobe.model.kallsyms import Kallsyms

TEXT = """\
ffffffff81000000 T _stext
ffffffff81dacc70 t loopback_xmit
ffffffff81dbb6f0 t veth_xmit
ffffffff8123b0e9 t veth_xmit.cold
ffffffff81e64e60 t __netif_receive_skb_core.constprop.0
ffffffff81ff5e10 t ip_rcv_core
ffffffff81ff6000 D some_data
ffffffffc0001000 t start_xmit\t[virtio_net]
ffffffffc0002000 t start_xmit\t[other_drv]
ffffffffc0003000 t e1000_xmit_frame\t[e1000]
"""


@pytest.fixture
def ks():
    return Kallsyms(TEXT)


def test_symbolize_names_function_starts_only(ks):
    assert str(ks.symbolize(0xffffffff81dacc70)) == "loopback_xmit"
    assert str(ks.symbolize(0xffffffffc0003000)) == "e1000_xmit_frame [e1000]"
    assert ks.symbolize(0xffffffff81dacc71) is None


def test_probe_name_follows_gcc_clones(ks):
    assert ks.probe_name("__netif_receive_skb_core") == "__netif_receive_skb_core.constprop.0"
    assert ks.probe_name("veth_xmit") == "veth_xmit"  # the .cold part is not a second clone
    assert ks.probe_name("ip_rcv_core") == "ip_rcv_core"
    assert ks.probe_name("absent") is None


def test_ambiguous_symbols_are_not_probed(ks):
    assert ks.probe_name("start_xmit") is None
    assert not ks.is_unique("start_xmit")


def test_zero_addresses_mean_not_root():
    with pytest.raises(NetprobeError, match="root"):
        Kallsyms("0000000000000000 T a\n" * 3)
