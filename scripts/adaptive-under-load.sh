#!/usr/bin/env bash
# Runs the adaptive loop's emulated test (daemon/tests/adaptive_emulated.rs) N times in a row
# (default 20) while `make test` runs over and over as load (in a worktree of HEAD), and prints each run's result and
# reaction times. Exit status 1 when any run failed. Usage: scripts/adaptive-under-load.sh [N]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-20}
out=${OUT_DIR:-target/adaptive-under-load}
mkdir -p "$out"
make ort >/dev/null
export ORT_DYLIB_PATH=${ORT_DYLIB_PATH:-$PWD/.cache/onnxruntime/x86_64/libonnxruntime.so.1.31.1}
bin=$(cargo test -p jmdc-edge --test adaptive_emulated --no-run --message-format=json 2>/dev/null |
    python3 -c 'import json,sys
for l in sys.stdin:
    m=json.loads(l)
    if m.get("reason")=="compiler-artifact" and m["target"]["name"]=="adaptive_emulated" and m.get("executable"): print(m["executable"])' | tail -1)
[ -x "$bin" ] || { echo "adaptive_emulated test binary not built" >&2; exit 2; }
# A copy, so that builds here meanwhile do not replace it under the runs.
cp "$bin" "$out/adaptive_emulated.bin"
bin="$PWD/$out/adaptive_emulated.bin"
stop="$PWD/$out/stop"
rm -f "$stop"
# The load runs in a worktree of HEAD with its own target folder: a first full build, then
# `make test` over and over, whatever is edited here meanwhile.
load_dir=$(mktemp -d /tmp/jmdc-load.XXXXXX)
git worktree add --detach "$load_dir/src" HEAD >/dev/null
mkdir -p "$load_dir/src/.cache" && cp -r .cache/onnxruntime "$load_dir/src/.cache/"
(
    cd "$load_dir/src"
    i=0
    while [ ! -e "$stop" ] && [ "$i" -lt 50 ]; do
        i=$((i + 1))
        if make test >"$load_dir/load-$i.log" 2>&1; then echo "load: make test #$i passed"; else echo "load: make test #$i FAILED ($load_dir/load-$i.log)"; fi
    done
) &
load=$!
cleanup() {
    touch "$stop"
    kill "$load" 2>/dev/null || true
    pkill -P "$load" 2>/dev/null || true
    git worktree remove --force "$load_dir/src" 2>/dev/null || true
}
trap cleanup EXIT
sleep 20 # let the load start compiling and running
failed=0
for i in $(seq 1 "$runs"); do
    if (cd daemon && timeout 300 "$bin" --nocapture) >"$out/run-$i.log" 2>&1; then r=ok; else r=FAILED; failed=$((failed + 1)); fi
    echo "run $i: $r; $(grep -E '^0.5 Mbit/s: lighter|^20 Mbit/s: |explored' "$out/run-$i.log" | tr '\n' ';')"
done
touch "$stop"
echo "$((runs - failed)) of $runs passed"
[ "$failed" -eq 0 ]
