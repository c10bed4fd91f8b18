/* The --proto/--port/--host filter, applied in the kernel at every stage. Each part is compiled
 * in only when asked for (-DNP_FILTER_PROTO=6, -DNP_FILTER_PORT=443, -DNP_FILTER_HOST4=...,
 * -DNP_FILTER_HOST6_0..3=...), so the unfiltered probes pay nothing for it. Addresses and ports
 * are given as the raw little-endian words the packet bytes read as, so no byte swap is needed
 * on the packet path. */
#ifndef NP_FLOW_FILTER_H
#define NP_FLOW_FILTER_H

#define NP_AF_INET 2
#define NP_AF_INET6 10
#define NP_ETH_P_IP_RAW 0x0008   /* htons(0x0800) as read from memory */
#define NP_ETH_P_IPV6_RAW 0xDD86 /* htons(0x86DD) */

#if defined(NP_FILTER_PROTO) || defined(NP_FILTER_PORT) || defined(NP_FILTER_HOST4) || \
    defined(NP_FILTER_HOST6_0)
#define NP_FILTERED 1
#endif

#ifdef NP_FILTERED
static __always_inline int np_proto_ok(u8 proto)
{
#ifdef NP_FILTER_PROTO
#if NP_FILTER_PROTO == 1
    return proto == 1 || proto == 58; /* --proto icmp means ICMP and ICMPv6 */
#else
    return proto == NP_FILTER_PROTO;
#endif
#else
    return 1;
#endif
}

static __always_inline int np_ports_ok(u8 proto, u16 sport_be, u16 dport_be)
{
#ifdef NP_FILTER_PORT
    if (proto != 6 && proto != 17)
        return 0;
    return sport_be == NP_FILTER_PORT || dport_be == NP_FILTER_PORT;
#else
    return 1;
#endif
}

static __always_inline int np_host4_ok(u32 saddr, u32 daddr)
{
#if defined(NP_FILTER_HOST4)
    return saddr == NP_FILTER_HOST4 || daddr == NP_FILTER_HOST4;
#elif defined(NP_FILTER_HOST6_0)
    return 0;
#else
    return 1;
#endif
}

static __always_inline int np_host6_ok(u32 *saddr, u32 *daddr)
{
#if defined(NP_FILTER_HOST6_0)
#define NP_IS_HOST6(a) ((a)[0] == NP_FILTER_HOST6_0 && (a)[1] == NP_FILTER_HOST6_1 && \
                        (a)[2] == NP_FILTER_HOST6_2 && (a)[3] == NP_FILTER_HOST6_3)
    return NP_IS_HOST6(saddr) || NP_IS_HOST6(daddr);
#elif defined(NP_FILTER_HOST4)
    return 0;
#else
    return 1;
#endif
}

/* IPv6 extension headers are not walked: a packet whose first next-header is not TCP/UDP/ICMPv6
 * fails a --proto or --port filter. */
static __always_inline int np_flow_match_skb(void *skb, int l3_at)
{
    void *l3 = np_skb_l3(skb, l3_at);
    u16 proto_raw = 0;
    u16 ports[2] = {};
    NP_READ(proto_raw, skb, SKB_PROTOCOL);
    if (proto_raw == NP_ETH_P_IP_RAW) {
        u8 hdr[20];
        if (bpf_probe_read_kernel(hdr, sizeof(hdr), l3))
            return 0;
        u8 proto = hdr[9];
        if (!np_proto_ok(proto) || !np_host4_ok(*(u32 *)&hdr[12], *(u32 *)&hdr[16]))
            return 0;
#ifdef NP_FILTER_PORT
        bpf_probe_read_kernel(ports, sizeof(ports), (char *)l3 + (hdr[0] & 0xF) * 4);
#endif
        return np_ports_ok(proto, ports[0], ports[1]);
    }
    if (proto_raw == NP_ETH_P_IPV6_RAW) {
        u32 hdr[10];
        if (bpf_probe_read_kernel(hdr, sizeof(hdr), l3))
            return 0;
        u8 proto = ((u8 *)hdr)[6];
        if (!np_proto_ok(proto) || !np_host6_ok(&hdr[2], &hdr[6]))
            return 0;
#ifdef NP_FILTER_PORT
        bpf_probe_read_kernel(ports, sizeof(ports), (char *)l3 + 40);
#endif
        return np_ports_ok(proto, ports[0], ports[1]);
    }
    return 0;
}

/* L4 send stages see a socket, not a packet (an AF_INET/AF_INET6 one: the caller checks). An
 * unconnected UDP socket has no peer yet, so --host/--port match only its local side there. */
static __always_inline int np_flow_match_sock(void *sk, u8 proto, u16 family)
{
    u16 num = 0, dport = 0;
    if (!np_proto_ok(proto))
        return 0;
#ifdef NP_FILTER_PORT
    NP_READ(num, sk, SK_NUM);
    NP_READ(dport, sk, SK_DPORT);
    /* skc_num is host order; the filter constant is the wire order */
    if (!np_ports_ok(proto, (u16)((num >> 8) | (num << 8)), dport))
        return 0;
#endif
    if (family == NP_AF_INET) {
        u32 saddr = 0, daddr = 0;
        NP_READ(saddr, sk, SK_RCV_SADDR);
        NP_READ(daddr, sk, SK_DADDR);
        return np_host4_ok(saddr, daddr);
    }
    u32 s6[4] = {}, d6[4] = {};
    NP_READ(s6, sk, SK_V6_RCV_SADDR);
    NP_READ(d6, sk, SK_V6_DADDR);
    return np_host6_ok(s6, d6);
}

#else /* no filter: everything matches, and nothing is read to decide it */
static __always_inline int np_flow_match_skb(void *skb, int l3_at) { return 1; }
static __always_inline int np_flow_match_sock(void *sk, u8 proto, u16 family) { return 1; }
#endif

#endif
