"""latency.py: hop histograms, percentiles and the census, from map snapshots, without root."""
import pytest

from netprobe.model.latency import (BUCKETS, ENDS, STATS, Histogram, HopKey, Latency, Path, Step,
                                    census, hop_deltas, hop_histograms, path_deltas)

NAMES = ("tcp_sendmsg", "udp_sendmsg", "ip_output", "dev_queue_xmit", "driver_xmit", "driver_rx",
         "netif_receive_skb", "ip_rcv", "l4_rcv", "drop", "consume", "read")


def hist(**at):
    """a histogram with counts in the named buckets: b10=3"""
    b = [0] * BUCKETS
    for k, n in at.items():
        b[int(k[1:])] = n
    return Histogram(tuple(b), 0)


@pytest.mark.parametrize("h, q, want", [
    (hist(b10=4), 0.5, 512 + 256),          # [512, 1024): half-way
    (hist(b10=4), 1.0, 1024),
    (hist(b1=1, b10=1), 0.5, 2),            # the first sample, at the top of [1, 2)
    (hist(b0=2), 0.5, 0.5),
    (hist(b3=1, b20=99), 0.99, 2 ** 19 + 2 ** 19 * 98 / 99),
])
def test_quantile_is_linear_within_the_log2_bucket(h, q, want):
    assert h.quantile(q) == pytest.approx(want)


def test_quantile_of_nothing_is_none():
    assert hist().quantile(0.5) is None


def test_cumulative_buckets_end_at_inf_with_the_total():
    c = hist(b0=1, b2=2, b39=1).cumulative()
    assert c[0] == (1e-9, 1) and c[2] == (4e-9, 3)
    assert c[-1] == (float("inf"), 4)
    assert [n for _, n in c] == sorted(n for _, n in c)


def test_hops_sum_their_cpus_and_are_named_by_stage():
    per_cpu = [[0] * BUCKETS, [0] * BUCKETS]
    per_cpu[0][5], per_cpu[1][5], per_cpu[1][7] = 1, 2, 1
    got = hop_histograms([(7, 1, 2, 3, 0, per_cpu, [40, 160]),
                          (7, 1, 2, 8, 1, per_cpu, [0, 0])], NAMES)
    h = got[HopKey(7, 1, "ip_output", "dev_queue_xmit")]
    assert h.count == 4 and h.buckets[5] == 3 and h.sum_ns == 200
    assert HopKey(7, 1, "ip_output", "l4_rcv", True) in got


def test_census_names_steps_keeps_order_and_marks_truncated_paths():
    lo = [(7, 1)] * 12
    rows = [(0, 7, [2, 3, 4, 5, 6, 7, 8] + [0] * 5, lo, 2),
            (2, 14, [2] * 12, lo, 5)]
    paths = census(rows, NAMES, keep=12)
    assert [p.end for p in paths] == ["dropped", "delivered"]  # most packets first
    names = lambda ns, i: "lo"  # noqa: E731
    assert paths[1].describe(names) == ("ip_output[lo] > dev_queue_xmit[lo] > driver_xmit[lo] > "
                                        "driver_rx[lo] > netif_receive_skb[lo] > ip_rcv[lo] > l4_rcv[lo]")
    assert paths[0].describe(names).endswith("> ... (+2)")


def test_deltas_keep_only_what_moved():
    p = Path((Step("ip_output", 7, 1),), 1, "consumed", 5)
    assert path_deltas([p], [Path(p.steps, 1, "consumed", 3)]) == [Path(p.steps, 1, "consumed", 2)]
    assert path_deltas([p], [p]) == []
    k = HopKey(7, 1, "ip_output", "dev_queue_xmit")
    assert hop_deltas({k: hist(b4=3)}, {k: hist(b4=1)})[k].count == 2
    assert hop_deltas({k: hist(b4=3)}, {k: hist(b4=3)}) == {}


def test_evicted_is_what_started_and_neither_ended_nor_is_in_flight():
    stats = dict.fromkeys(STATS, 0) | {"followed": 100, "ended": 90}
    assert Latency(0, {}, (), stats, in_flight=4).evicted == 6
    assert set(Latency(0, {}, (), stats, 0).other) == set(ENDS)


def test_the_eviction_bound_is_never_above_the_truth_and_the_reader_keeps_its_maximum():
    from netprobe.model.latency import evicted_bound
    # 100 followed by the first read, 3 of them evicted; between the reads 5 more start (in
    # flight at the second read) and 2 of those in flight at the second read end before the
    # third: 100 - (97 - 90 + 5) ... taken as: in flight 12, ended 90 + 2
    assert evicted_bound(100, 12, 92) <= 3
    assert evicted_bound(100, 7, 90) == 3   # nothing moved between the reads: exact
    assert evicted_bound(5, 10, 0) == 0     # never negative
    assert Latency(0, {}, (), {"followed": 9, "ended": 0}, 0, evicted_count=3).evicted == 3



def test_census_sums_a_path_over_epochs_and_marks_paths_in_flight():
    lo = [(7, 1)] * 12
    rows = [(0, 2, [2, 3] + [0] * 10, lo, 2), (0, 2, [2, 3] + [0] * 10, lo, 3),
            (len(ENDS), 2, [2, 3] + [0] * 10, lo, 1)]
    paths = census(rows, NAMES, keep=12)
    assert [(p.end, p.packets) for p in paths] == [("delivered", 5), ("in flight", 1)]
