#!/usr/bin/env bash
# The local lab's run inside its network namespace (lab/vagrant/local.sh starts it with
# `ip netns exec`, which also gives it a mount namespace of its own):
#   local-inside.sh STATE_DIR BOX_DIR
# Gives libvirt its own runtime and configuration (a fresh /run, STATE_DIR over /etc/libvirt,
# /var/lib/libvirt, /var/log/libvirt, /var/cache/libvirt), starts dbus, virtlogd and libvirtd,
# then vagrant up, provision, `netprobe prove --peer` in the prober, vagrant destroy, and stops
# the daemons. local.sh removes whatever a failure or a signal leaves.
set -euo pipefail

state=$1
box=$2
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
peer_addr=$(sed -n 's/^LAB_PEER_ADDR *= *//p' "$here/addresses.mk")

say() { printf 'lab: %s\n' "$*" >&2; }
phase_start=$(date +%s)
phase() {
  local now
  now=$(date +%s)
  say "phase $1: $(( now - phase_start )) s"
  phase_start=$now
}

# Mounts made here stay in this mount namespace: the host's /run and libvirt's own
# directories are never touched, and a system libvirtd, if any, is never seen.
mount -t tmpfs -o mode=0755 tmpfs /run
mkdir -p /run/dbus /run/lock /run/libvirt
for d in /etc/libvirt /var/lib/libvirt /var/log/libvirt /var/cache/libvirt; do
  mkdir -p "$d" "$state$d"
  mount --bind "$state$d" "$d"
done
# The box's kernel (in Vagrant's box directory) and the volumes are root's files in root's
# directories; QEMU runs as root with no security driver to relabel them.
cat > /etc/libvirt/qemu.conf <<'EOT'
user = "root"
group = "root"
security_driver = "none"
EOT
ip link set lo up

dbus-daemon --system --fork
virtlogd -d
libvirtd -d
for _ in $(seq 100); do
  virsh -q -c qemu:///system version >/dev/null 2>&1 && break
  sleep 0.2
done
virsh -q -c qemu:///system version >/dev/null
phase daemons

# Vagrant's home beside the box, so the box is added once; its own state for this run only.
export VAGRANT_HOME
VAGRANT_HOME=$(dirname "$box")/vagrant.d
export VAGRANT_DOTFILE_PATH=$state/vagrant
export VAGRANT_CHECKPOINT_DISABLE=1 VAGRANT_BOX_UPDATE_CHECK_DISABLE=1 VAGRANT_NO_COLOR=1
export LAB_VAGRANT_BOX LAB_SERIAL_DIR=$state/serial
LAB_VAGRANT_BOX=$(cat "$box/name")
mkdir -p "$LAB_SERIAL_DIR"
# Vagrant draws its upload progress with carriage returns: thousands of them in a log.
without_progress() {
  stdbuf -o0 tr '\r' '\n' | sed -u -e 's/\x1b\[K//g' -e '/^Progress: [0-9]*%/d' -e '/^ *$/d'
}

if ! vagrant box list 2>/dev/null | grep -q "^$LAB_VAGRANT_BOX "; then
  vagrant box add --name "$LAB_VAGRANT_BOX" "$box/netprobe-lab.box" 2>&1 | without_progress
  phase "box add"
fi

# KVM only when it boots a stock kernel: some hosts' /dev/kvm runs only specially built guest
# kernels, and a Debian kernel hangs there before printing its banner.
kvm_boots_stock_kernel() {
  [ -w /dev/kvm ] || return 1
  timeout 20 qemu-system-x86_64 -accel kvm -nodefaults -no-user-config -display none \
      -serial stdio -no-reboot -m 256 -kernel "$VAGRANT_HOME/boxes/$LAB_VAGRANT_BOX/0/libvirt/vmlinuz" \
      -append "console=ttyS0 panic=-1" </dev/null 2>/dev/null \
    | grep -q -m 1 "Linux version"
}
driver=${LAB_LIBVIRT_DRIVER:-}
if [ -z "$driver" ]; then
  verdict=$box/kvm-$(uname -r)
  if [ ! -f "$verdict" ]; then
    if kvm_boots_stock_kernel; then echo kvm > "$verdict"; else echo qemu > "$verdict"; fi
  fi
  driver=$(cat "$verdict")
  phase "kvm check"
fi
export LAB_LIBVIRT_DRIVER=$driver
say "libvirt domain type: $driver$([ "$driver" = qemu ] && echo ' (TCG: no KVM that boots a stock kernel here)')"

# shellcheck disable=SC2317  # run by the trap
show_consoles() {
  local f
  for f in "$LAB_SERIAL_DIR"/*.log; do
    [ -f "$f" ] || continue
    say "last lines of $(basename "$f" .log)'s console:"
    tail -n 25 "$f" >&2
  done
}
trap 'status=$?; [ $status -eq 0 ] || show_consoles' EXIT

cd "$top"
vagrant up --provider=libvirt --no-provision 2>&1 | without_progress
phase up
# One after the other they take twice as long; each VM's provisioning is its own.
vagrant provision prober &
provision_prober=$!
vagrant provision peer
wait "$provision_prober"
phase provision
set +e
vagrant ssh prober -c "sudo netprobe prove --peer $peer_addr"
status=$?
set -e
phase prove
vagrant destroy -f
phase destroy
for pidfile in /run/libvirtd.pid /run/virtlogd.pid /run/dbus/pid; do
  if [ -f "$pidfile" ]; then kill "$(cat "$pidfile")" 2>/dev/null || true; fi
done
exit "$status"
