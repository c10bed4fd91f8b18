#!/usr/bin/env bash
# The Vagrant lab on this machine alone, offline: the project's own box (lab/box/build-box.sh),
# and libvirt's daemons started for this run inside a network namespace the run creates, with
# no route out of it (the VMs, their bridges, Vagrant's NAT network and its SSH all live there).
# Brings up the prober and the peer, runs `netprobe prove --peer` in the prober, destroys both,
# and stops and removes everything it started; also on Ctrl-C or a failure.
#   lab/vagrant/local.sh            (make lab LAB_BOX=local; run as root)
# LAB_NAME names the namespace and the run's directory (/var/tmp/LAB_NAME); LAB_LIBVIRT_DRIVER
# (qemu | kvm) skips the check of whether KVM boots a stock kernel here; LAB_BOX_CACHE as for
# build-box.sh. Prints how long each phase took.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
name=${LAB_NAME:-netprobe-lab-$$}
state=/var/tmp/$name
host_packages=(vagrant vagrant-libvirt libvirt-daemon-system libvirt-clients qemu-system-x86
               qemu-utils dnsmasq-base dbus iptables rsync)

say() { printf 'lab: %s\n' "$*" >&2; }
[ "$(id -u)" -eq 0 ] || { echo "lab: the local lab starts libvirt and a network namespace: run it as root" >&2; exit 1; }
[[ $name =~ ^[A-Za-z0-9_.-]+$ ]] || { echo "lab: LAB_NAME may hold only letters, digits, '.', '_' and '-'" >&2; exit 2; }

# Everything the run started is in its namespace: the daemons, QEMU, dnsmasq, Vagrant and its
# SSH. Ending those processes and deleting the namespace removes the VMs, the bridges and the
# firewall rules; the run's directory holds the volumes, libvirt's state and Vagrant's.
# shellcheck disable=SC2317  # run by the traps
end_namespace_processes() {
  local sig pids _
  for sig in TERM KILL; do
    pids=$(ip netns pids "$name")
    [ -n "$pids" ] || return 0
    say "stopping what the lab left running in $name: $(echo "$pids" | wc -w) processes (SIG$sig)"
    # shellcheck disable=SC2086  # one pid per word
    kill -s "$sig" $pids 2>/dev/null || true
    for _ in $(seq 50); do
      [ -n "$(ip netns pids "$name")" ] || return 0
      sleep 0.2
    done
  done
}
# shellcheck disable=SC2317  # run by the traps
cleanup() {
  local status=$?
  trap - EXIT INT TERM HUP
  if ip netns list | grep -qw "^$name"; then
    end_namespace_processes
    ip netns delete "$name"
  fi
  rm -rf "$state"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP

t0=$(date +%s)
"$top/lab/apt-need.sh" "${host_packages[@]}"
box=$("$top/lab/box/build-box.sh")
t_box=$(date +%s)
say "phase box: $(( t_box - t0 )) s ($(cat "$box/name"), kernel $(cat "$box/kver"))"

ip netns add "$name"
mkdir -p "$state"
say "namespace $name, run directory $state"
# In the background so that a signal reaches the trap at once, not when Vagrant is done.
ip netns exec "$name" "$here/local-inside.sh" "$state" "$box" &
set +e
wait $!
status=$?
set -e
exit "$status"
