#!/usr/bin/env bash
# Quick start: a throwaway single-node Ceph cluster, dockerd, and rbdvol as
# the Docker volume driver `rbd`, all on this machine.
#
#   scripts/quickstart.sh          install what is missing, build, start it all
#   scripts/quickstart.sh stop     stop it all (volumes are lost: the cluster
#                                  keeps its data in memory)
#
# Everything lives under /var/lib/rbdvol-quickstart; a second start reuses
# what still runs.
set -euo pipefail
cd "$(dirname "$0")/.."
top=$(pwd)
base=/var/lib/rbdvol-quickstart
cluster=$base/ceph
socket=/run/docker/plugins/rbd.sock

running() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

stop() {
    if running "$base/rbdvol.pid"; then
        kill "$(cat "$base/rbdvol.pid")"
        for _ in $(seq 100); do running "$base/rbdvol.pid" || break; sleep 0.1; done
        echo "stopped rbdvol serve"
    fi
    # Volumes still mounted for containers keep their user-space servers;
    # stop those containers first (docker ps --filter volume=...).
    "$top/scripts/ceph-test-cluster.sh" down "$cluster" && echo "stopped the ceph cluster"
    if running "$base/dockerd.pid"; then
        kill "$(cat "$base/dockerd.pid")" && echo "stopped the dockerd this quick start started"
    fi
    rm -f "$base"/*.pid
}

if [ "${1:-}" = stop ]; then
    stop
    exit 0
fi
[ $# -eq 0 ] || { echo "usage: $0 [stop]" >&2; exit 2; }

scripts/deps.sh
export PATH="${HOME:-/root}/.cargo/bin:$PATH"
cargo build --locked --release
mkdir -p "$base"
chmod 700 "$base"

# The cluster: reuse it while its monitor runs, else build a fresh one.
if ! running "$cluster/run/mon.a.pid"; then
    "$top/scripts/ceph-test-cluster.sh" down "$cluster"
    echo "booting a throwaway ceph cluster in $cluster ..." >&2
    "$top/scripts/ceph-test-cluster.sh" up "$cluster" --pools rbd >"$base/cluster.env"
fi
eval "$(grep -E '^CEPH_(MON_HOST|KEYRING|CONF)=' "$base/cluster.env")"

pid=$(scripts/dockerd.sh "$base/dockerd.log")
[ -z "$pid" ] || echo "$pid" >"$base/dockerd.pid"

if running "$base/rbdvol.pid"; then
    kill "$(cat "$base/rbdvol.pid")"
    for _ in $(seq 100); do running "$base/rbdvol.pid" || break; sleep 0.1; done
fi
# The key reaches rbdvol through its environment, never its command line.
RBD_CONF_KEYRING_KEY=$(sed -n 's/^[[:space:]]*key = //p' "$CEPH_KEYRING") \
RBD_CONF_KEYRING_USER=client.admin \
RBD_CONF_GLOBAL_MON_HOST=$CEPH_MON_HOST \
    setsid "$top/target/release/rbdvol" serve --socket "$socket" </dev/null >>"$base/rbdvol.log" 2>&1 &
echo $! >"$base/rbdvol.pid"
for _ in $(seq 100); do [ -S "$socket" ] && break; sleep 0.05; done
[ -S "$socket" ] || { echo "rbdvol serve did not start; its log:" >&2; tail "$base/rbdvol.log" >&2; exit 1; }

# A test image for the lines below (no registry needed).
if ! docker image inspect busybox-static:local >/dev/null 2>&1; then
    root=$(mktemp -d)
    mkdir -p "$root/bin" "$root/tmp"
    cp /bin/busybox "$root/bin/"
    for a in sh cat echo ls df dd sync sleep; do ln -s busybox "$root/bin/$a"; done
    tar -C "$root" -c . | docker import - busybox-static:local >/dev/null
    rm -rf "$root"
fi

cat <<EOF

rbdvol is the Docker volume driver 'rbd' (log: $base/rbdvol.log), on a
throwaway Ceph cluster (ceph -c $CEPH_CONF -s). Try:

  docker volume create -d rbd -o size=1G demo
  docker run --rm -v demo:/data busybox-static:local sh -c 'echo hello > /data/hello && df -h /data'
  docker run --rm -v demo:/data busybox-static:local cat /data/hello
  docker volume inspect demo
  rbd -c $CEPH_CONF ls -l
  docker volume rm demo

Stop it all with: scripts/quickstart.sh stop
EOF
