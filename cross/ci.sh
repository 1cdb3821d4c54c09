#!/usr/bin/env bash
# The aarch64 part of CI in one command, from a fresh Debian 12 machine (as root: it installs what
# it needs with apt-get and rustup; as a user it names what to install):
#   1. prerequisites  aarch64 gcc toolchain + headers, libclang, qemu-user, the arm64 C++ runtime,
#                     rustup target aarch64-unknown-linux-gnu, the aarch64 ONNX Runtime (PyPI wheel)
#   2. build          cross/build.sh --release (cross when a container engine answers, else cargo + gcc)
#   3. check          cross/check-binaries.sh: sizes, aarch64, glibc <= 2.36 (Raspberry Pi OS Bookworm),
#                     also for the aarch64 libonnxruntime
#   4. qemu demo      cross/qemu-demo.sh: jmdc-cloud and jmdc-edge under qemu-aarch64 -cpu cortex-a72
#                     on loopback, checked (every split frame finished by the cloud, top-1)
# Prints the time of each step. Arguments after the command go to cross/qemu-demo.sh (e.g. --frames 32).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
# shellcheck source=cross/env.sh
. "$here/env.sh"
cd "$root"

timings=()
step_start=0
step() {
    step_start=$(date +%s)
    echo
    echo "== $*"
}
done_step() {
    timings+=("$(printf '%-40s %5d s' "$1" $(( $(date +%s) - step_start )))")
}
all_start=$(date +%s)

step "prerequisites"
if command -v apt-get >/dev/null 2>&1; then
    jmdc_apt_install gcc-aarch64-linux-gnu libc6-dev-arm64-cross linux-libc-dev-arm64-cross libclang-dev \
        binutils-aarch64-linux-gnu qemu-user libstdc++6-arm64-cross libgcc-s1-arm64-cross \
        python3 python3-pip unzip
fi
jmdc_rust_target
cargo --version
aarch64-linux-gnu-gcc --version | head -n 1
qemu-aarch64 --version | head -n 1
ort_lib=$(scripts/fetch-onnxruntime.sh --arch aarch64 | tail -n 1)
echo "aarch64 ONNX Runtime: $ort_lib"
done_step "prerequisites"

step "build (cross/build.sh --release)"
bin_dir=$(cross/build.sh --release | tail -n 1)
done_step "build aarch64 release"

step "binaries (cross/check-binaries.sh)"
cross/check-binaries.sh "$bin_dir"
cross/check-binaries.sh "$(dirname "$ort_lib")" "$(basename "$ort_lib")"
done_step "check binaries"

step "qemu demo (cross/qemu-demo.sh)"
JMDC_ORT_LIB="$ort_lib" cross/qemu-demo.sh --bin-dir "$bin_dir" "$@"
done_step "qemu demo"

echo
echo "== timings"
printf '%s\n' "${timings[@]}"
printf '%-40s %5d s\n' "total" $(( $(date +%s) - all_start ))
