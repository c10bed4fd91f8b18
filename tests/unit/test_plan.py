"""Mechanism choice per stage, on made-up kernels."""
from netprobe.model.catalogue import (BY_NAME, FENTRY, KPROBE, NETFILTER, RAW_TRACEPOINT, STAGES,
                                      TP_BTF)
from netprobe.model.plan import choose, choose_all
from netprobe.model.stagestate import Refusal


class Facts:
    def __init__(self, mechanisms, functions=(), params=None, tracepoints=None, refused=None,
                 btf_functions=None, clones=()):
        self.mechanisms = frozenset(mechanisms)
        self.functions = set(functions)
        self.params = params or {}
        self.tracepoints = tracepoints
        self.refused = refused or {}
        # functions in BTF: all of them unless told; `clones` only exist as gcc's .isra.0
        self.btf_functions = self.functions if btf_functions is None else set(btf_functions)
        self.clones = set(clones)

    def kprobe_symbol(self, f):
        if f not in self.functions:
            return None
        return f + ".isra.0" if f in self.clones else f

    def fentry_function(self, f):
        return f in self.btf_functions

    def tracepoint_exists(self, tp):
        return self.tracepoints is None or tp in self.tracepoints

    def first_param(self, f):
        return self.params.get(f)


LINUX_61 = {"tcp_sendmsg", "udp_sendmsg", "udpv6_sendmsg", "ip_output", "ip6_output",
            "__dev_queue_xmit", "__netif_rx", "netif_rx", "napi_gro_receive",
            "__netif_receive_skb_core", "ip_rcv_core", "ip6_rcv_core", "tcp_v4_rcv", "udp_rcv",
            "icmp_rcv", "tcp_v6_rcv", "udpv6_rcv", "icmpv6_rcv"}


def test_no_kprobes_uses_tracepoints_and_netfilter():
    choices = {c.stage.name: c for c in choose_all(STAGES, Facts({RAW_TRACEPOINT, NETFILTER}))}
    assert choices["dev_queue_xmit"].describe() == "raw_tracepoint net:net_dev_queue"
    assert choices["driver_xmit"].describe() == "raw_tracepoint net:net_dev_start_xmit"
    assert choices["ip_output"].state().mechanism == NETFILTER
    assert choices["l4_rcv"].describe() == "netfilter ipv4:LOCAL_IN, ipv6:LOCAL_IN"
    assert all(c.available for c in choices.values())
    assert [str(r) for r in choices["ip_rcv"].passed_over] == [
        "fentry: not usable on this kernel", "kprobe: not usable on this kernel"]


def test_btf_kernel_without_kprobes_takes_tp_btf_then_raw_tracepoints():
    facts = Facts({TP_BTF, RAW_TRACEPOINT, NETFILTER})
    choices = {c.stage.name: c for c in choose_all(STAGES, facts)}
    assert choices["dev_queue_xmit"].describe() == "tp_btf net:net_dev_queue"
    assert [a.fn for a in choices["driver_rx"].attaches] == ["driver_rx__tp_btf"] * 2
    assert [a.fn for a in choices["udp_sendmsg"].attaches] == ["l4_send__tp_btf"]
    assert choices["ip_rcv"].state().mechanism == NETFILTER
    # the same stage on a kernel that refused tp_btf: the plain raw tracepoint program
    c = choose(BY_NAME["dev_queue_xmit"], Facts({RAW_TRACEPOINT, NETFILTER}))
    assert [a.fn for a in c.attaches] == ["dev_queue_xmit__raw_tp"]


def test_every_tracepoint_stage_has_both_programs_in_probes():
    from netprobe.paths import probes_dir
    from test_probe_sources import defined_programs  # programs hooks.h's macros make, too
    c_text = "".join(p.read_text() for p in (*probes_dir().glob("*.c"), probes_dir() / "hooks.h"))
    fns = {h.fn for s in STAGES for c in s.candidates if c.mechanism in (TP_BTF, RAW_TRACEPOINT)
           for h in c.hooks}
    assert fns and fns <= defined_programs(c_text)


def test_kprobe_kernel_uses_kprobes_and_btf_picks_the_skb_argument():
    facts = Facts({KPROBE, RAW_TRACEPOINT}, LINUX_61,
                  params={"__netif_receive_skb_core": "struct sk_buff **"})
    choices = {c.stage.name: c for c in choose_all(STAGES, facts)}
    assert all(c.state().mechanism == KPROBE for c in choices.values())
    assert choices["dev_queue_xmit"].describe() == "kprobe __dev_queue_xmit"
    assert [a.fn for a in choices["netif_receive_skb"].attaches] == ["netif_receive_skb__kprobe_pskb"]
    # netif_rx_internal is inlined on this made-up kernel: the second kprobe candidate applies
    assert choices["driver_rx"].describe() == "kprobe __netif_rx, netif_rx, napi_gro_receive"
    assert choices["driver_xmit"].attaches[0].target == "<ndo_start_xmit>"


def test_old_signature_takes_the_other_program():
    facts = Facts({KPROBE}, LINUX_61, params={"__netif_receive_skb_core": "struct sk_buff *"})
    c = choose(BY_NAME["netif_receive_skb"], facts)
    assert [a.fn for a in c.attaches] == ["netif_receive_skb__kprobe"]


def test_missing_required_function_falls_back():
    facts = Facts({KPROBE, NETFILTER}, LINUX_61 - {"ip_rcv_core"})
    c = choose(BY_NAME["ip_rcv"], facts)
    assert c.state().mechanism == NETFILTER
    assert [r.mechanism for r in c.passed_over] == [FENTRY, KPROBE]
    assert "ip_rcv_core" in c.passed_over[1].why


def test_missing_optional_hook_is_skipped():
    c = choose(BY_NAME["ip_output"], Facts({KPROBE}, LINUX_61 - {"ip6_output"}))
    assert c.describe() == "kprobe ip_output"


def test_unavailable_stage_says_why_and_is_never_faked():
    c = choose(BY_NAME["ip_output"], Facts({RAW_TRACEPOINT}))
    assert not c.available
    assert c.attaches == []
    assert c.describe().startswith("unavailable (fentry: not usable on this kernel; kprobe: not usable")


def test_prefer_reorders_candidates():
    facts = Facts({KPROBE, RAW_TRACEPOINT}, LINUX_61)
    c = choose(BY_NAME["dev_queue_xmit"], facts, prefer=(RAW_TRACEPOINT,))
    assert c.state().mechanism == RAW_TRACEPOINT


def test_missing_tracepoint():
    c = choose(BY_NAME["driver_xmit"], Facts({RAW_TRACEPOINT}, tracepoints=set()))
    assert not c.available and "net:net_dev_start_xmit" in c.describe()


# -- fentry: the same functions as the kprobes, before them where the kernel takes it ----------
def test_fentry_comes_before_kprobe_at_every_function_stage():
    facts = Facts({FENTRY, KPROBE, RAW_TRACEPOINT, TP_BTF, NETFILTER}, LINUX_61,
                  params={"__netif_receive_skb_core": "struct sk_buff **"})
    choices = {c.stage.name: c for c in choose_all(STAGES, facts)}
    assert all(c.state().mechanism == FENTRY for c in choices.values())
    assert choices["dev_queue_xmit"].describe() == "fentry __dev_queue_xmit"
    assert choices["ip_output"].describe() == "fentry ip_output, ip6_output"
    assert [a.fn for a in choices["netif_receive_skb"].attaches] == ["netif_receive_skb__fentry_pskb"]
    assert [a.fn for a in choices["driver_rx"].attaches] == [
        "driver_rx__fentry_arg1", "driver_rx__fentry_arg1", "driver_rx__fentry_arg2"]
    assert [a.fn for a in choices["l4_rcv"].attaches] == ["l4_rcv__fentry"] * 6
    assert [a.fn for a in choices["udp_sendmsg"].attaches] == ["udp_sendmsg__fentry"] * 2
    xmit = choices["driver_xmit"]
    assert [(a.target, a.fn) for a in xmit.attaches] == [("<ndo_start_xmit>", "driver_xmit__fentry")]
    assert xmit.state().per_device_xmit


def test_fentry_and_kprobe_candidates_are_twins():
    """Every fentry candidate has a kprobe candidate right after it, at the same functions"""
    for stage in STAGES:
        cands = list(stage.candidates)
        for i, c in enumerate(cands):
            if c.mechanism != FENTRY:
                continue
            k = cands[i + 1]
            assert k.mechanism == KPROBE
            assert [(h.targets, h.optional, h.first_param) for h in c.hooks] == \
                   [(h.targets, h.optional, h.first_param) for h in k.hooks]


def test_every_fentry_hook_has_its_program_in_probes():
    from netprobe.paths import probes_dir
    from test_probe_sources import defined_programs
    c_text = "".join(p.read_text() for p in (*probes_dir().glob("*.c"), probes_dir() / "hooks.h"))
    fns = {h.fn for s in STAGES for c in s.candidates if c.mechanism == FENTRY for h in c.hooks}
    assert fns and fns <= defined_programs(c_text)


def test_refused_fentry_takes_kprobe_and_says_why():
    why = "the kernel refused an empty fentry program on bpf_fentry_test1() (EPERM: ...)"
    facts = Facts({KPROBE, RAW_TRACEPOINT}, LINUX_61, refused={FENTRY: why},
                  params={"__netif_receive_skb_core": "struct sk_buff **"})
    for c in choose_all(STAGES, facts):
        assert c.state().mechanism == KPROBE
        assert c.passed_over[0] == Refusal(FENTRY, why)


def test_prefer_kprobe_keeps_the_kprobe_path():
    facts = Facts({FENTRY, KPROBE, RAW_TRACEPOINT, NETFILTER}, LINUX_61,
                  params={"__netif_receive_skb_core": "struct sk_buff **"})
    choices = choose_all(STAGES, facts, prefer=(KPROBE,))
    assert {c.state().mechanism for c in choices} == {KPROBE}
    assert [a.fn for c in choices if c.stage.name == "netif_receive_skb"
            for a in c.attaches] == ["netif_receive_skb__kprobe_pskb"]


def test_fentry_needs_the_exact_function_in_btf():
    # a function that only exists as a gcc clone, or is missing from BTF, has no fentry: the
    # kprobe on the clone applies
    facts = Facts({FENTRY, KPROBE}, LINUX_61, clones={"ip_rcv_core"})
    c = choose(BY_NAME["ip_rcv"], facts)
    assert c.describe() == "kprobe ip_rcv_core.isra.0, ip6_rcv_core"
    assert "ip_rcv_core()" in c.passed_over[0].why
    facts = Facts({FENTRY, KPROBE}, LINUX_61, btf_functions=LINUX_61 - {"__dev_queue_xmit"})
    assert choose(BY_NAME["dev_queue_xmit"], facts).describe() == "kprobe __dev_queue_xmit"
    # an alternative further down the list still serves fentry
    facts = Facts({FENTRY, KPROBE}, LINUX_61 | {"dev_queue_xmit"},
                  btf_functions=LINUX_61 - {"__dev_queue_xmit"} | {"dev_queue_xmit"})
    assert choose(BY_NAME["dev_queue_xmit"], facts).describe() == "fentry dev_queue_xmit"
