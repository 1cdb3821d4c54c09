#!/usr/bin/env bash
# Fetch the ONNX Runtime shared library (libonnxruntime.so.1.31.1) that jmdc loads at run time.
#
# The library is taken from the PyPI wheel `onnxruntime==1.31.1` (no other download source is
# needed): `pip download --no-deps --only-binary=:all:` fetches the wheel, and the single file
# `onnxruntime/capi/libonnxruntime.so.1.31.1` is extracted into a cache folder.
#
# Usage: scripts/fetch-onnxruntime.sh [--arch x86_64|aarch64]   (alias: --target)
#
# Environment:
#   JMDC_ORT_CACHE  cache root (default: <repo>/.cache/onnxruntime); the library lands in
#                   $JMDC_ORT_CACHE/<arch>/libonnxruntime.so.1.31.1
#   PYTHON          python interpreter with pip (default: python3)
#
# Idempotent: if the library is already in the cache, nothing is downloaded.
# The last line printed on stdout is the absolute path of the .so.
# Needs only python3 with pip (unzip is used when present, otherwise python's zipfile).
set -euo pipefail

ORT_VERSION="1.31.1"
LIB_NAME="libonnxruntime.so.${ORT_VERSION}"

usage() {
    sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//' >&2
}

arch="$(uname -m)"
while [ $# -gt 0 ]; do
    case "$1" in
        --arch | --target)
            [ $# -ge 2 ] || { echo "error: $1 needs a value (x86_64 or aarch64)" >&2; exit 2; }
            arch="$2"
            shift 2
            ;;
        --arch=* | --target=*)
            arch="${1#*=}"
            shift
            ;;
        -h | --help)
            usage
            exit 0
            ;;
        *)
            echo "error: unknown argument '$1'" >&2
            usage
            exit 2
            ;;
    esac
done

case "$arch" in
    x86_64 | amd64 | x86_64-unknown-linux-gnu)
        arch="x86_64"
        platform="manylinux_2_28_x86_64"
        ;;
    aarch64 | arm64 | aarch64-unknown-linux-gnu)
        arch="aarch64"
        # Older platform tags only find old onnxruntime versions.
        platform="manylinux_2_28_aarch64"
        ;;
    *)
        echo "error: unsupported architecture '$arch' (supported: x86_64, aarch64)" >&2
        exit 2
        ;;
esac

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_root="$(cd "$script_dir/.." && pwd)"
cache_root="${JMDC_ORT_CACHE:-$repo_root/.cache/onnxruntime}"
dest_dir="$cache_root/$arch"
dest="$dest_dir/$LIB_NAME"

if [ -s "$dest" ]; then
    echo "onnxruntime $ORT_VERSION ($arch) already present" >&2
    (cd "$dest_dir" && echo "$(pwd)/$LIB_NAME")
    exit 0
fi

python="${PYTHON:-python3}"
if ! "$python" -m pip --version >/dev/null 2>&1; then
    echo "error: '$python -m pip' is not available; install python3 and pip" >&2
    exit 1
fi

mkdir -p "$dest_dir"
tmp="$(mktemp -d "${TMPDIR:-/tmp}/jmdc-ort.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT

pip_args=(download --no-deps --only-binary=:all: --disable-pip-version-check --dest "$tmp"
          "onnxruntime==$ORT_VERSION")
# Always name the platform and a python version: the .so inside is the same for every CPython
# wheel, and this works for cross downloads and for hosts whose python has no matching wheel.
pip_args+=(--platform "$platform" --python-version 3.11 --implementation cp --abi cp311)
echo "downloading onnxruntime==$ORT_VERSION wheel for $arch from PyPI..." >&2
"$python" -m pip "${pip_args[@]}" >&2

wheel="$(find "$tmp" -maxdepth 1 -name "onnxruntime-${ORT_VERSION}-*.whl" | head -n 1)"
if [ -z "$wheel" ]; then
    echo "error: pip did not produce an onnxruntime-$ORT_VERSION wheel for $arch" >&2
    exit 1
fi
case "$(basename "$wheel")" in
    *"_$arch.whl") ;;
    *)
        echo "error: downloaded wheel $(basename "$wheel") is not for $arch" >&2
        exit 1
        ;;
esac

member="onnxruntime/capi/$LIB_NAME"
if command -v unzip >/dev/null 2>&1; then
    unzip -q -o -j "$wheel" "$member" -d "$tmp/extract"
else
    "$python" - "$wheel" "$member" "$tmp/extract" <<'EOF'
import os, shutil, sys, zipfile
wheel, member, out = sys.argv[1:4]
os.makedirs(out, exist_ok=True)
with zipfile.ZipFile(wheel) as z, z.open(member) as src, \
        open(os.path.join(out, os.path.basename(member)), "wb") as dst:
    shutil.copyfileobj(src, dst)
EOF
fi

if [ ! -s "$tmp/extract/$LIB_NAME" ]; then
    echo "error: $member not found in $(basename "$wheel")" >&2
    exit 1
fi
# Atomic move into place so concurrent runs never see a half-written library.
cp "$tmp/extract/$LIB_NAME" "$dest.tmp.$$"
mv -f "$dest.tmp.$$" "$dest"
echo "installed $dest" >&2
(cd "$dest_dir" && echo "$(pwd)/$LIB_NAME")
