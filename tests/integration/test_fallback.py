"""A stage whose preferred mechanism attaches only part of its hooks falls back whole: the
part that did attach is detached, so the stage is not counted twice."""
import pytest

from netprobe.model.catalogue import TP_BTF
from netprobe.model.flowfilter import FlowFilter
from netprobe.kernel.attach import Attachments
from netprobe.kernel.session import ProbeSession
from netprobe.kernel.traffic import udp_flow

PORT = 47101


def test_a_half_attached_choice_is_undone_before_the_fallback(bpf_ok, monkeypatch):
    """driver_rx's second tp_btf hook (napi_gro_receive_entry) fails to attach, after its
    first (netif_rx, which loopback traffic takes) did."""
    attach = Attachments._attach

    def second_hook_refused(self, ps, a):
        if a.mechanism == TP_BTF and a.target == "net:napi_gro_receive_entry":
            raise OSError(1, "refused for the test")
        attach(self, ps, a)
    monkeypatch.setattr(Attachments, "_attach", second_hook_refused)
    with ProbeSession(flow=FlowFilter(port=PORT)) as s:
        st = s.states["driver_rx"]
        if not any(r.mechanism == TP_BTF for r in st.fell_back_from):
            pytest.skip("no tp_btf on this kernel: nothing was half-attached")
        assert st.mechanism == "raw_tracepoint"
        assert "fell back from tp_btf: refused for the test" in st.describe()
        lo = next(d for d in s.devices.values() if d.name == "lo" and d.netns_name == "root")
        before = s.read()
        got = udp_flow(server_addr="127.0.0.1", port=PORT, count=40)
        after = s.read()

        def delta(stage):
            key = (lo.netns, lo.ifindex, stage)
            return after.values.get(key, (0, 0))[0] - before.values.get(key, (0, 0))[0]
        assert got == 40
        assert delta("driver_rx") == delta("driver_xmit") == 40
