#!/usr/bin/env bash
# Shows that Ctrl-C during `make lab LAB_BOX=local` leaves nothing behind: starts it in a
# process group of its own, waits until libvirt has defined both VMs, sends SIGINT to the whole
# group as a terminal's Ctrl-C would, then checks that no process the lab ran is alive (the
# daemons, QEMU, dnsmasq, Vagrant), and that its namespace (with the bridges and the NAT
# network), its run directory (volumes, libvirt's and Vagrant's state) and any new host link
# are gone.
#   lab/vagrant/interrupt-test.sh        (make lab-interrupt-test; root; exits 0 when clean)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
name=netprobe-lab-int-$$
state=/var/tmp/$name
log=$(mktemp "${TMPDIR:-/tmp}/lab-interrupt.XXXXXX")
say() { printf 'lab-interrupt-test: %s\n' "$*"; }
fail() { say "FAILED: $*"; exit 1; }
[ "$(id -u)" -eq 0 ] || fail "run as root"

links_before=$(ip -o link show | awk -F': ' '{ print $2 }' | sort)
# The box is built (or found) first so the wait below is for the VMs, not for the build.
"$top/lab/box/build-box.sh" >/dev/null

# Job control gives make a process group of its own (its pid), as a shell gives a command
# typed at a terminal; without it a script's background job ignores SIGINT.
set -m
make -C "$top" --no-print-directory lab LAB_BOX=local LAB_NAME="$name" >"$log" 2>&1 < /dev/null &
make_pid=$!
set +m
trap 'kill -KILL -- -$make_pid 2>/dev/null || true; rm -f "$log"' EXIT

say "waiting for libvirt to define both VMs (make lab in process group $make_pid, log $log)"
defined=
for _ in $(seq 600); do
  if [ -s "$state/vagrant/machines/prober/libvirt/id" ] && [ -s "$state/vagrant/machines/peer/libvirt/id" ]; then
    defined=yes
    break
  fi
  kill -0 "$make_pid" 2>/dev/null || { cat "$log"; fail "make lab ended before the VMs were defined"; }
  sleep 1
done
[ -n "$defined" ] || { cat "$log"; fail "the VMs were not defined within 10 minutes"; }
# Let the VMs start booting, so QEMU, the taps and the leases exist too.
sleep 10
lab_pids=$(ip netns pids "$name")
libvirtd_pid=$(pgrep -x libvirtd | while read -r p; do
  [ "$(ip netns identify "$p" 2>/dev/null)" = "$name" ] && echo "$p"; done | head -n 1)
[ -n "$libvirtd_pid" ] || fail "no libvirtd in $name"
say "before Ctrl-C: $(echo "$lab_pids" | wc -w) processes in $name: $(ps -o comm= -p "$(echo "$lab_pids" | paste -sd,)" | sort | uniq -c | awk '{ printf "%s%s×%s", sep, $2, $1; sep=", " }')"
say "before Ctrl-C: domains: $(nsenter -t "$libvirtd_pid" -m -n virsh -q -c qemu:///system list --all --name | paste -sd' ')"
say "before Ctrl-C: networks: $(nsenter -t "$libvirtd_pid" -m -n virsh -q -c qemu:///system net-list --all --name | paste -sd' ')"
say "before Ctrl-C: bridges in $name: $(ip -n "$name" -o link show type bridge | awk -F': ' '{ print $2 }' | paste -sd' ')"

t=$(date +%s)
kill -INT -- "-$make_pid"
for _ in $(seq 120); do
  kill -0 "$make_pid" 2>/dev/null || break
  sleep 1
done
kill -0 "$make_pid" 2>/dev/null && fail "make lab still running 120 s after Ctrl-C"
wait "$make_pid" && rc=0 || rc=$?
say "make lab exited $rc, $(( $(date +%s) - t )) s after Ctrl-C; its last lines:"
tail -n 5 "$log" | sed 's/^/  | /'

# alive: not yet exited, or exited and not yet reaped by its parent (kill -0 answers for
# both; a zombie holds nothing, and the lab's cleanup waits for its processes to exit, not
# for their parents to reap them)
alive() {
  local state
  # the state follows the command's name, which is in parentheses and may hold spaces
  state=$(sed -E 's/.*\) ([A-Za-z]).*/\1/' "/proc/$1/stat" 2>/dev/null) || return 1
  [ -n "$state" ] && [ "$state" != Z ]
}
for _ in $(seq 50); do
  still=()
  for p in $lab_pids; do alive "$p" && still+=("$p"); done
  [ ${#still[@]} -gt 0 ] || break
  sleep 0.2
done
problems=()
ip netns list | grep -qw "^$name" && problems+=("namespace $name still exists")
for p in $lab_pids; do
  if alive "$p"; then
    problems+=("process $p ($(ps -o comm= -p "$p" 2>/dev/null || echo gone)) still alive 10 s after")
  fi
done
leftover=$(pgrep -f -- "$state" || true)
[ -z "$leftover" ] || problems+=("processes naming $state: $leftover")
[ ! -e "$state" ] || problems+=("run directory $state still exists")
links_after=$(ip -o link show | awk -F': ' '{ print $2 }' | sort)
new_links=$(comm -13 <(echo "$links_before") <(echo "$links_after"))
[ -z "$new_links" ] || problems+=("new host links: $new_links")
[ "$rc" -ne 0 ] || problems+=("make lab exited 0 after Ctrl-C")

if [ ${#problems[@]} -gt 0 ]; then
  printf '  %s\n' "${problems[@]}"
  fail "Ctrl-C left something behind"
fi
say "ok: after Ctrl-C no process of the lab is alive, and its namespace, bridges, domains, volumes and run directory are gone"
