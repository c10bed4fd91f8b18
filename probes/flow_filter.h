/* The --proto/--port/--host filter, applied in the kernel at every stage. Each part is compiled
 * in only when asked for (-DNP_FILTER_PROTO=6, -DNP_FILTER_PORT=443, -DNP_FILTER_HOST4=...,
 * -DNP_FILTER_HOST6_0..3=...), so the unfiltered probes pay nothing for it. Addresses and ports
 * are given as the raw little-endian words the packet bytes read as, so no byte swap is needed
 * on the packet path. */
#ifndef NP_FLOW_FILTER_H
#define NP_FLOW_FILTER_H

#include "packet.h"

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

/* ::ffff:a.b.c.d, its words as read from memory */
#define NP_V4MAPPED_WORD2 0xFFFF0000U

static __always_inline int np_host6_ok(u32 *saddr, u32 *daddr)
{
#if defined(NP_FILTER_HOST6_0)
#define NP_IS_HOST6(a) ((a)[0] == NP_FILTER_HOST6_0 && (a)[1] == NP_FILTER_HOST6_1 && \
                        (a)[2] == NP_FILTER_HOST6_2 && (a)[3] == NP_FILTER_HOST6_3)
    return NP_IS_HOST6(saddr) || NP_IS_HOST6(daddr);
#elif defined(NP_FILTER_HOST4)
    /* A dual-stack AF_INET6 socket talking to an IPv4 peer holds both its addresses
     * v4-mapped (::ffff:a.b.c.d), and sends IPv4 packets: the address it carries is the one
     * --host names. (user space gives a v4-mapped --host as NP_FILTER_HOST4) */
#define NP_IS_MAPPED4(a) ((a)[3] == NP_FILTER_HOST4 && (a)[2] == NP_V4MAPPED_WORD2 && \
                          ((a)[0] | (a)[1]) == 0)
    return NP_IS_MAPPED4(saddr) || NP_IS_MAPPED4(daddr);
#else
    return 1;
#endif
}

#ifdef NP_FILTER_PORT
#define NP_PORTS_LEN 4
#else
#define NP_PORTS_LEN 0
#endif

/* IPv4's fragment offset field, as read from memory: any bit set means a non-first fragment,
 * which carries no L4 header (what sits where the ports would be is payload) */
#define NP_IP_OFFSET_RAW 0xFF1FU

/* IPv6 extension headers walked to find the upper-layer protocol: hop-by-hop (BIG TCP's
 * jumbo header, on sk_buffs over 64 KiB from ip6_output until they are segmented), routing,
 * fragment, destination options, AH. A bounded loop, which the verifier accepts (5.3+), and
 * not unrolled: unrolled it grew each filtered program by 90% (2576 -> 4896 bytes) for a path
 * few packets take; as a loop, by a third (-> 3520). */
#define NP_IPV6_EXT_MAX 6
#define NP_NEXTHDR_FRAGMENT 44
/* a fragment header's offset field, as read from memory (the low 3 bits are flags) */
#define NP_IP6_OFFSET_RAW 0xF8FFU

/* one bit per extension header above: 0, 43, 44, 51, 60 */
#define NP_IPV6_EXT_MASK ((1ULL << 0) | (1ULL << 43) | (1ULL << NP_NEXTHDR_FRAGMENT) | (1ULL << 51) | \
                          (1ULL << 60))

static __always_inline int np_ipv6_ext(u8 nexthdr)
{
    return nexthdr < 64 && ((1ULL << nexthdr) & NP_IPV6_EXT_MASK);
}

/* From the fixed header's next-header `*proto` at offset 40, through the extension headers:
 * the upper-layer header's offset from `l3`, its protocol in `*proto`, and in `*later` whether
 * this is a non-first fragment. -1 when a read fails or the chain is longer than the bound. */
static __always_inline int np_ipv6_upper(void *l3, u8 *proto, int *later)
{
    int off = 40;
    u8 nexthdr = *proto;
#pragma clang loop unroll(disable)
    for (int i = 0; i < NP_IPV6_EXT_MAX; i++) {
        if (!np_ipv6_ext(nexthdr))
            break;
        /* next header and length (AH's as the others'); in a fragment header, its offset */
        NP_HDRS(ext, (char *)l3 + off, 4, 4);
        if (!NP_HDRS_GOT(ext))
            return -1;
        u8 len = NP_HDR(u8, ext, IPV6_OPT_HDR, 0, 1);
        if (nexthdr == NP_NEXTHDR_FRAGMENT) {
            *later = (NP_HDR(u16, ext, FRAG_HDR, 0, 2) & NP_IP6_OFFSET_RAW) != 0;
            off += 8;
        } else if (nexthdr == 51) {
            off += (len + 2) * 4;
        } else {
            off += (len + 1) * 8;
        }
        nexthdr = NP_HDR(u8, ext, IPV6_OPT_HDR, 0, 0);
    }
    if (np_ipv6_ext(nexthdr))
        return -1;
    *proto = nexthdr;
    return off;
}

/* The ports of the TCP or UDP header at `l4` */
#define NP_PORTS_AT(ports, l4)                              \
    do {                                                    \
        NP_HDRS(_l4, l4, 4, 4);                             \
        (ports)[0] = NP_HDR(u16, _l4, UDPHDR, 0, 0);        \
        (ports)[1] = NP_HDR(u16, _l4, UDPHDR, 0, 2);        \
    } while (0)

/* A packet's L3 header at `l3`, of protocol `proto_raw` (skb->protocol as read). Copied
 * (packet.h), the header and the ports after it (option-less IPv4, IPv6 without extension
 * headers) come in one read, and the header alone when that fails, as it may still be
 * readable. A non-first fragment has no ports: --port never matches it, as tcpdump's `port`
 * matches only first fragments; --proto and --host judge every fragment by its IP headers, as
 * tcpdump's `udp` and `host` do. */
static __always_inline int np_flow_match_l3(u16 proto_raw, void *l3)
{
    u16 ports[2] = {};
    if (proto_raw == NP_ETH_P_IP_RAW) {
        NP_HDRS(ip, l3, 20 + NP_PORTS_LEN, 20);
        if (!NP_HDRS_GOT(ip))
            return 0;
        u8 proto = NP_HDR(u8, ip, IPHDR, 0, 9);
        if (!np_proto_ok(proto) ||
            !np_host4_ok(NP_HDR(u32, ip, IPHDR, 0, 12), NP_HDR(u32, ip, IPHDR, 0, 16)))
            return 0;
#ifdef NP_FILTER_PORT
        if (NP_HDR(u16, ip, IPHDR, 0, 6) & NP_IP_OFFSET_RAW)
            return 0;
        u8 ihl = NP_HDR(u8, ip, IPHDR, 0, 0) & 0xF;
        if (NP_HDRS_GOT(ip) == 2 && ihl == 5) {
            ports[0] = NP_HDR(u16, ip, UDPHDR, 20, 0);
            ports[1] = NP_HDR(u16, ip, UDPHDR, 20, 2);
        } else {
            NP_PORTS_AT(ports, (char *)l3 + ihl * 4);
        }
#endif
        return np_ports_ok(proto, ports[0], ports[1]);
    }
    if (proto_raw == NP_ETH_P_IPV6_RAW) {
        NP_HDRS(ip6, l3, 40 + NP_PORTS_LEN, 40);
        if (!NP_HDRS_GOT(ip6))
            return 0;
#if defined(NP_FILTER_HOST6_0) || defined(NP_FILTER_HOST4)
        u32 saddr[4], daddr[4];
#pragma unroll
        for (int i = 0; i < 4; i++) {
            saddr[i] = NP_HDR(u32, ip6, IPV6HDR, 0, 8 + 4 * i);
            daddr[i] = NP_HDR(u32, ip6, IPV6HDR, 0, 24 + 4 * i);
        }
        if (!np_host6_ok(saddr, daddr))
            return 0;
#endif
        u8 proto = NP_HDR(u8, ip6, IPV6HDR, 0, 6);
#if defined(NP_FILTER_PROTO) || defined(NP_FILTER_PORT)
        int off = 40, later = 0;
        if (__builtin_expect(np_ipv6_ext(proto), 0)) {
            off = np_ipv6_upper(l3, &proto, &later);
            if (off < 0)
                return 0;
        }
#endif
        if (!np_proto_ok(proto))
            return 0;
#ifdef NP_FILTER_PORT
        if (later)
            return 0;
        if (NP_HDRS_GOT(ip6) == 2 && off == 40) {
            ports[0] = NP_HDR(u16, ip6, UDPHDR, 40, 0);
            ports[1] = NP_HDR(u16, ip6, UDPHDR, 40, 2);
        } else {
            NP_PORTS_AT(ports, (char *)l3 + off);
        }
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
