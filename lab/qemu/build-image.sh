#!/usr/bin/env bash
# Builds (once, then cached) a Debian guest whose kernel has kprobes, for the kprobe-path tests:
# Debian's own kernel image + matching headers, BCC and netprobe's Python dependencies, from
# Debian packages only. Prints the image directory.
set -euo pipefail

top=$(cd "$(dirname "$0")/../.." && pwd)
cache=${1:-$top/.cache/lab-qemu}

# The guest kernel is whatever Debian's linux-image-amd64 metapackage points at, so the
# image, its modules and its headers always match.
kver=$(apt-cache depends linux-image-amd64 2>/dev/null | sed -n 's/.*Depends: linux-image-\(.*\)$/\1/p' | head -n 1)
[ -n "$kver" ] || { echo "lab-qemu: cannot tell which kernel linux-image-amd64 ships (apt-get update?)" >&2; exit 1; }

packages="linux-image-$kver,linux-headers-$kver,python3,python3-bpfcc,bpfcc-tools,bpftool,iproute2,iputils-ping,kmod,procps,mount,python3-click,python3-rich,python3-prometheus-client,python3-pytest,tcpdump"
key=$(printf '%s\n%s\n%s\n' "$kver" "$packages" "$(sha256sum "$0" "$(dirname "$0")/guest-init.sh" | cut -c1-64)" | sha256sum | cut -c1-16)
dir=$cache/$key
if [ -f "$dir/done" ]; then
  echo "$dir"
  exit 0
fi

need=()
for tool in qemu-system-x86_64:qemu-system-x86 mmdebstrap:mmdebstrap mkfs.ext4:e2fsprogs cpio:cpio; do
  command -v "${tool%%:*}" >/dev/null || need+=("${tool#*:}")
done
[ -x /bin/busybox ] && /bin/busybox --list 2>/dev/null | grep -qx switch_root || need+=(busybox-static)
if [ ${#need[@]} -gt 0 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

start=$(date +%s)
rm -rf "$dir"
mkdir -p "$dir"
root=$dir/root
# Leave out what a headless test guest never reads; it halves the image.
cat > "$dir/excludes" <<'EOT'
path-exclude=/usr/share/doc/*
path-exclude=/usr/share/man/*
path-exclude=/usr/share/locale/*
path-exclude=/usr/share/info/*
path-exclude=/usr/lib/modules/*/kernel/drivers/gpu/*
path-exclude=/usr/lib/modules/*/kernel/drivers/media/*
path-exclude=/usr/lib/modules/*/kernel/drivers/net/wireless/*
path-exclude=/usr/lib/modules/*/kernel/drivers/infiniband/*
path-exclude=/usr/lib/modules/*/kernel/drivers/staging/*
path-exclude=/usr/lib/modules/*/kernel/sound/*
path-exclude=/lib/modules/*/kernel/drivers/gpu/*
path-exclude=/lib/modules/*/kernel/drivers/media/*
path-exclude=/lib/modules/*/kernel/drivers/net/wireless/*
path-exclude=/lib/modules/*/kernel/drivers/infiniband/*
path-exclude=/lib/modules/*/kernel/drivers/staging/*
path-exclude=/lib/modules/*/kernel/sound/*
EOT
# The host's own apt sources go in on stdin, so no mirror is written into any file here.
sources=()
for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
  [ -f "$f" ] && sources+=("$f")
done
cat "${sources[@]}" | \
  mmdebstrap --quiet --mode=root --variant=essential \
    --aptopt='Apt::Install-Recommends "false"' \
    --dpkgopt="$dir/excludes" \
    --include="$packages" \
    bookworm "$root" - >"$dir/mmdebstrap.log" 2>&1 \
  || { tail -n 20 "$dir/mmdebstrap.log" >&2; exit 1; }

install -m 0755 "$(dirname "$0")/guest-init.sh" "$root/sbin/netprobe-lab-init"
mkdir -p "$root/lab" "$root/results"

# PVH boot of the uncompressed ELF skips the decompressor and the stock initramfs (5-9 s
# instead of 17-20 s to init under emulation).
python3 - "$root/boot/vmlinuz-$kver" "$dir/vmlinux" <<'EOT'
import lzma, sys
data = open(sys.argv[1], "rb").read()
at = data.find(b"\xfd7zXZ\x00")
if at < 0:
    sys.exit("no XZ payload in the kernel image")
out = lzma.LZMADecompressor().decompress(data[at:])
open(sys.argv[2], "wb").write(out)
EOT

# A busybox initrd that loads just what mounting the root disk and the 9p share needs.
ird=$dir/initrd
mkdir -p "$ird/bin" "$ird/lib/modules" "$ird/dev" "$ird/proc" "$ird/sys" "$ird/newroot"
cp /bin/busybox "$ird/bin/busybox"
moddir=$root/lib/modules/$kver
# modules.dep lists each module's dependencies after it; load them first (the host may have
# no kmod, so the file is read directly)
python3 - "$moddir/modules.dep" virtio_pci virtio_blk ext4 crc32c_generic > "$dir/initrd-modules" <<'EOT'
import sys
deps = {}
for line in open(sys.argv[1]):
    mod, _, rest = line.partition(":")
    deps[mod.rsplit("/", 1)[-1].split(".ko")[0]] = (mod, rest.split())
order = []
def add(path):
    if path not in order:
        order.append(path)
for name in sys.argv[2:]:
    if name not in deps:
        continue  # built into the kernel
    mod, needs = deps[name]
    for d in reversed(needs):
        add(d)
    add(mod)
print("\n".join(order))
EOT
while read -r ko; do
  cp "$moddir/$ko" "$ird/lib/modules/"
  basename "$ko" >> "$ird/lib/modules/order"
done < "$dir/initrd-modules"
cat > "$ird/init" <<'EOT'
#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sys /sys
/bin/busybox mount -t devtmpfs dev /dev
cd /lib/modules
for ko in $(/bin/busybox cat order); do
  case "$ko" in
    *.xz) /bin/busybox xz -dc "$ko" > /tmp.ko 2>/dev/null || /bin/busybox unxz -c "$ko" > /tmp.ko; /bin/busybox insmod /tmp.ko ;;
    *) /bin/busybox insmod "$ko" ;;
  esac
done
cd /
for i in 1 2 3 4 5 6 7 8 9 10; do [ -b /dev/vda ] && break; /bin/busybox sleep 0.2; done
/bin/busybox mount -t ext4 -o rw /dev/vda /newroot || { echo "lab-init: no root disk"; /bin/busybox poweroff -f; }
exec /bin/busybox switch_root /newroot /sbin/netprobe-lab-init
EOT
chmod +x "$ird/init"
(cd "$ird" && find . | cpio -o -H newc --quiet) > "$dir/initrd.img"
rm -rf "$ird"

rm -rf "$root/boot/initrd.img"* "$root/var/cache/apt/archives"/*.deb
mkfs.ext4 -q -F -L labroot -d "$root" "$dir/rootfs.ext4" 3G >/dev/null
rm -rf "$root"
echo "$kver" > "$dir/kver"
touch "$dir/done"
# older images (another kernel, package list or init) are not needed again
find "$cache" -mindepth 1 -maxdepth 1 -type d ! -name "$key" -exec rm -rf {} +
echo "lab-qemu: built image for $kver in $(( $(date +%s) - start )) s" >&2
echo "$dir"
