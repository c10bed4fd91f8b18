/* trace: single sk_buffs followed through the stages. An skb starts a trace at the first stage
 * where it matches the filters; from then on its address is followed (trace_inflight) through
 * every later stage until kfree_skb or consume_skb frees it, each stage one record on the event
 * channel (events.h). User space (tracing.py) puts the records together per skb. */

#include "netprobe.h"
#include "events.h"
#include "hooks.h"

#ifndef NP_TRACE_SNAP
#define NP_TRACE_SNAP 128 /* bytes of the packet from its L3 header: the flow, and the pcap */
#endif
#ifndef NP_TRACE_INFLIGHT
#define NP_TRACE_INFLIGHT 8192
#endif
#ifndef NP_TRACE_MAX_RATE
#define NP_TRACE_MAX_RATE 1000 /* new skbs followed per second, machine-wide */
#endif
#ifndef NP_THREAD_SIZE
#define NP_THREAD_SIZE 16384
#endif

#define NP_TRACE_TASK 1 /* the stage ran in process context: pid and comm are the process's */
#define NP_TRACE_CLONED 2 /* skb->cloned: this skb or another shares its data (TCP sends a
                           * clone and keeps the original queued for retransmission) */
#ifdef BIT_SKB_CLONED
#define NP_TRACE_CLONED_BIT(GET, skb) \
    ((GET(u8, skb, OFF_SKB_CLONED) & BIT_SKB_CLONED) ? NP_TRACE_CLONED : 0)
#else
#define NP_TRACE_CLONED_BIT(GET, skb) 0
#endif

struct np_trace_event {
    u64 skb;
    u64 id;        /* one per life of an skb address */
    u64 ts;        /* bpf_ktime_get_ns: CLOCK_MONOTONIC */
    u32 netns;
    u32 ifindex;
    u32 len;       /* skb->len at this stage */
    s32 l3_off;    /* where the L3 header starts, from skb->data */
    u32 reason;    /* drop: enum skb_drop_reason */
    u32 pid;       /* tgid, in process context */
    u32 cpu;
    u16 cap_len;   /* bytes of `bytes` that hold the packet */
    u8 stage;
    u8 flags;
    char comm[16];
    u8 bytes[NP_TRACE_SNAP];
};

/* Never written: its type tells user space the record's layout, so it is declared once. */
BPF_ARRAY(trace_event_layout, struct np_trace_event, 1);

struct np_trace_skb {
    u64 id;
    u64 last_ns; /* user space evicts what has not moved for long (a free it could not see) */
    u32 stage;   /* the last stage crossed: a stage not later on the path is the address's next life */
    u32 pad;
};

BPF_HASH(trace_inflight, u64, struct np_trace_skb, NP_TRACE_INFLIGHT);
/* How many skbs are followed: [0] entries made less entries deleted here, [1] entries user
 * space evicted (only it writes [1]). Every skb freed on the machine reaches the end stages;
 * while nothing is followed they return before the table's lookup (~50 ns a lookup). */
BPF_ARRAY(trace_live, s64, 2);

static __always_inline void np_trace_live(s64 delta)
{
    u32 zero = 0;
    s64 *n = trace_live.lookup(&zero);
    if (n)
        __sync_fetch_and_add(n, delta);
}

static __always_inline int np_trace_following(void)
{
    u32 made = 0, evicted = 1;
    s64 *m = trace_live.lookup(&made), *e = trace_live.lookup(&evicted);
    return m && e && *m - *e > 0;
}
BPF_PERCPU_ARRAY(trace_seq, u64, 1);

struct np_trace_window {
    u64 start;
    u64 started;
};
BPF_ARRAY(trace_window, struct np_trace_window, 1);

/* skbs not followed: [0] over the rate limit, [1] the in-flight table full; [2] addresses
 * that began a new life while followed, their free unseen */
#define NP_TRACE_RATE_LIMITED 0
#define NP_TRACE_TABLE_FULL 1
#define NP_TRACE_REUSED 2
BPF_PERCPU_ARRAY(trace_stats, u64, 3);

static __always_inline void np_trace_stat(u32 i)
{
    u64 *n = trace_stats.lookup(&i);
    if (n)
        *n += 1;
}

/* Whether this program runs in process context, not a softirq or interrupt that happens to
 * run on top of some process (whose `current` says nothing of the packet). Softirqs and
 * interrupts run on the CPU's own IRQ stack (x86_64, arm64), so the first test is whether this
 * program's stack frame lies in current's task stack. The frame's address comes out as a
 * number through np_untyped, as a typed pointer does. ksoftirqd is a task; user space names it.
 * One softirq runs on the task stack all the same: at the exit of an interrupt that came from
 * user mode (x86_64 handles those on the task stack, softirqs included); then the task's user
 * registers at the top of its stack hold no system call number (-1), where a task that is in
 * the kernel by a system call holds its number. */
static __always_inline int np_in_task(void)
{
    u64 here = 0;
    u64 sp = (u64)np_untyped(&here);
    u64 stack = 0;
    bpf_probe_read_kernel(&stack, sizeof(stack), (char *)bpf_get_current_task() + OFF_TASK_STACK);
    if (sp - stack >= NP_THREAD_SIZE)
        return 0;
#ifdef NP_PT_REGS_SIZE
    s32 nr = 0; /* the low half: orig_ax is 8 bytes, arm64's syscallno 4 (little-endian both) */
    bpf_probe_read_kernel(&nr, sizeof(nr),
                          (char *)stack + NP_THREAD_SIZE - NP_PT_REGS_SIZE + NP_PT_REGS_SYSCALL);
    if (nr < 0)
        return 0;
#endif
    return 1;
}

/* Whether a new skb may be followed: at most NP_TRACE_MAX_RATE a second (the count is not
 * atomic: two CPUs may both take the last one, which is close enough for a limit) */
static __always_inline int np_trace_admit(u64 now)
{
    u32 zero = 0;
    struct np_trace_window *w = trace_window.lookup(&zero);
    if (!w)
        return 0;
    if (now - w->start >= 1000000000ULL) {
        w->start = now;
        w->started = 0;
    }
    if (w->started >= NP_TRACE_MAX_RATE) {
        np_trace_stat(NP_TRACE_RATE_LIMITED);
        return 0;
    }
    w->started += 1;
    return 1;
}

static __always_inline u64 np_trace_next_id(u32 cpu)
{
    u32 zero = 0;
    u64 *seq = trace_seq.lookup(&zero);
    if (!seq)
        return 0;
    *seq += 1;
    return (*seq << 8) | (cpu & 0xFF);
}

/* What a stage reads of an skb, fetched by GET (NP_LOAD on a typed skb, NP_PROBE otherwise) */
struct np_trace_view {
    void *dev;
    char *data;
    char *l3;
    u32 len;
    u32 data_len;
    u16 proto_raw;
    u8 cloned;
};

#define NP_TRACE_FIELDS(v, GET, skb, l3_at)                    \
    do {                                                       \
        (v)->len = GET(u32, skb, OFF_SKB_LEN);                 \
        (v)->data_len = GET(u32, skb, OFF_SKB_DATA_LEN);       \
        (v)->data = GET(char *, skb, OFF_SKB_DATA);            \
        (v)->l3 = NP_SKB_L3(GET, skb, l3_at);                  \
        (v)->proto_raw = GET(u16, skb, OFF_SKB_PROTOCOL);      \
        (v)->cloned = NP_TRACE_CLONED_BIT(GET, skb);           \
    } while (0)

/* The filters beside the flow's, at an skb's first stage */
static __always_inline int np_trace_wanted(struct np_trace_view *v, u32 netns, int task)
{
#ifdef NP_TRACE_NETNS
    if (netns != NP_TRACE_NETNS)
        return 0;
#endif
#ifdef NP_TRACE_DEV0
    u64 name[2] = {};
    bpf_probe_read_kernel(name, sizeof(name), (char *)v->dev + OFF_DEV_NAME);
    if (name[0] != NP_TRACE_DEV0 || name[1] != NP_TRACE_DEV1)
        return 0;
#endif
#ifdef NP_TRACE_PID
    u32 tgid = 0;
    bpf_probe_read_kernel(&tgid, sizeof(tgid), (char *)bpf_get_current_task() + OFF_TASK_TGID);
    if (!task || tgid != NP_TRACE_PID)
        return 0;
#endif
    return 1;
}

static __always_inline void np_trace_task(struct np_trace_event *e, int task)
{
    void *cur = (void *)bpf_get_current_task();
    e->flags = task ? NP_TRACE_TASK : 0;
    e->pid = 0;
    __builtin_memset(e->comm, 0, sizeof(e->comm));
    if (task) {
        bpf_probe_read_kernel(&e->pid, sizeof(e->pid), (char *)cur + OFF_TASK_TGID);
        bpf_probe_read_kernel(e->comm, sizeof(e->comm), (char *)cur + OFF_TASK_COMM);
    }
}

/* A path stage: follow on, start (the filters pass) or pass by */
static __always_inline int np_trace_at(void *ctx, u64 skb, struct np_trace_view *v, u32 stage)
{
    u32 netns = 0, ifindex = 0, cpu = bpf_get_smp_processor_id();
    u64 now = bpf_ktime_get_ns(), id;
    int task;
    struct np_trace_skb *t = trace_inflight.lookup(&skb);
    if (t && stage > t->stage) {
        t->stage = stage;
        t->last_ns = now;
        id = t->id;
        task = np_in_task();
        if (v->dev)
            np_dev_identity(v->dev, &netns, &ifindex);
    } else {
        if (t) {
            np_trace_stat(NP_TRACE_REUSED);
            if (!trace_inflight.delete(&skb))
                np_trace_live(-1);
        }
        task = np_in_task();
        if (v->dev)
            np_dev_identity(v->dev, &netns, &ifindex);
        if (!np_trace_wanted(v, netns, task) || !np_trace_admit(now))
            return 0;
        id = np_trace_next_id(cpu);
        struct np_trace_skb n = {.id = id, .last_ns = now, .stage = stage};
        if (trace_inflight.update(&skb, &n)) {
            np_trace_stat(NP_TRACE_TABLE_FULL);
            return 0;
        }
        np_trace_live(1);
    }
    struct np_trace_event *e = NP_EVENT_RESERVE(struct np_trace_event);
    if (!e)
        return 0;
    e->skb = skb;
    e->id = id;
    e->ts = now;
    e->netns = netns;
    e->ifindex = ifindex;
    e->len = v->len;
    e->l3_off = v->l3 - v->data;
    e->reason = 0;
    e->cpu = cpu;
    e->stage = stage;
    np_trace_task(e, task);
    e->flags |= v->cloned;
    /* the linear part only: paged data (TCP's payload, often) is not at l3 + n */
    s64 linear = (s64)(v->data + (v->len - v->data_len) - v->l3);
    u32 n = linear < 0 ? 0 : linear > NP_TRACE_SNAP ? NP_TRACE_SNAP : (u32)linear;
    e->cap_len = 0;
    if (n > 0 && n <= NP_TRACE_SNAP && !bpf_probe_read_kernel(e->bytes, n, v->l3))
        e->cap_len = n;
    NP_EVENT_SUBMIT(ctx, e);
    return 0;
}

/* hooks.h's handlers. The flow filter comes first, before the in-flight table is looked up:
 * most skbs are another flow's, and pay for this test only (an skb followed has the same
 * headers at each stage, so it passes it again). */
static __always_inline int np_trace_untyped(void *ctx, void *skb, void *dev, int l3_at, u32 stage)
{
    struct np_trace_view v = {};
    NP_TRACE_FIELDS(&v, NP_PROBE, skb, l3_at);
    if (!np_flow_match_l3(v.proto_raw, v.l3))
        return 0;
    v.dev = dev ? dev : NP_PROBE(void *, skb, OFF_SKB_DEV);
    return np_trace_at(ctx, (u64)skb, &v, stage);
}

static __always_inline int np_trace_typed(void *ctx, void *skb, void *dev, int l3_at, u32 stage)
{
    struct np_trace_view v = {};
    NP_TRACE_FIELDS(&v, NP_LOAD, skb, l3_at);
    if (!np_flow_match_l3(v.proto_raw, v.l3))
        return 0;
    v.dev = np_untyped(dev);
    return np_trace_at(ctx, (u64)np_untyped(skb), &v, stage);
}

NP_TX_HOOKS(trace__, np_trace_untyped, np_trace_untyped, np_trace_typed)
NP_RX_HOOKS(trace__, np_trace_untyped, np_trace_untyped, np_trace_typed)
NP_NF_HOOKS(trace__, np_trace_typed)

/* Where a followed skb's life ends: its address leaves the table (free for a new trace), and
 * one last record goes out. Every skb freed on the machine passes here, so the table is
 * looked up first and nothing else is read for the skbs not followed. */
static __always_inline u64 np_trace_ending(u64 skb)
{
    if (!np_trace_following())
        return 0;
    struct np_trace_skb *t = trace_inflight.lookup(&skb);
    if (!t)
        return 0;
    u64 id = t->id;
    if (!trace_inflight.delete(&skb)) /* another CPU may have deleted it first */
        np_trace_live(-1);
    return id;
}

static __always_inline int np_trace_end(void *ctx, u64 skb, u64 id, void *dev, u32 stage,
                                        u32 reason)
{
    struct np_trace_event *e = NP_EVENT_RESERVE(struct np_trace_event);
    if (!e)
        return 0;
    u32 netns = 0, ifindex = 0;
    if (dev)
        np_dev_identity(dev, &netns, &ifindex);
    e->skb = skb;
    e->id = id;
    e->ts = bpf_ktime_get_ns();
    e->netns = netns;
    e->ifindex = ifindex;
    e->len = 0;
    e->l3_off = 0;
    e->reason = reason;
    e->cpu = bpf_get_smp_processor_id();
    e->stage = stage;
    e->cap_len = 0;
    np_trace_task(e, np_in_task());
    NP_EVENT_SUBMIT(ctx, e);
    return 0;
}

static __always_inline int np_trace_end_typed(void *ctx, void *skb, u32 stage, u32 reason)
{
    u64 key = (u64)np_untyped(skb), id = np_trace_ending(key);
    return id ? np_trace_end(ctx, key, id, np_untyped(NP_LOAD(void *, skb, OFF_SKB_DEV)), stage,
                             reason) : 0;
}

static __always_inline int np_trace_end_untyped(void *ctx, void *skb, u32 stage, u32 reason)
{
    u64 id = np_trace_ending((u64)skb);
    return id ? np_trace_end(ctx, (u64)skb, id, NP_PROBE(void *, skb, OFF_SKB_DEV), stage,
                             reason) : 0;
}

/* skb:kfree_skb(skb, location, reason, ...) (reason since 5.17) and skb:consume_skb(skb, ...) */
int trace__drop__tp_btf(struct bpf_raw_tracepoint_args *ctx)
{
    return np_trace_end_typed(ctx, NP_TP_ARG(void *, ctx, 0), STAGE_drop,
                              (u32)NP_TP_ARG(u64, ctx, 2));
}

int trace__drop__raw_tp(struct bpf_raw_tracepoint_args *ctx)
{
    return np_trace_end_untyped(ctx, (void *)ctx->args[0], STAGE_drop, (u32)ctx->args[2]);
}

int trace__consume__tp_btf(struct bpf_raw_tracepoint_args *ctx)
{
    return np_trace_end_typed(ctx, NP_TP_ARG(void *, ctx, 0), STAGE_consume, 0);
}

int trace__consume__raw_tp(struct bpf_raw_tracepoint_args *ctx)
{
    return np_trace_end_untyped(ctx, (void *)ctx->args[0], STAGE_consume, 0);
}
