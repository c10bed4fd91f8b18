/* L4 transmit: tcp_sendmsg / udp_sendmsg. These run before a route or device is chosen, so
 * they are counted per (netns, protocol) and count sendmsg calls, not sk_buffs. */

/* skc_family and skc_net with one read where they sit close */
static __always_inline void np_sk_family_net(void *sk, u16 *family, void **net)
{
#if defined(OFF_SK_NET) && OFF_SK_NET > OFF_SK_FAMILY && OFF_SK_NET + 8 - OFF_SK_FAMILY <= 128 && \
    OFF_SK_FAMILY % 8 == 0
    u64 buf[(OFF_SK_NET + 8 - OFF_SK_FAMILY + 7) / 8];
    bpf_probe_read_kernel(buf, OFF_SK_NET + 8 - OFF_SK_FAMILY, (char *)sk + OFF_SK_FAMILY);
    *family = *(u16 *)buf;
    *net = *(void **)((char *)buf + OFF_SK_NET - OFF_SK_FAMILY);
#else
    bpf_probe_read_kernel(family, sizeof(*family), (char *)sk + OFF_SK_FAMILY);
    bpf_probe_read_kernel(net, sizeof(*net), (char *)sk + OFF_SK_NET);
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
            np_add(netns, 0, stage, len); /* another namespace holds the slot */
            return;
        }
        __builtin_memset(s->v, 0, sizeof(s->v));
        s->net = (u64)net;
        s->netns = netns;
    }
    s->v[stage].packets += 1;
    s->v[stage].bytes += len;
}

static __always_inline int np_count_send(void *sk, s64 len, u8 proto, u32 stage)
{
    void *net = NULL;
    u32 netns = 0;
    u16 family = 0;
    if (len < 0)
        return 0;
    np_sk_family_net(sk, &family, &net);
    if ((family != NP_AF_INET && family != NP_AF_INET6) || !np_flow_match_sock(sk, proto, family))
        return 0;
    NP_READ(netns, net, NET_INUM);
    np_count_netns(net, netns, stage, (u32)len);
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
