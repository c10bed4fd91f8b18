/* The IP layer's own hooks as BPF netfilter links (kernel >= 6.4): where kprobes are compiled
 * out, they are the nearest place to ip_output, ip_rcv and L4 delivery. A netfilter hook is
 * per network namespace, so user space attaches one link per namespace. */

/* struct bpf_nf_ctx: the context layout the kernel gives BPF_PROG_TYPE_NETFILTER programs */
struct np_nf_ctx {
    void *state; /* struct nf_hook_state * */
    void *skb;
};

#define NP_NF_ACCEPT 1 /* netprobe only looks: every packet goes on */

/* ctx->skb and ctx->state are BTF-typed pointers here, so plain loads through them are checked
 * against the kernel's BTF by the verifier and cost next to nothing, unlike the ~30 ns of a
 * bpf_probe_read_kernel (bench/). The device pointer is the exception: the slot index is
 * arithmetic on its address, which the verifier forbids on a typed pointer, so it is read as
 * a plain number. */
#define NP_NF_LOAD(type, base, id) (*(type *)((char *)(base) + OFF_##id))

static __always_inline int np_nf_count(struct np_nf_ctx *ctx, int out, u32 stage)
{
    void *skb = ctx->skb;
    void *dev = NULL;
    if (out)
        NP_READ(dev, ctx->state, NF_STATE_OUT);
    else
        NP_READ(dev, ctx->state, NF_STATE_IN);
    if (np_flow_match_skb(skb, NP_L3_AT_DATA))
        np_count_dev(dev, stage, NP_NF_LOAD(u32, skb, SKB_LEN));
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
