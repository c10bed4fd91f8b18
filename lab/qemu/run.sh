#!/usr/bin/env bash
# Boots the lab guest (Debian's kernel, kprobes on, a real e1000 and a virtio-net NIC on
# isolated QEMU networks) and runs a command in it from the repository, as root.
#   lab/qemu/run.sh [--timeout SECS] -- CMD...
# Exits with the command's status; the guest's NICs reach nothing outside QEMU.
set -euo pipefail

top=$(cd "$(dirname "$0")/../.." && pwd)
timeout=1800
while [ $# -gt 0 ]; do
  case "$1" in
    --timeout) timeout=$2; shift 2 ;;
    --) shift; break ;;
    *) break ;;
  esac
done
[ $# -gt 0 ] || { echo "usage: lab/qemu/run.sh [--timeout SECS] -- CMD..." >&2; exit 2; }

t0=$(date +%s)
image=$("$top/lab/qemu/build-image.sh")
t1=$(date +%s)
results=$(mktemp -d)
trap 'rm -rf "$results"' EXIT
printf '%q ' "$@" > "$results/cmd"
echo >> "$results/cmd"

# restrict=on: the slirp networks reach nothing outside QEMU. The guestfwd gives the e1000 a
# TCP echo peer at 10.0.2.100:7 inside QEMU itself, so real TCP crosses the e1000 driver.
set +e
timeout --foreground "$timeout" qemu-system-x86_64 \
  -machine pc -accel tcg,thread=multi,tb-size=1024 -cpu max,la57=off -smp 2 -m 2048 \
  -bios /usr/share/qemu/qboot.rom -nographic -vga none -no-reboot \
  -kernel "$image/vmlinux" -initrd "$image/initrd.img" \
  -append "console=ttyS0 root=/dev/vda rw panic=-1 mitigations=off nokaslr quiet loglevel=3 CI=${CI:-}" \
  -drive "file=$image/rootfs.ext4,if=virtio,format=raw,snapshot=on" \
  -virtfs "local,path=$top,mount_tag=lab,security_model=none,readonly=on,id=lab" \
  -virtfs "local,path=$results,mount_tag=results,security_model=none,id=results" \
  -netdev "user,id=n0,net=10.0.2.0/24,host=10.0.2.2,restrict=on,guestfwd=tcp:10.0.2.100:7-cmd:cat" \
  -device e1000,netdev=n0,romfile= \
  -netdev "user,id=n1,net=10.0.3.0/24,host=10.0.3.2,restrict=on" \
  -device virtio-net-pci,netdev=n1,romfile= \
  < /dev/null
qrc=$?
set -e
t2=$(date +%s)
echo "lab-qemu: image $((t1 - t0)) s, guest run $((t2 - t1)) s ($(cat "$image/kver"))"
if [ $qrc -eq 124 ]; then
  echo "lab-qemu: timed out after ${timeout} s" >&2
  exit 124
fi
if [ ! -f "$results/rc" ]; then
  echo "lab-qemu: the guest stopped before the command finished (qemu status $qrc)" >&2
  exit 1
fi
exit "$(cat "$results/rc")"
