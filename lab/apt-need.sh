#!/usr/bin/env bash
# Installs those of the named Debian packages that are missing; quiet and quick when none is.
#   lab/apt-need.sh PACKAGE...
set -euo pipefail

missing=()
for p in "$@"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -gt 0 ] || exit 0
[ "$(id -u)" -eq 0 ] || { echo "lab: missing ${missing[*]}; install them, or run as root" >&2; exit 1; }
echo "lab: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
# Other jobs on the machine install packages too: wait for their dpkg lock, not fail on it.
lock_wait=(-o DPkg::Lock::Timeout=600)
# Stale or absent package lists are the usual reason an install fails here; update once.
apt-get install "${lock_wait[@]}" -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1 || {
  apt-get update -qq
  apt-get install "${lock_wait[@]}" -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}
