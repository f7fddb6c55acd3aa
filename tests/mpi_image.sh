#!/usr/bin/env bash
# Build (once) the MPI test image: Debian bookworm minbase with OpenMPI, gcc
# and mpi4py, and tests/fixtures/pingpong.c compiled inside it at
# /usr/local/bin/pingpong. Prints the image directory. Needs root and
# debootstrap; the result is cached under /var/tmp (owned by root, not
# writable by others) and rebuilt when pingpong.c changes.
#   usage: tests/mpi_image.sh [DIR]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src="$here/fixtures/pingpong.c"
dir=${1:-/var/tmp/den-test-mpi-bookworm}
mirror=${DEN_DEBIAN_MIRROR:-http://deb.debian.org/debian}
pkgs="openmpi-bin libopenmpi-dev gcc libc6-dev python3-mpi4py"

[ "$(id -u)" = 0 ] || { echo "mpi_image: must be root" >&2; exit 1; }
stamp="$dir/.den-image-stamp"
want="$pkgs $(sha256sum "$src" | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] &&
   [ "$(stat -c %u "$dir")" = 0 ]; then
  echo "$dir"; exit 0
fi
if [ ! -x "$dir/usr/bin/mpicc" ] || [ "$(stat -c %u "$dir")" != 0 ]; then
  rm -rf "$dir" "$dir.tmp"
  mkdir -m 755 "$dir.tmp"
  debootstrap --variant=minbase bookworm "$dir.tmp" "$mirror" >&2 \
    || { tail -n 30 "$dir.tmp/debootstrap/debootstrap.log" >&2 || true; exit 1; }
  # debootstrap's --include does not resolve alternatives; apt does. The
  # chroot needs the host's resolver and /proc, in a private mount namespace
  # so nothing stays mounted on the host.
  cp /etc/resolv.conf "$dir.tmp/etc/resolv.conf"
  unshare --mount --propagation private sh -c '
    mount -t proc proc "$1/proc" &&
    chroot "$1" sh -c "apt-get update -qq &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $2 >/dev/null &&
      apt-get clean && rm -rf /var/lib/apt/lists/*"' sh "$dir.tmp" "$pkgs" >&2
  mv "$dir.tmp" "$dir"
fi
install -m 644 "$src" "$dir/tmp/pingpong.c"
chroot "$dir" mpicc -O2 -o /usr/local/bin/pingpong /tmp/pingpong.c
rm -f "$dir/tmp/pingpong.c"
chmod 755 "$dir"
echo "$want" > "$stamp"
echo "$dir"
