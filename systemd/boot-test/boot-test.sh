#!/bin/bash
# Boot this host's own OS tree (read-only lower layer, tmpfs upper layer) as a systemd-nspawn container
# with the jmdc units installed exactly as packaged, run inner-test.sh there (start, READY, watchdog,
# reload, SIGKILL restart, SIGSTOP → watchdog restart, stop), collect its log in $JMDC_NSPAWN_WORK/out.
# Needs root, release binaries (cargo build --release), ffmpeg and systemd-nspawn (package
# systemd-container; set SYSTEMD_NSPAWN to an unpacked copy). Not part of CI: CI has no systemd-nspawn.
set -euo pipefail
export wt; wt=$(cd "$(dirname "$0")/../.." && pwd)
export bin=${JMDC_BIN_DIR:-$wt/target/release}
export n=${JMDC_NSPAWN_WORK:-/tmp/jmdc-nspawn}
export nspawn=${SYSTEMD_NSPAWN:-systemd-nspawn}
rm -rf "$n/out"; mkdir -p "$n/out"
cp "$wt/systemd/boot-test/inner-test.sh" "$n/inner-test.sh"
unshare -m --propagation private bash -euo pipefail -c '
mkdir -p $n/ovl; mount -t tmpfs -o size=2g tmpfs $n/ovl
mkdir -p $n/ovl/up $n/ovl/work $n/ovl/root
mount -t overlay overlay -o lowerdir=/,upperdir=$n/ovl/up,workdir=$n/ovl/work $n/ovl/root
r=$n/ovl/root
install -m 0755 $bin/jmdc-edge $bin/jmdc-cloud $r/usr/bin/
install -d $r/usr/lib/jmdc $r/usr/share/jmdc/models $r/etc/jmdc/edge.d $r/etc/jmdc/cloud.d
install -m 0644 $wt/.cache/onnxruntime/x86_64/libonnxruntime.so.1.31.1 $r/usr/lib/jmdc/
cp -r $wt/models/packages/alexnet-cifar10 $r/usr/share/jmdc/models/
install -m 0644 $wt/models/samples/cifar10-test-256.bin $r/usr/share/jmdc/cifar10-test-256.bin
install -m 0644 $wt/systemd/jmdc-edge.service $wt/systemd/jmdc-cloud.service $r/usr/lib/systemd/system/
install -m 0644 $wt/systemd/jmdc.sysusers $r/usr/lib/sysusers.d/jmdc.conf
install -m 0644 $wt/systemd/jmdc.tmpfiles $r/usr/lib/tmpfiles.d/jmdc.conf
$bin/jmdc-cloud gen-cert --cert $r/etc/jmdc/cloud-cert.pem --key $r/etc/jmdc/cloud-key.pem >/dev/null
chmod 0600 $r/etc/jmdc/cloud-key.pem; chown root:root $r/etc/jmdc/cloud-key.pem
cp $r/etc/jmdc/cloud-cert.pem $r/etc/jmdc/cloud-ca.pem
cat > $r/etc/jmdc/cloud.toml <<TOML
listen = "127.0.0.1:4433"
models_dir = "/usr/share/jmdc/models"
log_level = "info"
[tls]
client_auth = "off"
cert = "cloud-cert.pem"
key = "cloud-key.pem"
[runtime]
workers = 1
intra_op_threads = 1
TOML
cat > $r/etc/jmdc/edge.toml <<TOML
device_id = "nspawn-edge"
log_level = "info"
[model]
packages_dir = "/usr/share/jmdc/models"
name = "alexnet-cifar10"
[plan]
variant = "keep050"
split = 6
keep_ratio = 1.0
codec = "int4"
[cloud]
endpoint = "127.0.0.1:4433"
server_name = "localhost"
ca_cert = "cloud-ca.pem"
[source]
kind = "mjpeg"
command = ["ffmpeg", "-loglevel", "error", "-re", "-f", "lavfi", "-i", "testsrc=size=320x240:rate=10", "-f", "mjpeg", "-"]
[output]
format = "json"
[runtime]
intra_op_threads = 1
TOML
mkdir -p $r/etc/systemd/system/multi-user.target.wants
ln -sf /usr/lib/systemd/system/jmdc-edge.service $r/etc/systemd/system/multi-user.target.wants/
ln -sf /usr/lib/systemd/system/jmdc-cloud.service $r/etc/systemd/system/multi-user.target.wants/
install -m 0755 $n/inner-test.sh $r/usr/local/sbin/jmdc-inner-test
cat > $r/etc/systemd/system/jmdc-test.service <<UNIT
[Unit]
After=multi-user.target
[Service]
Type=oneshot
ExecStart=/usr/local/sbin/jmdc-inner-test
UNIT
cat > $r/etc/systemd/system/jmdc-test.target <<UNIT
[Unit]
Requires=multi-user.target jmdc-test.service
After=multi-user.target jmdc-test.service
UNIT
rm -f $r/etc/machine-id; : > $r/etc/machine-id
timeout 400 $nspawn -D $r --register=no --keep-unit --private-network --machine=jmdctest \
  --bind=$n/out:/out -b -- --unit=jmdc-test.target > $n/out/console.log 2>&1 || echo "nspawn rc=$?"
'
rm -rf /run/systemd/nspawn
