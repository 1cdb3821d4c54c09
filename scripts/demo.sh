#!/usr/bin/env bash
# The jmdc demo: a cloud worker and the edge on loopback, the bundled AlexNet package and the 256
# bundled CIFAR-10 (JPEG copy) test images, five plans compared side by side, then the adaptive loop.
# Run through `make demo` (which builds the release binaries and fetches ONNX Runtime first).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
bin=${JMDC_BIN_DIR:-$root/target/release}
work=$(mktemp -d "${TMPDIR:-/tmp}/jmdc-demo.XXXXXX")
cloud_pid=
cleanup() {
  if [ -n "$cloud_pid" ]; then kill "$cloud_pid" 2>/dev/null || true; wait "$cloud_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

. scripts/lib.sh
port=$(free_udp_port)

cat > "$work/edge.toml" <<TOML
device_id = "demo-edge"
log_level = "warn"
[model]
packages_dir = "$root/models/packages"
name = "alexnet-cifar10"
[plan]
variant = "keep100"
split = "edge-only"
[cloud]
endpoint = "127.0.0.1:$port"
server_name = "localhost"
ca_cert = "cert.pem"
client_cert = "device.pem"
client_key = "device-key.pem"
timeout_ms = 2000
[source]
kind = "cifar"
path = "$root/models/samples/cifar10-test-256.bin"
[runtime]
intra_op_threads = 1
TOML

# The same device with the adaptive loop on (min latency, top-1 floor 80 %).
sed 's/^device_id = "demo-edge"$/device_id = "demo-edge-adaptive"/' "$work/edge.toml" > "$work/edge-adaptive.toml"
cat >> "$work/edge-adaptive.toml" <<TOML
[adaptive]
enabled = true
objective = "min-latency"
accuracy_floor_pct = 80.0
TOML

start_cloud "$work" "$port" 1

echo "jmdc demo: alexnet-cifar10 on 256 CIFAR-10 (JPEG copy) test images, cloud worker on 127.0.0.1:$port (QUIC + TLS 1.3)"
echo
"$bin/jmdc-edge" run --config "$work/edge.toml" --quiet \
  --plan "split=edge-only" \
  --plan "split=cloud-only" \
  --plan "split=6,codec=f32,keep=1.0" \
  --plan "variant=keep050,split=6,keep=1.0,codec=int4" \
  --plan "variant=keep050,split=9,keep=0.5,codec=int4" \
  "$@"

echo "Adaptive loop (min latency, top-1 floor 80 %, plan chosen from live measurements):"
"$bin/jmdc-edge" run --config "$work/edge-adaptive.toml" --quiet
