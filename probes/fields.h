/* Every kernel struct field a probe reads: FIELD(id, struct, member path, size in bytes).
 *
 * The probes include no kernel headers (a header-free program compiles ~10x faster under
 * emulation, and headers on a machine may describe another kernel). User space reads this list,
 * looks each field up in the running kernel's BTF and passes -DOFF_<id>=<offset>; without BTF it
 * passes -DNP_USE_HEADERS and the offsets come from offsetof() on the installed headers.
 * The size is checked against BTF so a type change in a future kernel fails loudly at start.
 */
FIELD(SKB_DEV,         sk_buff,     dev, 8)
FIELD(SKB_LEN,         sk_buff,     len, 4)
FIELD(SKB_DATA,        sk_buff,     data, 8)
FIELD(SKB_HEAD,        sk_buff,     head, 8)
FIELD(SKB_PROTOCOL,    sk_buff,     protocol, 2)
FIELD(SKB_NETHDR,      sk_buff,     network_header, 2)
FIELD(SKB_REFDST,      sk_buff,     _skb_refdst, 8)
FIELD(SKB_SK,          sk_buff,     sk, 8)
FIELD(SKB_IIF,         sk_buff,     skb_iif, 4)
FIELD(DST_DEV,         dst_entry,   dev, 8)
FIELD(DEV_IFINDEX,     net_device,  ifindex, 4)
FIELD(DEV_NET,         net_device,  nd_net.net, 8)
FIELD(DEV_NAME,        net_device,  name, 16)
FIELD(DEV_FLAGS,       net_device,  flags, 4)
FIELD(DEV_LIST,        net_device,  dev_list, 16)
FIELD(DEV_OPS,         net_device,  netdev_ops, 8)
FIELD(DEV_PARENT,      net_device,  dev.parent, 8)
FIELD(DEV_LINK_OPS,    net_device,  rtnl_link_ops, 8)
FIELD(OPS_START_XMIT,  net_device_ops, ndo_start_xmit, 8)
FIELD(LINK_OPS_KIND,   rtnl_link_ops, kind, 8)
FIELD(DEVICE_DRIVER,   device,      driver, 8)
FIELD(DRIVER_NAME,     device_driver, name, 8)
FIELD(NET_INUM,        net,         ns.inum, 4)
FIELD(NET_COOKIE,      net,         net_cookie, 8)
FIELD(NET_DEV_BASE,    net,         dev_base_head, 16)
FIELD(TASK_NSPROXY,    task_struct, nsproxy, 8)
FIELD(NSPROXY_NET,     nsproxy,     net_ns, 8)
FIELD(SK_FAMILY,       sock,        __sk_common.skc_family, 2)
FIELD(SK_NET,          sock,        __sk_common.skc_net.net, 8)
FIELD(SK_DADDR,        sock,        __sk_common.skc_daddr, 4)
FIELD(SK_RCV_SADDR,    sock,        __sk_common.skc_rcv_saddr, 4)
FIELD(SK_DPORT,        sock,        __sk_common.skc_dport, 2)
FIELD(SK_NUM,          sock,        __sk_common.skc_num, 2)
FIELD(SK_V6_DADDR,     sock,        __sk_common.skc_v6_daddr, 16)
FIELD(SK_V6_RCV_SADDR, sock,        __sk_common.skc_v6_rcv_saddr, 16)
FIELD(SK_PROTOCOL,     sock,        sk_protocol, 2)
FIELD(NF_STATE_IN,     nf_hook_state, in, 8)
FIELD(NF_STATE_OUT,    nf_hook_state, out, 8)
FIELD(SKB_DATA_LEN,    sk_buff,     data_len, 4)
FIELD(TASK_STACK,      task_struct, stack, 8)
FIELD(TASK_TGID,       task_struct, tgid, 4)
FIELD(TASK_COMM,       task_struct, comm, 16)

/* Bitfields, BITFIELD(id, struct, member): BTF gives -DOFF_<id>=<byte> and -DBIT_<id>=<mask in
 * that byte>. offsetof() cannot take a bitfield, so the headers fallback has none of them: a
 * probe reading one checks #ifdef BIT_<id> and says when it could not. */
BITFIELD(SKB_CLONED,     sk_buff,     cloned)

/* Kernel struct types a probe casts a packet header's address to, BTF_STRUCT(id, struct):
 * BTF gives -DBTF_<id>=<its type id>. And the kfuncs a probe may call, KFUNC(id, function):
 * -DKFUNC_<id>=<the function's BTF id>, given only when this kernel has it, so a probe checks
 * #ifdef KFUNC_<id> and does without (probes/packet.h). The loader turns each call to that
 * number into a kfunc call (kernel/kfuncs.py): BCC writes it as a helper call. */
BTF_STRUCT(IPHDR,        iphdr)
BTF_STRUCT(IPV6HDR,      ipv6hdr)
BTF_STRUCT(UDPHDR,       udphdr)
BTF_STRUCT(IPV6_OPT_HDR, ipv6_opt_hdr)
BTF_STRUCT(FRAG_HDR,     frag_hdr)
KFUNC(RDONLY_CAST,       bpf_rdonly_cast)
