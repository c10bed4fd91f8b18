/* The IP layer's own hooks as BPF netfilter links (kernel >= 6.4): where kprobes are compiled
 * out, they are the nearest place to ip_output, ip_rcv and L4 delivery. A netfilter hook is
 * per network namespace, so user space attaches one link per namespace. */

#include "count.h"

/* struct bpf_nf_ctx: the context layout the kernel gives BPF_PROG_TYPE_NETFILTER programs */
struct np_nf_ctx {
    void *state; /* struct nf_hook_state * */
    void *skb;
};

#define NP_NF_ACCEPT 1 /* netprobe only looks: every packet goes on */

/* ctx->skb and ctx->state are BTF-typed, and so is what is loaded through them: the device
 * and skb->len cost no bpf_probe_read_kernel here (NP_LOAD in netprobe.h). */
static __always_inline int np_nf_count(struct np_nf_ctx *ctx, int out, u32 stage)
{
    void *dev = out ? NP_LOAD(void *, ctx->state, OFF_NF_STATE_OUT)
                    : NP_LOAD(void *, ctx->state, OFF_NF_STATE_IN);
    np_count_typed(ctx->skb, dev, NP_L3_AT_DATA, stage);
    return NP_NF_ACCEPT;
}

/* POST_ROUTING: the packet leaves through state->out */
int ip_output__netfilter(struct np_nf_ctx *ctx)
{
    return np_nf_count(ctx, 1, STAGE_ip_output);
}

/* PRE_ROUTING: right after ip_rcv_core's checks, through state->in */
int ip_rcv__netfilter(struct np_nf_ctx *ctx)
{
    return np_nf_count(ctx, 0, STAGE_ip_rcv);
}

/* LOCAL_IN: ip_local_deliver, the last IP step before tcp_v4_rcv / udp_rcv */
int l4_rcv__netfilter(struct np_nf_ctx *ctx)
{
    return np_nf_count(ctx, 0, STAGE_l4_rcv);
}
