/* The latency feature: each skb is followed by its address from the first stage it is seen at
 * until it is freed, in the kernel — no per-packet event reaches user space. At each stage the
 * time since its previous stage goes into a log2 histogram per (netns, device, from, to); at
 * its end its path — the ordered (stage, device) steps — is counted in a census of distinct
 * paths. User space: latreader.py reads these maps, latency.py does the arithmetic. Compiled
 * with counting (NP_TIMED): its programs at the path stages call np_lat_at (device_stages.h). */
#ifndef NP_LATENCY_H
#define NP_LATENCY_H

#include "netprobe.h"
#include "packet.h"

#ifndef NP_LAT_INFLIGHT
#define NP_LAT_INFLIGHT 16384
#endif
#ifndef NP_LAT_HOPS
#define NP_LAT_HOPS 4096
#endif
#ifndef NP_LAT_PATHS
#define NP_LAT_PATHS 256
#endif
/* follow one flow in NP_LAT_SAMPLE (-D from --sample) */
#ifndef NP_LAT_SAMPLE
#define NP_LAT_SAMPLE 1
#endif
#define NP_LAT_BUCKETS 40 /* bucket b: [2^(b-1), 2^b) ns; the last also holds what is longer */
#define NP_PATH_MAX 12    /* steps a path keeps; longer paths are told apart by hash alone */

/* How a path ended (latency.py: ENDS) */
#define NP_END_DELIVERED 0 /* read by a socket, or consumed after it reached L4 */
#define NP_END_CONSUMED 1  /* consumed before L4: a transmitted skb freed by its driver, ... */
#define NP_END_DROPPED 2   /* kfree_skb */
#define NP_NENDS 3
/* Many skbs are freed where no tracepoint fires (__kfree_skb, the per-CPU skb caches: most of
 * UDP's and TCP's on 6.18); that is seen only when the address starts another path. Every drop
 * goes through kfree_skb_reason, which fires skb:kfree_skb, so such an end is no drop: it is
 * counted as delivered (after L4) or consumed, and as inferred. */

/* lat_stats indexes (latency.py: STATS) */
#define NP_LAT_FOLLOWED 0  /* paths started */
#define NP_LAT_ENDED 1     /* paths ended, in the census or its overflow */
#define NP_LAT_HOPS_LOST 2 /* hop times not kept: `hops` was full */
#define NP_LAT_INFERRED 3  /* paths whose end was inferred, not seen */
#define NP_LAT_OTHER 4     /* + end: paths counted as "other", the census being full */
#define NP_LAT_NSTATS (NP_LAT_OTHER + NP_NENDS)

struct np_step {
    u32 netns;
    u32 ifindex;
};

/* One skb on its way, keyed by its address. An LRU map: an skb whose end is never seen is
 * pushed out by newer ones (user space counts those: followed - ended - in flight). */
struct np_flight {
    u64 first_ts;
    u64 ts; /* at its last stage */
    u64 hash; /* of the steps so far: the census key */
    u32 netns; /* its last stage's device */
    u32 ifindex;
    u32 epoch; /* lat_epoch when the path started */
    u8 stage;
    u8 first_stage;
    u8 n; /* steps taken; only the first NP_PATH_MAX are kept */
    u8 delivered;
    u8 stages[NP_PATH_MAX];
    struct np_step steps[NP_PATH_MAX];
};

BPF_TABLE("lru_hash", u64, struct np_flight, inflight, NP_LAT_INFLIGHT);

#if NP_LAT_SAMPLE > 1
/* Under --sample the end programs still run for every skb freed, and nearly none was
 * followed: a direct-mapped table of the addresses that started a path lets the others go for
 * an array load (~2 ns) instead of the in-flight lookup (~40 ns; a hash lookup is a call). A
 * path whose slot a later path took is not looked up at its end, and is closed as inferred or
 * ages out like a path whose end no tracepoint shows; with 65536 slots and few followed skbs
 * alive at once that is rare. (Reading the packet's headers to hash its flow again would cost
 * more: where an skb is freed its headers are often in another CPU's cache, ~100 ns.) */
#define NP_LAT_TAG_BITS 16
BPF_ARRAY(lat_tags, u64, 1 << NP_LAT_TAG_BITS);

static __always_inline u64 *np_lat_tag(u64 addr)
{
    u32 i = (u32)(((addr >> 6) * 0x9E3779B97F4A7C15ULL) >> (64 - NP_LAT_TAG_BITS));
    return lat_tags.lookup(&i);
}
#endif
/* [0]: set by user space to tell apart the paths that start after it (prove, per flow) */
BPF_ARRAY(lat_epoch, u32, 1);

/* A hop: from one stage to the next (span 0), or from the path's first stage to L4 delivery
 * (span 1, the end-to-end time the hops add up to), on the destination stage's device */
struct np_hop_key {
    u32 netns;
    u32 ifindex;
    u16 from;
    u16 to;
    u32 span;
};

struct np_hist {
    u64 slot[NP_LAT_BUCKETS];
    u64 sum_ns;
};

BPF_PERCPU_HASH(hops, struct np_hop_key, struct np_hist, NP_LAT_HOPS);

struct np_path_key {
    u64 hash;
    u32 end;
    u32 epoch;
};

struct np_path {
    u64 packets;
    u8 n;
    u8 stages[NP_PATH_MAX];
    struct np_step steps[NP_PATH_MAX];
};

BPF_HASH(paths, struct np_path_key, struct np_path, NP_LAT_PATHS);
BPF_PERCPU_ARRAY(lat_stats, u64, NP_LAT_NSTATS);

static __always_inline void np_lat_stat(u32 i)
{
    u64 *v = lat_stats.lookup(&i);
    if (v)
        *v += 1;
}

/* bit length: 0 for 0, b for [2^(b-1), 2^b). u64, as is the bucket in np_hist_add: a u32
 * index is zero-extended (<<32 >>32) once into a copy for the bound's compare and again for the
 * index, and 6.1's verifier does not carry the copy's bound over ("unbounded memory access"). */
static __always_inline u64 np_log2_bucket(u64 v)
{
    u64 r = 0;
    if (v >> 32) { v >>= 32; r += 32; }
    if (v >> 16) { v >>= 16; r += 16; }
    if (v >> 8) { v >>= 8; r += 8; }
    if (v >> 4) { v >>= 4; r += 4; }
    if (v >> 2) { v >>= 2; r += 2; }
    if (v >> 1) { v >>= 1; r += 1; }
    return r + v;
}

static __always_inline void np_hist_add(u32 netns, u32 ifindex, u32 from, u32 to, u32 span, u64 ns)
{
    struct np_hop_key key = {.netns = netns, .ifindex = ifindex, .from = from, .to = to,
                             .span = span};
    struct np_hist *h = hops.lookup(&key);
    if (!h) {
        struct np_hist zero = {};
        hops.insert(&key, &zero);
        h = hops.lookup(&key);
        if (!h) {
            np_lat_stat(NP_LAT_HOPS_LOST);
            return;
        }
    }
    u64 b = np_log2_bucket(ns);
    if (b >= NP_LAT_BUCKETS)
        b = NP_LAT_BUCKETS - 1; /* the last bucket also holds what is longer */
    h->slot[b] += 1;
    h->sum_ns += ns;
}

/* lo's ifindex in every namespace (LOOPBACK_IFINDEX) */
#define NP_LOOPBACK_IFINDEX 1

/* Whether a stage can come next on an skb's way; if not, its address was freed unseen and
 * reused. Forward in path order, on through a stacked device at the same stage, or, in the
 * same namespace, from ip_rcv to ip_output (routed) or from netif_receive_skb to
 * dev_queue_xmit (bridged). An skb changes namespace only where a device hands it to its peer
 * (veth): from its driver's transmit to the receive side. Anything else in another namespace
 * is another skb at a reused address — without this rule, a ping's skb freed unseen on lo was
 * continued by another namespace's packet on a veth (1 census in ~10 under load). lo hands an
 * skb to itself only, and stacks on no device: from lo, another device at the same stage, or
 * another namespace, is another skb (a ping's path once went on from lo's transmit to a veth's
 * in the same namespace, and on into the peer's: 1 census in the 6.12 guest's ~5 runs). */
static __always_inline int np_lat_follows(struct np_flight *f, u32 stage, u32 netns, u32 ifindex)
{
    if (f->ifindex == NP_LOOPBACK_IFINDEX &&
        (f->netns != netns || (stage == f->stage && ifindex != NP_LOOPBACK_IFINDEX)))
        return 0;
    if (f->netns != netns)
        return f->stage == STAGE_driver_xmit && stage >= STAGE_driver_rx;
    if (stage > f->stage)
        return 1;
    if (stage == f->stage)
        return f->ifindex != ifindex;
    return (f->stage == STAGE_ip_rcv && stage == STAGE_ip_output) ||
           (f->stage == STAGE_netif_receive_skb && stage == STAGE_dev_queue_xmit);
}

static __always_inline void np_lat_step(struct np_flight *f, u32 stage, u32 netns, u32 ifindex)
{
    u32 i = f->n;
    if (i < NP_PATH_MAX) {
        f->stages[i] = stage;
        f->steps[i].netns = netns;
        f->steps[i].ifindex = ifindex;
    }
    if (i < 255)
        f->n = i + 1;
    /* FNV-1a over whole steps */
    f->hash = (f->hash ^ (((u64)stage << 56) ^ ((u64)netns << 24) ^ ifindex)) * 0x100000001b3ULL;
    f->stage = stage;
    f->netns = netns;
    f->ifindex = ifindex;
    if (stage == STAGE_l4_rcv)
        f->delivered = 1;
}

/* Count the path in the census, or as "other" when the census is full */
static __always_inline void np_lat_close(struct np_flight *f, u32 end)
{
    struct np_path_key k = {.hash = f->hash, .end = end, .epoch = f->epoch};
    struct np_path *p = paths.lookup(&k);
    if (p) {
        __sync_fetch_and_add(&p->packets, 1);
    } else {
        struct np_path fresh = {.packets = 1, .n = f->n};
        __builtin_memcpy(fresh.stages, f->stages, sizeof(fresh.stages));
        __builtin_memcpy(fresh.steps, f->steps, sizeof(fresh.steps));
        if (paths.insert(&k, &fresh) != 0) {
            p = paths.lookup(&k); /* another CPU made it first, or the census is full */
            if (p)
                __sync_fetch_and_add(&p->packets, 1);
            else
                np_lat_stat(NP_LAT_OTHER + (end < NP_NENDS ? end : NP_END_CONSUMED));
        }
    }
    np_lat_stat(NP_LAT_ENDED);
}

/* Sampling keeps a flow's packets together, both ways: a hash of its addresses (and ports, for
 * TCP and UDP) that is the same from either side. l3: where the packet's IP header starts. */
static __always_inline int np_lat_sampled(void *l3)
{
#if NP_LAT_SAMPLE > 1
    u32 h = 0;
    NP_HDRS(p, l3, 44, 44);
    u8 vihl = NP_HDR(u8, p, IPHDR, 0, 0);
    if (vihl >> 4 == 4) {
        u8 proto = NP_HDR(u8, p, IPHDR, 0, 9);
        h = NP_HDR(u32, p, IPHDR, 0, 12) ^ NP_HDR(u32, p, IPHDR, 0, 16);
        if ((proto == 6 || proto == 17) && (vihl & 0xf) == 5)
            h ^= NP_HDR(u16, p, UDPHDR, 20, 0) ^ NP_HDR(u16, p, UDPHDR, 20, 2);
    } else if (vihl >> 4 == 6) {
        u8 proto = NP_HDR(u8, p, IPV6HDR, 0, 6);
        /* the two addresses: bytes 8 to 40 */
        for (int i = 8; i < 40; i += 4)
            h ^= NP_HDR(u32, p, IPV6HDR, 0, i);
        if (proto == 6 || proto == 17)
            h ^= NP_HDR(u16, p, UDPHDR, 40, 0) ^ NP_HDR(u16, p, UDPHDR, 40, 2);
    }
    h = (h ^ (h >> 16)) * 0x45d9f3b;
    h ^= h >> 16;
    /* one hash in NP_LAT_SAMPLE: the lowest; a compare, where h % N costs a division */
    return h < (u32)((1ULL << 32) / NP_LAT_SAMPLE);
#else
    return 1;
#endif
}

#if NP_LAT_SAMPLE > 1
#define NP_LAT_L3(GET, skb, l3_at) ((void *)NP_SKB_L3(GET, skb, l3_at))
#else
#define NP_LAT_L3(GET, skb, l3_at) ((void *)0)
#endif

static __always_inline void np_lat_start(struct np_flight *f, u64 now, u32 stage, u32 netns,
                                         u32 ifindex)
{
    f->first_ts = f->ts = now;
    f->hash = 0;
    f->n = 0;
    f->delivered = 0;
    f->first_stage = stage;
    u32 zero = 0;
    u32 *ep = lat_epoch.lookup(&zero);
    f->epoch = ep ? *ep : 0;
    np_lat_step(f, stage, netns, ifindex);
    np_lat_stat(NP_LAT_FOLLOWED);
}

/* An skb of a followed flow (np_lat_sampled) at a path stage, on a known device */
static __always_inline void np_lat_at(u64 addr, u32 netns, u32 ifindex, u32 stage)
{
    struct np_flight *f = inflight.lookup(&addr);
    int starts = !f || !np_lat_follows(f, stage, netns, ifindex);
#if NP_LAT_SAMPLE > 1
    u64 *tag = starts ? np_lat_tag(addr) : NULL;
    if (tag)
        *tag = addr;
#endif
    if (f && starts) {
        np_lat_close(f, f->delivered ? NP_END_DELIVERED : NP_END_CONSUMED);
        np_lat_stat(NP_LAT_INFERRED);
        /* the address starts a new path: its entry is reused in place */
        np_lat_start(f, bpf_ktime_get_ns(), stage, netns, ifindex);
        return;
    }
    if (!f) {
        struct np_flight fresh = {};
        np_lat_start(&fresh, bpf_ktime_get_ns(), stage, netns, ifindex);
        inflight.update(&addr, &fresh);
        return;
    }
    u64 now = bpf_ktime_get_ns();
    np_hist_add(netns, ifindex, f->stage, stage, 0, now - f->ts);
    if (stage == STAGE_l4_rcv && f->n > 1)
        np_hist_add(netns, ifindex, f->first_stage, stage, 1, now - f->first_ts);
    f->ts = now;
    np_lat_step(f, stage, netns, ifindex);
}

/* The path stages' action is np_lat_at, run by counting's programs (device_stages.h); the
 * end of an skb's life: the last hop, and the path into the census */
static __always_inline int np_lat_end(void *skb, u32 stage)
{
    u64 addr = (u64)skb;
#if NP_LAT_SAMPLE > 1
    u64 *tag = np_lat_tag(addr);
    if (!tag || *tag != addr)
        return 0;
#endif
    struct np_flight *f = inflight.lookup(&addr);
    if (!f)
        return 0;
    np_hist_add(f->netns, f->ifindex, f->stage, stage, 0, bpf_ktime_get_ns() - f->ts);
    np_lat_close(f, stage == STAGE_drop                    ? NP_END_DROPPED
                    : f->delivered || stage == STAGE_read ? NP_END_DELIVERED
                                                          : NP_END_CONSUMED);
    inflight.delete(&addr);
    return 0;
}

#endif
