#!/bin/bash
# PID 1 of the lab guest: mount what BCC and netprobe need, bring up the NICs, run the command
# the host left in /results/cmd from the repository (shared at /lab), report, power off.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
mkdir -p /dev/pts /run /tmp
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
mount -t tracefs tracefs /sys/kernel/tracing
mount -t debugfs debugfs /sys/kernel/debug
mount -t bpf bpf /sys/fs/bpf
hostname netprobe-lab

finish() {
  sync
  echo o > /proc/sysrq-trigger
  # builtins only from here: the root disk is going away under us
  while :; do :; done
}

# no udev here: load the drivers ourselves before anything attaches kprobes to them
modprobe -a 9p 9pnet_virtio e1000 virtio_net veth 2>/dev/null
mount -t 9p -o trans=virtio,version=9p2000.L,ro lab /lab || { echo "lab-init: no /lab share"; finish; }
mount -t 9p -o trans=virtio,version=9p2000.L results /results || { echo "lab-init: no /results share"; finish; }

ip link set lo up
nics=""
for dev in /sys/class/net/*; do
  name=${dev##*/}
  driver=$(basename "$(readlink "$dev/device/driver" 2>/dev/null)" 2>/dev/null)
  case "$driver" in
    e1000) ip addr add 10.0.2.15/24 dev "$name"; ip link set "$name" up
           nics="$nics e1000=$name:10.0.2.15:10.0.2.100" ;;
    virtio_net) ip addr add 10.0.3.15/24 dev "$name"; ip link set "$name" up
           nics="$nics virtio_net=$name:10.0.3.15:10.0.3.2" ;;
  esac
done
export NETPROBE_LAB_NICS=${nics# }
export PYTHONPATH=/lab/pyfront PYTHONDONTWRITEBYTECODE=1 HOME=/root CI=${CI:-}
echo "lab-init: kernel $(uname -r), NICs: $NETPROBE_LAB_NICS"
# wait for the e1000 link, or the first frames are dropped while it negotiates
for _ in $(seq 50); do
  grep -q 1 /sys/class/net/*/carrier 2>/dev/null && break
  sleep 0.1
done

cd /lab || finish
start=$(date +%s)
bash /results/cmd 2>&1 | tee /results/output
echo "${PIPESTATUS[0]}" > /results/rc
echo "lab-init: command took $(( $(date +%s) - start )) s"
finish
