#!/usr/bin/env bash
# Builds, once, the Vagrant lab's offline libvirt box from Debian's packages: Debian 12 with
# systemd, sshd, the vagrant user and Vagrant's insecure key, DHCP on eth0 (systemd-networkd),
# Debian's kernel (kprobes on) with its headers, BCC and every package netprobe's `make setup`
# wants, so provisioning needs no archive. libvirt boots its kernel directly (the box's own
# Vagrantfile names it), so the disk is a bare ext4 filesystem with no bootloader.
#   lab/box/build-box.sh [CACHE_DIR]     (default $LAB_BOX_CACHE or <repo>/.cache/lab-box)
# Prints the box's directory: netprobe-lab.box, name (the box name to add), kver.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
cache=${1:-${LAB_BOX_CACHE:-$top/.cache/lab-box}}
lab_tag=lab-box
# shellcheck source=lab/debian-image.sh
. "$top/lab/debian-image.sh"

# Bump when this script changes what it builds, so boxes made by the older recipe are rebuilt.
recipe=2
packages=(systemd systemd-sysv udev dbus openssh-server sudo rsync apt
          iproute2 iputils-ping kmod procps mount netbase
          python3 python3-bpfcc bpfcc-tools bpftool python3-venv python3-pip python3-setuptools
          python3-wheel python3-click python3-rich python3-prometheus-client python3-pytest
          python3-pyroute2 tcpdump make nftables)
host_packages=(mmdebstrap e2fsprogs qemu-utils vagrant)
cmd_line="root=/dev/vda rw console=ttyS0 net.ifnames=0 mitigations=off"

kver=$(lab_kernel_version)
packages=("linux-image-$kver" "linux-headers-$kver" "${packages[@]}")
key=$(printf '%s\n' "recipe=$recipe" "$kver" "$cmd_line" "${packages[@]}" | sha256sum | cut -c1-12)
name=netprobe-lab-$key
out=$cache/$name
if [ -f "$out/done" ]; then
  echo "$out"
  exit 0
fi

[ "$(id -u)" -eq 0 ] || lab_die "building the box needs root (mmdebstrap --mode=root, chroot): sudo $0"
mkdir -p "$cache"
exec 9>"$cache/.build.lock"
flock 9
if [ -f "$out/done" ]; then
  echo "$out"
  exit 0
fi
"$top/lab/apt-need.sh" "${host_packages[@]}"
# Debian's vagrant keeps its gem under rubygems-integration; HashiCorp's package under /opt.
insecure_key=$( { find /usr/share/rubygems-integration /usr/lib/ruby /opt/vagrant \
                    -path '*/vagrant-*/keys/vagrant.pub' 2>/dev/null || true; } | sort -V | tail -n 1)
[ -n "$insecure_key" ] || lab_die "no keys/vagrant.pub in the vagrant package"

start=$(date +%s)
lab_say "building the box for $kver into $out (about 4 minutes)"
work=$cache/.build-$name
rm -rf "$work"
mkdir -p "$work/box"
root=$work/root
t=$(date +%s)
lab_mmdebstrap "$root" "$work/mmdebstrap.log" "${packages[@]}"
lab_say "mmdebstrap: $(( $(date +%s) - t )) s"

# What Vagrant expects of a box: user vagrant, passwordless sudo, the insecure key (Vagrant
# swaps it for a fresh one at the first `up`).
chroot "$root" useradd --create-home --shell /bin/bash --user-group vagrant
install -d -m 0700 -o 1000 -g 1000 "$root/home/vagrant/.ssh"
chroot "$root" chown -R vagrant:vagrant /home/vagrant
install -m 0600 "$insecure_key" "$root/home/vagrant/.ssh/authorized_keys"
chroot "$root" chown -R vagrant:vagrant /home/vagrant/.ssh
echo 'vagrant ALL=(ALL) NOPASSWD: ALL' > "$root/etc/sudoers.d/vagrant"
chmod 0440 "$root/etc/sudoers.d/vagrant"
# No resolver in the lab: sshd must not wait on reverse lookups of Vagrant's address.
echo 'UseDNS no' > "$root/etc/ssh/sshd_config.d/lab.conf"

# eth0 is the provider's management network (DHCP); Vagrant writes the private network's own
# file for eth1. wait-online would hold network-online.target for eth1 until it times out.
cat > "$root/etc/systemd/network/10-eth0.network" <<'EOT'
[Match]
Name=eth0

[Network]
DHCP=ipv4
EOT
chroot "$root" systemctl enable systemd-networkd.service >/dev/null 2>&1
chroot "$root" systemctl mask systemd-networkd-wait-online.service >/dev/null 2>&1
echo '/dev/vda / ext4 defaults,noatime 0 1' > "$root/etc/fstab"
echo netprobe-lab > "$root/etc/hostname"
printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' > "$root/etc/hosts"
rm -f "$root/etc/resolv.conf"

# The venv `make setup` makes in each VM (provision.sh names this path), made here at native
# speed: under TCG ensurepip alone takes minutes. The editable install points at /vagrant, where
# Vagrant syncs the working tree, so the VMs run that tree's netprobe; setup.sh installs again
# only when the tree's pyproject.toml differs from the one installed here.
mkdir -p "$root/vagrant"
cp -r "$top/pyfront" "$root/vagrant/pyfront"
chroot "$root" python3 -m venv --system-site-packages /opt/netprobe/venv
chroot "$root" /opt/netprobe/venv/bin/pip install -q --no-deps --no-build-isolation -e /vagrant/pyfront
sha256sum "$top/pyfront/pyproject.toml" | cut -d' ' -f1 > "$root/opt/netprobe/venv/.netprobe-installed"
rm -rf "$root/vagrant"

# The kernel and Debian's own initramfs boot directly; the disk needs no bootloader.
cp "$root/boot/vmlinuz-$kver" "$work/box/vmlinuz"
cp "$root/boot/initrd.img-$kver" "$work/box/initrd.img"
rm -f "$root/boot/vmlinuz-$kver" "$root/boot/initrd.img-$kver"
rm -rf "$root/var/cache/apt/archives/"*.deb "$root/var/lib/apt/lists/"*

# The root filesystem with room for provisioning (venvs, the synced repository); sparse, so
# the free space costs nothing until used. Vagrant's metadata wants whole gigabytes.
used=$(du -sm "$root" | cut -f1)
gib=$(( (used + 1536 + 1023) / 1024 ))
t=$(date +%s)
mkfs.ext4 -q -F -L netprobe-lab -d "$root" "$work/rootfs.ext4" "${gib}G" >/dev/null
qemu-img convert -O qcow2 "$work/rootfs.ext4" "$work/box/box.img"
rm -f "$work/rootfs.ext4"
lab_say "mkfs.ext4 -d + qcow2: $(( $(date +%s) - t )) s for $used MB"
rm -rf "$root"

printf '{"provider": "libvirt", "format": "qcow2", "virtual_size": %d}\n' "$gib" > "$work/box/metadata.json"
cat > "$work/box/Vagrantfile" <<EOT
# The netprobe lab's offline box (lab/box/build-box.sh): Debian's $kver, booted directly.
Vagrant.configure("2") do |config|
  config.vm.provider "libvirt" do |lv|
    lv.kernel = File.join(__dir__, "vmlinuz")
    lv.initrd = File.join(__dir__, "initrd.img")
    lv.cmd_line = "$cmd_line"
  end
end
EOT
tar -C "$work/box" -cf "$work/netprobe-lab.box" metadata.json Vagrantfile box.img vmlinuz initrd.img
rm -rf "$work/box"
echo "$name" > "$work/name"
echo "$kver" > "$work/kver"
touch "$work/done"
rm -rf "$out"
mv "$work" "$out"
# Older boxes (another kernel, package list or recipe) go, with their copies in Vagrant's home.
for old in "$cache"/netprobe-lab-*/ "$cache"/vagrant.d/boxes/netprobe-lab-*/; do
  old=${old%/}
  if [ "${old##*/}" != "$name" ] && [ -d "$old" ]; then rm -rf "$old"; fi
done
lab_say "built the box for $kver in $(( $(date +%s) - start )) s ($(du -sh "$out" | cut -f1) on disk)"
echo "$out"
