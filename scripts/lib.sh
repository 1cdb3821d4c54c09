# Shared shell helpers for scripts/demo.sh and bench/*.sh (source it; needs $root and $bin set).

# A free UDP port on loopback.
free_udp_port() {
  python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start_cloud WORK PORT WORKERS: writes the worker's certificate, a device CA and a device certificate
# (WORK/device.pem, WORK/device-key.pem) and a config into WORK, starts jmdc-cloud on
# 127.0.0.1:PORT in the background and waits (bounded) until it listens. Sets $cloud_pid.
start_cloud() {
  local work=$1 port=$2 workers=$3
  "$bin/jmdc-cloud" gen-cert --cert "$work/cert.pem" --key "$work/key.pem" >/dev/null
  # Device identity (mutual TLS): a device CA and one certificate for the demo's edge.
  "$bin/jmdc-cloud" gen-ca --cert "$work/device-ca.pem" --key "$work/device-ca-key.pem" >/dev/null
  "$bin/jmdc-cloud" gen-device-cert --ca-cert "$work/device-ca.pem" --ca-key "$work/device-ca-key.pem" \
    --device demo-edge --cert "$work/device.pem" --key "$work/device-key.pem" >/dev/null
  cat > "$work/cloud.toml" <<TOML
listen = "127.0.0.1:$port"
models_dir = "$root/models/packages"
log_level = "warn"
[tls]
cert = "cert.pem"
key = "key.pem"
client_ca = "device-ca.pem"
[runtime]
workers = $workers
intra_op_threads = 1
TOML
  "$bin/jmdc-cloud" serve --config "$work/cloud.toml" >"$work/cloud.log" 2>&1 &
  cloud_pid=$!
  local _
  for _ in $(seq 1 200); do
    if ! kill -0 "$cloud_pid" 2>/dev/null; then
      echo "jmdc-cloud exited early:" >&2; cat "$work/cloud.log" >&2; return 1
    fi
    if grep -q "listening" "$work/cloud.log" 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  echo "jmdc-cloud did not start listening within 10 s:" >&2; cat "$work/cloud.log" >&2; return 1
}
