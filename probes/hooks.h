/* Every device-stage hook once: how it hands over its skb, the device and where the skb's L3
 * header starts. A feature (counting, trace, ...) gets its program at each hook, named
 * <prefix><catalogue fn>, from three handlers of its own, each (ctx, skb, dev, l3_at, stage):
 *
 *   ON_SKB      untyped skb; its device is its own skb->dev (dev is passed as NULL)
 *   ON_SKB_DEV  untyped skb and the device the hook knows (an argument, the route's)
 *   ON_TYPED    BTF-typed skb and device (tp_btf, fentry, netfilter): fields are plain loads
 *
 * An fentry program's context is the u64 array of its function's arguments, typed by the
 * function's BTF as a tp_btf program's are by the tracepoint's: NP_TP_ARG reads both.
 *
 * so the hooks' argument logic is written here only and the features never copy it. */
#ifndef NP_HOOKS_H
#define NP_HOOKS_H

#include "netprobe.h"

/* At ip_output entry skb->dev is not set yet; the device is the route's, skb_dst(skb)->dev.
 * _skb_refdst carries a flag in bit 0, and BCC does not rewrite that pointer arithmetic, so the
 * dst is read explicitly. */
static __always_inline void *np_skb_dst_dev(void *skb)
{
    unsigned long refdst = 0;
    void *dev = NULL;
    NP_READ(refdst, skb, SKB_REFDST);
    bpf_probe_read_kernel(&dev, sizeof(dev), (char *)(refdst & ~1UL) + OFF_DST_DEV);
    return dev;
}

/* Transmit below L4.
 * ip_output / ip6_output(net, sk, skb); __dev_queue_xmit(skb, sb_dev); net:net_dev_queue(skb);
 * the device's ndo_start_xmit(skb, dev) (loopback_xmit, veth_xmit, e1000_xmit_frame, ...) and
 * net:net_dev_start_xmit(skb, dev), which fires right before it. */
#define NP_TX_HOOKS(P, ON_SKB, ON_SKB_DEV, ON_TYPED)                                          \
int P##ip_output__kprobe(struct pt_regs *ctx)                                                 \
{                                                                                             \
    void *skb = (void *)PT_REGS_PARM3(ctx);                                                   \
    return ON_SKB_DEV(ctx, skb, np_skb_dst_dev(skb), NP_L3_AT_NETWORK_HEADER, STAGE_ip_output); \
}                                                                                             \
int P##ip_output__fentry(struct bpf_raw_tracepoint_args *ctx)                                 \
{                                                                                             \
    /* the route's device is behind _skb_refdst's flag bit: no typed pointer leads there */   \
    void *skb = np_untyped(NP_TP_ARG(void *, ctx, 2));                                        \
    return ON_SKB_DEV(ctx, skb, np_skb_dst_dev(skb), NP_L3_AT_NETWORK_HEADER, STAGE_ip_output); \
}                                                                                             \
int P##dev_queue_xmit__fentry(struct bpf_raw_tracepoint_args *ctx)                            \
{                                                                                             \
    void *skb = NP_TP_ARG(void *, ctx, 0);                                                    \
    return ON_TYPED(ctx, skb, NP_LOAD(void *, skb, OFF_SKB_DEV), NP_L3_AT_NETWORK_HEADER,     \
                    STAGE_dev_queue_xmit);                                                    \
}                                                                                             \
int P##driver_xmit__fentry(struct bpf_raw_tracepoint_args *ctx)                               \
{                                                                                             \
    return ON_TYPED(ctx, NP_TP_ARG(void *, ctx, 0), NP_TP_ARG(void *, ctx, 1),                \
                    NP_L3_AT_NETWORK_HEADER, STAGE_driver_xmit);                              \
}                                                                                             \
int P##dev_queue_xmit__kprobe(struct pt_regs *ctx)                                            \
{                                                                                             \
    return ON_SKB(ctx, (void *)PT_REGS_PARM1(ctx), NULL, NP_L3_AT_NETWORK_HEADER,             \
                  STAGE_dev_queue_xmit);                                                      \
}                                                                                             \
int P##dev_queue_xmit__raw_tp(struct bpf_raw_tracepoint_args *ctx)                            \
{                                                                                             \
    return ON_SKB(ctx, (void *)ctx->args[0], NULL, NP_L3_AT_NETWORK_HEADER,                   \
                  STAGE_dev_queue_xmit);                                                      \
}                                                                                             \
int P##dev_queue_xmit__tp_btf(struct bpf_raw_tracepoint_args *ctx)                            \
{                                                                                             \
    void *skb = NP_TP_ARG(void *, ctx, 0);                                                    \
    return ON_TYPED(ctx, skb, NP_LOAD(void *, skb, OFF_SKB_DEV), NP_L3_AT_NETWORK_HEADER,     \
                    STAGE_dev_queue_xmit);                                                    \
}                                                                                             \
int P##driver_xmit__kprobe(struct pt_regs *ctx)                                               \
{                                                                                             \
    return ON_SKB_DEV(ctx, (void *)PT_REGS_PARM1(ctx), (void *)PT_REGS_PARM2(ctx),            \
                      NP_L3_AT_NETWORK_HEADER, STAGE_driver_xmit);                            \
}                                                                                             \
int P##driver_xmit__raw_tp(struct bpf_raw_tracepoint_args *ctx)                               \
{                                                                                             \
    return ON_SKB_DEV(ctx, (void *)ctx->args[0], (void *)ctx->args[1],                        \
                      NP_L3_AT_NETWORK_HEADER, STAGE_driver_xmit);                            \
}                                                                                             \
int P##driver_xmit__tp_btf(struct bpf_raw_tracepoint_args *ctx)                               \
{                                                                                             \
    return ON_TYPED(ctx, NP_TP_ARG(void *, ctx, 0), NP_TP_ARG(void *, ctx, 1),                \
                    NP_L3_AT_NETWORK_HEADER, STAGE_driver_xmit);                              \
}

/* Receive: the driver handing the skb to the stack, L2, L3 and L4 delivery.
 * netif_rx_internal / __netif_rx / netif_rx(skb) (loopback, veth, other virtual devices) and
 * napi_gro_receive(napi, skb) (NIC drivers), or their tracepoints net:netif_rx and
 * net:napi_gro_receive_entry(skb). __netif_receive_skb_core(struct sk_buff **pskb, ...) since
 * 5.9, (struct sk_buff *skb, ...) before: user space reads which from BTF; its tracepoint
 * net:netif_receive_skb fires inside it for single and list rx. ip_rcv_core(skb, net) /
 * ip6_rcv_core(skb, dev, net). tcp_v4_rcv / tcp_v6_rcv / udp_rcv / udpv6_rcv(skb), where the
 * IP header is already pulled. The tp_btf programs are loaded by the loader child itself
 * (bpfsys.load_tp_btf): BCC 0.26 cannot load that program type. */
#define NP_RX_HOOKS(P, ON_SKB, ON_SKB_DEV, ON_TYPED)                                          \
int P##driver_rx__fentry_arg1(struct bpf_raw_tracepoint_args *ctx)                            \
{                                                                                             \
    void *skb = NP_TP_ARG(void *, ctx, 0);                                                    \
    return ON_TYPED(ctx, skb, NP_LOAD(void *, skb, OFF_SKB_DEV), NP_L3_AT_DATA,               \
                    STAGE_driver_rx);                                                         \
}                                                                                             \
int P##driver_rx__fentry_arg2(struct bpf_raw_tracepoint_args *ctx)                            \
{                                                                                             \
    void *skb = NP_TP_ARG(void *, ctx, 1);                                                    \
    return ON_TYPED(ctx, skb, NP_LOAD(void *, skb, OFF_SKB_DEV), NP_L3_AT_DATA,               \
                    STAGE_driver_rx);                                                         \
}                                                                                             \
int P##netif_receive_skb__fentry_pskb(struct bpf_raw_tracepoint_args *ctx)                    \
{                                                                                             \
    /* a struct sk_buff ** argument is no typed pointer to a struct: the verifier refuses a   \
     * context load of it, so it is fetched as a number and the skb read through it */        \
    u64 pskb = 0;                                                                             \
    void *skb = NULL;                                                                         \
    bpf_get_func_arg(ctx, 0, &pskb);                                                          \
    bpf_probe_read_kernel(&skb, sizeof(skb), (void *)pskb);                                   \
    return ON_SKB(ctx, skb, NULL, NP_L3_AT_DATA, STAGE_netif_receive_skb);                    \
}                                                                                             \
int P##netif_receive_skb__fentry(struct bpf_raw_tracepoint_args *ctx)                         \
{                                                                                             \
    void *skb = NP_TP_ARG(void *, ctx, 0);                                                    \
    return ON_TYPED(ctx, skb, NP_LOAD(void *, skb, OFF_SKB_DEV), NP_L3_AT_DATA,               \
                    STAGE_netif_receive_skb);                                                 \
}                                                                                             \
int P##ip_rcv__fentry(struct bpf_raw_tracepoint_args *ctx)                                    \
{                                                                                             \
    void *skb = NP_TP_ARG(void *, ctx, 0);                                                    \
    return ON_TYPED(ctx, skb, NP_LOAD(void *, skb, OFF_SKB_DEV), NP_L3_AT_DATA, STAGE_ip_rcv); \
}                                                                                             \
int P##l4_rcv__fentry(struct bpf_raw_tracepoint_args *ctx)                                    \
{                                                                                             \
    void *skb = NP_TP_ARG(void *, ctx, 0);                                                    \
    return ON_TYPED(ctx, skb, NP_LOAD(void *, skb, OFF_SKB_DEV), NP_L3_AT_NETWORK_HEADER,     \
                    STAGE_l4_rcv);                                                            \
}                                                                                             \
int P##driver_rx__kprobe_arg1(struct pt_regs *ctx)                                            \
{                                                                                             \
    return ON_SKB(ctx, (void *)PT_REGS_PARM1(ctx), NULL, NP_L3_AT_DATA, STAGE_driver_rx);     \
}                                                                                             \
int P##driver_rx__kprobe_arg2(struct pt_regs *ctx)                                            \
{                                                                                             \
    return ON_SKB(ctx, (void *)PT_REGS_PARM2(ctx), NULL, NP_L3_AT_DATA, STAGE_driver_rx);     \
}                                                                                             \
int P##driver_rx__raw_tp(struct bpf_raw_tracepoint_args *ctx)                                 \
{                                                                                             \
    return ON_SKB(ctx, (void *)ctx->args[0], NULL, NP_L3_AT_DATA, STAGE_driver_rx);           \
}                                                                                             \
int P##driver_rx__tp_btf(struct bpf_raw_tracepoint_args *ctx)                                 \
{                                                                                             \
    void *skb = NP_TP_ARG(void *, ctx, 0);                                                    \
    return ON_TYPED(ctx, skb, NP_LOAD(void *, skb, OFF_SKB_DEV), NP_L3_AT_DATA,               \
                    STAGE_driver_rx);                                                         \
}                                                                                             \
int P##netif_receive_skb__kprobe_pskb(struct pt_regs *ctx)                                    \
{                                                                                             \
    void *skb = NULL;                                                                         \
    bpf_probe_read_kernel(&skb, sizeof(skb), (void *)PT_REGS_PARM1(ctx));                     \
    return ON_SKB(ctx, skb, NULL, NP_L3_AT_DATA, STAGE_netif_receive_skb);                    \
}                                                                                             \
int P##netif_receive_skb__kprobe(struct pt_regs *ctx)                                         \
{                                                                                             \
    return ON_SKB(ctx, (void *)PT_REGS_PARM1(ctx), NULL, NP_L3_AT_DATA,                       \
                  STAGE_netif_receive_skb);                                                   \
}                                                                                             \
int P##netif_receive_skb__raw_tp(struct bpf_raw_tracepoint_args *ctx)                         \
{                                                                                             \
    return ON_SKB(ctx, (void *)ctx->args[0], NULL, NP_L3_AT_DATA, STAGE_netif_receive_skb);   \
}                                                                                             \
int P##netif_receive_skb__tp_btf(struct bpf_raw_tracepoint_args *ctx)                         \
{                                                                                             \
    void *skb = NP_TP_ARG(void *, ctx, 0);                                                    \
    return ON_TYPED(ctx, skb, NP_LOAD(void *, skb, OFF_SKB_DEV), NP_L3_AT_DATA,               \
                    STAGE_netif_receive_skb);                                                 \
}                                                                                             \
int P##ip_rcv__kprobe(struct pt_regs *ctx)                                                    \
{                                                                                             \
    return ON_SKB(ctx, (void *)PT_REGS_PARM1(ctx), NULL, NP_L3_AT_DATA, STAGE_ip_rcv);        \
}                                                                                             \
int P##l4_rcv__kprobe(struct pt_regs *ctx)                                                    \
{                                                                                             \
    return ON_SKB(ctx, (void *)PT_REGS_PARM1(ctx), NULL, NP_L3_AT_NETWORK_HEADER,             \
                  STAGE_l4_rcv);                                                              \
}

/* The IP layer's own hooks as BPF netfilter links (kernel >= 6.4): where kprobes are compiled
 * out, they are the nearest place to ip_output, ip_rcv and L4 delivery. A netfilter hook is
 * per network namespace, so user space attaches one link per namespace. ctx->skb and
 * ctx->state are BTF-typed, and so is what is loaded through them. */
struct np_nf_ctx { /* struct bpf_nf_ctx: the context the kernel gives netfilter programs */
    void *state; /* struct nf_hook_state * */
    void *skb;
};

#define NP_NF_ACCEPT 1 /* netprobe only looks: every packet goes on */

/* POST_ROUTING: the packet leaves through state->out; PRE_ROUTING (right after ip_rcv_core's
 * checks) and LOCAL_IN (ip_local_deliver, the last IP step before tcp_v4_rcv / udp_rcv): it
 * came in through state->in */
#define NP_NF_HOOKS(P, ON_TYPED)                                                              \
int P##ip_output__netfilter(struct np_nf_ctx *ctx)                                            \
{                                                                                             \
    ON_TYPED(ctx, ctx->skb, NP_LOAD(void *, ctx->state, OFF_NF_STATE_OUT), NP_L3_AT_DATA,     \
             STAGE_ip_output);                                                                \
    return NP_NF_ACCEPT;                                                                      \
}                                                                                             \
int P##ip_rcv__netfilter(struct np_nf_ctx *ctx)                                               \
{                                                                                             \
    ON_TYPED(ctx, ctx->skb, NP_LOAD(void *, ctx->state, OFF_NF_STATE_IN), NP_L3_AT_DATA,      \
             STAGE_ip_rcv);                                                                   \
    return NP_NF_ACCEPT;                                                                      \
}                                                                                             \
int P##l4_rcv__netfilter(struct np_nf_ctx *ctx)                                               \
{                                                                                             \
    ON_TYPED(ctx, ctx->skb, NP_LOAD(void *, ctx->state, OFF_NF_STATE_IN), NP_L3_AT_DATA,      \
             STAGE_l4_rcv);                                                                   \
    return NP_NF_ACCEPT;                                                                      \
}

/* Where an skb's life ends: skb:kfree_skb(skb, location, reason), skb:consume_skb(skb,
 * location) and skb:skb_copy_datagram_iovec(skb, len), a socket's reader copying it out.
 * END(ctx, skb, stage) is given the skb's address only: what a feature knew of the skb it
 * learnt at the path's stages. */
#define NP_END_HOOKS(P, END)                                                                  \
int P##drop__raw_tp(struct bpf_raw_tracepoint_args *ctx)                                      \
{                                                                                             \
    return END(ctx, (void *)ctx->args[0], STAGE_drop);                                        \
}                                                                                             \
int P##drop__tp_btf(struct bpf_raw_tracepoint_args *ctx)                                      \
{                                                                                             \
    return END(ctx, np_untyped(NP_TP_ARG(void *, ctx, 0)), STAGE_drop);                       \
}                                                                                             \
int P##consume__raw_tp(struct bpf_raw_tracepoint_args *ctx)                                   \
{                                                                                             \
    return END(ctx, (void *)ctx->args[0], STAGE_consume);                                     \
}                                                                                             \
int P##consume__tp_btf(struct bpf_raw_tracepoint_args *ctx)                                   \
{                                                                                             \
    return END(ctx, np_untyped(NP_TP_ARG(void *, ctx, 0)), STAGE_consume);                    \
}                                                                                             \
int P##read__raw_tp(struct bpf_raw_tracepoint_args *ctx)                                      \
{                                                                                             \
    return END(ctx, (void *)ctx->args[0], STAGE_read);                                        \
}                                                                                             \
int P##read__tp_btf(struct bpf_raw_tracepoint_args *ctx)                                      \
{                                                                                             \
    return END(ctx, np_untyped(NP_TP_ARG(void *, ctx, 0)), STAGE_read);                       \
}

#endif
