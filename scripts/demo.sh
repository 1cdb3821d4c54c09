#!/usr/bin/env bash
# The jmdc demo: a cloud worker and the edge on loopback, a bundled model package (AlexNet by default,
# JMDC_DEMO_MODEL=vgg16-cifar10 for VGG16) and the 256 bundled CIFAR-10 (JPEG copy) test images,
# five plans compared side by side, then the adaptive loop.
# Run through `make demo` (which builds the release binaries and fetches ONNX Runtime first);
# `make demo MODEL=vgg16-cifar10` runs it on VGG16.
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

model=${JMDC_DEMO_MODEL:-alexnet-cifar10}
# Per model: the plans compared side by side and the adaptive loop's accuracy floor (a few points
# under the keep050 variant's calibrated top-1, so that pruned variants are allowed).
case "$model" in
  alexnet-cifar10)
    floor=80
    plans=(--plan "split=edge-only" --plan "split=cloud-only" --plan "split=6,codec=f32,keep=1.0"
           --plan "variant=keep050,split=6,keep=1.0,codec=int4"
           --plan "variant=keep050,split=9,keep=0.5,codec=int4") ;;
  vgg16-cifar10)
    # splits: 17 after pool3 (256x4x4), 24 after pool4 (512x2x2), 31 after pool5 (512)
    floor=88
    plans=(--plan "split=edge-only" --plan "split=cloud-only" --plan "split=17,codec=f32,keep=1.0"
           --plan "variant=keep050,split=24,keep=1.0,codec=int4"
           --plan "variant=keep050,split=31,keep=0.5,codec=int4") ;;
  *)
    echo "demo: unknown model '$model' (known: alexnet-cifar10, vgg16-cifar10)" >&2; exit 2 ;;
esac
if [ ! -f "$root/models/packages/$model/manifest.json" ]; then
  echo "demo: no package models/packages/$model" >&2; exit 2
fi

cat > "$work/edge.toml" <<TOML
device_id = "demo-edge"
log_level = "warn"
[model]
packages_dir = "$root/models/packages"
name = "$model"
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

# The same device with the adaptive loop on (min latency, top-1 floor $floor %).
sed 's/^device_id = "demo-edge"$/device_id = "demo-edge-adaptive"/' "$work/edge.toml" > "$work/edge-adaptive.toml"
cat >> "$work/edge-adaptive.toml" <<TOML
[adaptive]
enabled = true
objective = "min-latency"
accuracy_floor_pct = $floor.0
TOML

start_cloud "$work" "$port" 1

echo "jmdc demo: $model on 256 CIFAR-10 (JPEG copy) test images, cloud worker on 127.0.0.1:$port (QUIC + TLS 1.3)"
echo
"$bin/jmdc-edge" run --config "$work/edge.toml" --quiet "${plans[@]}" "$@"

echo "Adaptive loop (min latency, top-1 floor $floor %, plan chosen from live measurements):"
"$bin/jmdc-edge" run --config "$work/edge-adaptive.toml" --quiet
