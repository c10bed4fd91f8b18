/* What counting's programs do at each device stage (dev_tx.c, dev_rx.c, netfilter.c), as
 * hooks.h's three handlers: count the skb and, with --latency (NP_TIMED, set by the latency
 * program set), time it in the same run. One program per hook rather than a counting and a
 * latency program side by side: each program run costs ~55-85 ns of its own here (bpf_stats),
 * and the two would each read the skb and run the flow filter. latency.c keeps only the ends of
 * an skb's life, where nothing is counted. */
#ifndef NP_DEVICE_STAGES_H
#define NP_DEVICE_STAGES_H

#include "count.h"
#include "hooks.h"

#ifdef NP_TIMED
#include "latency.h"
/* the skb's L3 header for latency's sample hash: the view has it (NP_VIEW_HEADERS), read
 * with the rest of the skb in one bpf_probe_read_kernel; without sampling it is not used */
#ifdef NP_VIEW_HEADERS
#define NP_VIEW_L3(v) ((v).l3)
#else
#define NP_VIEW_L3(v) ((void *)0)
#endif
/* time a counted skb (`id`: np_count_dev's identity; ifindex 0: no device yet) of a followed
 * flow. A flow not sampled is let go before anything else: its hash reads the packet's
 * headers, which are where the flow filter finds them at every stage; `addr` (from a typed
 * pointer, a map lookup) and the in-flight lookup (~40 ns) are for followed flows only. */
#define NP_HOOK_TIME(addr, l3, id, stage)                                  \
    do {                                                                   \
        if ((u32)(id) && np_lat_sampled(l3))                               \
            np_lat_at(addr, (id) >> 32, (u32)(id), stage);                 \
    } while (0)
#else
#define NP_HOOK_TIME(addr, l3, id, stage) ((void)(id))
#endif

static __always_inline int np_hook_skb(void *skb, void *dev, int own_dev, int l3_at, u32 stage)
{
    struct np_skb_view v = {};
    u64 id = np_count_skb(skb, dev, own_dev, l3_at, stage, &v);
    NP_HOOK_TIME((u64)skb, NP_VIEW_L3(v), id, stage);
    return 0;
}

static __always_inline int np_hook_typed(void *skb, void *dev, int l3_at, u32 stage)
{
    u64 id = np_count_typed(skb, dev, l3_at, stage);
    NP_HOOK_TIME((u64)np_untyped(skb), NP_LAT_L3(NP_LOAD, skb, l3_at), id, stage);
    return 0;
}

#define NP_HOOK_ON_SKB(ctx, skb, dev, l3_at, stage) np_hook_skb(skb, NULL, 1, l3_at, stage)
#define NP_HOOK_ON_SKB_DEV(ctx, skb, dev, l3_at, stage) np_hook_skb(skb, dev, 0, l3_at, stage)
#define NP_HOOK_ON_TYPED(ctx, skb, dev, l3_at, stage) np_hook_typed(skb, dev, l3_at, stage)

#endif
