/* Receive: the driver handing the skb to the stack, L2, L3 and L4 delivery. */

#include "count.h"

/* netif_rx_internal / __netif_rx / netif_rx(skb): loopback, veth and other virtual devices */
int driver_rx__kprobe_arg1(struct pt_regs *ctx)
{
    void *skb = (void *)PT_REGS_PARM1(ctx);
    return np_count_skb(skb, NP_L3_AT_DATA, STAGE_driver_rx);
}

/* napi_gro_receive(napi, skb): NIC drivers */
int driver_rx__kprobe_arg2(struct pt_regs *ctx)
{
    void *skb = (void *)PT_REGS_PARM2(ctx);
    return np_count_skb(skb, NP_L3_AT_DATA, STAGE_driver_rx);
}

/* net:netif_rx(skb) and net:napi_gro_receive_entry(skb) */
int driver_rx__raw_tp(struct bpf_raw_tracepoint_args *ctx)
{
    void *skb = (void *)ctx->args[0];
    return np_count_skb(skb, NP_L3_AT_DATA, STAGE_driver_rx);
}

/* The same two tracepoints as BTF raw tracepoints (tp_btf): the skb is typed, so nothing is
 * read with bpf_probe_read_kernel. BCC 0.26 cannot load this program type; the loader child
 * loads BCC's compiled instructions itself (bpfsys.load_tp_btf). The other `*__tp_btf`
 * programs are the same. */
int driver_rx__tp_btf(struct bpf_raw_tracepoint_args *ctx)
{
    void *skb = NP_TP_ARG(void *, ctx, 0);
    return np_count_typed(skb, NP_LOAD(void *, skb, OFF_SKB_DEV), NP_L3_AT_DATA, STAGE_driver_rx);
}

/* __netif_receive_skb_core(struct sk_buff **pskb, ...) since 5.9; (struct sk_buff *skb, ...)
 * before. User space reads which from BTF and attaches the matching program. */
int netif_receive_skb__kprobe_pskb(struct pt_regs *ctx)
{
    void *skb = NULL;
    bpf_probe_read_kernel(&skb, sizeof(skb), (void *)PT_REGS_PARM1(ctx));
    return np_count_skb(skb, NP_L3_AT_DATA, STAGE_netif_receive_skb);
}

int netif_receive_skb__kprobe(struct pt_regs *ctx)
{
    void *skb = (void *)PT_REGS_PARM1(ctx);
    return np_count_skb(skb, NP_L3_AT_DATA, STAGE_netif_receive_skb);
}

/* net:netif_receive_skb(skb) fires inside __netif_receive_skb_core for single and list rx */
int netif_receive_skb__raw_tp(struct bpf_raw_tracepoint_args *ctx)
{
    void *skb = (void *)ctx->args[0];
    return np_count_skb(skb, NP_L3_AT_DATA, STAGE_netif_receive_skb);
}

int netif_receive_skb__tp_btf(struct bpf_raw_tracepoint_args *ctx)
{
    void *skb = NP_TP_ARG(void *, ctx, 0);
    return np_count_typed(skb, NP_LOAD(void *, skb, OFF_SKB_DEV), NP_L3_AT_DATA,
                          STAGE_netif_receive_skb);
}

/* ip_rcv_core(skb, net) / ip6_rcv_core(skb, dev, net), or ip_rcv / ipv6_rcv(skb, ...) */
int ip_rcv__kprobe(struct pt_regs *ctx)
{
    void *skb = (void *)PT_REGS_PARM1(ctx);
    return np_count_skb(skb, NP_L3_AT_DATA, STAGE_ip_rcv);
}

/* tcp_v4_rcv / tcp_v6_rcv / udp_rcv / udpv6_rcv(skb): the IP header is already pulled */
int l4_rcv__kprobe(struct pt_regs *ctx)
{
    void *skb = (void *)PT_REGS_PARM1(ctx);
    return np_count_skb(skb, NP_L3_AT_NETWORK_HEADER, STAGE_l4_rcv);
}
