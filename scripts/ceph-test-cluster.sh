#!/usr/bin/env bash
# A throwaway single-node Ceph cluster (1 mon, 1 mgr, 1 memstore OSD) on
# loopback, for tests, benchmarks and the quick start.
#
#   ceph-test-cluster.sh up DIR [--owner-pid PID] [--pools rbd,other] [--ip ADDR]
#   ceph-test-cluster.sh down DIR
#
# `up` builds everything under DIR (which must not exist or be empty), picks
# free ports so several clusters run side by side, waits until the pools take
# writes, and prints KEY=VALUE lines: CEPH_CONF, CEPH_MON_HOST, CEPH_KEYRING,
# CEPH_POOLS. With --owner-pid, a reaper tears the cluster down as soon as that
# process is gone (a test that panics or is killed leaves nothing behind).
# --ip binds and advertises ADDR instead of 127.0.0.1 (a tap device's
# address, for a QEMU guest).
# `down` kills only the daemons whose pid files are under DIR and whose command
# line names DIR, then removes DIR.
set -euo pipefail

die() { echo "ceph-test-cluster: $*" >&2; exit 1; }

down() {
    local dir=$1
    [ -d "$dir" ] || return 0
    local pidfile pid
    # The reaper first, unless we are the reaper.
    if [ -f "$dir/reaper.pid" ]; then
        pid=$(cat "$dir/reaper.pid")
        if [ "$pid" != "$$" ] && [ -r "/proc/$pid/cmdline" ] \
            && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$dir"; then
            kill -TERM "$pid" 2>/dev/null || true
        fi
    fi
    local pids=()
    for pidfile in "$dir"/run/*.pid; do
        [ -f "$pidfile" ] || continue
        pid=$(cat "$pidfile")
        # Only our own daemons: their command line names our config file.
        if [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$dir/ceph.conf"; then
            kill -TERM "$pid" 2>/dev/null || true
            pids+=("$pid")
        fi
    done
    local i
    for i in $(seq 20); do
        local alive=0
        for pid in "${pids[@]}"; do
            if kill -0 "$pid" 2>/dev/null; then alive=1; fi
        done
        [ $alive = 0 ] && break
        sleep 0.1
    done
    for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    rm -rf "$dir"
}

free_port() {
    python3 -c 'import socket, sys; s=socket.socket(); s.bind((sys.argv[1], 0)); print(s.getsockname()[1])' "$ip"
}

up() {
    local dir=$1; shift
    local owner="" pools="rbd"
    ip=127.0.0.1
    while [ $# -gt 0 ]; do
        case $1 in
            --owner-pid) owner=$2; shift 2 ;;
            --pools) pools=$2; shift 2 ;;
            --ip) ip=$2; shift 2 ;;
            *) die "unknown argument '$1'" ;;
        esac
    done
    for tool in ceph-mon ceph-osd ceph-mgr ceph ceph-authtool monmaptool rados uuidgen python3; do
        command -v "$tool" >/dev/null || die "'$tool' is not installed: run scripts/deps.sh"
    done
    mkdir -p "$dir"
    [ -z "$(ls -A "$dir")" ] || die "directory '$dir' is not empty"
    dir=$(cd "$dir" && pwd)
    mkdir -p "$dir"/{mon,osd0,mgr,run,log}
    chmod 700 "$dir"
    # Nothing half-made survives a failed start.
    trap 'rc=$?; if [ $rc != 0 ]; then echo "ceph-test-cluster: start failed, logs:" >&2; tail -n 20 "$dir"/log/*.log >&2 || true; down "$dir"; fi' EXIT

    if [ -n "$owner" ]; then
        # The reaper: detached, its output not tied to the caller's pipes.
        setsid bash -c '
            dir=$1; owner=$2; script=$3
            echo $$ > "$dir/reaper.pid"
            while kill -0 "$owner" 2>/dev/null && [ -d "$dir" ]; do sleep 1; done
            "$script" down "$dir"
        ' reaper "$dir" "$owner" "$(readlink -f "$0")" </dev/null >/dev/null 2>&1 &
    fi

    local v2 v1 fsid conf
    v2=$(free_port); v1=$(free_port)
    while [ "$v1" = "$v2" ]; do v1=$(free_port); done
    fsid=$(uuidgen)
    conf=$dir/ceph.conf
    cat >"$conf" <<CONF
[global]
fsid = $fsid
mon host = [v2:$ip:$v2,v1:$ip:$v1]
public addr = $ip
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
osd pool default size = 1
osd pool default min size = 1
osd pool default pg autoscale mode = off
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
osd crush chooseleaf type = 0
ms bind ipv4 = true
ms bind ipv6 = false
run dir = $dir/run
log file = $dir/log/\$name.log
admin socket = $dir/run/\$name.asok
pid file = $dir/run/\$name.pid
mon data = $dir/mon
osd data = $dir/osd0
mgr data = $dir/mgr
osd objectstore = memstore
# A full memstore OSD silently hangs every write: give it room (memory is
# only used for what is written).
memstore device bytes = 17179869184
mon osd full ratio = 0.99
mon osd backfillfull ratio = 0.98
mon osd nearfull ratio = 0.97
# A PG serves reads under a lease of this ratio x osd_heartbeat_grace (20 s),
# renewed every half lease. A single OSD frozen (SIGSTOP, as the outage tests
# do) past the rest of its lease wakes with "laggy" PGs, and Ceph 16 never
# rechecks a PG without replicas: every op on it waits "for readable" until
# the OSD restarts (fixed upstream after 16.2: ceph/ceph#52021, tracker
# 61650; seen as ceph/ceph-container#1682). By default a freeze over 8 s can
# do it; with 4, freezes up to 40 s are safe, longer than any of the tests'.
osd pool default read lease ratio = 4
[client]
keyring = $dir/admin.keyring
CONF
    export CEPH_CONF=$conf
    ceph-authtool --create-keyring "$dir/mon.keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
    ceph-authtool --create-keyring "$dir/admin.keyring" --gen-key -n client.admin \
        --cap mon 'allow *' --cap osd 'allow *' --cap mgr 'allow *' --cap mds 'allow *' >/dev/null
    chmod 600 "$dir/admin.keyring" "$dir/mon.keyring"
    ceph-authtool "$dir/mon.keyring" --import-keyring "$dir/admin.keyring" >/dev/null
    monmaptool --create --fsid "$fsid" --addv a "[v2:$ip:$v2,v1:$ip:$v1]" "$dir/monmap" >/dev/null
    ceph-mon -c "$conf" --mkfs -i a --monmap "$dir/monmap" --keyring "$dir/mon.keyring" 2>>"$dir/log/setup.log"
    ceph-mon -c "$conf" -i a 2>>"$dir/log/setup.log"

    local ceph="ceph -c $conf --connect-timeout 20"
    local osd_uuid
    osd_uuid=$(uuidgen)
    $ceph osd create "$osd_uuid" 0 >/dev/null
    ceph-osd -c "$conf" -i 0 --mkfs --mkkey --osd-uuid "$osd_uuid" --no-mon-config \
        --keyring "$dir/osd0/keyring" >>"$dir/log/setup.log" 2>&1
    $ceph auth add osd.0 osd 'allow *' mon 'allow profile osd' -i "$dir/osd0/keyring" 2>/dev/null
    $ceph osd crush add-bucket node1 host >/dev/null 2>&1
    $ceph osd crush move node1 root=default >/dev/null 2>&1
    $ceph osd crush add osd.0 1.0 host=node1 >/dev/null 2>&1
    ceph-osd -c "$conf" -i 0 --keyring "$dir/osd0/keyring" 2>>"$dir/log/setup.log"

    $ceph auth get-or-create mgr.x mon 'allow profile mgr' osd 'allow *' mds 'allow *' \
        -o "$dir/mgr/keyring" 2>/dev/null
    ceph-mgr -c "$conf" -i x --keyring "$dir/mgr/keyring" 2>>"$dir/log/setup.log"

    local pool
    for pool in ${pools//,/ }; do
        $ceph osd pool create "$pool" 8 >/dev/null 2>&1
        $ceph osd pool application enable "$pool" rbd >/dev/null 2>&1
    done
    # The outage tests rely on the long read lease (above): check the OSD runs with it.
    ceph --admin-daemon "$dir/run/osd.0.asok" config get osd_pool_default_read_lease_ratio 2>/dev/null | grep -q '"4\.' \
        || die "osd.0 does not run with osd_pool_default_read_lease_ratio = 4: see $conf"
    # Ready means writable: a write blocks until the OSD is up and the PGs peer.
    for pool in ${pools//,/ }; do
        timeout 60 rados -c "$conf" -p "$pool" put rbdvol-ready "$conf" \
            || die "pool '$pool' does not take writes: see $dir/log"
        rados -c "$conf" -p "$pool" rm rbdvol-ready
    done

    echo "CEPH_DIR=$dir"
    echo "CEPH_CONF=$conf"
    echo "CEPH_MON_HOST=[v2:$ip:$v2,v1:$ip:$v1]"
    echo "CEPH_KEYRING=$dir/admin.keyring"
    echo "CEPH_POOLS=$pools"
}

case ${1:-} in
    up) [ $# -ge 2 ] || die "usage: $0 up DIR [--owner-pid PID] [--pools a,b]"; shift; up "$@" ;;
    down) [ $# -eq 2 ] || die "usage: $0 down DIR"; down "$2" ;;
    *) die "usage: $0 up|down DIR" ;;
esac
