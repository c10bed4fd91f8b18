/* The device inventory: run on demand (BPF_PROG_TEST_RUN, never attached), it walks the
 * calling thread's network namespace and records what user space cannot read itself, above
 * all dev->netdev_ops->ndo_start_xmit, the driver's transmit function. */

/* A namespace may hold thousands of devices: the walk records NP_WALK_PAGE of them per run
 * and leaves in `netdev_cursor` the list node to go on from, which user space hands to the next
 * run (inventory.py; a loop that skipped the devices already seen would cost the verifier a
 * walk per device, past its limit). All under one RCU read section per run: a device removed
 * between two runs may be missed or, were its node freed, its record be garbage, which user
 * space drops (its namespace is not the one walked); the next refresh sees the list as it is. */

struct np_netdev {
    u64 addr; /* the net_device itself: the probes' per-CPU slots are keyed by it */
    u64 xmit; /* ndo_start_xmit address; named from /proc/kallsyms by user space */
    u64 cookie; /* the namespace's net_cookie: never reused, unlike its inode number */
    u32 netns;
    u32 ifindex;
    u32 flags;
    u32 physical; /* has a parent bus device (dev.parent) */
    char name[16];
    char kind[16];   /* rtnl_link_ops->kind: "veth", "bridge", ... ; empty for lo and NICs */
    char driver[32]; /* the parent device's driver: "virtio_net", "e1000", ... */
};

BPF_ARRAY(netdev_table, struct np_netdev, NP_WALK_PAGE);
BPF_ARRAY(netdev_count, u32, 1);
/* in: the list node to start from (0: the first device); out: the next one, 0 at the end */
BPF_ARRAY(netdev_cursor, u64, 1);

int netdev_walk(struct bpf_raw_tracepoint_args *ctx)
{
    void *task = (void *)bpf_get_current_task();
    void *nsproxy = NULL, *net = NULL, *pos = NULL;
    u32 netns = 0, n = 0, zero = 0;
    u64 *cursor = netdev_cursor.lookup(&zero);
    if (!cursor)
        return 0;
    NP_READ(nsproxy, task, TASK_NSPROXY);
    NP_READ(net, nsproxy, NSPROXY_NET);
    NP_READ(netns, net, NET_INUM);
    u64 cookie = 0;
    NP_READ(cookie, net, NET_COOKIE);
    void *head = (char *)net + OFF_NET_DEV_BASE;
    if (*cursor)
        pos = (void *)*cursor;
    else
        bpf_probe_read_kernel(&pos, sizeof(pos), head);
    for (u32 i = 0; i < NP_WALK_PAGE; i++) {
        if (pos == head || !pos)
            break;
        void *dev = (char *)pos - OFF_DEV_LIST;
        u32 idx = i;
        struct np_netdev *d = netdev_table.lookup(&idx);
        if (!d)
            break;
        void *ops = NULL, *parent = NULL, *link_ops = NULL, *drv = NULL, *str = NULL;
        d->addr = (u64)dev;
        d->netns = netns;
        d->cookie = cookie;
        NP_READ(d->ifindex, dev, DEV_IFINDEX);
        NP_READ(d->flags, dev, DEV_FLAGS);
        NP_READ(d->name, dev, DEV_NAME);
        NP_READ(ops, dev, DEV_OPS);
        d->xmit = 0;
        if (ops)
            NP_READ(d->xmit, ops, OPS_START_XMIT);
        d->kind[0] = 0;
        NP_READ(link_ops, dev, DEV_LINK_OPS);
        if (link_ops) {
            NP_READ(str, link_ops, LINK_OPS_KIND);
            bpf_probe_read_kernel_str(d->kind, sizeof(d->kind), str);
        }
        d->driver[0] = 0;
        NP_READ(parent, dev, DEV_PARENT);
        d->physical = parent != NULL;
        if (parent) {
            NP_READ(drv, parent, DEVICE_DRIVER);
            if (drv) {
                NP_READ(str, drv, DRIVER_NAME);
                bpf_probe_read_kernel_str(d->driver, sizeof(d->driver), str);
            }
        }
        n = i + 1;
        bpf_probe_read_kernel(&pos, sizeof(pos), pos);
    }
    *cursor = (pos != head && pos != NULL) ? (u64)pos : 0;
    netdev_count.update(&zero, &n);
    return 0;
}
