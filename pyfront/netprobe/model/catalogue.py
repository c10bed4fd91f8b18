"""The stage catalogue: every stage netprobe counts, in path order, with the ways to reach it.

This is the one list the BPF build, `watch`, `doctor`, the exporter and the docs read. A stage
has candidates in order of preference; each candidate is one attach mechanism and the hooks it
needs. Adding a stage is one entry here and one small C function per mechanism in probes/.
"""
from __future__ import annotations

from dataclasses import dataclass, field

FENTRY = "fentry"  # a BPF trampoline at a kernel function's entry, with typed arguments
KPROBE = "kprobe"
TP_BTF = "tp_btf"  # a BTF raw tracepoint: the same tracepoint, with typed arguments
RAW_TRACEPOINT = "raw_tracepoint"
NETFILTER = "netfilter"
MECHANISMS = (FENTRY, KPROBE, TP_BTF, RAW_TRACEPOINT, NETFILTER)

# A kprobe target spelled like this is not a symbol but "each device's ndo_start_xmit".
NDO_START_XMIT = "<ndo_start_xmit>"


@dataclass(frozen=True)
class Hook:
    """One attach point. `targets` are alternatives: the first that this kernel has is used
    (kprobe: function names; raw tracepoint: "category:event"; netfilter: "ipv4:POST_ROUTING").
    `fn` is the C function in probes/ that runs there. An optional hook is attached when its
    target exists and skipped otherwise."""
    targets: tuple[str, ...]
    fn: str
    optional: bool = False
    # kprobe and fentry only: a BTF condition on the function's first parameter type that must hold for
    # this fn to apply, e.g. "struct sk_buff **"
    first_param: str | None = None


@dataclass(frozen=True)
class Candidate:
    mechanism: str
    hooks: tuple[Hook, ...]
    note: str = ""  # what this mechanism sees, in words, for the footer and the docs


@dataclass(frozen=True)
class Stage:
    name: str
    layer: str       # "L4", "L3", "L2", "driver"
    direction: str   # "tx" or "rx" on the path; "end" where an skb's life ends
    title: str       # short column title
    candidates: tuple[Candidate, ...] = field(repr=False)
    per_device: bool = True  # False: keyed by (netns, protocol), runs before a device exists
    # the protocol a per-protocol stage counts (L4 send stages)
    protocol: str | None = None
    # kernel functions whose frees of an skb (skb:kfree_skb's location) are drops at this
    # stage; gcc's clones (.isra.0, ...) count as their function. Names absent from a kernel
    # (inlined, renamed, another version's) simply never match.
    functions: tuple[str, ...] = ()


def _k(*targets: str, fn: str, optional: bool = False, first_param: str | None = None) -> Hook:
    return Hook(tuple(targets), fn, optional, first_param)


def _tracepoint(*hooks: tuple[str, str], note: str = "") -> tuple[Candidate, Candidate]:
    """A tracepoint stage's two ways in, best first: as a BTF raw tracepoint, whose program
    loads the skb's fields directly (~1 ns each), else as a plain raw tracepoint, whose program
    copies them with bpf_probe_read_kernel (~30 ns a call). Each hook is ("category:event",
    C function prefix): probes/ has <prefix>__tp_btf and <prefix>__raw_tp."""
    return tuple(Candidate(mech, tuple(_k(tp, fn=f"{fn}__{suffix}") for tp, fn in hooks), note)
                 for mech, suffix in ((TP_BTF, "tp_btf"), (RAW_TRACEPOINT, "raw_tp")))


def _f(*targets: str, fn: str, variant: str = "", optional: bool = False,
       first_param: str | None = None) -> tuple:
    return targets, fn, variant, optional, first_param


def _functions(*hooks: tuple, note: str = "") -> tuple[Candidate, Candidate]:
    """A function stage's two ways in, best first: fentry, a BPF trampoline called from the
    function's first instruction, whose program loads the arguments' fields directly as
    tp_btf's does; else a kprobe, a breakpoint trap whose program copies every field with
    bpf_probe_read_kernel. Both at the same functions. Each hook is _f(functions..., fn=C
    prefix, variant=suffix): probes/ has <prefix>__fentry<variant> and <prefix>__kprobe<variant>."""
    return tuple(Candidate(mech, tuple(_k(*t, fn=f"{fn}__{mech}{variant}", optional=opt,
                                          first_param=fp)
                                       for t, fn, variant, opt, fp in hooks), note)
                 for mech in (FENTRY, KPROBE))


STAGES: tuple[Stage, ...] = (
    Stage("tcp_sendmsg", "L4", "tx", "tcp_send", protocol="tcp", per_device=False, candidates=(
        *_functions(_f("tcp_sendmsg", fn="tcp_sendmsg")),
        *_tracepoint(("sock:sock_send_length", "l4_send"),
                     note="after each sendmsg returns, TCP sockets"),
    )),
    Stage("udp_sendmsg", "L4", "tx", "udp_send", protocol="udp", per_device=False, candidates=(
        *_functions(_f("udp_sendmsg", fn="udp_sendmsg"),
                    _f("udpv6_sendmsg", fn="udp_sendmsg", optional=True)),
        *_tracepoint(("sock:sock_send_length", "l4_send"),
                     note="after each sendmsg returns, UDP sockets"),
    )),
    Stage("ip_output", "L3", "tx", "ip_out", functions=(
        "ip_output", "ip_finish_output", "__ip_finish_output", "ip_finish_output2", "ip_local_out",
        "__ip_local_out", "ip_send_skb", "ip_do_fragment", "ip_fragment", "ip_mc_output",
        "ip6_output", "ip6_finish_output", "__ip6_finish_output", "ip6_finish_output2",
        "ip6_local_out", "__ip6_local_out", "ip6_xmit", "ip6_fragment", "ip6_send_skb",
        # neighbour resolution is ip_finish_output2's last step before dev_queue_xmit
        "neigh_resolve_output", "__neigh_event_send", "neigh_output", "neigh_direct_output",
        # skbs queued for a neighbour that never resolved, or whose device went away
        "neigh_invalidate", "neigh_flush_dev", "__neigh_ifdown", "neigh_destroy",
        "pneigh_queue_purge"),
          candidates=(
        *_functions(_f("ip_output", fn="ip_output"),
                    _f("ip6_output", fn="ip_output", optional=True)),
        Candidate(NETFILTER, (_k("ipv4:POST_ROUTING", fn="ip_output__netfilter"),
                              _k("ipv6:POST_ROUTING", fn="ip_output__netfilter", optional=True)),
                  "NF_INET_POST_ROUTING, the hook inside ip_output/ip6_output"),
    )),
    Stage("dev_queue_xmit", "L2", "tx", "dev_q", functions=(
        "__dev_queue_xmit", "dev_queue_xmit", "__dev_xmit_skb", "validate_xmit_skb",
        "validate_xmit_skb_list", "sch_direct_xmit", "dev_qdisc_enqueue", "__qdisc_run",
        "__dev_direct_xmit", "qdisc_drop", "qdisc_drop_all",
        # the qdiscs' own enqueue and drop functions
        "pfifo_fast_enqueue", "pfifo_enqueue", "bfifo_enqueue", "pfifo_tail_enqueue",
        "fq_codel_enqueue", "fq_codel_drop", "fq_enqueue", "tbf_enqueue", "netem_enqueue",
        "htb_enqueue", "sfq_enqueue", "red_enqueue", "cake_enqueue", "prio_enqueue",
        "noqueue_enqueue", "codel_qdisc_enqueue", "dualpi2_qdisc_enqueue"),
          candidates=(
        *_functions(_f("__dev_queue_xmit", "dev_queue_xmit", fn="dev_queue_xmit")),
        *_tracepoint(("net:net_dev_queue", "dev_queue_xmit"),
                     note="net:net_dev_queue, inside __dev_queue_xmit"),
    )),
    Stage("driver_xmit", "driver", "tx", "drv_tx", functions=(
        "dev_hard_start_xmit", "xmit_one", "loopback_xmit", "veth_xmit", "start_xmit",
        "e1000_xmit_frame", "ifb_xmit", "dummy_xmit", "tun_net_xmit", "br_dev_xmit",
        # veth_xmit hands the skb to its peer through these (a peer that is down drops there),
        # still on the sending side: skb->dev is the sender
        "veth_forward_skb", "dev_forward_skb", "__dev_forward_skb", "__dev_forward_skb2",
        "____dev_forward_skb"),
          candidates=(
        *_functions(_f(NDO_START_XMIT, fn="driver_xmit"),
                    note="each device's own ndo_start_xmit"),
        *_tracepoint(("net:net_dev_start_xmit", "driver_xmit"),
                     note="net:net_dev_start_xmit, just before ndo_start_xmit"),
    )),
    Stage("driver_rx", "driver", "rx", "drv_rx", functions=(
        "netif_rx", "__netif_rx", "netif_rx_internal", "netif_rx_ni", "enqueue_to_backlog",
        "napi_gro_receive", "gro_receive_skb", "dev_gro_receive", "napi_skb_finish",
        "veth_xdp_rcv", "veth_xdp_rcv_skb", "do_xdp_generic", "netif_receive_generic_xdp"),
          candidates=(
        *_functions(_f("netif_rx_internal", fn="driver_rx", variant="_arg1"),
                    _f("napi_gro_receive", fn="driver_rx", variant="_arg2")),
        *_functions(_f("__netif_rx", fn="driver_rx", variant="_arg1", optional=True),
                    _f("netif_rx", fn="driver_rx", variant="_arg1"),
                    _f("netif_rx_ni", fn="driver_rx", variant="_arg1", optional=True),
                    _f("napi_gro_receive", fn="driver_rx", variant="_arg2")),
        *_tracepoint(("net:netif_rx", "driver_rx"), ("net:napi_gro_receive_entry", "driver_rx")),
    )),
    Stage("netif_receive_skb", "L2", "rx", "rcv_skb", functions=(
        "__netif_receive_skb_core", "__netif_receive_skb", "__netif_receive_skb_one_core",
        "netif_receive_skb", "netif_receive_skb_list_internal", "__netif_receive_skb_list_core",
        "process_backlog", "sch_handle_ingress", "tcf_classify"),
          candidates=(
        *_functions(_f("__netif_receive_skb_core", fn="netif_receive_skb", variant="_pskb",
                       first_param="struct sk_buff **")),
        *_functions(_f("__netif_receive_skb_core", fn="netif_receive_skb",
                       first_param="struct sk_buff *")),
        *_tracepoint(("net:netif_receive_skb", "netif_receive_skb"),
                     note="net:netif_receive_skb, inside __netif_receive_skb_core"),
    )),
    Stage("ip_rcv", "L3", "rx", "ip_rcv", functions=(
        "ip_rcv", "ip_rcv_core", "ip_rcv_finish", "ip_rcv_finish_core", "ip_list_rcv",
        "ip_sublist_rcv", "ip_sublist_rcv_finish", "ip_route_input_noref", "ip_route_input_slow",
        "ip_route_input_rcu", "ip_defrag", "ip_check_defrag",
        "ipv6_rcv", "ip6_rcv_core", "ip6_rcv_finish", "ip6_rcv_finish_core", "ip6_list_rcv",
        "ip6_sublist_rcv", "ip6_route_input", "ipv6_frag_rcv"),
          candidates=(
        # ip_rcv_core serves both ip_rcv and the list path (ip_list_rcv) that GRO'd NIC
        # traffic takes; a kprobe on ip_rcv alone would miss those packets.
        *_functions(_f("ip_rcv_core", fn="ip_rcv"),
                    _f("ip6_rcv_core", fn="ip_rcv", optional=True)),
        Candidate(NETFILTER, (_k("ipv4:PRE_ROUTING", fn="ip_rcv__netfilter"),
                              _k("ipv6:PRE_ROUTING", fn="ip_rcv__netfilter", optional=True)),
                  "NF_INET_PRE_ROUTING, right after ip_rcv_core's checks"),
    )),
    Stage("l4_rcv", "L4", "rx", "l4_rcv", functions=(
        # IP's local delivery hands over to L4: drops there (no such protocol) are L4's
        "ip_local_deliver", "ip_local_deliver_finish", "ip_protocol_deliver_rcu",
        "ip6_input", "ip6_input_finish", "ip6_protocol_deliver_rcu", "ip_mc_input",
        "ip6_mc_input",
        "udp_rcv", "__udp4_lib_rcv", "udp_unicast_rcv_skb", "__udp4_lib_mcast_deliver",
        "udp_queue_rcv_skb", "udp_queue_rcv_one_skb", "__udp_queue_rcv_skb",
        "__udp_enqueue_schedule_skb", "udpv6_rcv", "__udp6_lib_rcv", "udpv6_queue_rcv_skb",
        "udpv6_queue_rcv_one_skb", "__udpv6_queue_rcv_skb", "__udp6_lib_mcast_deliver",
        "tcp_v4_rcv", "tcp_v4_do_rcv", "tcp_v6_rcv", "tcp_v6_do_rcv", "tcp_rcv_established",
        "tcp_rcv_state_process", "tcp_data_queue", "tcp_validate_incoming", "tcp_add_backlog",
        "tcp_conn_request", "tcp_v4_conn_request", "tcp_v6_conn_request", "tcp_child_process",
        "icmp_rcv", "icmpv6_rcv", "raw_rcv", "raw_local_deliver", "rawv6_rcv", "ping_rcv",
        "igmp_rcv", "sock_queue_rcv_skb_reason", "__sk_receive_skb", "sk_filter_trim_cap"),
          candidates=(
        # ICMP's too: LOCAL_IN, the netfilter way in, sees every protocol, so without them a
        # ping never reached L4 on a kprobe kernel (its echo request is consumed in icmp_rcv,
        # its reply reaches the ping socket through it)
        *_functions(_f("tcp_v4_rcv", fn="l4_rcv"), _f("udp_rcv", fn="l4_rcv"),
                    _f("icmp_rcv", fn="l4_rcv"),
                    _f("tcp_v6_rcv", fn="l4_rcv", optional=True),
                    _f("udpv6_rcv", fn="l4_rcv", optional=True),
                    _f("icmpv6_rcv", fn="l4_rcv", optional=True)),
        Candidate(NETFILTER, (_k("ipv4:LOCAL_IN", fn="l4_rcv__netfilter"),
                              _k("ipv6:LOCAL_IN", fn="l4_rcv__netfilter", optional=True)),
                  "NF_INET_LOCAL_IN, in ip_local_deliver just before tcp_v4_rcv/udp_rcv"),
    )),
)

# Where an skb's life ends: freed as a drop (kfree_skb, with the kernel's reason where it gives
# one), consumed normally, or read by a socket. Not a step on the path, so not a column of counts: the features that
# follow skbs to their end (drops, trace) attach here.
END_STAGES: tuple[Stage, ...] = (
    Stage("drop", "any", "end", "drop", _tracepoint(("skb:kfree_skb", "drop"),
                                                    note="skb:kfree_skb, in kfree_skb_reason")),
    Stage("consume", "any", "end", "consume", _tracepoint(("skb:consume_skb", "consume"),
                                                          note="skb:consume_skb")),
    # A socket's reader copying the data out (recvmsg): where UDP and TCP skbs end for the
    # skb's followers, since those are mostly freed where no tracepoint fires (__kfree_skb,
    # skb_attempt_defer_free)
    Stage("read", "any", "end", "read",
          _tracepoint(("skb:skb_copy_datagram_iovec", "read"),
                      note="skb:skb_copy_datagram_iovec, recvmsg copying the data out")),
)
ALL_STAGES = STAGES + END_STAGES

# Netfilter frees what any hook drops in the same functions, at PRE_ROUTING, LOCAL_IN or on
# the way out alike: nf_hook_slow for a hook's NF_DROP verdict, and (6.18 here) nftables itself
# in nft_do_chain for a rule's `drop`. Such a drop's stage is decided from what the drop
# program records of the skb (dropcounts.netfilter_stage), not from the function.
NETFILTER_DROP_FUNCTIONS = ("nf_hook_slow", "nf_hook_slow_list", "nft_do_chain",
                            "nft_do_chain_ipv4", "nft_do_chain_ipv6", "nft_do_chain_inet",
                            "ipt_do_table", "ip6t_do_table", "ebt_do_table")
# {kernel function: stage} for naming a drop's place (drops.drop_site)
DROP_STAGE_OF: dict[str, str] = {fn: s.name for s in STAGES for fn in s.functions}

STAGE_IDS: dict[str, int] = {s.name: i for i, s in enumerate(ALL_STAGES)}
BY_NAME: dict[str, Stage] = {s.name: s for s in ALL_STAGES}
DEVICE_STAGES = tuple(s for s in STAGES if s.per_device)
PROTOCOL_STAGES = tuple(s for s in STAGES if not s.per_device)


def stage_cflags() -> list[str]:
    """-DSTAGE_<name>=<id>: the C side's only knowledge of the catalogue. NP_NSTAGES counts the
    path stages only (the counting arrays' size); the end stages' ids follow them."""
    return [f"-DSTAGE_{s.name}={i}" for i, s in enumerate(ALL_STAGES)] + [f"-DNP_NSTAGES={len(STAGES)}"]
