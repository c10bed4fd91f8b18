# shellcheck shell=bash
# Steps every lab image built from Debian's packages shares; sourced, not run:
#   . lab/debian-image.sh
#   kver=$(lab_kernel_version)            # what linux-image-amd64 depends on now
#   lab_mmdebstrap ROOT LOG PACKAGE...    # a bookworm tree with those packages, from the host's sources
# (lab/qemu/build-image.sh predates this file and still spells these steps out itself.)

lab_say() { printf '%s: %s\n' "${lab_tag:-lab}" "$*" >&2; }
lab_die() { lab_say "$*"; exit 1; }

# The kernel is whatever Debian's linux-image-amd64 points at now, so image, modules and
# headers always come from one build. Updates the package lists once when there are none.
lab_kernel_version() {
  local kver
  kver=$(apt-cache depends linux-image-amd64 2>/dev/null \
    | sed -n 's/^ *Depends: linux-image-\([0-9].*\)$/\1/p' | head -n 1)
  if [ -z "$kver" ] && [ "$(id -u)" -eq 0 ]; then
    lab_say "apt-get update (no package lists yet)"
    apt-get update -qq
    kver=$(apt-cache depends linux-image-amd64 2>/dev/null \
      | sed -n 's/^ *Depends: linux-image-\([0-9].*\)$/\1/p' | head -n 1)
  fi
  [ -n "$kver" ] || lab_die "cannot tell which kernel linux-image-amd64 depends on (run apt-get update)"
  echo "$kver"
}

# Drivers a headless guest with emulated NICs never loads; they are half the module tree.
lab_unneeded_modules=(drivers/gpu drivers/media drivers/net/wireless drivers/infiniband
                      drivers/staging drivers/bluetooth drivers/iio drivers/isdn sound net/bluetooth)

lab_mmdebstrap() {
  local root=$1 log=$2 m f
  shift 2
  local opts=(--dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*'
              --dpkgopt='path-exclude=/usr/share/info/*' --dpkgopt='path-exclude=/usr/share/locale/*')
  for m in "${lab_unneeded_modules[@]}"; do
    # bookworm's kernel packages still ship /lib/modules; dpkg matches the packaged path
    opts+=(--dpkgopt="path-exclude=/lib/modules/*/kernel/$m/*"
           --dpkgopt="path-exclude=/usr/lib/modules/*/kernel/$m/*")
  done
  # The host's own apt sources (mirror and snapshot pinning included), so nothing in this
  # repository names a mirror.
  local sources=()
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    if [ -s "$f" ] && grep -q '^[^#]' "$f"; then sources+=("$f"); fi
  done
  [ ${#sources[@]} -gt 0 ] || lab_die "no apt sources on this host to build the image from"
  if ! mmdebstrap --mode=root --variant=essential --quiet \
        --aptopt='Apt::Install-Recommends "false"' "${opts[@]}" \
        --include="$(IFS=,; echo "$*")" \
        bookworm "$root" "${sources[@]}" >"$log" 2>&1; then
    tail -n 30 "$log" >&2
    lab_die "mmdebstrap failed (log: $log)"
  fi
}
