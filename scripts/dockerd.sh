#!/usr/bin/env bash
# Makes sure a dockerd answers: starts one (logging to $1, default
# /var/log/rbdvol-dockerd.log) when none runs, and prints its pid if it
# started one. Fails when dockerd does not come up within 30 s.
set -euo pipefail
log=${1:-/var/log/rbdvol-dockerd.log}
if docker info >/dev/null 2>&1; then
    exit 0
fi
command -v dockerd >/dev/null || { echo "dockerd.sh: dockerd is not installed: apt-get install docker.io" >&2; exit 1; }
# Only if no dockerd process exists at all (one may be starting).
if ! pgrep -x dockerd >/dev/null; then
    setsid dockerd >"$log" 2>&1 </dev/null &
    echo $!
fi
for _ in $(seq 150); do
    docker info >/dev/null 2>&1 && exit 0
    sleep 0.2
done
echo "dockerd.sh: dockerd did not answer within 30 s; its log ($log):" >&2
tail -n 20 "$log" >&2 || true
exit 1
