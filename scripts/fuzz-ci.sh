#!/usr/bin/env bash
# Short fuzzing run of every libFuzzer target in core/fuzz and cloud/fuzz (docs/reliability.md,
# "Fuzzing"): installs cargo-fuzz if absent, builds both fuzz crates with stable Rust
# (RUSTC_BOOTSTRAP=1 for the -Z flags cargo-fuzz passes), runs each target for a fixed time and
# fails on any crash, timeout or out-of-memory. Prints executions per target.
#
# Environment:
#   FUZZ_SECONDS     time per target (default 30)
#   FUZZ_JOBS        targets run at once (default: the number of CPUs)
#   FUZZ_TARGETS     space-separated subset, e.g. "deny_list codec_decode" (default: all)
#   FUZZ_SANITIZER   address (default) or none
#   FUZZ_TARGET_DIR  build folder shared by both crates (default target/fuzz)
#   FUZZ_OPT_LEVEL   -Copt-level of the instrumented build (default 1: a third of the build time
#                    of cargo-fuzz's 3, for this short run)
#
# Found crashes are kept in <crate>/fuzz/artifacts/<target>/; reproduce one with
#   (cd cloud && RUSTC_BOOTSTRAP=1 cargo fuzz run <target> fuzz/artifacts/<target>/crash-…)
# New corpus entries go to <crate>/fuzz/corpus/<target>/ (not committed); the committed seeds in
# <crate>/fuzz/seeds/<target>/ are read too.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

seconds=${FUZZ_SECONDS:-30}
jobs=${FUZZ_JOBS:-$(nproc)}
sanitizer=${FUZZ_SANITIZER:-address}
target_dir=${FUZZ_TARGET_DIR:-$repo/target/fuzz}
opt_level=${FUZZ_OPT_LEVEL:-1}
# cloud first: its dependencies are a superset of core's, so core's build then reuses most of them
# (the other order builds many of them twice, with different features: 624 s instead of 477 s).
crates=(cloud core)

case "$seconds" in '' | *[!0-9]*) echo "FUZZ_SECONDS must be a whole number" >&2; exit 2 ;; esac
case "$jobs" in '' | *[!0-9]* | 0) echo "FUZZ_JOBS must be at least 1" >&2; exit 2 ;; esac

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi
export RUSTC_BOOTSTRAP=1
triple=$(rustc -vV | sed -n 's/^host: //p')
bin_dir=$target_dir/$triple/release
build_flags=(--target-dir "$target_dir" --sanitizer "$sanitizer")

# Every target as "crate target", optionally filtered by FUZZ_TARGETS.
targets=()
for crate in "${crates[@]}"; do
    for t in $(cd "$crate" && cargo fuzz list); do
        if [ -z "${FUZZ_TARGETS:-}" ] || [[ " $FUZZ_TARGETS " == *" $t "* ]]; then
            targets+=("$crate $t")
        fi
    done
done
if [ "${#targets[@]}" -eq 0 ]; then
    echo "no fuzz target matches FUZZ_TARGETS='${FUZZ_TARGETS:-}'" >&2
    exit 2
fi

start=$(date +%s)
for crate in "${crates[@]}"; do
    [[ " ${targets[*]} " == *" $crate "* ]] || continue
    # The fuzz crates are their own workspaces; start from the main lock file so that they build
    # (and fuzz) the dependency versions the product ships.
    [ -f "$crate/fuzz/Cargo.lock" ] || cp Cargo.lock "$crate/fuzz/Cargo.lock"
    echo "== building $crate/fuzz (sanitizer $sanitizer, opt-level $opt_level)"
    (cd "$crate" && RUSTFLAGS="-Copt-level=$opt_level ${RUSTFLAGS:-}" \
        cargo fuzz build "${build_flags[@]}")
done
built=$(date +%s)
echo "== built in $((built - start)) s"

logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
export ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_odr_violation=0

# Runs one target; its libFuzzer output goes to $logs/<target>.log, its exit status to .rc.
fuzz_one() {
    local crate=$1 t=$2
    local corpus=$crate/fuzz/corpus/$t seeds=$crate/fuzz/seeds/$t
    local artifacts=$crate/fuzz/artifacts/$t
    mkdir -p "$corpus" "$artifacts"
    local dirs=("$corpus")
    [ -d "$seeds" ] && dirs+=("$seeds")
    local rc=0
    "$bin_dir/$t" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 -artifact_prefix="$artifacts/" "${dirs[@]}" \
        >"$logs/$t.log" 2>&1 || rc=$?
    echo "$rc" >"$logs/$t.rc"
}

echo "== fuzzing ${#targets[@]} targets, ${seconds} s each, $jobs at a time"
running=0
for entry in "${targets[@]}"; do
    # shellcheck disable=SC2086 # "crate target"
    fuzz_one $entry &
    running=$((running + 1))
    if [ "$running" -ge "$jobs" ]; then
        wait -n || true
        running=$((running - 1))
    fi
done
wait

failed=0
printf '%-22s %-6s %12s %10s %8s  %s\n' target crate executions "exec/s" corpus result
for entry in "${targets[@]}"; do
    read -r crate t <<<"$entry"
    log=$logs/$t.log
    rc=$(cat "$logs/$t.rc" 2>/dev/null || echo 99)
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    corpus=$(grep -o 'corp: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
    if [ "$rc" = 0 ]; then
        result=ok
    else
        result="FAILED (exit $rc)"
        failed=$((failed + 1))
    fi
    printf '%-22s %-6s %12s %10s %8s  %s\n' "$t" "$crate" "${execs:-?}" "${rate:-?}" \
        "${corpus:-?}" "$result"
done
for entry in "${targets[@]}"; do
    read -r crate t <<<"$entry"
    if [ "$(cat "$logs/$t.rc" 2>/dev/null || echo 99)" != 0 ]; then
        echo
        echo "== $crate/$t failed:"
        grep -m 1 -A 2 -E "panicked at|ERROR: libFuzzer|ERROR: AddressSanitizer" "$logs/$t.log" || true
        echo "…"
        tail -n 12 "$logs/$t.log"
        echo "artifacts: $crate/fuzz/artifacts/$t/"
    fi
done
echo "== total $(($(date +%s) - start)) s (build $((built - start)) s)"
if [ "$failed" -gt 0 ]; then
    echo "$failed fuzz target(s) failed" >&2
    exit 1
fi
