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

static __always_inline void np_count_dev(void *dev, u32 stage, u32 len)
{
    u32 ifindex = 0, netns = 0;
    void *net = NULL;
    if (!dev)
        return;
    NP_READ(ifindex, dev, DEV_IFINDEX);
    NP_READ(net, dev, DEV_NET);
    NP_READ(netns, net, NET_INUM);
    np_add(netns, ifindex, stage, len);
}

static __always_inline void *np_skb_dev(void *skb)
{
    void *dev = NULL;
    NP_READ(dev, skb, SKB_DEV);
    return dev;
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

/* Count an skb at a device stage. */
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
