/* L4 transmit: tcp_sendmsg / udp_sendmsg. These run before a route or device is chosen, so
 * they are counted per (netns, protocol) and count sendmsg calls, not sk_buffs. */

#include "count.h"

/* What the L4 send stages read from a socket: its family and namespace and, under a flow
 * filter, its ports and addresses (`s` local, `d` peer: one word for AF_INET, four for
 * AF_INET6). */
struct np_sk_view {
    u16 family;
    u16 num;   /* skc_num, host order */
    u16 dport; /* skc_dport, wire order */
    void *net;
    u32 s[4];
    u32 d[4];
};

/* The span of struct sock they lie in: family to net, ~40 bytes; with the filter's fields
 * ~90. One bpf_probe_read_kernel of it costs what one field does. */
#ifdef NP_FILTERED
#define NP_SK_LO (NP_MIN(NP_MIN4(OFF_SK_FAMILY, OFF_SK_NET, OFF_SK_DADDR, OFF_SK_RCV_SADDR),  \
                         NP_MIN4(OFF_SK_DPORT, OFF_SK_NUM, OFF_SK_V6_DADDR,              \
                                 OFF_SK_V6_RCV_SADDR)) & ~7)
#define NP_SK_HI NP_MAX(NP_MAX4(OFF_SK_FAMILY + 2, OFF_SK_NET + 8, OFF_SK_DADDR + 4,        \
                                OFF_SK_RCV_SADDR + 4),                                    \
                        NP_MAX4(OFF_SK_DPORT + 2, OFF_SK_NUM + 2, OFF_SK_V6_DADDR + 16,   \
                                OFF_SK_V6_RCV_SADDR + 16))
#else
#define NP_SK_LO (NP_MIN(OFF_SK_FAMILY, OFF_SK_NET) & ~7)
#define NP_SK_HI NP_MAX(OFF_SK_FAMILY + 2, OFF_SK_NET + 8)
#endif

/* The flow filter's fields of a socket, fetched by GET (netprobe.h): from the copied span or
 * through a typed pointer */
#define NP_SK_FILTER_FIELDS(v, GET, base)                                  \
    do {                                                                   \
        (v)->num = GET(u16, base, OFF_SK_NUM);                             \
        (v)->dport = GET(u16, base, OFF_SK_DPORT);                         \
        if ((v)->family == NP_AF_INET) {                                   \
            (v)->s[0] = GET(u32, base, OFF_SK_RCV_SADDR);                  \
            (v)->d[0] = GET(u32, base, OFF_SK_DADDR);                      \
        } else {                                                           \
            for (int i = 0; i < 4; i++) {                                  \
                (v)->s[i] = GET(u32, base, OFF_SK_V6_RCV_SADDR + 4 * i);   \
                (v)->d[i] = GET(u32, base, OFF_SK_V6_DADDR + 4 * i);       \
            }                                                              \
        }                                                                  \
    } while (0)

static __always_inline void np_sk_view(void *sk, struct np_sk_view *v)
{
#if defined(OFF_SK_NET) && NP_SK_HI - NP_SK_LO <= 256
    u64 buf[(NP_SK_HI - NP_SK_LO + 7) / 8];
    bpf_probe_read_kernel(buf, NP_SK_HI - NP_SK_LO, (char *)sk + NP_SK_LO);
#define NP_SK_SPAN(type, buf, off) NP_AT(type, buf, NP_SK_LO, off)
    v->family = NP_SK_SPAN(u16, buf, OFF_SK_FAMILY);
    v->net = NP_SK_SPAN(void *, buf, OFF_SK_NET);
#ifdef NP_FILTERED
    NP_SK_FILTER_FIELDS(v, NP_SK_SPAN, buf);
#endif
#else
    /* field by field, and each address whole: through NP_SK_FILTER_FIELDS an AF_INET6
     * address would take four reads */
    NP_READ(v->family, sk, SK_FAMILY);
    NP_READ(v->net, sk, SK_NET);
#ifdef NP_FILTERED
    NP_READ(v->num, sk, SK_NUM);
    NP_READ(v->dport, sk, SK_DPORT);
    if (v->family == NP_AF_INET) {
        NP_READ(v->s[0], sk, SK_RCV_SADDR);
        NP_READ(v->d[0], sk, SK_DADDR);
    } else {
        NP_READ(v->s, sk, SK_V6_RCV_SADDR);
        NP_READ(v->d, sk, SK_V6_DADDR);
    }
#endif
#endif
}

/* Per-CPU slots for the L4 send counts too, keyed by the socket's struct net: a hash update per
 * sendmsg costs more than the rest of this program. The namespace's inode number is read every
 * time, so a struct net freed and reused by a new namespace is noticed at once. */
struct np_net_slot {
    u64 net;
    u32 netns;
    u32 pad;
    struct np_val v[NP_NSTAGES];
};

BPF_PERCPU_ARRAY(net_slots, struct np_net_slot, NP_SLOTS);

static __always_inline void np_count_netns(void *net, u32 netns, u32 stage, u32 len)
{
    u32 idx = np_slot_of((u64)net);
    struct np_net_slot *s = net_slots.lookup(&idx);
    if (!s || stage >= NP_NSTAGES)
        return;
    if (s->net != (u64)net || s->netns != netns) {
        if (s->net != 0 && s->net != (u64)net) {
            np_add(netns, 0, 0, stage, len); /* another namespace holds the slot */
            return;
        }
        __builtin_memset(s->v, 0, sizeof(s->v));
        s->net = (u64)net;
        s->netns = netns;
    }
    s->v[stage].packets += 1;
    s->v[stage].bytes += len;
}

/* Whether a send is counted: an AF_INET/AF_INET6 socket the filter lets through */
static __always_inline int np_send_counted(struct np_sk_view *v, u8 proto)
{
    return (v->family == NP_AF_INET || v->family == NP_AF_INET6) &&
           np_flow_match_sock(proto, v->family, v->num, v->dport, v->s, v->d);
}

static __always_inline int np_count_send(void *sk, s64 len, u8 proto, u32 stage)
{
    struct np_sk_view v = {};
    u32 netns = 0;
    if (len < 0)
        return 0;
    np_sk_view(sk, &v);
    if (!np_send_counted(&v, proto))
        return 0;
    NP_READ(netns, v.net, NET_INUM);
    np_count_netns(v.net, netns, stage, (u32)len);
    return 0;
}

/* tcp_sendmsg(sk, msg, size) serves IPv4 and IPv6 */
int tcp_sendmsg__kprobe(struct pt_regs *ctx)
{
    return np_count_send((void *)PT_REGS_PARM1(ctx), PT_REGS_PARM3(ctx), 6, STAGE_tcp_sendmsg);
}

/* udp_sendmsg / udpv6_sendmsg(sk, msg, len) */
int udp_sendmsg__kprobe(struct pt_regs *ctx)
{
    return np_count_send((void *)PT_REGS_PARM1(ctx), PT_REGS_PARM3(ctx), 17, STAGE_udp_sendmsg);
}

/* sock:sock_send_length(sk, ret, flags) fires after every sendmsg of every socket family; one
 * program serves both stages and sorts by the socket's protocol. */
int l4_send__raw_tp(struct bpf_raw_tracepoint_args *ctx)
{
    void *sk = (void *)ctx->args[0];
    s64 ret = (int)ctx->args[1];
    u16 proto = 0;
    NP_READ(proto, sk, SK_PROTOCOL);
    if (proto == 6)
        return np_count_send(sk, ret, 6, STAGE_tcp_sendmsg);
    if (proto == 17)
        return np_count_send(sk, ret, 17, STAGE_udp_sendmsg);
    return 0;
}

/* The same as a BTF raw tracepoint: sk is typed, so every field is a plain load (NP_LOAD) */
static __always_inline int np_count_send_typed(void *sk, s64 len)
{
    struct np_sk_view v = {};
    u16 proto = NP_LOAD(u16, sk, OFF_SK_PROTOCOL);
    u32 stage = proto == 6 ? STAGE_tcp_sendmsg : STAGE_udp_sendmsg;
    if ((proto != 6 && proto != 17) || len < 0)
        return 0;
    v.family = NP_LOAD(u16, sk, OFF_SK_FAMILY);
#ifdef NP_FILTERED
    NP_SK_FILTER_FIELDS(&v, NP_LOAD, sk);
#endif
    if (!np_send_counted(&v, proto))
        return 0;
    void *net = NP_LOAD(void *, sk, OFF_SK_NET);
    np_count_netns(np_untyped(net), NP_LOAD(u32, net, OFF_NET_INUM), stage, (u32)len);
    return 0;
}

int l4_send__tp_btf(struct bpf_raw_tracepoint_args *ctx)
{
    return np_count_send_typed(NP_TP_ARG(void *, ctx, 0), (int)NP_TP_ARG(u64, ctx, 1));
}

/* fentry at tcp_sendmsg / udp_sendmsg / udpv6_sendmsg(sk, msg, size): sk typed, as above; the
 * size asked for, as the kprobes count it */
int tcp_sendmsg__fentry(struct bpf_raw_tracepoint_args *ctx)
{
    return np_count_send_typed(NP_TP_ARG(void *, ctx, 0), (s64)NP_TP_ARG(u64, ctx, 2));
}

int udp_sendmsg__fentry(struct bpf_raw_tracepoint_args *ctx)
{
    return np_count_send_typed(NP_TP_ARG(void *, ctx, 0), (s64)NP_TP_ARG(u64, ctx, 2));
}
