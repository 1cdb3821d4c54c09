#!/usr/bin/env bash
# Offline checks of the systemd files in this folder (no systemd as PID 1, no network, a second or two):
#
#  1. `systemd-analyze verify` of jmdc-edge.service and jmdc-cloud.service, unmodified, inside a temporary
#     root that holds them under /etc/systemd/system, this host's stock units (for sysinit.target & co.),
#     /bin/kill (ExecReload=) and the *built* jmdc binaries at the installed paths /usr/bin/jmdc-edge and
#     /usr/bin/jmdc-cloud. Any output at all is a failure (verify exits 0 on unknown keys: it only warns).
#     A canary first: a copy with an unknown key must make verify print something, so a verify that
#     silently checks nothing cannot pass.
#     Then the settings the rest of jmdc relies on (Type=notify, watchdog, user, directories, ExecStart
#     lines, ORT_DISABLE_TELEMETRY=1, ...) must be present as exact lines.
#  2. The exposure score of `systemd-analyze security --offline=yes` for both units; above 2.5 fails.
#  3. jmdc.sysusers applied to the temporary root (creates user/group jmdc there), then jmdc.tmpfiles
#     applied to a root-owned 0600 /etc/jmdc/cloud-key.pem there: it must end up root:jmdc 0640.
#     Any output of either tool fails.
#
# Binaries: $JMDC_BIN_DIR if set, else target/release, else target/debug (under $CARGO_TARGET_DIR if set).
# Build them first: cargo build --release -p jmdc-edge -p jmdc-cloud (or a debug build).
# Exit 0 when everything passed, 1 on a failed check, 2 when a tool or binary is missing.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
max_exposure=2.5
units=(jmdc-edge.service jmdc-cloud.service)

fail=0
failed() {
  echo "FAIL: $*" >&2
  fail=1
}

for tool in systemd-analyze systemd-sysusers systemd-tmpfiles; do
  if ! command -v "$tool" >/dev/null; then
    echo "systemd/check.sh: $tool not found (apt install systemd)" >&2
    exit 2
  fi
done

# --- the binaries -----------------------------------------------------------------------------
target=${CARGO_TARGET_DIR:-$repo/target}
if [ -n "${JMDC_BIN_DIR:-}" ]; then
  bins=("$JMDC_BIN_DIR")
else
  bins=("$target/release" "$target/debug")
fi
bin=
for dir in "${bins[@]}"; do
  if [ -x "$dir/jmdc-edge" ] && [ -x "$dir/jmdc-cloud" ]; then
    bin=$dir
    break
  fi
done
if [ -z "$bin" ]; then
  echo "systemd/check.sh: no jmdc-edge and jmdc-cloud binaries in ${bins[*]}; build them first:" \
    "cargo build --release -p jmdc-edge -p jmdc-cloud" >&2
  exit 2
fi

# --- the temporary root -----------------------------------------------------------------------
root=$(mktemp -d "${TMPDIR:-/tmp}/jmdc-systemd-check.XXXXXX")
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/etc/systemd/system" "$root/usr/bin" "$root/usr/lib/systemd" "$root/bin" "$root/etc/jmdc"
stock=/usr/lib/systemd/system
[ -d "$stock" ] || stock=/lib/systemd/system
cp -r "$stock" "$root/usr/lib/systemd/system"
cp /bin/kill "$root/bin/kill"
for unit in "${units[@]}"; do
  cp "$here/$unit" "$root/etc/systemd/system/$unit"
done
for name in jmdc-edge jmdc-cloud; do
  # A hard link costs nothing; across file systems, copy.
  ln "$bin/$name" "$root/usr/bin/$name" 2>/dev/null || cp "$bin/$name" "$root/usr/bin/$name"
done
echo "systemd/check.sh: binaries from $bin; $(systemd-analyze --version | head -n1)"

# --- 1. verify ----------------------------------------------------------------------------------
# Canary: an unknown key must be reported.
sed 's/^\[Service\]$/[Service]\nNoSuchKeyForTheCanary=1/' "$here/jmdc-edge.service" \
  >"$root/etc/systemd/system/jmdc-canary.service"
canary=$(systemd-analyze verify --root="$root" jmdc-canary.service 2>&1 || true)
rm "$root/etc/systemd/system/jmdc-canary.service"
if [ -z "$canary" ]; then
  failed "systemd-analyze verify printed nothing for a unit with an unknown key: it checks nothing here"
fi

for unit in "${units[@]}"; do
  out=$(systemd-analyze verify --root="$root" "$unit" 2>&1) && rc=0 || rc=$?
  if [ "$rc" -ne 0 ] || [ -n "$out" ]; then
    failed "systemd-analyze verify $unit (exit $rc):"
    # Name the file in this folder, not its copy in the temporary root.
    printf '%s\n' "$out" | sed "s|$root/etc/systemd/system/|$here/|g" >&2
  else
    echo "ok   verify $unit"
  fi
done

# --- 1b. the settings the rest of jmdc relies on (docs/systemd.md) ---------------------------------
# shellcheck disable=SC2016 # $MAINPID is meant literally
common=('Type=notify' 'NotifyAccess=main' 'WatchdogSec=30s' 'Restart=on-failure'
  'ExecReload=/bin/kill -HUP $MAINPID' 'User=jmdc' 'Group=jmdc' 'ConfigurationDirectory=jmdc'
  'Environment=ORT_DISABLE_TELEMETRY=1' 'MemoryDenyWriteExecute=yes' 'CapabilityBoundingSet=')
edge=('ExecStart=/usr/bin/jmdc-edge run --config /etc/jmdc/edge.toml' 'StateDirectory=jmdc-edge'
  'RuntimeDirectory=jmdc-edge' 'SupplementaryGroups=video' 'TimeoutStopSec=20s')
cloud=('ExecStart=/usr/bin/jmdc-cloud serve --config /etc/jmdc/cloud.toml' 'StateDirectory=jmdc-cloud'
  'PrivateDevices=yes' 'TimeoutStopSec=15s')
check_lines() {
  local unit=$1 line missing=()
  shift
  for line in "$@"; do
    grep -qxF -- "$line" "$here/$unit" || missing+=("$line")
  done
  if [ "${#missing[@]}" -ne 0 ]; then
    failed "$unit lacks: $(printf '[%s] ' "${missing[@]}")"
  else
    echo "ok   settings $unit ($# lines)"
  fi
}
check_lines jmdc-edge.service "${common[@]}" "${edge[@]}"
check_lines jmdc-cloud.service "${common[@]}" "${cloud[@]}"

# --- 2. exposure --------------------------------------------------------------------------------
for unit in "${units[@]}"; do
  out=$(systemd-analyze security --offline=yes --root="$root" --no-pager "$unit" 2>&1) || true
  score=$(printf '%s\n' "$out" | sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')
  if [ -z "$score" ]; then
    failed "systemd-analyze security $unit printed no exposure level:"
    printf '%s\n' "$out" >&2
  elif awk -v s="$score" -v m="$max_exposure" 'BEGIN { exit !(s > m) }'; then
    failed "exposure of $unit is $score (> $max_exposure); the settings that cost most:"
    printf '%s\n' "$out" | grep '✗' >&2 || true
  else
    echo "ok   exposure $unit: $score (limit $max_exposure)"
  fi
done

# --- 3. sysusers and tmpfiles -------------------------------------------------------------------
out=$(systemd-sysusers --root="$root" "$here/jmdc.sysusers" 2>&1) && rc=0 || rc=$?
# sysusers reports what it created on stderr; anything else is a complaint.
out=$(printf '%s\n' "$out" | grep -v -e "^Creating group 'jmdc' with GID [0-9]*\.$" \
  -e "^Creating user 'jmdc' (jmdc split-inference services) with UID [0-9]* and GID [0-9]*\.$" || true)
entry=$(grep '^jmdc:' "$root/etc/passwd" || true)
if [ "$rc" -ne 0 ] || [ -n "$out" ]; then
  failed "systemd-sysusers jmdc.sysusers (exit $rc):"
  printf '%s\n' "$out" >&2
elif ! [[ "$entry" =~ ^jmdc:x:[0-9]+:[0-9]+:[^:]*:/nonexistent:/usr/sbin/nologin$ ]]; then
  failed "systemd-sysusers made no system user jmdc without home and login: '${entry}'"
else
  echo "ok   sysusers: $entry"
fi

key="$root/etc/jmdc/cloud-key.pem"
: >"$key"
chmod 0600 "$key"
out=$(systemd-tmpfiles --root="$root" --create "$here/jmdc.tmpfiles" 2>&1) && rc=0 || rc=$?
jmdc_gid=$(awk -F: '$1 == "jmdc" { print $3 }' "$root/etc/group")
got=$(stat -c '%a %u:%g' "$key")
if [ "$rc" -ne 0 ] || [ -n "$out" ]; then
  failed "systemd-tmpfiles --create jmdc.tmpfiles (exit $rc):"
  printf '%s\n' "$out" >&2
elif [ -z "$jmdc_gid" ] || [ "$got" != "640 0:$jmdc_gid" ]; then
  failed "jmdc.tmpfiles left cloud-key.pem as '$got', wanted '640 0:${jmdc_gid:-<no jmdc group>}'"
else
  echo "ok   tmpfiles: cloud-key.pem root:jmdc 0640"
fi

if [ "$fail" -ne 0 ]; then
  echo "systemd/check.sh: FAILED" >&2
  exit 1
fi
echo "systemd/check.sh: all checks passed"
