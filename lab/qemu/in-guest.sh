#!/bin/bash
# What `make lab-qemu` runs inside each guest (Debian's 6.1 or 6.12 kernel, kprobes on, a real
# e1000): the kernel-facing tests (test_prove among them: `netprobe prove` on the default path,
# fentry, kprobes where fentry does not reach), then `netprobe prove` with the NIC case across
# the e1000 to QEMU's own TCP echo peer (10.0.2.100:7, TCP only), on the default path and on
# the kprobe path (--prefer kprobe).
set -u
status=0
step() {
  echo
  echo "=== $*"
  local t0=$SECONDS
  "$@" || status=1
  echo "=== $(( SECONDS - t0 )) s: $1 ${2:-}"
}
export CI=${CI:-true}
# One compiled-program cache for the tests and the prove runs (the guest's disk is thrown
# away after the run): a program text compiled once is not compiled again, ~10 s each
# under TCG.
export NETPROBE_CACHE=${NETPROBE_CACHE:-/var/cache/netprobe}
# Two guests run in CI at once, so what is not about the kernel runs on the host only: a signal
# mid-`prove` tears down alike for SIGTERM and SIGINT (SIGINT here), and the plain `netprobe
# prove` run is test_prove's own (its text and its JSON).
deselect=(--deselect "tests/integration/test_prove.py::test_a_signal_mid_run_tears_everything_down[15-143]")
case $(uname -r) in
  # The headers fallback (no BTF) cannot compile against 6.12's headers with bookworm's BCC
  # 0.26: 6.12's linux/bpf.h takes sizeof(struct bpf_wq), which BCC's own copy of the uapi
  # bpf.h predates. Debian's 6.12 has BTF, so netprobe never takes that path there.
  6.12.*) deselect+=(--deselect tests/integration/test_doctor.py::test_without_btf_netprobe_says_so_and_compiles_from_headers
                     --deselect tests/integration/test_doctor.py::test_without_btf_watch_stops_unless_the_headers_are_this_kernels) ;;
esac
step python3 -m pytest -q -p no:cacheprovider "${deselect[@]}" tests/integration/test_kernel_counts.py \
  tests/integration/test_watch_cli.py tests/integration/test_doctor.py tests/integration/test_prove.py \
  tests/integration/test_kprobe_path.py tests/integration/test_fentry_path.py \
  tests/integration/test_drops_counts.py tests/integration/test_drops_kernel.py \
  tests/integration/test_latency_kernel.py tests/integration/test_trace.py \
  tests/integration/test_trace_nic.py \
  tests/integration/test_progcache_kernel.py::test_a_hit_loads_without_bcc_and_counts_exactly_as_a_compile
step python3 -m netprobe prove --peer 10.0.2.100 --peer-port 7 --peer-proto tcp
step python3 -m netprobe prove --peer 10.0.2.100 --peer-port 7 --peer-proto tcp --prefer kprobe
exit $status
