/* What every probe shares, whatever it does with an skb: reading kernel fields (offsets from
 * BTF), the flow filter, the skb view a device stage reads, typed-pointer helpers. What a
 * feature keeps (counts, drops, traces) lives in its own header: count.h, ... */
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
#define BITFIELD(id, s, member)
#define BTF_STRUCT(id, s)
#define KFUNC(id, fn)
enum np_field_offsets {
#include "fields.h"
};
#undef FIELD
#undef BITFIELD
#undef BTF_STRUCT
#undef KFUNC
#endif


#define NP_READ(dst, base, id) bpf_probe_read_kernel(&(dst), sizeof(dst), (char *)(base) + OFF_##id)

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

/* Where an skb's network header starts depends on the stage: on receive, before
 * eth_type_trans()'s caller resets it, skb->network_header is stale or zero but skb->data
 * points at L3; from the IP layer down on transmit, and once L4 has pulled its header on
 * receive, head + network_header is the one to trust. */
#define NP_L3_AT_DATA 0
#define NP_L3_AT_NETWORK_HEADER 1

/* A field at `off` of the struct at `base`, copied with bpf_probe_read_kernel: the accessor
 * for untyped pointers. NP_AT and NP_LOAD are the other two; the field logic that several
 * accessors share takes the accessor as GET(type, base, offset). */
#define NP_PROBE(type, base, off) \
    ({ type _p = 0; bpf_probe_read_kernel(&_p, sizeof(_p), (char *)(base) + (off)); _p; })

/* A field at `off` of a span of a struct copied from offset `lo` */
#define NP_AT(type, buf, lo, off) (*(type *)((char *)(buf) + (off) - (lo)))

/* Where a hook's pointers are BTF-typed (a netfilter program's context, a BTF raw
 * tracepoint's arguments), fields are plain loads that the verifier checks against the
 * kernel's BTF: ~1 ns, where a bpf_probe_read_kernel costs ~30 (bpf_stats on this project's
 * VM, whose CPU pays for SRSO's safe RET on every return inside the helper). The load is
 * spelled as a typed memcpy: BCC would rewrite a plain dereference of a context-derived
 * pointer into bpf_probe_read(), and the type keeps clang's copy one aligned load. */
#define NP_LOAD(type, base, off) \
    ({ type _v; __builtin_memcpy(&_v, (type *)((char *)(base) + (off)), sizeof(_v)); _v; })

/* Where an skb's L3 header starts, its fields fetched by GET */
#define NP_SKB_L3(GET, base, where)                                                    \
    ((where) == NP_L3_AT_DATA ? GET(char *, base, OFF_SKB_DATA)                        \
                              : GET(char *, base, OFF_SKB_HEAD) + GET(u16, base, OFF_SKB_NETHDR))

#include "flow_filter.h"

/* A device's identity: (netns inode, ifindex) */
static __always_inline void np_dev_identity(void *dev, u32 *netns, u32 *ifindex)
{
    void *net = NULL;
    bpf_probe_read_kernel(ifindex, sizeof(*ifindex), (char *)dev + OFF_DEV_IFINDEX);
    NP_READ(net, dev, DEV_NET);
    bpf_probe_read_kernel(netns, sizeof(*netns), (char *)net + OFF_NET_INUM);
}

/* The device's namespace's net_cookie: never reused, where its inode number is */
static __always_inline u64 np_dev_cookie(void *dev)
{
    void *net = NULL;
    u64 cookie = 0;
    NP_READ(net, dev, DEV_NET);
    NP_READ(cookie, net, NET_COOKIE);
    return cookie;
}

/* What a device stage reads from an skb: its device and length and, when the packet's headers
 * are read at every device stage (NP_VIEW_HEADERS: the flow filter, or --sample's flow hash),
 * its protocol and where its L3 header starts. */
#if defined(NP_FILTERED) || (defined(NP_TIMED) && defined(NP_LAT_SAMPLE) && NP_LAT_SAMPLE > 1)
#define NP_VIEW_HEADERS 1
#endif
struct np_skb_view {
    void *dev;
    u32 len;
    u16 proto_raw;
    void *l3;
};

#define NP_MIN(a, b) ((a) < (b) ? (a) : (b))
#define NP_MAX(a, b) ((a) > (b) ? (a) : (b))
#define NP_MIN4(a, b, c, d) NP_MIN(NP_MIN(a, b), NP_MIN(c, d))
#define NP_MAX4(a, b, c, d) NP_MAX(NP_MAX(a, b), NP_MAX(c, d))

/* The span of struct sk_buff those fields lie in, from an 8-byte boundary (stack loads must
 * be aligned): dev and len, ~100 bytes; with the headers' fields, ~200 */
#ifdef NP_VIEW_HEADERS
#define NP_SKB_LO (NP_MIN(NP_MIN4(OFF_SKB_DEV, OFF_SKB_LEN, OFF_SKB_PROTOCOL, OFF_SKB_NETHDR), \
                          NP_MIN(OFF_SKB_HEAD, OFF_SKB_DATA)) & ~7)
#define NP_SKB_HI NP_MAX(NP_MAX4(OFF_SKB_DEV + 8, OFF_SKB_LEN + 4, OFF_SKB_PROTOCOL + 2, \
                                 OFF_SKB_NETHDR + 2), NP_MAX(OFF_SKB_HEAD + 8, OFF_SKB_DATA + 8))
#else
#define NP_SKB_LO (NP_MIN(OFF_SKB_DEV, OFF_SKB_LEN) & ~7)
#define NP_SKB_HI NP_MAX(OFF_SKB_DEV + 8, OFF_SKB_LEN + 4)
#endif

/* The view's fields, fetched by GET (NP_PROBE, or NP_AT on the copied span) */
#ifdef NP_VIEW_HEADERS
#define NP_SKB_FILTER_FIELDS(v, GET, base, l3_at) \
    ((v)->proto_raw = GET(u16, base, OFF_SKB_PROTOCOL), (v)->l3 = NP_SKB_L3(GET, base, l3_at))
#else
#define NP_SKB_FILTER_FIELDS(v, GET, base, l3_at) ((void)0)
#endif
#define NP_SKB_FIELDS(v, GET, base, l3_at)                                       \
    do {                                                                         \
        (v)->dev = GET(void *, base, OFF_SKB_DEV);                               \
        (v)->len = GET(u32, base, OFF_SKB_LEN);                                  \
        NP_SKB_FILTER_FIELDS(v, GET, base, l3_at);                               \
    } while (0)

/* One bpf_probe_read_kernel of that span: a read costs ~30 ns for 8 bytes or 200 alike (the
 * helper's calls and returns, not the copy), so a hook that reads the headers pays one read
 * here instead of five. Field by field where the layout is not known before compiling (no BTF). */
static __always_inline void np_skb_view(void *skb, int l3_at, struct np_skb_view *v)
{
#if defined(OFF_SKB_DEV) && NP_SKB_HI - NP_SKB_LO <= 256
    u64 buf[(NP_SKB_HI - NP_SKB_LO + 7) / 8];
    bpf_probe_read_kernel(buf, NP_SKB_HI - NP_SKB_LO, (char *)skb + NP_SKB_LO);
#define NP_SKB_SPAN(type, buf, off) NP_AT(type, buf, NP_SKB_LO, off)
    NP_SKB_FIELDS(v, NP_SKB_SPAN, buf, l3_at);
#else
    NP_SKB_FIELDS(v, NP_PROBE, skb, l3_at);
#endif
}

/* A typed pointer may not take part in arithmetic (the slot index hashes the device's
 * address), so its bits pass through a per-CPU word: a store and a load. Storing a pointer
 * in a map is allowed to a program with CAP_PERFMON, which netprobe (root) has. */
BPF_PERCPU_ARRAY(ptr_bits, u64, 1);

static __always_inline void *np_untyped(void *typed)
{
    u32 zero = 0;
    u64 *w = ptr_bits.lookup(&zero);
    if (!w)
        return NULL;
    *(volatile u64 *)w = (u64)typed;
    return (void *)*(volatile u64 *)w;
}

/* A BTF raw tracepoint's (tp_btf) argument, typed by the verifier from the tracepoint's
 * prototype; copied, not indexed, so that BCC does not rewrite it into a probe read */
#define NP_TP_ARG(type, ctx, i) \
    ({ type _a; __builtin_memcpy(&_a, &(ctx)->args[i], sizeof(_a)); _a; })

#endif
