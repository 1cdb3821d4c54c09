#!/usr/bin/env bash
# Build jmdc-edge, jmdc-cloud and jmdc-linkemu for a Raspberry Pi (aarch64-unknown-linux-gnu, 64-bit
# Raspberry Pi OS Bookworm) from an x86_64 Linux machine.
#
# Usage: cross/build.sh [--release] [--target aarch64-unknown-linux-gnu] [--engine auto|cross|cargo]
#                       [-- EXTRA CARGO ARGS]
#
#   --release   optimised build (the workspace's release profile: thin LTO, stripped)
#   --target    only aarch64-unknown-linux-gnu is supported (the default)
#   --engine    auto (default): `cross` when `cross` is installed and docker/podman answers, else cargo
#               with the aarch64 gcc toolchain; cross / cargo force one way
#   after --     passed to the build (the V4L2 camera source, feature jmdc-edge/v4l2, is always enabled here)
#
# Output: target/aarch64-unknown-linux-gnu/{release,debug}/{jmdc-edge,jmdc-cloud,jmdc-linkemu};
# the last line on stdout is that folder. The cargo way installs its Debian packages when run as
# root (CI) and otherwise names what to install. Environment: CARGO (default cargo), CROSS (default
# cross), CROSS_CONTAINER_ENGINE, JMDC_AARCH64_SYSROOT (default /usr/aarch64-linux-gnu).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
# shellcheck source=cross/env.sh
. "$here/env.sh"

usage() { sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//' >&2; }

profile=debug
engine=auto
extra=()
while [ $# -gt 0 ]; do
    case "$1" in
        --release) profile=release; shift ;;
        --target)
            [ $# -ge 2 ] || jmdc_die "--target needs a value ($JMDC_CROSS_TARGET)"
            [ "$2" = "$JMDC_CROSS_TARGET" ] || jmdc_die "unsupported target '$2' (supported: $JMDC_CROSS_TARGET)"
            shift 2 ;;
        --target=*)
            [ "${1#*=}" = "$JMDC_CROSS_TARGET" ] || jmdc_die "unsupported target '${1#*=}' (supported: $JMDC_CROSS_TARGET)"
            shift ;;
        --engine)
            [ $# -ge 2 ] || jmdc_die "--engine needs a value (auto, cross or cargo)"
            engine="$2"; shift 2 ;;
        --engine=*) engine="${1#*=}"; shift ;;
        -h | --help) usage; exit 0 ;;
        --) shift; extra=("$@"); break ;;
        *) usage; jmdc_die "unknown argument '$1'" ;;
    esac
done
case "$engine" in
    auto | cross | cargo) ;;
    *) jmdc_die "unknown --engine '$engine' (auto, cross or cargo)" ;;
esac

cross_bin=${CROSS:-cross}
if [ "$engine" = auto ]; then
    engine=cargo
    if command -v "$cross_bin" >/dev/null 2>&1; then
        container=$(jmdc_container_engine)
        if [ -n "$container" ]; then
            engine=cross
        else
            echo "cross is installed but no container engine answers (docker/podman info); using cargo + aarch64-linux-gnu-gcc" >&2
        fi
    fi
fi

args=(build --target "$JMDC_CROSS_TARGET" -p jmdc-edge -p jmdc-cloud -p jmdc-bench --bins --locked --features jmdc-edge/v4l2)
[ "$profile" = release ] && args+=(--release)
args+=("${extra[@]}")

cd "$root"
start=$(date +%s)
if [ "$engine" = cross ]; then
    jmdc_need_cmd "$cross_bin" "cargo install cross --locked (and docker or podman)"
    container=$(jmdc_container_engine)
    [ -n "$container" ] || jmdc_die "no container engine answers: start docker or podman (or use --engine cargo)"
    export CROSS_CONTAINER_ENGINE=$container
    # The cross configuration lives in cross/, not at the workspace root.
    export CROSS_CONFIG="$root/cross/Cross.toml"
    echo "building with $cross_bin ($container): ${args[*]}" >&2
    "$cross_bin" "${args[@]}" >&2
else
    jmdc_gcc_prereqs
    jmdc_gcc_env
    echo "building with ${CARGO:-cargo} + $CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER: ${args[*]}" >&2
    "${CARGO:-cargo}" "${args[@]}" >&2
fi

out="$root/target/$JMDC_CROSS_TARGET/$profile"
for bin in jmdc-edge jmdc-cloud jmdc-linkemu; do
    [ -x "$out/$bin" ] || jmdc_die "the build did not produce $out/$bin"
done
echo "built in $(( $(date +%s) - start )) s with $engine: $out/{jmdc-edge,jmdc-cloud,jmdc-linkemu}" >&2
echo "$out"
