#!/usr/bin/env bash
# Check jmdc Debian packages (jmdc-common, jmdc-edge, jmdc-cloud) without installing them:
#  - control: Package, Architecture (= --arch, or the same for all), jmdc-common (= VERSION) in the
#    Depends of edge and cloud equal to the given jmdc-common's version;
#  - every expected file: binaries and ONNX Runtime built for the architecture's ELF machine, the
#    unit, sysusers/tmpfiles files, /etc/jmdc/*.toml listed in DEBIAN/conffiles, every model file the
#    manifest lists with its sha256;
#  - nothing unexpected: each package holds only its allow-listed paths; no *.pem/*.key, no build
#    paths (target/, .cache/, .git);
#  - maintainer scripts: `sh -n` clean; the service is never enabled or started by them;
#  - the shipped configs pass the packaged binaries' own `check-config` (natively, or for arm64
#    under qemu-aarch64 when installed); binary sizes and the newest GLIBC_ version they need
#    (must be ≤ 2.36, Raspberry Pi OS Bookworm).
# With --run: also run the packaged binaries from the extracted packages (no install): the packaged
# jmdc-cloud with the shipped cloud.toml and the packaged jmdc-edge with the shipped edge.toml, over
# loopback QUIC; JMDC_* environment overrides only move the files to the extraction folder and the
# cloud to a free loopback port. 8 PNG frames in the edge's watched folder must all be finished by
# the cloud, with the packaged ONNX Runtime (found next to the binary in ../lib/jmdc). arm64 packages
# on an x86 host run under `qemu-aarch64 -cpu cortex-a72` with a prefix folder holding the aarch64
# libraries and an ARM /proc/cpuinfo (ONNX Runtime needs one; see ../shared/ENVIRONMENT.md).
# With --install (root, amd64 packages on an x86_64 host): also install the packages for real with
# dpkg inside a private mount namespace whose /etc, /usr and /var are overlays (nothing reaches the
# real system), then check the user, folders and modes the maintainer scripts made, that nothing was
# enabled, run the installed cloud and edge as user jmdc over loopback QUIC with the shipped configs
# (plus a drop-in for the listen address), and purge.
#
# Usage: systemd/check-deb.sh [--arch amd64|arm64] [--run] [--install] DEB...
# Exit 0: all checks passed; 1: a check failed (each failure is printed); 2: bad usage / missing tool.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
max_glibc=2.36

usage() {
  sed -n '2,27p' "$0" | sed 's/^# \{0,1\}//' >&2
}

arch=
install=0
run=0
debs=()
while [ $# -gt 0 ]; do
  case "$1" in
    --arch) [ $# -ge 2 ] || { usage; exit 2; }; arch=$2; shift 2 ;;
    --arch=*) arch=${1#*=}; shift ;;
    --install) install=1; shift ;;
    --run) run=1; shift ;;
    -h | --help) usage; exit 0 ;;
    -*) echo "check-deb.sh: unknown option '$1'" >&2; usage; exit 2 ;;
    *) debs+=("$1"); shift ;;
  esac
done
[ ${#debs[@]} -gt 0 ] || { echo "check-deb.sh: no packages given" >&2; usage; exit 2; }
for tool in dpkg-deb readelf python3; do
  command -v "$tool" >/dev/null || { echo "check-deb.sh: $tool not found" >&2; exit 2; }
done

fail=0
failed() {
  echo "FAIL: $*" >&2
  fail=1
}
ok() {
  echo "ok   $*"
}

work=$(mktemp -d "${TMPDIR:-/tmp}/jmdc-check-deb.XXXXXX")
trap 'rm -rf "$work"' EXIT

machine_of() {
  case "$1" in
    amd64) echo "Advanced Micro Devices X86-64" ;;
    arm64) echo "AArch64" ;;
    *) echo "unknown architecture $1" ;;
  esac
}
elf_machine() {
  readelf -h "$1" 2>/dev/null | sed -n 's/^ *Machine: *//p'
}
# The newest GLIBC_x.y symbol version an ELF file needs.
glibc_needed() {
  readelf -V --wide "$1" 2>/dev/null | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -V | tail -n 1
}
version_le() {
  [ "$(printf '%s\n%s\n' "$1" "$2" | sort -V | head -n 1)" = "$1" ]
}

# Allowed paths per package (extended regular expressions on the path without the leading "./").
allowed_common='^(usr/lib/jmdc/libonnxruntime\.so\.1\.31\.1|usr/share/jmdc/models/[a-z0-9._-]+/([a-z0-9._-]+/)?[A-Za-z0-9._-]+\.(onnx|json)|usr/lib/sysusers\.d/jmdc\.conf|usr/lib/tmpfiles\.d/jmdc\.conf|usr/share/doc/jmdc/systemd\.md|usr/share/doc/jmdc-common/[A-Za-z0-9._-]+)$'
allowed_edge='^(usr/bin/jmdc-edge|usr/lib/systemd/system/jmdc-edge\.service|etc/jmdc/edge\.toml|etc/jmdc/edge\.d/README|usr/share/doc/jmdc-edge/[A-Za-z0-9._-]+)$'
allowed_cloud='^(usr/bin/jmdc-cloud|usr/lib/systemd/system/jmdc-cloud\.service|etc/jmdc/cloud\.toml|etc/jmdc/cloud\.d/README|usr/share/doc/jmdc-cloud/[A-Za-z0-9._-]+)$'

common_version=
declare -A root_of=()
declare -A depends_of=()

for deb in "${debs[@]}"; do
  if [ ! -f "$deb" ]; then
    failed "$deb: no such file"
    continue
  fi
  name=$(basename "$deb")
  pkg=$(dpkg-deb -f "$deb" Package 2>/dev/null || true)
  deb_arch=$(dpkg-deb -f "$deb" Architecture 2>/dev/null || true)
  version=$(dpkg-deb -f "$deb" Version 2>/dev/null || true)
  if [ -z "$pkg" ]; then
    failed "$name: not a Debian package (dpkg-deb -f found no Package field)"
    continue
  fi
  echo "== $name: $pkg $version $deb_arch"
  if [ -z "$arch" ]; then
    arch=$deb_arch
  fi
  if [ "$deb_arch" != "$arch" ]; then
    failed "$name: Architecture is '$deb_arch', expected '$arch'"
  fi
  machine=$(machine_of "$arch")

  root="$work/$pkg"
  rm -rf "$root"
  mkdir -p "$root"
  dpkg-deb -x "$deb" "$root"
  dpkg-deb -e "$deb" "$root/DEBIAN"
  root_of[$pkg]=$root
  depends_of[$pkg]=$(dpkg-deb -f "$deb" Depends 2>/dev/null || true)

  # Regular files and symlinks in the data archive, without "./".
  files=$(dpkg-deb --fsys-tarfile "$deb" | tar -t | sed -n 's|^\./||p' | grep -v '/$' || true)

  case "$pkg" in
    jmdc-common) allowed=$allowed_common; common_version=$version ;;
    jmdc-edge) allowed=$allowed_edge ;;
    jmdc-cloud) allowed=$allowed_cloud ;;
    *) failed "$name: unknown package '$pkg' (expected jmdc-common, jmdc-edge or jmdc-cloud)"; continue ;;
  esac

  # --- nothing unexpected ---
  unexpected=$(printf '%s\n' "$files" | grep -Ev "$allowed" || true)
  if [ -n "$unexpected" ]; then
    failed "$name: unexpected files:"
    printf '  %s\n' "$unexpected" >&2
  fi
  forbidden=$(printf '%s\n' "$files" | grep -E '\.pem$|\.key$|(^|/)(target|\.cache|\.git)(/|$)' || true)
  if [ -n "$forbidden" ]; then
    failed "$name: keys or build paths in the package:"
    printf '  %s\n' "$forbidden" >&2
  fi

  # --- expected files ---
  need_file() {
    if [ ! -f "$root/$1" ]; then
      failed "$name: missing /$1"
      return 1
    fi
  }
  need_elf() {
    need_file "$1" || return 0
    local got glibc size
    got=$(elf_machine "$root/$1")
    if [ "$got" != "$machine" ]; then
      failed "$name: /$1 is built for '${got:-not an ELF file}', not $arch ($machine)"
      return 0
    fi
    glibc=$(glibc_needed "$root/$1")
    size=$(stat -c %s "$root/$1")
    if [ -n "$glibc" ] && ! version_le "$glibc" "$max_glibc"; then
      failed "$name: /$1 needs GLIBC_$glibc, newer than $max_glibc (Raspberry Pi OS Bookworm)"
    else
      ok "/$1: $machine, $size bytes, needs GLIBC_${glibc:-none} (≤ $max_glibc)"
    fi
  }
  need_conffile() {
    need_file "$1" || return 0
    if ! grep -qx "/$1" "$root/DEBIAN/conffiles" 2>/dev/null; then
      failed "$name: /$1 is not listed in DEBIAN/conffiles"
    else
      ok "/$1 is a conffile"
    fi
  }
  need_script() {
    if [ ! -f "$root/DEBIAN/$1" ]; then
      failed "$name: missing maintainer script $1"
      return 0
    fi
    if ! sh -n "$root/DEBIAN/$1" 2>"$work/sh-n"; then
      failed "$name: DEBIAN/$1 is not valid sh: $(cat "$work/sh-n")"
    fi
    if grep -q '#DEBHELPER#' "$root/DEBIAN/$1"; then
      failed "$name: DEBIAN/$1 still holds the #DEBHELPER# token"
    fi
    # Nothing may be enabled or started by surprise: no start snippet, no unconditional enable.
    # Comments are ignored, except debhelper's enable snippet, which says what it does in one.
    local starts
    # shellcheck disable=SC2016 # a literal $_dh_action is searched for
    starts=$(grep -Env '^[[:space:]]*#' "$root/DEBIAN/$1" |
      grep -E 'deb-systemd-invoke (start|restart|\$_dh_action)|systemctl( --[a-z]+)* (enable|start|restart)' || true)
    starts+=$(grep -n 'was-enabled defaults to true' "$root/DEBIAN/$1" || true)
    if [ -n "$starts" ]; then
      failed "$name: DEBIAN/$1 enables or starts a service:"
      printf '%s\n' "$starts" >&2
    fi
  }

  case "$pkg" in
    jmdc-common)
      need_elf usr/lib/jmdc/libonnxruntime.so.1.31.1
      need_file usr/lib/sysusers.d/jmdc.conf || true
      need_file usr/lib/tmpfiles.d/jmdc.conf || true
      # The units' Documentation=file:/usr/share/doc/jmdc/systemd.md.
      need_file usr/share/doc/jmdc/systemd.md || true
      need_script postinst
      need_script postrm
      # Every model package: manifest.json and each file it lists, with its sha256.
      models="$root/usr/share/jmdc/models"
      manifests=$(find "$models" -mindepth 2 -maxdepth 2 -name manifest.json 2>/dev/null | sort)
      if [ -z "$manifests" ]; then
        failed "$name: no model package (/usr/share/jmdc/models/*/manifest.json)"
      fi
      for manifest in $manifests; do
        if out=$(python3 - "$manifest" <<'EOF'
import hashlib, json, os, sys
manifest = sys.argv[1]
base = os.path.dirname(manifest)
m = json.load(open(manifest))
problems, count = [], 0
for v in m["variants"]:
    entries = [v["full_model"]] if v.get("full_model") else []
    entries += v["layers"]
    for e in entries:
        path = os.path.join(base, v["dir"], e["file"])
        count += 1
        if not os.path.isfile(path):
            problems.append("missing " + os.path.relpath(path, base))
        elif hashlib.sha256(open(path, "rb").read()).hexdigest() != e["sha256"]:
            problems.append("sha256 mismatch " + os.path.relpath(path, base))
if problems:
    print("; ".join(problems))
    sys.exit(1)
print(f"{m['name']}: {count} files of {len(m['variants'])} variants match the manifest")
EOF
        ); then
          ok "models $out"
        else
          failed "$name: model package $(basename "$(dirname "$manifest")"): $out"
        fi
      done
      ;;
    jmdc-edge | jmdc-cloud)
      short=${pkg#jmdc-}
      need_elf "usr/bin/$pkg"
      need_file "usr/lib/systemd/system/$pkg.service" && ok "/usr/lib/systemd/system/$pkg.service"
      need_conffile "etc/jmdc/$short.toml"
      need_conffile "etc/jmdc/$short.d/README"
      need_script postinst
      need_script postrm
      need_script prerm
      ;;
  esac

  # The shipped configuration must be accepted by the packaged binary (check-config parses the
  # file, its drop-in folder and the environment, and validates every value). JMDC_* variables of
  # the caller are cleared so that they cannot mask a mistake.
  if [ "$pkg" != jmdc-common ] && [ -f "$root/usr/bin/$pkg" ] && [ -f "$root/etc/jmdc/$short.toml" ]; then
    runner=()
    if [ "$arch" = arm64 ] && [ "$(uname -m)" != aarch64 ]; then
      if command -v qemu-aarch64 >/dev/null && [ -d /usr/aarch64-linux-gnu/lib ]; then
        runner=(qemu-aarch64 -L /usr/aarch64-linux-gnu)
      else
        runner=(skip)
      fi
    elif [ "$arch" = amd64 ] && [ "$(uname -m)" != x86_64 ]; then
      runner=(skip)
    fi
    if [ "${runner[0]:-}" = skip ]; then
      echo "skip $pkg check-config: cannot run $arch binaries here (apt install qemu-user libc6-dev-arm64-cross)"
    elif out=$(clear_jmdc=(); for var in $(compgen -e | grep '^JMDC_' || true); do clear_jmdc+=(-u "$var"); done
      env "${clear_jmdc[@]}" "${runner[@]}" "$root/usr/bin/$pkg" check-config --syntax-only --config "$root/etc/jmdc/$short.toml" 2>&1); then
      ok "$pkg check-config /etc/jmdc/$short.toml${runner[0]:+ (under ${runner[0]})}: $(printf '%s' "$out" | tail -n 1)"
    else
      failed "$name: the packaged $pkg rejects the shipped /etc/jmdc/$short.toml: $out"
    fi
  fi
done

# --- versions: edge and cloud depend on exactly the given jmdc-common -----------------------------
for pkg in jmdc-edge jmdc-cloud; do
  [ -n "${depends_of[$pkg]+x}" ] || continue
  dep=$(printf '%s\n' "${depends_of[$pkg]}" | tr ',' '\n' | sed -n 's/^ *jmdc-common (= \(.*\))$/\1/p')
  if [ -z "$dep" ]; then
    failed "$pkg: Depends has no 'jmdc-common (= VERSION)': ${depends_of[$pkg]}"
  elif [ -n "$common_version" ] && [ "$dep" != "$common_version" ]; then
    failed "$pkg depends on jmdc-common (= $dep) but the jmdc-common given is $common_version" \
      "(update depends in [package.metadata.deb] of daemon/ and cloud/Cargo.toml)"
  else
    ok "$pkg depends on jmdc-common (= $dep)"
  fi
done

# --- --run: the packaged binaries, from the extracted packages -----------------------------------
run_packages() {
  local base=$work/run root prefix port cloud_pid out frames cloud_frames loaded rc n
  local -a runner=()
  root=$base/root
  mkdir -p "$root"
  for pkg in jmdc-common jmdc-edge jmdc-cloud; do
    cp -a "${root_of[$pkg]}/." "$root/"
  done
  rm -rf "$root/DEBIAN"
  if [ "$arch" = arm64 ] && [ "$(uname -m)" != aarch64 ]; then
    if ! command -v qemu-aarch64 >/dev/null || [ ! -e /usr/aarch64-linux-gnu/lib/ld-linux-aarch64.so.1 ]; then
      failed "--run: arm64 binaries need qemu-aarch64 and the aarch64 libraries (apt install qemu-user libc6-dev-arm64-cross libstdc++6-arm64-cross)"
      return 0
    fi
    prefix=$base/qemu-prefix
    mkdir -p "$prefix/proc"
    ln -s /usr/aarch64-linux-gnu/lib "$prefix/lib"
    # Four Cortex-A72 cores, as on a Raspberry Pi 4: ONNX Runtime reads this at start.
    for n in 0 1 2 3; do
      printf 'processor\t: %s\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0xd08\nCPU revision\t: 3\n\n' "$n"
    done >"$prefix/proc/cpuinfo"
    runner=(qemu-aarch64 -cpu cortex-a72 -L "$prefix")
  elif [ "$arch" = amd64 ] && [ "$(uname -m)" != x86_64 ]; then
    failed "--run: cannot run amd64 binaries on $(uname -m)"
    return 0
  fi

  "${runner[@]}" "$root/usr/bin/jmdc-cloud" gen-cert --cert "$root/etc/jmdc/cloud-cert.pem" \
    --key "$root/etc/jmdc/cloud-key.pem" >/dev/null
  # Device identity as the shipped cloud.toml requires it: a device CA, the edge's certificate,
  # an empty deny list (tmpfiles creates it on a real install).
  "${runner[@]}" "$root/usr/bin/jmdc-cloud" gen-ca --cert "$root/etc/jmdc/device-ca.pem" \
    --key "$base/device-ca-key.pem" >/dev/null
  "${runner[@]}" "$root/usr/bin/jmdc-cloud" gen-device-cert --ca-cert "$root/etc/jmdc/device-ca.pem" \
    --ca-key "$base/device-ca-key.pem" --device check-deb-edge \
    --cert "$root/etc/jmdc/device.pem" --key "$root/etc/jmdc/device-key.pem" >/dev/null
  : >"$root/etc/jmdc/revoked-devices.txt"
  mkdir -p "$root/var/lib/jmdc-edge/incoming"
  python3 "$here/debian/test-frames.py" "$root/var/lib/jmdc-edge/incoming" 8
  port=$(python3 -c 'import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

  : >"$base/cloud.log"
  env -i PATH="$PATH" JMDC_CLOUD__LISTEN="127.0.0.1:$port" \
    JMDC_CLOUD__MODELS_DIR="$root/usr/share/jmdc/models" \
    JMDC_CLOUD__TLS__CERT="$root/etc/jmdc/cloud-cert.pem" JMDC_CLOUD__TLS__KEY="$root/etc/jmdc/cloud-key.pem" \
    JMDC_CLOUD__TLS__CLIENT_CA="$root/etc/jmdc/device-ca.pem" \
    JMDC_CLOUD__TLS__REVOKED="$root/etc/jmdc/revoked-devices.txt" \
    "${runner[@]}" "$root/usr/bin/jmdc-cloud" serve --config "$root/etc/jmdc/cloud.toml" >"$base/cloud.log" 2>&1 &
  cloud_pid=$!
  for _ in $(seq 1 600); do
    grep -q "listening on" "$base/cloud.log" && break
    kill -0 "$cloud_pid" 2>/dev/null || break
    sleep 0.1
  done
  if ! grep -q "listening on 127.0.0.1:$port" "$base/cloud.log"; then
    failed "--run: the packaged jmdc-cloud did not listen on 127.0.0.1:$port within 60 s:"
    tail -n 20 "$base/cloud.log" >&2
  else
    ok "--run: packaged jmdc-cloud${runner[0]:+ (under ${runner[*]:0:3})} listening on 127.0.0.1:$port"
    if out=$(env -i PATH="$PATH" JMDC_EDGE__MODEL__PACKAGES_DIR="$root/usr/share/jmdc/models" \
      JMDC_EDGE__CLOUD__ENDPOINT="127.0.0.1:$port" JMDC_EDGE__CLOUD__CA_CERT="$root/etc/jmdc/cloud-cert.pem" \
      JMDC_EDGE__CLOUD__CLIENT_CERT="$root/etc/jmdc/device.pem" JMDC_EDGE__CLOUD__CLIENT_KEY="$root/etc/jmdc/device-key.pem" \
      JMDC_EDGE__SOURCE__PATH="$root/var/lib/jmdc-edge/incoming" \
      timeout 300 "${runner[@]}" "$root/usr/bin/jmdc-edge" run --config "$root/etc/jmdc/edge.toml" --limit 8 \
      2>"$base/edge.err"); then
      frames=$(grep -c '"frame"' <<<"$out" || true)
      cloud_frames=$(grep -c '"finished_on":"cloud"' <<<"$out" || true)
      loaded=$(grep 'ONNX Runtime loaded' "$base/edge.err" | head -n 1)
      if [ "$frames" -ne 8 ] || [ "$cloud_frames" -ne 8 ]; then
        failed "--run: jmdc-edge gave $frames results, $cloud_frames finished by the cloud (want 8 and 8):"
        printf '%s\n' "$out" | head -n 10 >&2
        tail -n 10 "$base/edge.err" >&2
      elif ! grep -q "path=$root/usr/bin/\.\./lib/jmdc/libonnxruntime\.so\.1\.31\.1" <<<"$loaded"; then
        failed "--run: the edge did not load the packaged ONNX Runtime: '${loaded:-no \"ONNX Runtime loaded\" line}'"
      else
        ok "--run: packaged jmdc-edge with the shipped edge.toml: 8 frames from the folder source, all finished by the cloud, packaged ONNX Runtime"
        grep '"frame"' <<<"$out" | head -n 1
      fi
    else
      failed "--run: jmdc-edge run failed:"
      tail -n 20 "$base/edge.err" >&2
    fi
  fi
  if kill -0 "$cloud_pid" 2>/dev/null; then
    kill -TERM "$cloud_pid"
    for _ in $(seq 1 100); do
      kill -0 "$cloud_pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -0 "$cloud_pid" 2>/dev/null && kill -KILL "$cloud_pid"
  fi
  wait "$cloud_pid" 2>/dev/null && rc=0 || rc=$?
  if [ "$rc" -eq 0 ]; then
    ok "--run: jmdc-cloud exited 0 on SIGTERM"
  else
    failed "--run: jmdc-cloud exited $rc on SIGTERM (or was killed after 10 s)"
  fi
}
if [ "$run" -eq 1 ]; then
  if [ -z "${root_of[jmdc-common]+x}" ] || [ -z "${root_of[jmdc-edge]+x}" ] || [ -z "${root_of[jmdc-cloud]+x}" ]; then
    failed "--run needs all three packages"
  else
    run_packages
  fi
fi

# --- --install: the real thing, in a throw-away overlay of / --------------------------------------
if [ "$install" -eq 1 ]; then
  for pkg in jmdc-common jmdc-edge jmdc-cloud; do
    [ -n "${root_of[$pkg]+x}" ] || failed "--install needs all three packages (missing $pkg)"
  done
  if [ "$(id -u)" -ne 0 ] || [ "$arch" != amd64 ] || [ "$(uname -m)" != x86_64 ]; then
    failed "--install needs root and amd64 packages on an x86_64 host (here: uid $(id -u), $arch on $(uname -m))"
  elif ! command -v unshare >/dev/null; then
    failed "--install needs unshare (util-linux)"
  elif [ "$fail" -eq 0 ]; then
    abs_debs=()
    for deb in "${debs[@]}"; do
      abs_debs+=("$(cd "$(dirname "$deb")" && pwd)/$(basename "$deb")")
    done
    if unshare --mount --propagation private --fork \
      "$here/debian/install-test.sh" "$work/overlay" "${abs_debs[@]}"; then
      ok "installed, ran and purged in an overlay (see above)"
    else
      failed "the install test failed (see above)"
    fi
  fi
fi

if [ "$fail" -ne 0 ]; then
  echo "check-deb.sh: FAILED" >&2
  exit 1
fi
echo "check-deb.sh: all checks passed"
