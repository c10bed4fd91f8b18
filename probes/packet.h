/* Reading a packet's headers, given the address where they start. Where this kernel takes the
 * bpf_rdonly_cast kfunc (6.2+; KFUNC_RDONLY_CAST from user space), the address is cast to the
 * kernel's own header struct (iphdr, ...) and each field is a plain load that the JIT guards
 * against faults (a fault reads 0): ~1 ns, and the cast itself costs nothing, the verifier
 * rewrites the call into a register move. Elsewhere (6.1, no BTF) the bytes are copied once
 * with bpf_probe_read_kernel, ~20-30 ns here: the helper's call and return, not the copy.
 *
 *   NP_HDRS(p, at, len, need)   the headers from `at`, `len` bytes of them used, of which the
 *                               first `need` must be there: copied, a copy of `need` bytes is
 *                               tried when the whole fails
 *   NP_HDRS_GOT(p)              0: not even `need` bytes; 1: `need` bytes; 2: all `len`
 *                               (cast, always 2: each load stands on its own)
 *   NP_HDR(type, p, STRUCT, base, off)
 *       the field at `off` of the STRUCT header (BTF_STRUCT in fields.h) starting `base`
 *       bytes after `at`, a constant. Cast, the load must lie inside one field of the kernel's
 *       struct (the verifier checks it against BTF): a whole field, or a byte of a bitfield
 *       pair.
 */
#ifndef NP_PACKET_H
#define NP_PACKET_H

#ifdef KFUNC_RDONLY_CAST
/* the kfunc's BTF id as a helper's number: the loader makes the call a kfunc call */
static void *(*np_rdonly_cast)(const void *obj, u32 btf_id) = (void *)KFUNC_RDONLY_CAST;
#define NP_HDRS(p, at, len, need) \
    char *p = (char *)(at);       \
    const int p##_got = 2
#define NP_HDR(type, p, STRUCT, base, off) \
    NP_LOAD(type, np_rdonly_cast((p) + (base), BTF_##STRUCT), off)
#else
#define NP_HDRS(p, at, len, need)                                                      \
    u32 p[((len) + 3) / 4] = {};                                                       \
    const int p##_got = !bpf_probe_read_kernel(p, sizeof(p), (void *)(at)) ? 2         \
                        : (need) < (len) && !bpf_probe_read_kernel(p, (need), (void *)(at)) ? 1 \
                                                                                      : 0
#define NP_HDR(type, p, STRUCT, base, off) NP_AT(type, p, 0, (base) + (off))
#endif
#define NP_HDRS_GOT(p) (p##_got)

#endif
