/* An event channel to user space, one record per call: a BPF ring buffer (kernel >= 5.8) or,
 * where the kernel has none, a perf buffer. User space chooses before compiling
 * (events.cflags(): -DNP_EVENTS_PERF) and reads either with events.EventChannel.
 *
 *     struct my_event *e = NP_EVENT_RESERVE(struct my_event);
 *     if (!e)
 *         return 0;            // already counted as lost
 *     e->... = ...;
 *     NP_EVENT_SUBMIT(ctx, e);
 *
 * Every record that does not reach user space is counted in np_events_lost (per CPU): a ring
 * buffer says nothing when a reserve fails, and a perf buffer's own PERF_RECORD_LOST misses
 * outputs that fail before its ring (no perf event for this CPU). */
#ifndef NP_EVENTS_H
#define NP_EVENTS_H

#ifndef NP_EVENTS_PAGES
#define NP_EVENTS_PAGES 64   /* ring buffer size in pages: a power of two */
#endif
#ifndef NP_EVENT_MAX
#define NP_EVENT_MAX 256     /* bytes: the largest record (the perf path's per-CPU scratch) */
#endif

BPF_PERCPU_ARRAY(np_events_lost, u64, 1);

static __always_inline void np_event_lost(void)
{
    u32 zero = 0;
    u64 *n = np_events_lost.lookup(&zero);
    if (n)
        *n += 1;
}

#ifdef NP_EVENTS_PERF
struct np_event_scratch {
    u8 bytes[NP_EVENT_MAX];
};
BPF_PERF_OUTPUT(np_events);
/* bpf_perf_event_output copies from memory the program owns: records are built here. Programs
 * run with migration disabled, so one CPU's slot is one program's for its run. */
BPF_PERCPU_ARRAY(np_event_scratch, struct np_event_scratch, 1);

static __always_inline void *np_event_reserve(u32 size)
{
    u32 zero = 0;
    void *rec = np_event_scratch.lookup(&zero);
    if (!rec)
        np_event_lost();
    return rec;
}

static __always_inline void np_event_submit(void *ctx, void *rec, u32 size)
{
    if (np_events.perf_submit(ctx, rec, size) != 0)
        np_event_lost();
}
#else
BPF_RINGBUF_OUTPUT(np_events, NP_EVENTS_PAGES);

static __always_inline void *np_event_reserve(u32 size)
{
    void *rec = np_events.ringbuf_reserve(size);
    if (!rec)
        np_event_lost();
    return rec;
}

static __always_inline void np_event_submit(void *ctx, void *rec, u32 size)
{
    np_events.ringbuf_submit(rec, 0);
}
#endif

#define NP_EVENT_RESERVE(type) ({ \
    _Static_assert(sizeof(type) <= NP_EVENT_MAX, "event record larger than NP_EVENT_MAX"); \
    (type *)np_event_reserve(sizeof(type)); })
#define NP_EVENT_SUBMIT(ctx, rec) np_event_submit(ctx, rec, sizeof(*(rec)))

#endif
