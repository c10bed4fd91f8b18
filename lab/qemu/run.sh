#!/usr/bin/env bash
# Runs a command as root inside the QEMU lab guest: Debian's kernel (kprobes on; LAB_KERNEL
# picks 6.1, the default, or 6.12) with an e1000 and a virtio-net NIC on networks that end
# inside QEMU. Builds the image first if the cache has none.
#   lab/qemu/run.sh [--timeout SECS] [--results DIR] -- CMD...
# In the guest, CMD runs in /lab (this repository: read-only underneath, writes go to a tmpfs
# overlay and are lost) with PYTHONPATH=/lab/pyfront and NETPROBE_LAB_NICS set, e.g.
#   e1000=eth0:10.0.2.15:10.0.2.100 virtio_net=eth1:10.0.3.15:10.0.3.2   (driver=dev:addr:peer)
# Files CMD writes to /results (NETPROBE_LAB_RESULTS) land in DIR on the host. CI, and the host
# variables named in LAB_QEMU_ENV (space-separated), are passed on to CMD. The image cache is
# LAB_QEMU_CACHE, default <repo>/.cache/lab-qemu.
# Exits with CMD's status; 124 on timeout, 125 when the guest never finished the command.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
timeout=1800
results=

usage() {
  echo "usage: lab/qemu/run.sh [--timeout SECS] [--results DIR] -- CMD..." >&2
  exit 2
}
while [ $# -gt 0 ]; do
  case "$1" in
    --timeout) [ $# -ge 2 ] || usage; timeout=$2; shift 2 ;;
    --results) [ $# -ge 2 ] || usage; results=$2; shift 2 ;;
    --) shift; break ;;
    -h|--help) usage ;;
    *) break ;;
  esac
done
[ $# -gt 0 ] || usage
[[ $timeout =~ ^[0-9]+$ ]] || usage

now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f s", b - a }'; }

t_start=$(now)
"$top/lab/apt-need.sh" qemu-system-x86
image=$("$here/build-image.sh")
t_image=$(now)

ctl=$(mktemp -d "${TMPDIR:-/tmp}/lab-qemu.XXXXXX")
trap 'rm -rf "$ctl"' EXIT
# The control share carries this run's init, argv and environment in, and its status out.
install -m 0755 "$here/guest-init.sh" "$ctl/init"
printf '%s\0' "$@" > "$ctl/argv"
for name in CI ${LAB_QEMU_ENV:-}; do
  if [ -n "${!name+set}" ]; then printf '%s=%s\n' "$name" "${!name}"; fi
done > "$ctl/env"
if [ -z "$results" ]; then results=$ctl/results; fi
mkdir -p "$results"
results=$(cd "$results" && pwd)

# A shared lock on the image keeps a concurrent build from pruning it while this run uses it.
exec 8<"$image/done"
flock -s 8

# restrict=on: neither network reaches anything outside QEMU. On the e1000's network the
# guestfwd makes 10.0.2.100:7 a TCP echo peer (a `cat` QEMU starts per connection), so real
# TCP leaves through the e1000 driver; the slirp gateways answer ARP and ping.
qemu=(
  -nodefaults -no-user-config -display none -serial stdio -no-reboot
  -machine pc -accel "tcg,thread=multi,tb-size=1024" -cpu "max,la57=off" -smp 2 -m 2048
  -bios /usr/share/qemu/qboot.rom
  -kernel "$image/vmlinux" -initrd "$image/initrd.img"
  -append "console=ttyS0 root=/dev/vda panic=-1 mitigations=off nokaslr quiet"
  -drive "file=$image/rootfs.ext4,if=virtio,format=raw,snapshot=on"
  -virtfs "local,path=$ctl,mount_tag=labctl,security_model=none"
  -virtfs "local,path=$top,mount_tag=lab,security_model=none,readonly=on"
  -virtfs "local,path=$results,mount_tag=results,security_model=none"
  -netdev "user,id=n0,net=10.0.2.0/24,host=10.0.2.2,restrict=on,guestfwd=tcp:10.0.2.100:7-cmd:cat"
  -device "e1000,netdev=n0,romfile="
  -netdev "user,id=n1,net=10.0.3.0/24,host=10.0.3.2,restrict=on"
  -device "virtio-net-pci,netdev=n1,romfile="
)
echo "lab-qemu: booting $(cat "$image/kver") (TCG) to run: $*"
set +e
# stdin is never the guest's: CI has none, and a terminal's Ctrl-C should stop QEMU.
timeout --foreground -k 10 "$timeout" qemu-system-x86_64 "${qemu[@]}" < /dev/null
rc=$?
set -e
t_end=$(now)

timing="image $(secs "$t_start" "$t_image")"
if [ -f "$ctl/started" ]; then
  timing+=", boot to command $(secs "$t_image" "$(stat -c %.9Y "$ctl/started")")"
  if [ -f "$ctl/status" ]; then
    timing+=", command $(secs "$(stat -c %.9Y "$ctl/started")" "$(stat -c %.9Y "$ctl/status")")"
  fi
fi
echo "lab-qemu: $timing, guest total $(secs "$t_image" "$t_end")"

if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
  echo "lab-qemu: FAILED: timed out after $timeout s ($([ -f "$ctl/started" ] && echo "in the command" || echo "before the command started"))" >&2
  exit 124
fi
if [ ! -f "$ctl/started" ]; then
  echo "lab-qemu: FAILED: the guest never reached the command (QEMU exit $rc; see its console above)" >&2
  exit 125
fi
if [ ! -f "$ctl/status" ]; then
  echo "lab-qemu: FAILED: the guest stopped before the command finished (QEMU exit $rc)" >&2
  exit 125
fi
status=$(cat "$ctl/status")
echo "lab-qemu: command exited $status"
exit "$status"
