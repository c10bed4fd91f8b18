#!/bin/bash
# PID 1 of the lab guest, handed over by the initrd from the run's control share (/labctl):
# mount what BCC and netprobe need, bring the NICs up by driver, run the command from the
# repository (/lab) as root, leave its status in /labctl/status and power off.
# run.sh copies this file into each run, so a change here needs no image rebuild.
set -euo pipefail
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root LANG=C.UTF-8 TERM=dumb

poweroff_now() {
  sync
  echo o > /proc/sysrq-trigger
  # PID 1 must not exit (that is a panic) and must run nothing from the disk, which the
  # poweroff is already taking away: spin on builtins for the moment that takes.
  while :; do :; done
}
fail() {
  echo "lab-qemu guest: $*"
  poweroff_now
}
trap 'fail "setup failed at line $LINENO: $BASH_COMMAND"' ERR

mount -t proc proc /proc
mount -t sysfs sys /sys
mkdir -p /dev/pts /dev/shm
mount -t devpts -o gid=5,mode=620 devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
mount -t tracefs tracefs /sys/kernel/tracing
mount -t debugfs debugfs /sys/kernel/debug
mount -t bpf bpf /sys/fs/bpf
mount -t cgroup2 cgroup2 /sys/fs/cgroup
# the serial console would otherwise turn every \n into \r\n in the host's log
stty -onlcr < /dev/console || true
hostname netprobe-lab

p9=trans=virtio,version=9p2000.L,msize=262144
# The repository is shared read-only; an overlay on tmpfs lets tests write next to their
# files without the host's tree ever changing.
mount -t 9p -o "$p9,ro" lab /labro || fail "cannot mount the repository share (9p tag lab)"
mkdir -p /run/lab/upper /run/lab/work
modprobe -q overlay || true
if ! mount -t overlay -o lowerdir=/labro,upperdir=/run/lab/upper,workdir=/run/lab/work overlay /lab
then
  echo "lab-qemu guest: no overlay on the repository share; /lab is read-only"
  mount --bind /labro /lab
fi
mount -t 9p -o "$p9" results /results || fail "cannot mount the results share (9p tag results)"

# Nothing but the command's own traffic may leave through the NICs: IPv6 router
# solicitations, DAD and MLD reports would add frames at random moments, and nothing here
# answers them. The default takes effect for NICs created after it, so set it before modprobe.
sysctl -qw net.ipv6.conf.default.disable_ipv6=1
# No udev here: load the drivers ourselves before anything attaches kprobes to them.
modprobe -a e1000 virtio_net
ip link set lo up

# Each lab NIC: driver, address, the peer that answers on its network.
declare -A want=([e1000]="10.0.2.15/24 10.0.2.100" [virtio_net]="10.0.3.15/24 10.0.3.2")
declare -A found=()
for _ in $(seq 50); do
  for dev in /sys/class/net/*; do
    [ -e "$dev/device/driver" ] || continue
    driver=$(basename "$(readlink -f "$dev/device/driver")")
    if [ -n "${want[$driver]:-}" ]; then found[$driver]=${dev##*/}; fi
  done
  if [ ${#found[@]} -eq ${#want[@]} ]; then break; fi
  sleep 0.1
done
nics=()
for driver in e1000 virtio_net; do
  name=${found[$driver]:-}
  [ -n "$name" ] || fail "no $driver NIC appeared"
  read -r addr peer <<< "${want[$driver]}"
  ip addr add "$addr" dev "$name"
  ip link set "$name" up
  nics+=("$driver=$name:${addr%/*}:$peer")
done
# e1000 drops what it is given before its link comes up (~1-2 s after `up` under emulation)
for driver in e1000 virtio_net; do
  for _ in $(seq 100); do
    [ "$(cat "/sys/class/net/${found[$driver]}/carrier" 2>/dev/null)" = 1 ] && break
    sleep 0.1
  done
done

export NETPROBE_LAB_NICS="${nics[*]}"
export NETPROBE_LAB_RESULTS=/results
export PYTHONPATH=/lab/pyfront PYTHONDONTWRITEBYTECODE=1
# The host's chosen variables (CI and the like), one NAME=VALUE per line.
if [ -f /labctl/env ]; then
  while IFS= read -r line; do
    [ -n "$line" ] && export "${line?}"
  done < /labctl/env
fi
mapfile -d '' argv < /labctl/argv
[ ${#argv[@]} -gt 0 ] || fail "no command in /labctl/argv"

echo "lab-qemu guest: kernel $(uname -r), up $(cut -d' ' -f1 /proc/uptime) s, NICs: $NETPROBE_LAB_NICS"
cd /lab
trap - ERR
set +e
: > /labctl/started
"${argv[@]}" < /dev/null
status=$?
echo "$status" > /labctl/status
poweroff_now
