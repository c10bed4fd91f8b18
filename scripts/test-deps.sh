#!/usr/bin/env bash
# What the tests need beyond `make setup`: Debian's prometheus (the real server and promtool
# for the exporter's end-to-end tests), bpftool, iproute2 (ip, ss), iputils-ping, openssl (test
# certificates, an encrypted key), man-db (the man pages rendered with warnings on), nftables (the
# drop tests' firewall rule and its counter), tcpdump (reads back trace's pcapng; the flow filter tests' oracle). Idempotent. The package's own
# service is kept from starting: the tests run their own server on a port of their own.
set -euo pipefail
missing=()
for p in prometheus bpftool iproute2 iputils-ping openssl man-db nftables tcpdump; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
policy=/usr/sbin/policy-rc.d
created=""
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' > "$policy"
  chmod +x "$policy"
  created=1
fi
trap '[ -n "$created" ] && rm -f "$policy"' EXIT
echo "test-deps: installing ${missing[*]}"
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
  || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }
