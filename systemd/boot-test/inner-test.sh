#!/bin/bash
# Runs inside the booted container as a oneshot; writes results to /out.
exec >/out/inner.log 2>&1
set -x
show() { systemctl show -p ActiveState,SubState,Result,NRestarts,ExecMainStatus,MainPID,StatusText,WatchdogUSec "$1"; }
for i in $(seq 1 60); do
  a=$(systemctl is-active jmdc-cloud); b=$(systemctl is-active jmdc-edge)
  [ "$a" = active ] && [ "$b" = active ] && break
  [ "$a" = failed ] || [ "$b" = failed ] && break
  sleep 1
done
show jmdc-cloud; show jmdc-edge
id jmdc; getent group jmdc
ls -la /run/jmdc-edge /var/lib/jmdc-edge /var/lib/jmdc-cloud /etc/jmdc
cat /proc/$(systemctl show -p MainPID --value jmdc-edge)/status | grep -E "Uid|Gid|Groups|Seccomp|NoNewPrivs|Cap"
cat /proc/$(systemctl show -p MainPID --value jmdc-edge)/uid_map
echo "=== waiting 40 s (> WatchdogSec=30s)"
sleep 40
show jmdc-cloud; show jmdc-edge
curl -s --max-time 5 --unix-socket /run/jmdc-edge/metrics.sock http://localhost/metrics | grep -E "^jmdc_" | head -20
echo "=== reload"
systemctl reload jmdc-edge; echo reload-edge rc=$?
systemctl reload jmdc-cloud; echo reload-cloud rc=$?
sleep 3
show jmdc-cloud; show jmdc-edge
echo "=== mounts seen by the edge"
p=$(systemctl show -p MainPID --value jmdc-edge)
awk '$5 ~ "^/(usr|etc|var/lib/jmdc-edge|run/jmdc-edge|home|tmp|dev)$" {print $5, $6}' /proc/$p/mountinfo
ls /proc/$p/root/dev | tr '\n' ' '; echo
echo "=== crash: SIGKILL to jmdc-cloud (Restart=on-failure, RestartSec=5s)"
systemctl kill -s SIGKILL jmdc-cloud
sleep 8
show jmdc-cloud; show jmdc-edge
echo "=== hang: SIGSTOP to jmdc-edge (WatchdogSec=30s)"
t0=$(date +%s)
systemctl kill -s SIGSTOP --kill-who=main jmdc-edge
for i in $(seq 1 60); do [ "$(systemctl show -p NRestarts --value jmdc-edge)" != 0 ] && break; sleep 1; done
echo "edge restarted after $(( $(date +%s) - t0 )) s"
sleep 6
show jmdc-edge
echo "=== stop"
time systemctl stop jmdc-edge
time systemctl stop jmdc-cloud
show jmdc-cloud; show jmdc-edge
journalctl --no-pager -o short-monotonic -u jmdc-edge -u jmdc-cloud | grep -v '"frame"' | head -150
journalctl --no-pager -u jmdc-edge | grep -c '"frame"'
journalctl --no-pager -u jmdc-edge -o cat | grep '"frame"' | tail -2
journalctl --no-pager -p warning -b | grep -i -E "jmdc|seccomp|denied" | head -30
echo DONE
systemctl poweroff
