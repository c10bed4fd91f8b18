#!/usr/bin/env bash
# Provisions a lab VM: BCC, headers for the VM's own kernel, netprobe from the synced folder
# (by the project's own `make setup`), and on the peer the echo server `netprobe prove` talks to.
#   provision.sh ROLE PEER_ADDR      ROLE: prober | peer
set -euo pipefail

role=${1:?role: prober or peer}
peer_addr=${2:?peer address}
export DEBIAN_FRONTEND=noninteractive

apt-get update -qq
apt-get install -y -qq --no-install-recommends make "linux-headers-$(uname -r)" >/dev/null
make -C /vagrant setup

if [ "$role" = peer ]; then
  cat > /etc/systemd/system/netprobe-peer.service <<'EOT'
[Unit]
Description=netprobe peer: TCP and UDP echo for `netprobe prove --peer`
After=network-online.target

[Service]
ExecStart=/usr/local/bin/netprobe peer --listen :: --port 7777
DynamicUser=yes
Restart=on-failure

[Install]
WantedBy=multi-user.target
EOT
  systemctl daemon-reload
  systemctl enable --now netprobe-peer.service
  echo "peer ready: netprobe peer on port 7777"
else
  echo "prober ready: sudo netprobe prove --peer $peer_addr"
fi
