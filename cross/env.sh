# shellcheck shell=bash
# Shared by the cross/ scripts (sourced, not run): prerequisite checks and the environment a plain
# `cargo build --target aarch64-unknown-linux-gnu` needs on an x86_64 Debian/Ubuntu machine.
#
# Nothing here changes a native x86 build: every variable is specific to the aarch64 target triple.

# The only target these scripts know.
JMDC_CROSS_TARGET=aarch64-unknown-linux-gnu

# jmdc_die MESSAGE — one line on stderr, exit 1.
jmdc_die() {
    echo "error: $*" >&2
    exit 1
}

# jmdc_apt_install PKG... — installs the Debian packages that are missing, when running as root with
# apt-get (CI starts from a fresh Debian machine as root). Elsewhere it fails with one line naming them.
jmdc_apt_install() {
    local missing=() pkg
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1 && [ -z "${JMDC_NO_INSTALL:-}" ]; then
        echo "installing ${missing[*]} (apt-get)" >&2
        # A stale package list is the usual reason for a failed install: update first.
        apt-get update -qq >&2 || jmdc_die "apt-get update failed; install ${missing[*]} yourself"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2 ||
            jmdc_die "apt-get install ${missing[*]} failed"
    else
        jmdc_die "missing Debian packages: ${missing[*]} (sudo apt-get install ${missing[*]})"
    fi
}

# jmdc_need_cmd CMD HINT — fails with "CMD not found: HINT" unless CMD is on PATH.
jmdc_need_cmd() {
    command -v "$1" >/dev/null 2>&1 || jmdc_die "$1 not found: $2"
}

# jmdc_rust_target — adds the aarch64 standard library through rustup when it is missing.
jmdc_rust_target() {
    jmdc_need_cmd cargo "install Rust (https://rustup.rs) — rustc >= 1.95"
    if command -v rustup >/dev/null 2>&1; then
        if ! rustup target list --installed 2>/dev/null | grep -qx "$JMDC_CROSS_TARGET"; then
            rustup target add "$JMDC_CROSS_TARGET" >&2 || jmdc_die "rustup target add $JMDC_CROSS_TARGET failed"
        fi
    elif ! rustc --print target-libdir --target "$JMDC_CROSS_TARGET" >/dev/null 2>&1; then
        jmdc_die "no standard library for $JMDC_CROSS_TARGET: run 'rustup target add $JMDC_CROSS_TARGET'"
    fi
}

# jmdc_gcc_env — the variables for a build with the aarch64 GNU toolchain from Debian
# (gcc-aarch64-linux-gnu, libc6-dev-arm64-cross, linux-libc-dev-arm64-cross) and the host's libclang:
#   * the linker, the C compiler and archiver (ring's build script compiles C for the target);
#   * bindgen (v4l2-sys-mit, the V4L2 camera source) parses the target's headers: clang gets the
#     aarch64 triple and the cross sysroot, whose include/linux/videodev2.h is the one for arm64.
# Values already set in the environment win.
jmdc_gcc_env() {
    local sysroot=${JMDC_AARCH64_SYSROOT:-/usr/aarch64-linux-gnu}
    export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=${CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER:-aarch64-linux-gnu-gcc}
    export CC_aarch64_unknown_linux_gnu=${CC_aarch64_unknown_linux_gnu:-aarch64-linux-gnu-gcc}
    export AR_aarch64_unknown_linux_gnu=${AR_aarch64_unknown_linux_gnu:-aarch64-linux-gnu-ar}
    local clang_args="--target=aarch64-linux-gnu --sysroot=$sysroot"
    export BINDGEN_EXTRA_CLANG_ARGS_aarch64_unknown_linux_gnu=${BINDGEN_EXTRA_CLANG_ARGS_aarch64_unknown_linux_gnu:-$clang_args}
}

# jmdc_gcc_prereqs — everything the plain-cargo way needs, installed (root + apt) or named.
jmdc_gcc_prereqs() {
    if command -v apt-get >/dev/null 2>&1; then
        jmdc_apt_install gcc-aarch64-linux-gnu libc6-dev-arm64-cross linux-libc-dev-arm64-cross libclang-dev
    fi
    jmdc_need_cmd aarch64-linux-gnu-gcc "install gcc-aarch64-linux-gnu (Debian/Ubuntu) or set CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER"
    local sysroot=${JMDC_AARCH64_SYSROOT:-/usr/aarch64-linux-gnu}
    [ -f "$sysroot/include/linux/videodev2.h" ] ||
        jmdc_die "$sysroot/include/linux/videodev2.h missing: install linux-libc-dev-arm64-cross (or build with --no-default-features to drop the V4L2 camera source)"
    jmdc_rust_target
}

# jmdc_container_engine — prints docker or podman when one is installed AND its daemon/service
# answers (`info` succeeds within 20 s); prints nothing otherwise. CROSS_CONTAINER_ENGINE wins.
jmdc_container_engine() {
    local engine
    for engine in ${CROSS_CONTAINER_ENGINE:-docker podman}; do
        if command -v "$engine" >/dev/null 2>&1 && timeout 20 "$engine" info >/dev/null 2>&1; then
            echo "$engine"
            return 0
        fi
    done
    return 0
}
