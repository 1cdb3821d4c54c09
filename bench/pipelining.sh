#!/usr/bin/env bash
# Frames per second of jmdc-edge with 1, 2, 4 and 8 frames in flight, through the userspace link
# emulator (jmdc-linkemu) at a given one-way delay and rate, on the bundled 256 CIFAR-10 images.
# Usage: bench/pipelining.sh [delay_ms] [rate_mbit]      (defaults: 10 ms each way, 20 Mbit/s)
# Needs release binaries: cargo build --release -p jmdc-edge -p jmdc-cloud -p jmdc-bench
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
bin=${JMDC_BIN_DIR:-$root/target/release}
delay=${1:-10}
rate=${2:-20}
work=$(mktemp -d "${TMPDIR:-/tmp}/jmdc-bench.XXXXXX")
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
. scripts/lib.sh
port=$(free_udp_port)
start_cloud "$work" "$port" 2
pids+=("$cloud_pid")
"$bin/jmdc-linkemu" --upstream "127.0.0.1:$port" --delay-ms "$delay" --rate-mbit "$rate" > "$work/relay.addr" & pids+=($!)
for _ in $(seq 100); do [ -s "$work/relay.addr" ] && break; sleep 0.05; done
relay=$(head -1 "$work/relay.addr" | grep -oE '[0-9.]+:[0-9]+' | head -1)
sleep 0.5
printf '%-34s %10s %10s %12s %10s\n' "plan" "in flight" "frames/s" "mean ms" "fallbacks"
for plan in "variant=keep050,split=6,codec=int4" "variant=keep100,split=cloud-only"; do
  for n in 1 2 4 8; do
    cat > "$work/edge.toml" <<TOML
log_level = "warn"
[model]
packages_dir = "$root/models/packages"
name = "alexnet-cifar10"
[plan]
variant = "keep050"
split = 6
codec = "int4"
[cloud]
endpoint = "$relay"
ca_cert = "cert.pem"
client_cert = "device.pem"
client_key = "device-key.pem"
[source]
kind = "cifar"
path = "$root/models/samples/cifar10-test-256.bin"
[pipeline]
max_in_flight = $n
[metrics]
enabled = false
TOML
    "$bin/jmdc-edge" run --config "$work/edge.toml" --plan "$plan" --quiet --summary-json "$work/s.json" >/dev/null
    python3 - "$work/s.json" "$plan" "$n" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))[0]
print(f"{sys.argv[2]:<34} {sys.argv[3]:>10} {s['frames']/s['wall_s']:>10.1f} {s['total']['mean']/1e3:>12.2f} {s['fallbacks']:>10}")
PY
  done
done
