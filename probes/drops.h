/* The drops feature's maps: per (drop location, netns, device, reason, what the skb had been
 * through) packets and bytes of the sk_buffs freed as drops. User space (dropcounts.py) names
 * the location's function and stage and the reason; the layouts here are read through BCC,
 * so they are written once. */
#ifndef NP_DROPS_H
#define NP_DROPS_H

#include "netprobe.h"

#ifndef NP_MAX_DROP_KEYS
#define NP_MAX_DROP_KEYS 4096
#endif

/* facts: what the skb had been through when it was dropped. Netfilter frees every drop of
 * every hook in nf_hook_slow, so user space takes the stage of such a drop from these. */
#define NP_DROP_RECEIVED 1 /* skb->skb_iif set: it came in through a device */
#define NP_DROP_ROUTED 2   /* skb->_skb_refdst set: it has a route */

struct np_drop_key {
    u64 location; /* the instruction that freed it (skb:kfree_skb's location) */
    u32 netns;    /* skb->dev's namespace, else the socket's; 0: neither known */
    u32 ifindex;  /* 0: no device */
    u32 reason;   /* enum skb_drop_reason (kernel >= 5.17); 0 where the kernel gives none */
    u32 facts;
};

struct np_drop_val {
    u64 packets;
    u64 bytes;
};

BPF_PERCPU_HASH(drops, struct np_drop_key, struct np_drop_val, NP_MAX_DROP_KEYS);
/* [0]: drops not counted because `drops` was full */
BPF_PERCPU_ARRAY(drops_lost, u64, 1);

static __always_inline void np_drop_add(struct np_drop_key *key, u32 len)
{
    struct np_drop_val *val = drops.lookup(key);
    if (!val) {
        struct np_drop_val zero = {};
        drops.insert(key, &zero); /* fails harmlessly when another CPU made the row first */
        val = drops.lookup(key);
        if (!val) {
            u32 k = 0;
            u64 *lost = drops_lost.lookup(&k);
            if (lost)
                *lost += 1;
            return;
        }
    }
    val->packets += 1;
    val->bytes += len;
}

/* Where a drop is filed: the skb's fields fetched by SKB (NP_LOAD through tp_btf's typed skb,
 * plain loads the verifier checks, ~1 ns; on a raw tracepoint from one copied span of the skb),
 * the device's, socket's and namespace's by GET (NP_LOAD, or NP_PROBE: ~30 ns a read). Without
 * a device the namespace is the socket's: the skb's own, or the receiving socket the
 * tracepoint names (rx_sk, 6.11+). */
#define NP_DROP_FILE(SKB, GET, skb, key, rx_sk)                                           \
    do {                                                                                \
        void *_dev = SKB(void *, skb, OFF_SKB_DEV);                                     \
        void *_net = NULL;                                                              \
        if (_dev) {                                                                     \
            (key)->ifindex = GET(u32, _dev, OFF_DEV_IFINDEX);                           \
            _net = GET(void *, _dev, OFF_DEV_NET);                                      \
        } else {                                                                        \
            void *_sk = SKB(void *, skb, OFF_SKB_SK);                                   \
            if (_sk)                                                                    \
                _net = GET(void *, _sk, OFF_SK_NET);                                    \
            else if (rx_sk)                                                             \
                _net = GET(void *, rx_sk, OFF_SK_NET);                                  \
        }                                                                               \
        if (_net)                                                                       \
            (key)->netns = GET(u32, _net, OFF_NET_INUM);                                \
        (key)->facts = (SKB(u32, skb, OFF_SKB_IIF) ? NP_DROP_RECEIVED : 0) |            \
                       (SKB(u64, skb, OFF_SKB_REFDST) ? NP_DROP_ROUTED : 0);            \
    } while (0)

/* The span of struct sk_buff those fields lie in (~140 bytes), from an 8-byte boundary: a
 * raw tracepoint's program copies it with one bpf_probe_read_kernel instead of five */
#define NP_DROP_SKB_LO (NP_MIN(NP_MIN4(OFF_SKB_DEV, OFF_SKB_SK, OFF_SKB_REFDST, OFF_SKB_LEN), \
                               OFF_SKB_IIF) & ~7)
#define NP_DROP_SKB_HI NP_MAX(NP_MAX4(OFF_SKB_DEV + 8, OFF_SKB_SK + 8, OFF_SKB_REFDST + 8,   \
                                      OFF_SKB_LEN + 4), OFF_SKB_IIF + 4)

#endif
