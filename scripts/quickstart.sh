#!/usr/bin/env bash
# Quick start: a throwaway single-node Ceph cluster, dockerd, and rbdvol as
# the Docker volume driver `rbd`, all on this machine.
#
#   scripts/quickstart.sh          install what is missing, build, start it all
#   scripts/quickstart.sh stop     stop it all (volumes are lost: the cluster
#                                  keeps its data in memory)
#
# Everything lives under /var/lib/rbdvol-quickstart; a second start reuses
# what still runs. QUICKSTART_PROFILE=dev builds and runs the debug binary
# (the test suite does, to skip a second, release build).
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
    else
        # dockerd keeps a legacy driver it has used until it restarts, and
        # waits ~15 s for its socket at every `docker volume ls`.
        echo "dockerd remembers the driver 'rbd' until it restarts (docker volume ls waits for it meanwhile)"
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
profile=${QUICKSTART_PROFILE:-release}
case $profile in
    release) bin=$top/target/release/rbdvol ;;
    dev) bin=$top/target/debug/rbdvol ;;
    *) echo "QUICKSTART_PROFILE is release or dev, not '$profile'" >&2; exit 2 ;;
esac
cargo build --locked --profile "$profile"
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
# rbdvol reads the cluster's ceph.conf and the keyring it names, as the
# Ceph tools do: no key on a command line or in an environment.
RBDVOL_CEPH_CONF=$CEPH_CONF setsid "$bin" serve --socket "$socket" </dev/null >>"$base/rbdvol.log" 2>&1 &
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
The admin CLI reads the same ceph.conf and keyring, as rbd does:

  $bin -c $CEPH_CONF ls
EOF
