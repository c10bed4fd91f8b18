#!/usr/bin/env bash
# Installs everything netprobe needs on Debian/Ubuntu, idempotently: BCC, kernel headers,
# tracefs, a venv that sees the system's BCC, and netprobe itself (editable, from pyfront/).
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
venv=${NETPROBE_VENV:-$top/.venv}
kver=$(uname -r)

say() { printf 'setup: %s\n' "$*"; }

[ "$(id -u)" -eq 0 ] || { echo "setup: run as root (sudo make setup): it installs packages" >&2; exit 1; }

export DEBIAN_FRONTEND=noninteractive
packages=(python3-bpfcc bpfcc-tools bpftool python3-venv python3-pip python3-setuptools
          python3-click python3-rich python3-prometheus-client python3-pytest
          iproute2 tcpdump make)
# wanted, not needed: netprobe runs without it (the lab's VMs have no archive to reach)
optional=(man-db)
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
missing=()
for p in "${packages[@]}"; do
  installed "$p" || missing+=("$p")
done
missing_optional=()
for p in "${optional[@]}"; do
  installed "$p" || missing_optional+=("$p")
done

# Headers: the running kernel's own when the archive has them; else the nearest the archive
# has (netprobe takes struct layouts from BTF, so BCC only needs *a* kernel tree to compile).
headers=""
if [ -e "/lib/modules/$kver/build/include" ]; then
  headers=present
elif apt-cache show "linux-headers-$kver" >/dev/null 2>&1; then
  missing+=("linux-headers-$kver"); headers=exact
fi
if [ ${#missing[@]} -gt 0 ] || [ -z "$headers" ]; then
  say "apt-get update"
  apt-get update -qq
  if [ -z "$headers" ]; then
    if apt-cache show "linux-headers-$kver" >/dev/null 2>&1; then
      missing+=("linux-headers-$kver"); headers=exact
    else
      missing+=(linux-headers-amd64); headers=nearest
    fi
  fi
  if [ ${#missing[@]} -gt 0 ]; then
    missing+=("${missing_optional[@]}")
    missing_optional=()
    say "installing ${missing[*]}"
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi
if [ ${#missing_optional[@]} -gt 0 ]; then
  if { apt-get update -qq && apt-get install -y -qq --no-install-recommends \
         "${missing_optional[@]}" >/dev/null; } 2>/dev/null; then
    say "installed ${missing_optional[*]}"
  else
    say "NOTE: could not install ${missing_optional[*]} (no package archive?): man pages are installed but not indexed"
  fi
fi

if [ "$headers" = nearest ] && [ ! -e "/lib/modules/$kver/build/include" ]; then
  build=$(find /usr/src -maxdepth 1 -name 'linux-headers-*-amd64' | sort -V | tail -n 1)
  common=$(find /usr/src -maxdepth 1 -name 'linux-headers-*-common' | sort -V | tail -n 1)
  if [ -z "$build" ] || [ -z "$common" ]; then
    echo "setup: no kernel headers could be installed" >&2
    exit 1
  fi
  mkdir -p "/lib/modules/$kver"
  ln -sfn "$build" "/lib/modules/$kver/build"
  ln -sfn "$common" "/lib/modules/$kver/source"
  say "NOTE: no headers for kernel $kver in the archive; linked the nearest ones, $(basename "$build")."
  say "      netprobe reads every struct layout from BTF (/sys/kernel/btf/vmlinux), so counts stay right."
fi

if ! mountpoint -q /sys/kernel/tracing 2>/dev/null; then
  if mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null; then
    say "mounted tracefs at /sys/kernel/tracing"
  else
    say "NOTE: could not mount tracefs (kprobes need it on older kernels)"
  fi
fi

if [ ! -x "$venv/bin/python" ]; then
  say "creating venv $venv"
  /usr/bin/python3 -m venv --system-site-packages "$venv"
fi
# Installed again when pyproject.toml changes (by content: a fresh checkout's times say nothing).
stamp=$(sha256sum "$top/pyfront/pyproject.toml" | cut -d' ' -f1)
if ! "$venv/bin/python" -c 'import netprobe, bcc' 2>/dev/null \
   || [ "$(cat "$venv/.netprobe-installed" 2>/dev/null)" != "$stamp" ]; then
  say "installing netprobe into $venv"
  "$venv/bin/pip" install -q --no-deps --no-build-isolation -e "$top/pyfront"
  echo "$stamp" > "$venv/.netprobe-installed"
fi
# the launcher, not pip's script: it starts Python with SIGINT blocked (see scripts/netprobe.sh);
# written beside and renamed, which also replaces the symlink earlier setups made
sed "s|@PYTHON@|$venv/bin/python|" "$top/scripts/netprobe.sh" > /usr/local/bin/.netprobe.new
chmod 755 /usr/local/bin/.netprobe.new
mv -f /usr/local/bin/.netprobe.new /usr/local/bin/netprobe
# man pages for netprobe and each command, made from the CLI's own help (so they match it)
"$venv/bin/python" "$top/scripts/manpages.py" /usr/local/share/man/man1
if command -v mandb >/dev/null; then mandb -q /usr/local/share/man 2>/dev/null || true; fi
say "ready: $(/usr/local/bin/netprobe --version); man netprobe"
