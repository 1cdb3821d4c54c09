#!/usr/bin/env bash
# The loopback demo end to end with BOTH aarch64 binaries under user-mode emulation
# (qemu-aarch64 -cpu cortex-a72, the Raspberry Pi 4's core) and the aarch64 ONNX Runtime 1.31.1,
# on the bundled alexnet-cifar10 package and the bundled CIFAR-10 sample frames.
#
# Usage: cross/qemu-demo.sh [--bin-dir DIR] [--frames N] [--cpu CPU]
#   --bin-dir  the aarch64 jmdc-edge and jmdc-cloud (default target/aarch64-unknown-linux-gnu/release)
#   --frames   frames per run (default 64, at most 256)
#   --cpu      qemu CPU model (default cortex-a72; cortex-a76 is a Pi 5, cortex-a53 a Pi 3 / Zero 2)
#
# What runs, all under qemu-aarch64: `jmdc-cloud gen-cert`, `jmdc-cloud serve` on 127.0.0.1 (QUIC +
# TLS 1.3), then `jmdc-edge run` three times with JSON result lines:
#   1. keep100 edge-only                    — the reference: every class computed on the (emulated) edge
#   2. keep100 split@6 f32 through the cloud — lossless split: every frame must be finished by the
#      cloud (finished_on=cloud, no fallback, bytes sent, cloud time > 0) and give the same class as run 1
#   3. keep050 split@9 keep=0.5 int4 through the cloud — compressed split: every frame finished by the
#      cloud, top-1 at least MIN_TOP1 (default 70 %; the full test set gives about 82 %)
# Exits 1 with the reason when any check fails; prints the summaries and the per-frame checks.
#
# Environment: JMDC_ORT_LIB (the aarch64 libonnxruntime.so.1.31.1; default: fetched from the PyPI
# wheel by scripts/fetch-onnxruntime.sh --arch aarch64 into $JMDC_ORT_CACHE or .cache/onnxruntime),
# MIN_TOP1, QEMU (default qemu-aarch64), JMDC_QEMU_TIMEOUT (seconds per edge run, default 900).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
# shellcheck source=cross/env.sh
. "$here/env.sh"

usage() { sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//' >&2; }

bin_dir="$root/target/$JMDC_CROSS_TARGET/release"
frames=64
cpu=cortex-a72
while [ $# -gt 0 ]; do
    case "$1" in
        --bin-dir) [ $# -ge 2 ] || jmdc_die "--bin-dir needs a folder"; bin_dir="$2"; shift 2 ;;
        --frames) [ $# -ge 2 ] || jmdc_die "--frames needs a number"; frames="$2"; shift 2 ;;
        --cpu) [ $# -ge 2 ] || jmdc_die "--cpu needs a qemu CPU model"; cpu="$2"; shift 2 ;;
        -h | --help) usage; exit 0 ;;
        *) usage; jmdc_die "unknown argument '$1'" ;;
    esac
done
case "$frames" in
    '' | *[!0-9]*) jmdc_die "--frames must be a whole number, got '$frames'" ;;
esac
{ [ "$frames" -ge 1 ] && [ "$frames" -le 256 ]; } || jmdc_die "--frames must be 1..256 (the sample file has 256), got $frames"
bin_dir="$(cd "$bin_dir" 2>/dev/null && pwd)" || jmdc_die "--bin-dir: no such folder"
for b in jmdc-edge jmdc-cloud; do
    [ -x "$bin_dir/$b" ] || jmdc_die "$bin_dir/$b missing: build it with cross/build.sh --release"
done
min_top1=${MIN_TOP1:-70}
edge_timeout=${JMDC_QEMU_TIMEOUT:-900}

# --- prerequisites: qemu-user, the arm64 C/C++ runtime (ONNX Runtime needs libstdc++), python3.
qemu=${QEMU:-qemu-aarch64}
arm_lib=${JMDC_AARCH64_SYSROOT:-/usr/aarch64-linux-gnu}/lib
if command -v apt-get >/dev/null 2>&1; then
    command -v "$qemu" >/dev/null 2>&1 || jmdc_apt_install qemu-user
    { [ -e "$arm_lib/libstdc++.so.6" ] && [ -e "$arm_lib/libgcc_s.so.1" ]; } ||
        jmdc_apt_install libc6-arm64-cross libstdc++6-arm64-cross libgcc-s1-arm64-cross
fi
jmdc_need_cmd "$qemu" "install qemu-user (Debian/Ubuntu: apt-get install qemu-user)"
jmdc_need_cmd python3 "install python3 (used to pick a free port and check the JSON results)"
for f in ld-linux-aarch64.so.1 libc.so.6 libstdc++.so.6 libgcc_s.so.1; do
    [ -e "$arm_lib/$f" ] || jmdc_die "$arm_lib/$f missing: install libc6-arm64-cross libstdc++6-arm64-cross libgcc-s1-arm64-cross"
done

ort_lib=${JMDC_ORT_LIB:-}
if [ -z "$ort_lib" ]; then
    ort_lib=$("$root/scripts/fetch-onnxruntime.sh" --arch aarch64 | tail -n 1) ||
        jmdc_die "could not fetch the aarch64 ONNX Runtime (scripts/fetch-onnxruntime.sh --arch aarch64)"
fi
[ -s "$ort_lib" ] || jmdc_die "aarch64 ONNX Runtime library $ort_lib does not exist"

packages="$root/models/packages"
samples="$root/models/samples/cifar10-test-256.bin"
[ -f "$packages/alexnet-cifar10/manifest.json" ] || jmdc_die "$packages/alexnet-cifar10/manifest.json missing"
[ -f "$samples" ] || jmdc_die "$samples missing"

work=$(mktemp -d "${TMPDIR:-/tmp}/jmdc-qemu.XXXXXX")
cloud_pid=
cleanup() {
    if [ -n "$cloud_pid" ]; then kill "$cloud_pid" 2>/dev/null || true; wait "$cloud_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

# --- the qemu prefix: the arm64 libraries, and a fake /proc/cpuinfo. ONNX Runtime reads
# /proc/cpuinfo at start and crashes on the host's x86 one; qemu -L looks up every absolute path the
# guest opens inside the prefix first, so it sees these ARM lines (four Cortex-A72 cores, as a Pi 4).
prefix="$work/prefix"
mkdir -p "$prefix/proc" "$work/bin"
ln -s "$arm_lib" "$prefix/lib"
for i in 0 1 2 3; do
    cat >> "$prefix/proc/cpuinfo" <<CPUINFO
processor	: $i
BogoMIPS	: 108.00
Features	: fp asimd evtstrm crc32 cpuid
CPU implementer	: 0x41
CPU architecture: 8
CPU variant	: 0x0
CPU part	: 0xd08
CPU revision	: 3

CPUINFO
done
# Wrappers: no binfmt registration is needed (or assumed); each one execs qemu on the aarch64 binary.
for b in jmdc-edge jmdc-cloud; do
    cat > "$work/bin/$b" <<SH
#!/bin/sh
exec "$qemu" -cpu "$cpu" -L "$prefix" "$bin_dir/$b" "\$@"
SH
    chmod +x "$work/bin/$b"
done
file_arch=$("$qemu" -cpu "$cpu" -L "$prefix" "$bin_dir/jmdc-edge" --version 2>&1) ||
    jmdc_die "$bin_dir/jmdc-edge does not run under $qemu -cpu $cpu: $file_arch"
echo "jmdc qemu demo: $file_arch and $("$work/bin/jmdc-cloud" --version) (aarch64) under $("$qemu" --version | head -n 1), -cpu $cpu"
echo "ONNX Runtime: $ort_lib"

port=$(python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$work/bin/jmdc-cloud" gen-cert --cert "$work/cert.pem" --key "$work/key.pem" >/dev/null ||
    jmdc_die "jmdc-cloud gen-cert failed under qemu"

cat > "$work/cloud.toml" <<TOML
listen = "127.0.0.1:$port"
models_dir = "$packages"
log_level = "warn"
[tls]
# The qemu check exercises inference, not device identity (make test covers mutual TLS).
client_auth = "off"
cert = "cert.pem"
key = "key.pem"
[runtime]
onnxruntime = "$ort_lib"
workers = 1
intra_op_threads = 1
TOML

cat > "$work/edge.toml" <<TOML
device_id = "qemu-edge"
log_level = "warn"
[model]
packages_dir = "$packages"
name = "alexnet-cifar10"
[plan]
variant = "keep100"
split = "edge-only"
[cloud]
endpoint = "127.0.0.1:$port"
server_name = "localhost"
ca_cert = "cert.pem"
# Emulation is 10-50x slower than a real core: give each frame plenty of time before a fallback.
timeout_ms = 30000
connect_timeout_ms = 30000
[source]
kind = "cifar"
path = "$samples"
limit = $frames
[runtime]
onnxruntime = "$ort_lib"
intra_op_threads = 1
[output]
per_frame = true
format = "json"
file = "results.jsonl"
[metrics]
enabled = false
TOML

t0=$(date +%s)
"$work/bin/jmdc-cloud" serve --config "$work/cloud.toml" >"$work/cloud.out" 2>"$work/cloud.log" &
cloud_pid=$!
# Wait (bounded: 180 s, the models load under emulation) until the worker is bound and ready.
ready=
for _ in $(seq 1 1800); do
    if ! kill -0 "$cloud_pid" 2>/dev/null; then
        cat "$work/cloud.out" "$work/cloud.log" >&2
        jmdc_die "jmdc-cloud exited early under qemu (output above)"
    fi
    if grep -q "listening" "$work/cloud.out" "$work/cloud.log" 2>/dev/null; then ready=1; break; fi
    sleep 0.1
done
[ -n "$ready" ] || { cat "$work/cloud.log" >&2; jmdc_die "jmdc-cloud did not report 'listening' within 180 s"; }
echo "jmdc-cloud (aarch64, qemu) listening on 127.0.0.1:$port after $(( $(date +%s) - t0 )) s"
echo

# run_edge NAME PLAN — one edge run under qemu; its result lines land in $work/NAME.jsonl.
run_edge() {
    local name=$1 plan=$2 start rc=0
    start=$(date +%s)
    rm -f "$work/results.jsonl"
    timeout "$edge_timeout" "$work/bin/jmdc-edge" run --config "$work/edge.toml" --plan "$plan" \
        --summary-json "$work/$name.summary.json" >"$work/$name.out" 2>"$work/$name.log" || rc=$?
    cat "$work/$name.out"
    if [ "$rc" -ne 0 ]; then
        cat "$work/$name.log" >&2
        [ "$rc" -eq 124 ] && jmdc_die "jmdc-edge run ($plan) did not finish within $edge_timeout s under qemu"
        jmdc_die "jmdc-edge run ($plan) exited with status $rc under qemu (log above)"
    fi
    [ -f "$work/results.jsonl" ] || jmdc_die "jmdc-edge run ($plan) wrote no results file"
    mv "$work/results.jsonl" "$work/$name.jsonl"
    echo "($name: $(( $(date +%s) - start )) s wall under qemu, including ONNX Runtime and model load)"
    echo
}

# The V4L2 camera source is compiled in (feature `v4l2`, enabled by cross/build.sh; bindgen on the arm64 headers):
# pointed at /dev/null it must get as far as the V4L2 ioctls and refuse the device, not report a
# build without V4L2. (No camera exists here; a real one is tested on a Pi only.)
sed -e 's/^kind = "cifar"$/kind = "v4l2"/' -e 's|^path = ".*"$|path = "/dev/null"|' "$work/edge.toml" >"$work/edge-v4l2.toml"
v4l2_out=$(timeout 300 "$work/bin/jmdc-edge" run --config "$work/edge-v4l2.toml" --limit 1 2>&1 || true)
if grep -q "no V4L2 support" <<<"$v4l2_out" || ! grep -q "/dev/null: " <<<"$v4l2_out"; then
    echo "$v4l2_out" >&2
    jmdc_die "the aarch64 jmdc-edge did not try the V4L2 device (output above)"
fi
echo "V4L2 source present: $(grep -m 1 "/dev/null: " <<<"$v4l2_out" | sed 's/^ *//')"
echo

run_edge edge-only "variant=keep100,split=edge-only"
run_edge split-f32 "variant=keep100,split=6,keep=1.0,codec=f32"
run_edge split-int4 "variant=keep050,split=9,keep=0.5,codec=int4"

kill -0 "$cloud_pid" 2>/dev/null || { cat "$work/cloud.log" >&2; jmdc_die "jmdc-cloud died during the runs"; }

# --- the checks, on the per-frame JSON lines.
python3 - "$work" "$frames" "$min_top1" <<'PY'
import json, sys
work, frames, min_top1 = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])

def load(name):
    rows = []
    with open(f"{work}/{name}.jsonl") as f:
        for n, line in enumerate(f, 1):
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                sys.exit(f"error: {name}.jsonl line {n} is not JSON ({e}): {line[:120]!r}")
    if len(rows) != frames:
        sys.exit(f"error: {name}: {len(rows)} result lines, expected {frames}")
    if [r["frame"] for r in rows] != list(range(frames)):
        sys.exit(f"error: {name}: frame ids are not 0..{frames - 1} in order")
    return rows

def top1(rows):
    return 100.0 * sum(r["class"] == r.get("label") for r in rows) / len(rows)

def all_cloud(name, rows):
    bad = [r for r in rows
           if r["finished_on"] != "cloud" or r["fallback"] or r["bytes"] <= 0 or r["latency_ms"]["cloud"] <= 0]
    if bad:
        r = bad[0]
        sys.exit(f"error: {name}: {len(bad)} of {len(rows)} frames were not finished by the cloud "
                 f"(first: frame {r['frame']} finished_on={r['finished_on']} fallback={r['fallback']} "
                 f"bytes={r['bytes']} cloud_ms={r['latency_ms']['cloud']})")

ref, f32, int4 = load("edge-only"), load("split-f32"), load("split-int4")
if any(r["finished_on"] != "edge" or r["bytes"] != 0 for r in ref):
    sys.exit("error: edge-only: some frame was sent to the cloud")
all_cloud("split-f32", f32)
all_cloud("split-int4", int4)
diff = [a["frame"] for a, b in zip(ref, f32) if a["class_index"] != b["class_index"]]
if diff:
    sys.exit(f"error: the lossless split through the cloud disagrees with edge-only on frames {diff[:10]}")
if top1(int4) < min_top1:
    sys.exit(f"error: split-int4 top-1 {top1(int4):.2f} % is below {min_top1} %")

def mean(rows, key):
    return sum(r["latency_ms"][key] for r in rows) / len(rows)

print(f"{'run (aarch64 under qemu)':<34}{'frames':>7}{'top-1 %':>9}{'cloud':>7}{'fallbk':>7}"
      f"{'edge ms':>9}{'net ms':>8}{'cloud ms':>9}{'total ms':>9}{'bytes/fr':>9}")
for name, rows in (("keep100 edge-only", ref), ("keep100 split@6 f32", f32), ("keep050 split@9 keep=0.5 int4", int4)):
    print(f"{name:<34}{len(rows):>7}{top1(rows):>9.2f}{sum(r['finished_on'] == 'cloud' for r in rows):>7}"
          f"{sum(r['fallback'] for r in rows):>7}{mean(rows, 'edge'):>9.2f}{mean(rows, 'network'):>8.2f}"
          f"{mean(rows, 'cloud'):>9.2f}{mean(rows, 'total'):>9.2f}{sum(r['bytes'] for r in rows) / len(rows):>9.1f}")
print()
print(f"ok: {frames} frames per run; both splits finished every frame in the aarch64 cloud worker "
      f"(no fallbacks); the lossless split matches edge-only on every frame; int4 split top-1 "
      f"{top1(int4):.2f} % >= {min_top1} %")
PY
echo "qemu demo passed in $(( $(date +%s) - t0 )) s"
