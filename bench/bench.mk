# `make bench`: netprobe's cost to the traffic it watches (see docs/OVERHEAD.md).
BENCH_PACKAGES := iperf3 bpftrace tcpdump gcc util-linux

.PHONY: bench
bench: setup
	@missing=$$(for p in $(BENCH_PACKAGES); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; fi
	$(SUDO) $(PY) bench/bench.py
