#!/usr/bin/env bash
# Installs the amd64 jmdc packages for real and uses them, without touching this machine:
# run by `systemd/check-deb.sh --install` inside `unshare --mount`, it lays overlays over /etc,
# /usr and /var (upper layers under OVERLAY_DIR, thrown away with the mount namespace), then
#   1. dpkg -i the three packages: user/group jmdc, /etc/jmdc, /var/lib/jmdc-edge/incoming with the
#      right owners and modes, conffiles registered, no unit enabled;
#   2. installs them again (same-version upgrade: maintainer scripts are idempotent);
#   3. makes the cloud's TLS identity as the docs say, starts the installed jmdc-cloud and runs the
#      installed jmdc-edge, both as user jmdc with their default config paths, over loopback QUIC; a
#      drop-in per service only moves the cloud to a free loopback port; 8 PNG frames dropped into
#      the watched folder must all come back answered by the cloud, with the packaged ONNX Runtime;
#   4. dpkg -r (state kept), dpkg -P (state, conffiles and drop-in folders gone; your keys kept).
# Usage (as root, in a private mount namespace): install-test.sh OVERLAY_DIR COMMON.deb EDGE.deb CLOUD.deb
set -euo pipefail

[ $# -eq 4 ] || { echo "usage: install-test.sh OVERLAY_DIR COMMON.deb EDGE.deb CLOUD.deb" >&2; exit 2; }
ov=$1
shift
debs=("$@")

fail=0
failed() {
  echo "FAIL: install: $*" >&2
  fail=1
}
ok() {
  echo "ok   install: $*"
}
expect_stat() {
  local path=$1 want=$2 got
  got=$(stat -c '%a %U:%G' "$path" 2>/dev/null || echo "missing")
  if [ "$got" = "$want" ]; then
    ok "$path $got"
  else
    failed "$path is '$got', wanted '$want'"
  fi
}

# Refuse to run outside a private mount namespace: the overlays must not reach the real system.
if [ "$(readlink /proc/self/ns/mnt)" = "$(readlink /proc/1/ns/mnt)" ]; then
  echo "install-test.sh: not in a private mount namespace; run it through systemd/check-deb.sh --install" >&2
  exit 2
fi
for dir in etc usr var; do
  mkdir -p "$ov/$dir/upper" "$ov/$dir/work"
  mount -t overlay overlay -o "lowerdir=/$dir,upperdir=$ov/$dir/upper,workdir=$ov/$dir/work" "/$dir"
done
export DEBIAN_FRONTEND=noninteractive

# --- 1. install -------------------------------------------------------------------------------------
if ! out=$(timeout 120 dpkg -i "${debs[@]}" 2>&1); then
  printf '%s\n' "$out" >&2
  echo "FAIL: install: dpkg -i failed" >&2
  exit 1
fi
ok "dpkg -i jmdc-common jmdc-edge jmdc-cloud"
entry=$(getent passwd jmdc || true)
if [[ "$entry" =~ ^jmdc:x:[0-9]+:[0-9]+:[^:]*:/nonexistent:(/usr/sbin/nologin|/sbin/nologin|/bin/false)$ ]]; then
  ok "user $entry"
else
  failed "no system user jmdc without home and login: '$entry'"
fi
getent group jmdc >/dev/null || failed "no group jmdc"
expect_stat /etc/jmdc "755 root:root"
expect_stat /etc/jmdc/edge.toml "644 root:root"
expect_stat /etc/jmdc/cloud.toml "644 root:root"
expect_stat /var/lib/jmdc-edge "750 jmdc:jmdc"
expect_stat /var/lib/jmdc-edge/incoming "2770 jmdc:jmdc"
expect_stat /usr/lib/jmdc/libonnxruntime.so.1.31.1 "644 root:root"
for pkg in jmdc-edge jmdc-cloud; do
  conf=$(dpkg-query -W -f='${Conffiles}' "$pkg")
  grep -q "/etc/jmdc/${pkg#jmdc-}.toml [0-9a-f]" <<<"$conf" || failed "$pkg: dpkg lists no conffile /etc/jmdc/${pkg#jmdc-}.toml"
done
enabled=$(find /etc/systemd/system -name 'jmdc-*' 2>/dev/null || true)
if [ -n "$enabled" ]; then
  failed "units were enabled: $enabled"
else
  ok "no jmdc unit enabled (nothing under /etc/systemd/system)"
fi

# --- 2. again: idempotent maintainer scripts ---------------------------------------------------------
if ! out=$(timeout 120 dpkg -i "${debs[@]}" 2>&1); then
  printf '%s\n' "$out" >&2
  failed "second dpkg -i (same-version upgrade) failed"
else
  ok "second dpkg -i (upgrade path) succeeded"
fi
expect_stat /var/lib/jmdc-edge/incoming "2770 jmdc:jmdc"

# --- 3. use it ---------------------------------------------------------------------------------------
as_jmdc=(setpriv --reuid=jmdc --regid=jmdc --init-groups)
# The configs as shipped, read by the installed binaries from their default paths, as user jmdc.
for bin in jmdc-edge jmdc-cloud; do
  if out=$(env -i PATH=/usr/bin:/bin "${as_jmdc[@]}" "$bin" check-config --syntax-only 2>&1); then
    ok "$bin check-config (default path, as jmdc): $out"
  else
    failed "$bin check-config as jmdc: $out"
  fi
done

# The TLS identity as /etc/jmdc/cloud.toml tells the admin to make it, then tmpfiles as at boot.
jmdc-cloud gen-cert --cert /etc/jmdc/cloud-cert.pem --key /etc/jmdc/cloud-key.pem >/dev/null
systemd-tmpfiles --create jmdc.conf
expect_stat /etc/jmdc/cloud-key.pem "640 root:jmdc"
cp /etc/jmdc/cloud-cert.pem /etc/jmdc/cloud-ca.pem
# Device identity (the shipped cloud.toml requires it; docs/reliability.md).
jmdc-cloud gen-ca --cert /etc/jmdc/device-ca.pem --key "$ov/device-ca-key.pem" >/dev/null
jmdc-cloud gen-device-cert --ca-cert /etc/jmdc/device-ca.pem --ca-key "$ov/device-ca-key.pem" \
  --device install-test-edge --cert /etc/jmdc/device.pem --key /etc/jmdc/device-key.pem >/dev/null
chgrp jmdc /etc/jmdc/device-key.pem && chmod 0640 /etc/jmdc/device-key.pem

port=$(python3 -c 'import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
printf 'listen = "127.0.0.1:%s"\n' "$port" >/etc/jmdc/cloud.d/50-install-test.toml
printf '[cloud]\nendpoint = "127.0.0.1:%s"\nclient_cert = "/etc/jmdc/device.pem"\nclient_key = "/etc/jmdc/device-key.pem"\n' "$port" >/etc/jmdc/edge.d/50-install-test.toml

# 8 small PNG frames, written under hidden names and renamed into the watched folder.
python3 "$(dirname "$0")/test-frames.py" /var/lib/jmdc-edge/incoming 8
chown jmdc:jmdc /var/lib/jmdc-edge/incoming/*.png

cloud_log=$ov/cloud.log
: >"$cloud_log"
env -i PATH=/usr/bin:/bin "${as_jmdc[@]}" jmdc-cloud serve >"$cloud_log" 2>&1 &
cloud_pid=$!
for _ in $(seq 1 300); do
  grep -q "listening on" "$cloud_log" && break
  kill -0 "$cloud_pid" 2>/dev/null || break
  sleep 0.1
done
if ! grep -q "listening on 127.0.0.1:$port" "$cloud_log"; then
  failed "the installed jmdc-cloud did not start listening on 127.0.0.1:$port:"
  cat "$cloud_log" >&2
else
  ok "jmdc-cloud serve (as jmdc, /etc/jmdc/cloud.toml + cloud.d/) listening on 127.0.0.1:$port"
  if out=$(env -i PATH=/usr/bin:/bin timeout 120 "${as_jmdc[@]}" jmdc-edge run --limit 8 2>"$ov/edge.err"); then
    frames=$(grep -c '"frame"' <<<"$out" || true)
    cloud_frames=$(grep -c '"finished_on":"cloud"' <<<"$out" || true)
    if [ "$frames" -eq 8 ] && [ "$cloud_frames" -eq 8 ]; then
      ok "jmdc-edge run (as jmdc, /etc/jmdc/edge.toml + edge.d/): 8 frames from /var/lib/jmdc-edge/incoming, all finished by the cloud"
      grep '"frame"' <<<"$out" | head -n 1
      loaded=$(grep 'ONNX Runtime loaded' "$ov/edge.err" | head -n 1)
      if grep -Eq 'path=/usr/(bin/\.\./)?lib/jmdc/libonnxruntime\.so\.1\.31\.1' <<<"$loaded"; then
        ok "the edge loaded the packaged ONNX Runtime: ${loaded##*path=}"
      else
        failed "the edge did not load ONNX Runtime from /usr/lib/jmdc: '${loaded:-no \"ONNX Runtime loaded\" line on stderr}'"
      fi
    else
      failed "jmdc-edge run: $frames frame results, $cloud_frames finished by the cloud (want 8 and 8):"
      printf '%s\n' "$out" | head -n 20 >&2
      tail -n 20 "$ov/edge.err" >&2
    fi
  else
    failed "jmdc-edge run failed:"
    printf '%s\n' "$out" | tail -n 10 >&2
    tail -n 20 "$ov/edge.err" >&2
  fi
fi
if kill -0 "$cloud_pid" 2>/dev/null; then
  kill -TERM "$cloud_pid"
  for _ in $(seq 1 100); do
    kill -0 "$cloud_pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$cloud_pid" 2>/dev/null; then
    kill -KILL "$cloud_pid"
    failed "jmdc-cloud did not exit within 10 s of SIGTERM"
  fi
fi
wait "$cloud_pid" 2>/dev/null && rc=0 || rc=$?
if [ "$rc" -eq 0 ]; then
  ok "jmdc-cloud exited 0 on SIGTERM"
else
  failed "jmdc-cloud exited $rc on SIGTERM"
fi
rm -f /etc/jmdc/cloud.d/50-install-test.toml /etc/jmdc/edge.d/50-install-test.toml

# --- 4. remove, purge --------------------------------------------------------------------------------
if ! out=$(timeout 120 dpkg -r jmdc-edge jmdc-cloud jmdc-common 2>&1); then
  printf '%s\n' "$out" >&2
  failed "dpkg -r failed"
fi
[ ! -e /usr/bin/jmdc-edge ] || failed "/usr/bin/jmdc-edge is still there after dpkg -r"
[ -d /var/lib/jmdc-edge/incoming ] || failed "dpkg -r deleted /var/lib/jmdc-edge (only purge may)"
[ -f /etc/jmdc/edge.toml ] || failed "dpkg -r deleted the conffile /etc/jmdc/edge.toml (only purge may)"
ok "dpkg -r: binaries gone, state and conffiles kept"
if ! out=$(timeout 120 dpkg -P jmdc-edge jmdc-cloud jmdc-common 2>&1); then
  printf '%s\n' "$out" >&2
  failed "dpkg -P failed"
fi
for gone in /var/lib/jmdc-edge /etc/jmdc/edge.toml /etc/jmdc/cloud.toml /etc/jmdc/edge.d /etc/jmdc/cloud.d /usr/lib/jmdc /usr/share/jmdc; do
  [ ! -e "$gone" ] || failed "$gone is still there after dpkg -P"
done
[ -f /etc/jmdc/cloud-key.pem ] || failed "dpkg -P deleted the admin's /etc/jmdc/cloud-key.pem"
ok "dpkg -P: state, conffiles, drop-in folders, libraries and models gone; the admin's TLS files kept"

exit "$fail"
