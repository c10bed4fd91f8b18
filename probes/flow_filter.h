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

#ifdef NP_FILTER_PORT
#define NP_PORTS_LEN 4
#else
#define NP_PORTS_LEN 0
#endif

/* A packet's L3 header at `l3`, of protocol `proto_raw` (skb->protocol as read). The header
 * and the ports after it (option-less IPv4, IPv6) come in one read; piece by piece when that
 * read fails, as the header alone may still be readable. IPv6 extension headers are not
 * walked: a packet whose first next-header is not TCP/UDP/ICMPv6 fails a --proto or --port
 * filter. */
static __always_inline int np_flow_match_l3(u16 proto_raw, void *l3)
{
    u16 ports[2] = {};
    if (proto_raw == NP_ETH_P_IP_RAW) {
        u32 hdr[(20 + NP_PORTS_LEN) / 4];
        int whole = !bpf_probe_read_kernel(hdr, sizeof(hdr), l3);
        if (!whole && (NP_PORTS_LEN == 0 || bpf_probe_read_kernel(hdr, 20, l3)))
            return 0;
        u8 proto = ((u8 *)hdr)[9];
        if (!np_proto_ok(proto) || !np_host4_ok(hdr[3], hdr[4]))
            return 0;
#ifdef NP_FILTER_PORT
        u8 ihl = ((u8 *)hdr)[0] & 0xF;
        if (whole && ihl == 5)
            __builtin_memcpy(ports, &hdr[5], sizeof(ports));
        else
            bpf_probe_read_kernel(ports, sizeof(ports), (char *)l3 + ihl * 4);
#endif
        return np_ports_ok(proto, ports[0], ports[1]);
    }
    if (proto_raw == NP_ETH_P_IPV6_RAW) {
        u32 hdr[(40 + NP_PORTS_LEN) / 4];
        int whole = !bpf_probe_read_kernel(hdr, sizeof(hdr), l3);
        if (!whole && (NP_PORTS_LEN == 0 || bpf_probe_read_kernel(hdr, 40, l3)))
            return 0;
        u8 proto = ((u8 *)hdr)[6];
        if (!np_proto_ok(proto) || !np_host6_ok(&hdr[2], &hdr[6]))
            return 0;
#ifdef NP_FILTER_PORT
        if (whole)
            __builtin_memcpy(ports, &hdr[10], sizeof(ports));
        else
            bpf_probe_read_kernel(ports, sizeof(ports), (char *)l3 + 40);
#endif
        return np_ports_ok(proto, ports[0], ports[1]);
    }
    return 0;
}

/* L4 send stages see a socket, not a packet: its fields as the caller read them (`s`, `d`:
 * the local and peer address, one word for AF_INET, four for AF_INET6; `num` in host order,
 * `dport` in wire order). An unconnected UDP socket has no peer yet, so --host/--port match
 * only its local side there. */
static __always_inline int np_flow_match_sock(u8 proto, u16 family, u16 num, u16 dport,
                                              u32 *s, u32 *d)
{
    if (!np_proto_ok(proto))
        return 0;
    /* the filter constant is in wire order */
    if (!np_ports_ok(proto, (u16)((num >> 8) | (num << 8)), dport))
        return 0;
    if (family == NP_AF_INET)
        return np_host4_ok(s[0], d[0]);
    return np_host6_ok(s, d);
}

#else /* no filter: everything matches, and nothing is read to decide it */
static __always_inline int np_flow_match_l3(u16 proto_raw, void *l3) { return 1; }
static __always_inline int np_flow_match_sock(u8 proto, u16 family, u16 num, u16 dport,
                                              u32 *s, u32 *d) { return 1; }
#endif

#endif
