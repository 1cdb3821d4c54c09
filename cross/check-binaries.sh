#!/usr/bin/env bash
# Check the aarch64 binaries a Raspberry Pi will run: each one's size, that it is an aarch64 ELF, and
# the highest GLIBC_x.y symbol version it needs — which must not exceed the glibc of Raspberry Pi OS
# Bookworm (2.36; override with MAX_GLIBC=x.y) — and, for C++ libraries such as libonnxruntime, the
# highest GLIBCXX_ version, which must not exceed Bookworm's libstdc++ (GCC 12: 3.4.30; MAX_GLIBCXX).
#
# Usage: cross/check-binaries.sh DIR [NAME...]
#   DIR    folder with the binaries (e.g. target/aarch64-unknown-linux-gnu/release)
#   NAME   binaries to check (default: jmdc-edge jmdc-cloud, plus jmdc-linkemu when present)
#
# Prints one line per binary: name, size in bytes and MiB, highest GLIBC and GLIBCXX versions, needed libraries.
# Exits 1 naming the binary when one is missing, not aarch64, or needs a newer glibc.
# Needs readelf from binutils (aarch64-linux-gnu-readelf, or the host's readelf: both read any ELF).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=cross/env.sh
. "$here/env.sh"

[ $# -ge 1 ] || jmdc_die "usage: cross/check-binaries.sh DIR [NAME...]"
dir=$1
shift
[ -d "$dir" ] || jmdc_die "$dir is not a folder"
max=${MAX_GLIBC:-2.36}
max_cxx=${MAX_GLIBCXX:-3.4.30}

readelf=
for candidate in aarch64-linux-gnu-readelf readelf; do
    if command -v "$candidate" >/dev/null 2>&1; then readelf=$candidate; break; fi
done
if [ -z "$readelf" ] && command -v apt-get >/dev/null 2>&1; then
    jmdc_apt_install binutils-aarch64-linux-gnu
    readelf=aarch64-linux-gnu-readelf
fi
[ -n "$readelf" ] || jmdc_die "readelf not found: install binutils-aarch64-linux-gnu (or binutils)"

names=("$@")
if [ ${#names[@]} -eq 0 ]; then
    names=(jmdc-edge jmdc-cloud)
    [ -e "$dir/jmdc-linkemu" ] && names+=(jmdc-linkemu)
fi

# version_gt A B — true when version A is newer than B (sort -V).
version_gt() { [ "$1" != "$2" ] && [ "$(printf '%s\n%s\n' "$1" "$2" | sort -V | tail -n 1)" = "$1" ]; }

failed=0
printf '%-26s %10s %7s %7s %8s  %s\n' binary bytes MiB glibc glibcxx "needs (DT_NEEDED)"
for name in "${names[@]}"; do
    bin="$dir/$name"
    if [ ! -f "$bin" ]; then
        echo "error: $bin does not exist" >&2
        failed=1
        continue
    fi
    machine=$("$readelf" -h "$bin" 2>/dev/null | sed -n 's/^ *Machine: *//p')
    if [ "$machine" != "AArch64" ]; then
        echo "error: $bin is not an aarch64 ELF (machine: ${machine:-not an ELF file})" >&2
        failed=1
        continue
    fi
    size=$(stat -c %s "$bin")
    glibc=$("$readelf" -V --wide "$bin" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/^GLIBC_//' | sort -uV | tail -n 1 || true)
    glibcxx=$("$readelf" -V --wide "$bin" | grep -o 'GLIBCXX_[0-9][0-9.]*' | sed 's/^GLIBCXX_//' | sort -uV | tail -n 1 || true)
    needed=$("$readelf" -d "$bin" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | paste -sd, - || true)
    printf '%-26s %10d %7.2f %7s %8s  %s\n' "$name" "$size" "$(echo "$size" | awk '{print $1/1048576}')" \
        "${glibc:--}" "${glibcxx:--}" "$needed"
    if [ -n "$glibc" ] && version_gt "$glibc" "$max"; then
        echo "error: $bin needs GLIBC_$glibc, newer than the limit $max (Raspberry Pi OS Bookworm has 2.36)" >&2
        failed=1
    fi
    if [ -n "$glibcxx" ] && version_gt "$glibcxx" "$max_cxx"; then
        echo "error: $bin needs GLIBCXX_$glibcxx, newer than the limit $max_cxx (Bookworm's libstdc++ has 3.4.30)" >&2
        failed=1
    fi
done
[ "$failed" -eq 0 ] || exit 1
echo "ok: every binary is aarch64 and needs glibc <= $max (and libstdc++ <= $max_cxx)"
