#!/usr/bin/env bash
# Provisions one VM of the Vagrant lab (Vagrant runs it as root, from the Vagrantfile):
#   lab/vagrant/provision.sh ROLE PEER_ADDR        ROLE: prober | peer
# Both get BCC, the running kernel's headers, tracefs and netprobe from the synced repository
# (/vagrant) through the project's own `make setup`; the peer also runs `netprobe peer` (TCP and
# UDP echo, IPv4 and IPv6, port 7777) from boot, for `netprobe prove --peer PEER_ADDR`.
set -euo pipefail

say() { printf 'lab provision: %s\n' "$*"; }
usage() { echo "usage: provision.sh prober|peer PEER_ADDR" >&2; exit 2; }

role=${1:-}
peer_addr=${2:-}
case "$role" in prober|peer) ;; *) usage ;; esac
[ -n "$peer_addr" ] || usage
[ "$(id -u)" -eq 0 ] || { echo "provision.sh: run as root" >&2; exit 1; }
port=7777
kver=$(uname -r)
export DEBIAN_FRONTEND=noninteractive

packages=(bpfcc-tools python3-bpfcc python3-click python3-rich python3-prometheus-client make nftables)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# BCC compiles against the running kernel's headers. The lab's own box has them already;
# a box older than the archive's current kernel ABI finds none there any more, and
# `make setup` then links the nearest ones (netprobe reads struct layouts from BTF).
headers=
[ -e "/lib/modules/$kver/build/include" ] || headers=linux-headers-$kver
# Only what is missing comes from the archive: the offline box has everything, and its VMs
# reach no archive.
if [ ${#missing[@]} -gt 0 ] || [ -n "$headers" ]; then
  say "apt-get update"
  apt-get update -qq
  if [ -n "$headers" ]; then
    if apt-cache show "$headers" >/dev/null 2>&1; then
      missing+=("$headers")
    else
      say "NOTE: the archive has no $headers (box older than its kernel); make setup links the nearest"
    fi
  fi
  if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]}"
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
else
  say "BCC, the kernel's headers and netprobe's dependencies are installed already"
fi

# systemd mounts tracefs at every boot (sys-kernel-tracing.mount); this boot may not have yet.
mountpoint -q /sys/kernel/tracing || mount -t tracefs tracefs /sys/kernel/tracing

# The venv lives outside the synced folder, where the lab's own box has it made already.
make -C /vagrant setup VENV=/opt/netprobe/venv

if [ "$role" = prober ]; then
  say "prober ready: vagrant ssh prober -c 'sudo netprobe prove --peer $peer_addr'"
  exit 0
fi

cat > /etc/systemd/system/netprobe-peer.service <<EOT
[Unit]
Description=netprobe peer: TCP and UDP echo on port $port for netprobe prove --peer
Wants=network-online.target
After=network-online.target

[Service]
ExecStart=/usr/local/bin/netprobe peer --port $port
# an echo server needs no privilege: port $port is above 1024 and it loads no BPF
DynamicUser=yes
Restart=on-failure

[Install]
WantedBy=multi-user.target
EOT
systemctl daemon-reload
systemctl enable netprobe-peer.service
systemctl restart netprobe-peer.service
for _ in $(seq 50); do
  if ss -Hltn "sport = :$port" | grep -q .; then
    say "peer ready: netprobe peer listening on port $port ($peer_addr)"
    exit 0
  fi
  sleep 0.2
done
systemctl status --no-pager netprobe-peer.service || true
echo "lab provision: netprobe peer is not listening on port $port" >&2
exit 1
