/* Transmit below L4: ip_output (L3), dev_queue_xmit (L2) and the driver's own xmit function. */

#include "count.h"

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

/* ip_output / ip6_output(net, sk, skb) */
int ip_output__kprobe(struct pt_regs *ctx)
{
    void *skb = (void *)PT_REGS_PARM3(ctx);
    return np_count_skb_dev(skb, np_skb_dst_dev(skb), NP_L3_AT_NETWORK_HEADER, STAGE_ip_output);
}

/* __dev_queue_xmit(skb, sb_dev) */
int dev_queue_xmit__kprobe(struct pt_regs *ctx)
{
    void *skb = (void *)PT_REGS_PARM1(ctx);
    return np_count_skb(skb, NP_L3_AT_NETWORK_HEADER, STAGE_dev_queue_xmit);
}

/* net:net_dev_queue(skb) */
int dev_queue_xmit__raw_tp(struct bpf_raw_tracepoint_args *ctx)
{
    void *skb = (void *)ctx->args[0];
    return np_count_skb(skb, NP_L3_AT_NETWORK_HEADER, STAGE_dev_queue_xmit);
}

int dev_queue_xmit__tp_btf(struct bpf_raw_tracepoint_args *ctx)
{
    void *skb = NP_TP_ARG(void *, ctx, 0);
    return np_count_typed(skb, NP_LOAD(void *, skb, OFF_SKB_DEV), NP_L3_AT_NETWORK_HEADER,
                          STAGE_dev_queue_xmit);
}

/* the device's ndo_start_xmit(skb, dev): loopback_xmit, veth_xmit, e1000_xmit_frame, ... */
int driver_xmit__kprobe(struct pt_regs *ctx)
{
    return np_count_skb_dev((void *)PT_REGS_PARM1(ctx), (void *)PT_REGS_PARM2(ctx),
                            NP_L3_AT_NETWORK_HEADER, STAGE_driver_xmit);
}

/* net:net_dev_start_xmit(skb, dev) fires right before dev->netdev_ops->ndo_start_xmit() */
int driver_xmit__raw_tp(struct bpf_raw_tracepoint_args *ctx)
{
    return np_count_skb_dev((void *)ctx->args[0], (void *)ctx->args[1],
                            NP_L3_AT_NETWORK_HEADER, STAGE_driver_xmit);
}

int driver_xmit__tp_btf(struct bpf_raw_tracepoint_args *ctx)
{
    return np_count_typed(NP_TP_ARG(void *, ctx, 0), NP_TP_ARG(void *, ctx, 1),
                          NP_L3_AT_NETWORK_HEADER, STAGE_driver_xmit);
}
