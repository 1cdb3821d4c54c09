#!/usr/bin/env bash
# Build the three Debian packages of jmdc for one architecture with cargo-deb:
#   jmdc-common  ONNX Runtime for that architecture (/usr/lib/jmdc), model packages
#                (/usr/share/jmdc/models), sysusers/tmpfiles files, docs          (from core/Cargo.toml)
#   jmdc-edge    /usr/bin/jmdc-edge, jmdc-edge.service, /etc/jmdc/edge.toml (+ edge.d/)  (daemon/Cargo.toml)
#   jmdc-cloud   /usr/bin/jmdc-cloud, jmdc-cloud.service, /etc/jmdc/cloud.toml (+ cloud.d/) (cloud/Cargo.toml)
# then checks them with systemd/check-deb.sh and prints their sizes.
#
# Usage: systemd/build-debs.sh --arch amd64|arm64 [--no-build] [--run-check] [--install-check] [--out DIR]
#   --arch      Debian architecture of the packages (required).
#   --no-build  Package binaries that are already built (e.g. by cross/build.sh or `cross build`)
#               instead of building them: target/release/ for the host's architecture,
#               target/aarch64-unknown-linux-gnu/release/ (resp. x86_64-…) otherwise.
#   --run-check  Also run the packaged cloud and edge from the extracted packages over loopback
#               (check-deb.sh --run; arm64 on x86 under qemu-aarch64 -cpu cortex-a72).
#   --install-check  Also install the packages for real in a throw-away overlay and run them
#               (check-deb.sh --install: root, amd64 on an x86_64 host).
#   --out DIR   Where the .deb files go (default: target/debian). Older jmdc packages of the same
#               architecture there are deleted first.
#
# Building arm64 on an x86 machine without --no-build uses cargo with the aarch64 gcc linker:
#   apt install gcc-aarch64-linux-gnu libc6-dev-arm64-cross libclang-dev
#   rustup target add aarch64-unknown-linux-gnu
# Needs cargo-deb (`cargo install cargo-deb --locked`), python3 with pip (ONNX Runtime wheel),
# readelf (binutils). Honours CARGO_TARGET_DIR.
# Every binary and library is checked for the ELF machine of --arch before it is packaged: an x86
# binary is never packaged as arm64. Exit 0: packages built and checked; 1: a check failed;
# 2: bad usage or a missing tool.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)

usage() {
  sed -n '2,29p' "$0" | sed 's/^# \{0,1\}//' >&2
}

arch=
build=1
install_check=()
run_check=()
out=
while [ $# -gt 0 ]; do
  case "$1" in
    --arch)
      [ $# -ge 2 ] || { echo "build-debs.sh: --arch needs a value (amd64 or arm64)" >&2; exit 2; }
      arch=$2
      shift 2
      ;;
    --arch=*) arch=${1#*=}; shift ;;
    --no-build) build=0; shift ;;
    --install-check) install_check=(--install); shift ;;
    --run-check) run_check=(--run); shift ;;
    --out)
      [ $# -ge 2 ] || { echo "build-debs.sh: --out needs a folder" >&2; exit 2; }
      out=$2
      shift 2
      ;;
    --out=*) out=${1#*=}; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "build-debs.sh: unknown argument '$1'" >&2; usage; exit 2 ;;
  esac
done

case "$arch" in
  amd64) triple=x86_64-unknown-linux-gnu; ort_arch=x86_64; machine="Advanced Micro Devices X86-64" ;;
  arm64) triple=aarch64-unknown-linux-gnu; ort_arch=aarch64; machine="AArch64" ;;
  "") echo "build-debs.sh: --arch amd64|arm64 is required" >&2; usage; exit 2 ;;
  *) echo "build-debs.sh: unsupported architecture '$arch' (amd64 or arm64)" >&2; exit 2 ;;
esac

for tool in cargo readelf python3; do
  command -v "$tool" >/dev/null || { echo "build-debs.sh: $tool not found" >&2; exit 2; }
done
if ! cargo deb --version >/dev/null 2>&1; then
  echo "build-debs.sh: cargo-deb not found; install it with: cargo install cargo-deb --locked" >&2
  exit 2
fi

cd "$repo"
target_dir=${CARGO_TARGET_DIR:-$repo/target}
out=${out:-$target_dir/debian}
mkdir -p "$out"
host=$(rustc -vV | sed -n 's/^host: //p')
if [ "$triple" = "$host" ]; then
  # cargo-deb without --target reads target/release/, where a plain `cargo build --release` puts them.
  bin_dir=$target_dir/release
  target_args=()
else
  bin_dir=$target_dir/$triple/release
  target_args=(--target "$triple")
fi

# --- 1. ONNX Runtime for the architecture (from the PyPI wheel, cached) ---------------------------
ort=$("$repo/scripts/fetch-onnxruntime.sh" --arch "$ort_arch" | tail -n 1)

# --- 2. the binaries ------------------------------------------------------------------------------
if [ "$build" -eq 1 ]; then
  if [ "$triple" = "$host" ]; then
    cargo build --release --locked -p jmdc-edge -p jmdc-cloud --features jmdc-edge/v4l2
  elif [ "$arch" = arm64 ]; then
    command -v aarch64-linux-gnu-gcc >/dev/null || {
      echo "build-debs.sh: aarch64-linux-gnu-gcc not found (apt install gcc-aarch64-linux-gnu libc6-dev-arm64-cross)," \
        "or build with cross/build.sh and pass --no-build" >&2
      exit 2
    }
    # bindgen (V4L2 camera source) must parse the aarch64 headers, not the host's.
    CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=${CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER:-aarch64-linux-gnu-gcc} \
      BINDGEN_EXTRA_CLANG_ARGS_aarch64_unknown_linux_gnu=${BINDGEN_EXTRA_CLANG_ARGS_aarch64_unknown_linux_gnu:---sysroot=/usr/aarch64-linux-gnu} \
      cargo build --release --locked --target "$triple" -p jmdc-edge -p jmdc-cloud --features jmdc-edge/v4l2
  else
    cargo build --release --locked --target "$triple" -p jmdc-edge -p jmdc-cloud --features jmdc-edge/v4l2
  fi
fi

# --- 3. right architecture, or nothing ------------------------------------------------------------
elf_machine() {
  readelf -h "$1" 2>/dev/null | sed -n 's/^ *Machine: *//p'
}
bad=0
for file in "$bin_dir/jmdc-edge" "$bin_dir/jmdc-cloud" "$ort"; do
  if [ ! -f "$file" ]; then
    echo "build-debs.sh: $file is missing (build it, or drop --no-build)" >&2
    bad=1
    continue
  fi
  got=$(elf_machine "$file")
  if [ "$got" != "$machine" ]; then
    echo "build-debs.sh: $file is built for '${got:-not an ELF file}', not $arch ($machine)" >&2
    bad=1
  fi
done
[ "$bad" -eq 0 ] || exit 1

# --- 4. the packages ------------------------------------------------------------------------------
rm -f "$out"/jmdc-common_*_"$arch".deb "$out"/jmdc-edge_*_"$arch".deb "$out"/jmdc-cloud_*_"$arch".deb
debs=()
make_deb() {
  local log deb
  log=$(mktemp "${TMPDIR:-/tmp}/jmdc-cargo-deb.XXXXXX")
  if ! cargo deb --no-build --locked "${target_args[@]}" --output "$out" "$@" >"$log" 2>&1; then
    cat "$log" >&2
    rm -f "$log"
    echo "build-debs.sh: cargo deb $* failed" >&2
    exit 1
  fi
  # cargo-deb prints the path of the package it wrote as its last line.
  deb=$(grep '\.deb$' "$log" | tail -n 1)
  rm -f "$log"
  [ -f "$deb" ] || { echo "build-debs.sh: cargo deb $* printed no package path" >&2; exit 1; }
  debs+=("$deb")
}
make_deb -p jmdc-core --variant "$arch"
make_deb -p jmdc-edge
make_deb -p jmdc-cloud

# --- 5. check and report --------------------------------------------------------------------------
"$here/check-deb.sh" --arch "$arch" "${run_check[@]}" "${install_check[@]}" "${debs[@]}"
for deb in "${debs[@]}"; do
  printf '%s\t%s bytes\n' "$deb" "$(stat -c %s "$deb")"
done
