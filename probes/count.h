/* The counting feature: per (netns, device, stage) packets and bytes, kept in per-CPU slots
 * with a hash for what does not fit (user space: counting.py). The layouts here are read by
 * user space through BCC, so they are written once. */
#ifndef NP_COUNT_H
#define NP_COUNT_H

#include "netprobe.h"

#ifndef NP_MAX_KEYS
#define NP_MAX_KEYS 16384
#endif

/* Rows are (netns, device, stage); the L4 send stages run before a device is chosen, so their
 * rows carry ifindex 0 and the stage names the protocol. A device's rows carry its namespace's
 * cookie too: a namespace made anew reuses the inode number and its devices the ifindex, and
 * forgetting the vanished device's rows must not take the new one's. */
struct np_key {
    u32 netns;
    u32 ifindex;
    u32 stage;
    u32 pad;
    u64 cookie;
};

struct np_val {
    u64 packets;
    u64 bytes;
};

BPF_PERCPU_HASH(counts, struct np_key, struct np_val, NP_MAX_KEYS);
/* [0]: hits not counted because `counts` was full */
BPF_PERCPU_ARRAY(dropped, u64, 1);

static __always_inline void np_add(u32 netns, u32 ifindex, u64 cookie, u32 stage, u32 len)
{
    struct np_key key = {.netns = netns, .ifindex = ifindex, .stage = stage, .cookie = cookie};
    struct np_val *val = counts.lookup(&key);
    if (!val) {
        struct np_val zero = {};
        /* insert (BPF_NOEXIST) fails harmlessly when another CPU made the row first */
        counts.insert(&key, &zero);
        val = counts.lookup(&key);
        if (!val) {
            u32 k = 0;
            u64 *d = dropped.lookup(&k);
            if (d)
                *d += 1;
            return;
        }
    }
    val->packets += 1;
    val->bytes += len;
}

/* The fast path. A hash lookup costs ~55 ns and each bpf_probe_read_kernel ~30 ns on a
 * 2-vCPU VM (bench/), against ~20 ns for the hook itself; so each CPU keeps a small
 * direct-mapped table indexed by the net_device's address, holding the device's identity
 * (read once) and its counters. A hit costs two inlined array lookups. A device whose slot is
 * taken by another live device on this CPU is counted in `counts` instead; user space adds
 * both. */
struct np_slot {
    u64 dev;   /* address of the net_device owning the slot on this CPU; 0: free */
    u64 epoch; /* the `epoch` at which the owner's identity was last read */
    u32 netns;
    u32 ifindex;
    /* the namespace's net_cookie, never reused (its inode number is): a device at the same
     * address and ifindex in a namespace made anew is another device */
    u64 cookie;
    struct np_val v[NP_NSTAGES];
};

BPF_PERCPU_ARRAY(slots, struct np_slot, NP_SLOTS);
/* [0]: bumped by user space when a device appears, vanishes or changes namespace */
BPF_ARRAY(epoch, u64, 1);
/* addresses of vanished devices, whose slots may be taken back (looked up only on a collision) */
BPF_HASH(released, u64, u8, 1024);

/* `known_cookie`: the device's namespace's cookie where the hook reads it for ~2 ns (typed
 * pointers), else 0. With it a device in a namespace made anew is told from the vanished one
 * at its first packet, before user space has seen either go or come.
 * Returns the device's (netns << 32) | ifindex, which the slot already holds, for a feature
 * keyed by it in the same program (latency); 0 when nothing was counted. */
static __always_inline u64 np_count_dev(void *dev, u32 stage, u32 len, u64 known_cookie)
{
    u32 zero = 0, netns = 0, ifindex = 0;
    u64 cookie = 0;
    if (!dev || stage >= NP_NSTAGES)
        return 0;
    u32 idx = np_slot_of((u64)dev);
    struct np_slot *s = slots.lookup(&idx);
    u64 *ep = epoch.lookup(&zero);
    if (!s || !ep)
        return 0;
    if (s->dev != (u64)dev || s->epoch != *ep || (known_cookie && s->cookie != known_cookie)) {
        if (s->dev != (u64)dev && s->dev != 0) {
            u64 owner = s->dev;
            if (!released.lookup(&owner)) {
                np_dev_identity(dev, &netns, &ifindex);
                np_add(netns, ifindex, np_dev_cookie(dev), stage, len);
                return ((u64)netns << 32) | ifindex;
            }
            s->dev = 0; /* its owner vanished: take the slot back */
        }
        np_dev_identity(dev, &netns, &ifindex);
        cookie = np_dev_cookie(dev);
        if (s->dev != (u64)dev || s->netns != netns || s->ifindex != ifindex ||
            s->cookie != cookie) {
            /* a new owner, or this address is another device now (freed and reused, or
             * moved to another namespace): the old identity is gone, and its counts too */
            __builtin_memset(s->v, 0, sizeof(s->v));
            if (s->dev != (u64)dev) {
                /* a live device at a released address (slab reuse): released no more, or
                 * the next device to collide here would take its slot and counts away */
                u64 me = (u64)dev;
                released.delete(&me);
            }
            s->dev = (u64)dev;
            s->netns = netns;
            s->ifindex = ifindex;
            s->cookie = cookie;
        }
        s->epoch = *ep;
    }
    s->v[stage].packets += 1;
    s->v[stage].bytes += len;
    return ((u64)s->netns << 32) | s->ifindex;
}

/* Count an skb at a device stage: on its own device (skb->dev) when `own_dev`, else on the
 * device the hook knows (`dev`: an argument, the route's). Returns np_count_dev's identity;
 * `v` is left with what was read of the skb. */
static __always_inline u64 np_count_skb(void *skb, void *dev, int own_dev, int l3_at, u32 stage,
                                        struct np_skb_view *v)
{
    np_skb_view(skb, l3_at, v);
    if (!np_flow_match_l3(v->proto_raw, v->l3))
        return 0;
    return np_count_dev(own_dev ? v->dev : dev, stage, v->len, 0);
}

/* np_count_skb for typed pointers and the hook's device: no bpf_probe_read_kernel but the filter's one read of
 * the packet's headers. skb->head and skb->data point at bytes, not structs, so they load
 * as plain numbers. */
static __always_inline u64 np_count_typed(void *skb, void *dev, int l3_at, u32 stage)
{
#ifdef NP_FILTERED
    if (!np_flow_match_l3(NP_LOAD(u16, skb, OFF_SKB_PROTOCOL), NP_SKB_L3(NP_LOAD, skb, l3_at)))
        return 0;
#endif
    void *net = NP_LOAD(void *, dev, OFF_DEV_NET);
    return np_count_dev(np_untyped(dev), stage, NP_LOAD(u32, skb, OFF_SKB_LEN),
                        NP_LOAD(u64, net, OFF_NET_COOKIE));
}

#endif
