#!/usr/bin/env bash
# Builds, once, the QEMU lab guest: Debian's own kernel (kprobes on, an e1000 driver), matching
# headers, BCC and netprobe's Python dependencies, all from Debian packages. Later calls find it
# in the cache and only print its directory.
#   lab/qemu/build-image.sh [CACHE_DIR]     (default $LAB_QEMU_CACHE or <repo>/.cache/lab-qemu)
# LAB_KERNEL picks the kernel line: 6.1 (default; bookworm's own) or 6.12 (bookworm's 6.12 LTS).
# Each line has its own image in the cache.
# The image directory holds vmlinux (ELF, PVH boot), initrd.img (busybox), rootfs.ext4, kver.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
cache=${1:-${LAB_QEMU_CACHE:-$top/.cache/lab-qemu}}

# Bump when this script changes what it builds (the initrd's init, the layout), so cached
# images made by the older recipe are rebuilt.
recipe=3
# nftables: the drop tests' firewall rule and its counter (recipe 3)
packages=(python3 python3-bpfcc bpfcc-tools bpftool iproute2 iputils-ping kmod procps mount
          python3-click python3-rich python3-prometheus-client python3-pytest python3-pyroute2
          tcpdump netbase nftables)
host_packages=(qemu-system-x86 qemu-utils mmdebstrap e2fsprogs cpio busybox-static xz-utils zstd)
# Drivers a headless guest with two emulated NICs never loads; they are half the module tree.
unneeded_modules=(drivers/gpu drivers/media drivers/net/wireless drivers/infiniband
                  drivers/staging drivers/bluetooth drivers/iio drivers/isdn sound net/bluetooth)

say() { printf 'lab-qemu: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

lab_kernel=${LAB_KERNEL:-6.1}
case $lab_kernel in
  6.1) kernel_meta=linux-image-amd64 ;;
  6.12) kernel_meta=linux-image-6.12-amd64 ;;
  *) die "LAB_KERNEL=$lab_kernel: the lab knows the kernels 6.1 and 6.12" ;;
esac

# The kernel is whatever Debian's metapackage for the line points at now, so image, modules and
# headers always come from one build.
kernel_version() {
  apt-cache depends "$kernel_meta" 2>/dev/null \
    | sed -n 's/^ *Depends: linux-image-\([0-9].*\)$/\1/p' | head -n 1
}
kver=$(kernel_version)
if [ -z "$kver" ] && [ "$(id -u)" -eq 0 ]; then
  say "apt-get update (no package lists yet)"
  apt-get update -qq
  kver=$(kernel_version)
fi
[ -n "$kver" ] || die "cannot tell which kernel $kernel_meta depends on (run apt-get update)"
packages=("linux-image-$kver" "linux-headers-$kver" "${packages[@]}")

key=$(printf '%s\n' "recipe=$recipe" "$kver" "${packages[@]}" | sha256sum | cut -c1-12)
name=debian-$kver-$key
image=$cache/$name
if [ -f "$image/done" ]; then
  echo "$image"
  exit 0
fi

[ "$(id -u)" -eq 0 ] || die "building the image needs root (mmdebstrap --mode=root, chroot): sudo $0"
mkdir -p "$cache"
# Two runs starting at once must not build into the same directory.
exec 9>"$cache/.build.lock"
flock 9
if [ -f "$image/done" ]; then
  echo "$image"
  exit 0
fi

"$top/lab/apt-need.sh" "${host_packages[@]}"

start=$(date +%s)
say "building the guest image for $kver into $image (about 3 minutes)"
work=$cache/.build-$name
rm -rf "$work"
mkdir -p "$work"
root=$work/root

dpkg_opts=(--dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*'
           --dpkgopt='path-exclude=/usr/share/info/*' --dpkgopt='path-exclude=/usr/share/locale/*')
for m in "${unneeded_modules[@]}"; do
  # bookworm's kernel packages still ship /lib/modules; dpkg matches the packaged path
  dpkg_opts+=(--dpkgopt="path-exclude=/lib/modules/*/kernel/$m/*"
              --dpkgopt="path-exclude=/usr/lib/modules/*/kernel/$m/*")
done
# The host's own apt sources (mirror and snapshot pinning included), so nothing in this
# repository names a mirror.
sources=()
for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
  if [ -s "$f" ] && grep -q '^[^#]' "$f"; then sources+=("$f"); fi
done
[ ${#sources[@]} -gt 0 ] || die "no apt sources on this host to build the guest from"

t=$(date +%s)
if ! mmdebstrap --mode=root --variant=essential --quiet \
      --aptopt='Apt::Install-Recommends "false"' "${dpkg_opts[@]}" \
      --include="$(IFS=,; echo "${packages[*]}")" \
      bookworm "$root" "${sources[@]}" >"$work/mmdebstrap.log" 2>&1; then
  tail -n 30 "$work/mmdebstrap.log" >&2
  die "mmdebstrap failed (log: $work/mmdebstrap.log)"
fi
say "mmdebstrap: $(( $(date +%s) - t )) s"

# Mount points the initrd and the guest init use: the run's control share, the repository
# share, and the results share.
mkdir -p "$root/labctl" "$root/lab" "$root/results" "$root/labro"
# No resolver and no default route in the guest: it has nothing to look up and nowhere to go.
rm -f "$root/etc/resolv.conf"
printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' > "$root/etc/hosts"
echo netprobe-lab > "$root/etc/hostname"

# QEMU boots the uncompressed ELF through its PVH entry point: no decompressor, no firmware
# kernel loader, and the stock initramfs is not needed (5-9 s to init instead of 17-20 s).
python3 - "$root/boot/vmlinuz-$kver" "$work/vmlinux" <<'EOT'
import lzma
import struct
import subprocess
import sys

# 6.1's payload is XZ; 6.12's is zstd, which Python 3.11 cannot read: the zstd tool does, and
# exits non-zero at the bytes after the payload's frame, which is why its status is not checked.
data = open(sys.argv[1], "rb").read()
elf = b""
if (at := data.find(b"\xfd7zXZ\x00")) >= 0:
    elf = lzma.LZMADecompressor().decompress(data[at:])
elif (at := data.find(b"\x28\xb5\x2f\xfd")) >= 0:
    elf = subprocess.run(["zstd", "-qdc"], input=data[at:], capture_output=True).stdout
else:
    sys.exit("lab-qemu: no XZ or zstd payload in " + sys.argv[1])
# whole: the ELF's section header table ends inside what was decompressed
if elf[:4] != b"\x7fELF" or len(elf) < 64 or len(elf) < (
        struct.unpack_from("<Q", elf, 0x28)[0] + struct.unpack_from("<HH", elf, 0x3a)[0]
        * struct.unpack_from("<HH", elf, 0x3a)[1]):
    sys.exit("lab-qemu: the payload of " + sys.argv[1] + " is not a whole ELF kernel")
open(sys.argv[2], "wb").write(elf)
EOT

# The initrd: static busybox plus the modules that reach the root disk and the 9p shares,
# each after its dependencies, in the order the guest's own modprobe gives.
ird=$work/initrd
mkdir -p "$ird/bin" "$ird/dev" "$ird/proc" "$ird/sys" "$ird/newroot" "$ird/lib/modules"
cp /bin/busybox "$ird/bin/busybox"
for m in virtio_pci virtio_blk crc32c ext4 9pnet_virtio 9p; do
  chroot "$root" modprobe --set-version "$kver" --show-depends "$m"
done | awk '$1 == "insmod" && !seen[$2]++ { print $2 }' > "$work/initrd-modules"
# busybox's insmod reads plain .ko files only; 6.12's modules come xz-compressed.
while read -r ko; do
  plain=$(basename "$ko")
  case $ko in
    *.xz) plain=${plain%.xz}; xz -dc "$root$ko" > "$ird/lib/modules/$plain" ;;
    *.zst) plain=${plain%.zst}; zstd -qdc "$root$ko" > "$ird/lib/modules/$plain" ;;
    *) cp "$root$ko" "$ird/lib/modules/" ;;
  esac
  echo "$plain" >> "$ird/lib/modules/order"
done < "$work/initrd-modules"
cat > "$ird/init" <<'EOT'
#!/bin/busybox sh
# initrd PID 1: load the disk and 9p modules, mount the root disk and the run's control share,
# hand over to the run's own init (it comes with each run, so changing it needs no rebuild).
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
stop() { echo "lab-qemu initrd: $*"; echo o > /proc/sysrq-trigger; sleep 60; }
for ko in $(cat /lib/modules/order); do
  insmod "/lib/modules/$ko" || echo "lab-qemu initrd: insmod $ko failed"
done
for _ in $(seq 50); do [ -b /dev/vda ] && break; sleep 0.1; done
mount -t ext4 /dev/vda /newroot || stop "cannot mount the root disk /dev/vda"
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 labctl /newroot/labctl \
  || stop "cannot mount the run's control share (9p tag labctl)"
[ -f /newroot/labctl/init ] || stop "the control share has no init"
umount /proc /sys
mount -o move /dev /newroot/dev
exec switch_root /newroot /bin/bash /labctl/init
EOT
chmod 0755 "$ird/init"
(cd "$ird" && find . | cpio -o -H newc --quiet) > "$work/initrd.img"
rm -rf "$ird"

# Nothing in the guest reads these; the stock initramfs alone is ~60 MB.
rm -f "$root/boot/initrd.img-$kver" "$root/boot/vmlinuz-$kver"
rm -rf "$root/var/cache/apt/archives/"*.deb "$root/var/lib/apt/lists/"*
# The disk is sparse and every run writes to a throw-away overlay (snapshot=on), so generous
# free space costs nothing.
used=$(du -sm "$root" | cut -f1)
t=$(date +%s)
mkfs.ext4 -q -F -L netprobe-lab -d "$root" "$work/rootfs.ext4" "$(( used + 1024 ))M" >/dev/null
say "mkfs.ext4 -d: $(( $(date +%s) - t )) s for $used MB"
rm -rf "$root"
echo "$kver" > "$work/kver"
printf '%s\n' "${packages[@]}" > "$work/packages"
touch "$work/done"

rm -rf "$image"
mv "$work" "$image"
# Older images of this kernel line (another build, package list or recipe) are pruned unless a
# run holds them; the other line's image stays.
for old in "$cache/debian-$lab_kernel".*/; do
  old=${old%/}
  if [ "$old" = "$image" ] || [ ! -d "$old" ]; then continue; fi
  if flock -n -x "$old/done" true 2>/dev/null; then rm -rf "$old"; fi
done
say "built the image for $kver in $(( $(date +%s) - start )) s ($(du -sh "$image" | cut -f1) on disk)"
echo "$image"
