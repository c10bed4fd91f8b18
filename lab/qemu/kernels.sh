#!/usr/bin/env bash
# make lab-qemu: in-guest.sh (the kernel tests and `netprobe prove`) in a guest of each kernel
# named, LAB_QEMU_JOBS of them at once (default 1). Two at once suit a 2-core host: a TCG guest
# runs one test at a time, which keeps one host core busy, not two. Each guest's lines carry its
# kernel; a failing kernel does not stop the others, only the exit status.
#   lab/qemu/kernels.sh KERNEL...
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
jobs=${LAB_QEMU_JOBS:-1}
[[ $jobs =~ ^[1-9][0-9]*$ ]] || { echo "lab-qemu: LAB_QEMU_JOBS must be a number >= 1, not '$jobs'" >&2; exit 2; }
[ $# -gt 0 ] || { echo "usage: lab/qemu/kernels.sh KERNEL..." >&2; exit 2; }

one() {
  local k=$1 t0=$SECONDS rc
  LAB_KERNEL=$k "$here/run.sh" --timeout "${LAB_QEMU_TIMEOUT:-2400}" -- bash lab/qemu/in-guest.sh 2>&1 \
    | sed -u "s/^/[$k] /"
  rc=${PIPESTATUS[0]}
  echo "[$k] lab-qemu: the $k guest exited $rc after $(( SECONDS - t0 )) s"
  return "$rc"
}

status=0
declare -A kernel_of=()
for k in "$@"; do
  while [ "${#kernel_of[@]}" -ge "$jobs" ]; do
    wait -n -p done_pid || status=1
    unset "kernel_of[$done_pid]"
  done
  one "$k" &
  kernel_of[$!]=$k
done
while [ "${#kernel_of[@]}" -gt 0 ]; do
  wait -n -p done_pid || status=1
  unset "kernel_of[$done_pid]"
done
exit $status
