/* Where sk_buffs die: skb:kfree_skb(skb, location[, reason[, rx_sk]]), fired for every skb
 * freed as a drop (a normal free is skb:consume_skb). Its arguments grew with the kernel:
 * the reason came in 5.17 (-DNP_DROP_REASONS), rx_sk in 6.11 (-DNP_DROP_RX_SK); user space
 * reads which from the tracepoint's prototype in BTF, since a program may not read an
 * argument the tracepoint lacks. */

#include "drops.h"

/* Between 5.17 and 6.2 kfree_skb_reason(skb, SKB_CONSUMED) still fired kfree_skb: a normal
 * free, not a drop. The value is this kernel's, from BTF (-DNP_REASON_CONSUMED). */
#if defined(NP_DROP_REASONS) && defined(NP_REASON_CONSUMED)
#define NP_CONSUMED(reason) ((reason) == NP_REASON_CONSUMED)
#else
#define NP_CONSUMED(reason) 0
#endif

#ifdef NP_DROP_REASONS
#define NP_DROP_REASON(ARG, ctx) ((u32)ARG(u64, ctx, 2))
#else
#define NP_DROP_REASON(ARG, ctx) 0
#endif
#ifdef NP_DROP_RX_SK
#define NP_DROP_RX(ARG, ctx) ARG(void *, ctx, 3)
#else
#define NP_DROP_RX(ARG, ctx) NULL
#endif

/* One program body for both ways in: ARG fetches a tracepoint argument, SKB a field of the
 * skb the drop is filed under (NP_DROP_FILE), GET any other field. `skb` is the argument. */
#define NP_DROP_PROGRAM(ARG, SKB, GET, ctx, skb)                                          \
    do {                                                                                \
        struct np_drop_key key = {.location = ARG(u64, ctx, 1),                         \
                                  .reason = NP_DROP_REASON(ARG, ctx)};                  \
        if (NP_CONSUMED(key.reason))                                                    \
            return 0;                                                                   \
        if (!np_flow_match_l3(NP_FILTER_PROTO_OF(GET, skb),                             \
                              NP_FILTER_L3_OF(GET, skb)))                               \
            return 0;                                                                   \
        NP_DROP_FILE(SKB, GET, skb, &key, NP_DROP_RX(ARG, ctx));                        \
        np_drop_add(&key, SKB(u32, skb, OFF_SKB_LEN));                                  \
        return 0;                                                                       \
    } while (0)

/* Unfiltered, the filter's fields are not read at all */
#ifdef NP_FILTERED
#define NP_FILTER_PROTO_OF(GET, skb) GET(u16, skb, OFF_SKB_PROTOCOL)
#define NP_FILTER_L3_OF(GET, skb) NP_SKB_L3(GET, skb, NP_L3_AT_NETWORK_HEADER)
#else
#define NP_FILTER_PROTO_OF(GET, skb) 0
#define NP_FILTER_L3_OF(GET, skb) NULL
#endif

/* a plain raw tracepoint's argument: a number, BTF types none of it */
#define NP_RAW_ARG(type, ctx, i) ((type)(ctx)->args[i])

int drop__tp_btf(struct bpf_raw_tracepoint_args *ctx)
{
    void *skb = NP_TP_ARG(void *, ctx, 0);
    NP_DROP_PROGRAM(NP_TP_ARG, NP_LOAD, NP_LOAD, ctx, skb);
}

int drop__raw_tp(struct bpf_raw_tracepoint_args *ctx)
{
    void *skb = (void *)ctx->args[0];
#if defined(OFF_SKB_DEV) && NP_DROP_SKB_HI - NP_DROP_SKB_LO <= 256
    /* one read of the span (~35 ns) where five reads cost ~175: 274-371 ns a run against
     * 418-484 field by field (bpf_stats, docs/OVERHEAD.md) */
    u64 span[(NP_DROP_SKB_HI - NP_DROP_SKB_LO + 7) / 8];
    bpf_probe_read_kernel(span, sizeof(span), (char *)skb + NP_DROP_SKB_LO);
#define NP_DROP_SPAN(type, base, off) NP_AT(type, span, NP_DROP_SKB_LO, off)
    NP_DROP_PROGRAM(NP_RAW_ARG, NP_DROP_SPAN, NP_PROBE, ctx, skb);
#else /* the layout is known only once compiled (no BTF): field by field */
    NP_DROP_PROGRAM(NP_RAW_ARG, NP_PROBE, NP_PROBE, ctx, skb);
#endif
}
