/* What every probe shares: the count key and value (user space reads their layout from here
 * through BCC, so it is written once), the maps, and the counting step. */
#ifndef NETPROBE_H
#define NETPROBE_H

/* struct pt_regs for kprobes: the architecture's register ABI, not a kernel-version layout */
#include <uapi/linux/ptrace.h>

#ifdef NP_USE_HEADERS
/* No BTF on this kernel: fall back to the installed headers, which must match it. */
#include <linux/skbuff.h>
#include <linux/netdevice.h>
#include <net/sock.h>
#include <net/net_namespace.h>
#include <net/dst.h>
#include <net/rtnetlink.h>
#include <linux/netfilter.h>
#include <linux/nsproxy.h>
#include <linux/sched.h>
#include <linux/device.h>
#define FIELD(id, s, path, size) OFF_##id = __builtin_offsetof(struct s, path),
enum np_field_offsets {
#include "fields.h"
};
#undef FIELD
#endif

#ifndef NP_MAX_KEYS
#define NP_MAX_KEYS 16384
#endif

/* Rows are (netns, device, stage); the L4 send stages run before a device is chosen, so their
 * rows carry ifindex 0 and the stage names the protocol. */
struct np_key {
    u32 netns;
    u32 ifindex;
    u32 stage;
};

struct np_val {
    u64 packets;
    u64 bytes;
};

BPF_PERCPU_HASH(counts, struct np_key, struct np_val, NP_MAX_KEYS);
/* [0]: hits not counted because `counts` was full */
BPF_PERCPU_ARRAY(dropped, u64, 1);

#define NP_READ(dst, base, id) bpf_probe_read_kernel(&(dst), sizeof(dst), (char *)(base) + OFF_##id)

static __always_inline void np_add(u32 netns, u32 ifindex, u32 stage, u32 len)
{
    struct np_key key = {.netns = netns, .ifindex = ifindex, .stage = stage};
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

#ifndef NP_SLOT_BITS
#define NP_SLOT_BITS 7
#endif
#define NP_SLOTS (1 << NP_SLOT_BITS)

/* Fibonacci hashing of a kernel object's address: slab objects are aligned to their size, so
 * their low bits say nothing */
static __always_inline u32 np_slot_of(u64 addr)
{
    return (u32)(((addr >> 6) * 0x9E3779B97F4A7C15ULL) >> (64 - NP_SLOT_BITS));
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
    struct np_val v[NP_NSTAGES];
};

BPF_PERCPU_ARRAY(slots, struct np_slot, NP_SLOTS);
/* [0]: bumped by user space when a device appears, vanishes or changes namespace */
BPF_ARRAY(epoch, u64, 1);
/* addresses of vanished devices, whose slots may be taken back (looked up only on a collision) */
BPF_HASH(released, u64, u8, 1024);

static __always_inline void np_dev_identity(void *dev, u32 *netns, u32 *ifindex)
{
    void *net = NULL;
    bpf_probe_read_kernel(ifindex, sizeof(*ifindex), (char *)dev + OFF_DEV_IFINDEX);
    NP_READ(net, dev, DEV_NET);
    bpf_probe_read_kernel(netns, sizeof(*netns), (char *)net + OFF_NET_INUM);
}

static __always_inline void np_count_dev(void *dev, u32 stage, u32 len)
{
    u32 zero = 0, netns = 0, ifindex = 0;
    if (!dev || stage >= NP_NSTAGES)
        return;
    u32 idx = np_slot_of((u64)dev);
    struct np_slot *s = slots.lookup(&idx);
    u64 *ep = epoch.lookup(&zero);
    if (!s || !ep)
        return;
    if (s->dev != (u64)dev || s->epoch != *ep) {
        if (s->dev != (u64)dev && s->dev != 0) {
            u64 owner = s->dev;
            if (!released.lookup(&owner)) {
                np_dev_identity(dev, &netns, &ifindex);
                np_add(netns, ifindex, stage, len);
                return;
            }
            s->dev = 0; /* its owner vanished: take the slot back */
        }
        np_dev_identity(dev, &netns, &ifindex);
        if (s->dev != (u64)dev || s->netns != netns || s->ifindex != ifindex) {
            /* a new owner, or this address is another device now (freed and reused, or
             * moved to another namespace): the old identity is gone, and its counts too */
            __builtin_memset(s->v, 0, sizeof(s->v));
            s->dev = (u64)dev;
            s->netns = netns;
            s->ifindex = ifindex;
        }
        s->epoch = *ep;
    }
    s->v[stage].packets += 1;
    s->v[stage].bytes += len;
}

static __always_inline void *np_skb_dev(void *skb)
{
    void *dev = NULL;
    NP_READ(dev, skb, SKB_DEV);
    return dev;
}

/* skb->dev and skb->len with one read where they sit close (one read costs the same ~30 ns
 * for 8 bytes or 100) */
static __always_inline void np_skb_dev_len(void *skb, void **dev, u32 *len)
{
#if defined(OFF_SKB_DEV) && OFF_SKB_LEN > OFF_SKB_DEV && OFF_SKB_LEN + 4 - OFF_SKB_DEV <= 256 && \
    OFF_SKB_DEV % 8 == 0
    u64 buf[(OFF_SKB_LEN + 4 - OFF_SKB_DEV + 7) / 8];
    bpf_probe_read_kernel(buf, OFF_SKB_LEN + 4 - OFF_SKB_DEV, (char *)skb + OFF_SKB_DEV);
    *dev = (void *)buf[0];
    *len = *(u32 *)((char *)buf + OFF_SKB_LEN - OFF_SKB_DEV);
#else
    bpf_probe_read_kernel(dev, sizeof(*dev), (char *)skb + OFF_SKB_DEV);
    bpf_probe_read_kernel(len, sizeof(*len), (char *)skb + OFF_SKB_LEN);
#endif
}

/* Where an skb's network header starts depends on the stage: on receive, before
 * eth_type_trans()'s caller resets it, skb->network_header is stale or zero but skb->data
 * points at L3; from the IP layer down on transmit, and once L4 has pulled its header on
 * receive, head + network_header is the one to trust. */
#define NP_L3_AT_DATA 0
#define NP_L3_AT_NETWORK_HEADER 1

static __always_inline void *np_skb_l3(void *skb, int where)
{
    void *p = NULL;
    u16 off = 0;
    if (where == NP_L3_AT_DATA) {
        NP_READ(p, skb, SKB_DATA);
        return p;
    }
    NP_READ(p, skb, SKB_HEAD);
    NP_READ(off, skb, SKB_NETHDR);
    return (char *)p + off;
}

#include "flow_filter.h"

/* Count an skb at a device stage: its own device (skb->dev) ... */
static __always_inline int np_count_skb(void *skb, int l3_at, u32 stage)
{
    void *dev = NULL;
    u32 len = 0;
    if (!np_flow_match_skb(skb, l3_at))
        return 0;
    np_skb_dev_len(skb, &dev, &len);
    np_count_dev(dev, stage, len);
    return 0;
}

/* ... or a device the hook already knows (an argument, the route's, netfilter's state) */
static __always_inline int np_count_skb_dev(void *skb, void *dev, int l3_at, u32 stage)
{
    u32 len = 0;
    if (!np_flow_match_skb(skb, l3_at))
        return 0;
    NP_READ(len, skb, SKB_LEN);
    np_count_dev(dev, stage, len);
    return 0;
}

#endif
