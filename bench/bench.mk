# `make bench`: netprobe's cost to the traffic it watches (see docs/OVERHEAD.md).
# Subsets and lengths: make bench ROUNDS=7 SECS=3 ENVS=loopback CONFIGS=netprobe,tcpdump
# A/B against an earlier commit in the same rounds: make bench BASELINE=<git ref>
BENCH_PACKAGES := iperf3 bpftrace tcpdump gcc libc6-dev util-linux bpftool
BENCH_ARGS = $(if $(ROUNDS),--rounds $(ROUNDS)) $(if $(SECS),--secs $(SECS)) \
	$(if $(ENVS),--envs $(ENVS)) $(if $(CONFIGS),--configs $(CONFIGS)) \
	$(if $(WORKLOADS),--workloads $(WORKLOADS)) $(if $(BASELINE),--baseline $(BASELINE))

.PHONY: bench
bench: setup
	@missing=$$(for p in $(BENCH_PACKAGES); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then echo "bench: installing" $$missing; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null \
	  || { $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; }; fi
	$(SUDO) $(PY) bench/bench.py $(BENCH_ARGS)

# the event channel's reader: records/s it sustains and its CPU per record (docs/OVERHEAD.md)
.PHONY: bench-events
bench-events: setup
	$(SUDO) $(PY) bench/events_rate.py
