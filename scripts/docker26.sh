#!/usr/bin/env bash
# A second, newer dockerd for swarm cluster volumes (CSI plugins) beside the
# system's 20.10, never installed over it: Debian's docker.io + docker-cli
# from the suite $DOCKER_NEW_SUITE (default forky: 28.5.2 today).
#
#   scripts/docker26.sh [path]       fetch if needed; print the dockerd and docker paths
#   scripts/docker26.sh start [LOG] [--owner-pid PID]
#                                    start it unless it answers; print its pid if started;
#                                    with --owner-pid, purge it as soon as process PID is gone
#   scripts/docker26.sh stop         stop it (SIGTERM, then wait up to 60 s)
#   scripts/docker26.sh purge        stop it, delete its data and exec roots and bridges
#   scripts/docker26.sh swarm-init   make it a one-node swarm unless it is in one
#   scripts/docker26.sh env          print export DOCKER_HOST=... for `eval`
#
# Why not trixie's 26.1.5: every upstream release from 25.0.0 to 25.0.11,
# 26.x, 27.x and 28.0-28.1 wraps managed plugins for swarmkit without their
# Addr(), so swarm never reaches a CSI plugin ("plugin for driver X does not
# implement PluginAddr", volume stays "pending creation"); fixed in 25.0.12
# and 28.2.0 (moby commit 8b6d6b9ad5). Checked here with trixie's 26.1.5.
# The version gate below refuses those releases.
#
# Fetching works like scripts/consul.sh: a private sources list for the
# suite, `apt-get download`, `dpkg -x`; else the two packages from
# ../shared/deps/ when cached there; unpacked into
# /var/cache/rbdvol/docker-$DOCKER_NEW_SUITE/. Beyond Debian 12 only libc >= 2.34 is
# needed (Debian 12 has 2.36); containerd, runc and tini are Debian 12's own
# (installed with its docker.io 20.10).
#
# The daemon runs with its own everything, so that it never touches the
# 20.10 daemon's state: API socket $DOCKER26_SOCK, data root, exec root,
# pidfile, config file, containerd (it starts its own under the exec root;
# namespaces rbdvol26 and rbdvol26-plugins in case a system containerd
# answers at /run/containerd/containerd.sock), cgroup parent, bridges, and
# no iptables rules at all (both daemons would fight over the DOCKER chains).
#   - Not `--bridge none`: dockerd then deletes the link named docker0 at
#     start (moby's removeDefaultBridgeInterface), the 20.10 daemon's bridge.
#     Its default bridge is its own device $br (made here, $br_net), with
#     no NAT: containers reach this host only.
#   - Swarm attaches its ingress sandbox to a bridge named docker_gwbridge,
#     and would take over (and readdress) the 20.10 daemon's device of that
#     name: its docker_gwbridge network is made here, before any swarm, on
#     its own device $gw ($gw_net).
#   - Managed plugins' sockets are in /run/docker/plugins/<id>/ whatever the
#     exec root (hard-coded in dockerd), beside the 20.10 daemon's.
# For a swarm, `swarm-init` runs `docker swarm init --advertise-addr
# 127.0.0.1 --listen-addr 127.0.0.1:2378 --data-path-port 4790`, clear of a
# 20.10 swarm's 2377 and 4789.
#
# A second instance beside this one (the tests' own, so that they never
# touch a daemon run by hand): DOCKER26_INSTANCE=N (1-9) moves everything
# of it: socket /run/rbdvol-docker26-N.sock, roots /var/lib/rbdvol-docker26-N
# and /run/rbdvol-docker26-N, cgroup parent and containerd namespaces
# rbdvol26-N, bridges rbdvol26bN/rbdvol26gN on 172.30.(26+2N).1/24 and
# 172.30.(27+2N).0/24, swarm address 127.0.26.N:2378+N (its gossip port,
# 7946, is not settable: on 127.0.0.1 both would want it), data path port
# 4790+N.
# DOCKER26_SOCK, DOCKER26_DATA_ROOT and DOCKER26_EXEC_ROOT still override.
set -euo pipefail

instance=${DOCKER26_INSTANCE:-}
case $instance in
    '') suffix= ; br=rbdvol26br0; gw=rbdvol26gw0; n=0; swarm_addr=127.0.0.1 ;;
    [1-9]) suffix=-$instance; br=rbdvol26b$instance; gw=rbdvol26g$instance; n=$instance; swarm_addr=127.0.26.$instance ;;
    *) echo "docker26.sh: DOCKER26_INSTANCE must be 1-9 or empty, not '$instance'" >&2; exit 2 ;;
esac
sock=${DOCKER26_SOCK:-/run/rbdvol-docker26$suffix.sock}
data_root=${DOCKER26_DATA_ROOT:-/var/lib/rbdvol-docker26$suffix}
exec_root=${DOCKER26_EXEC_ROOT:-/run/rbdvol-docker26$suffix}
# purge kills, unmounts and deletes under these: never a shared directory.
for root in "$data_root" "$exec_root"; do
    case ${root##*/} in
        rbdvol-*) ;;
        *) echo "docker26.sh: refusing root '$root': its last part must start with rbdvol- (purge kills, unmounts and deletes under it)" >&2; exit 2 ;;
    esac
done
pidfile=$exec_root.pid
# "<reaper pid> <owner pid>" of the reaper that purges it when its owner exits.
reaperfile=$exec_root.reaper
ns=rbdvol26$suffix
br_net=172.30.$((26 + 2 * n)).1/24
gw_net=172.30.$((27 + 2 * n)).0/24
swarm_port=$((2378 + n))
data_path_port=$((4790 + n))
suite=${DOCKER_NEW_SUITE:-forky}
cache=/var/cache/rbdvol/docker-$suite
dockerd=$cache/usr/sbin/dockerd
docker=$cache/usr/bin/docker

fetch() {
    if [ -x "$dockerd" ] && [ -x "$docker" ]; then
        check_version
        return 0
    fi
    mkdir -p "$cache"
    local work uri debs=() p deb
    work=$(mktemp -d)
    # shellcheck disable=SC2064
    trap "rm -rf '$work'; trap - RETURN" RETURN
    chmod 755 "$work"   # apt's _apt user downloads into it
    uri=$(awk '/^URIs:/ { print $2; exit }' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
    uri=${uri:-http://deb.debian.org/debian}
    echo "deb $uri $suite main" >"$work/sources.list"
    mkdir -p "$work/lists/partial" "$work/cache/archives/partial"
    local apt_opts=(-o "Dir::Etc::SourceList=$work/sources.list" -o Dir::Etc::SourceParts=/dev/null
                    -o "Dir::State::Lists=$work/lists" -o "Dir::Cache=$work/cache")
    if apt-get "${apt_opts[@]}" update >/dev/null 2>&1 \
        && (cd "$work" && apt-get "${apt_opts[@]}" download docker.io docker-cli >/dev/null 2>&1); then
        for p in docker.io docker-cli; do
            deb=$(ls "$work/${p}"_[0-9]*.deb 2>/dev/null | head -n1 || true)
            [ -n "$deb" ] && debs+=("$deb")
        done
    fi
    if [ ${#debs[@]} -ne 2 ]; then
        debs=()
        local here shared
        here=$(cd "$(dirname "$0")/.." && pwd)
        shared=$here/../shared/deps
        for p in docker.io docker-cli; do
            deb=$(ls "$shared/${p}"_[0-9]*_amd64.deb 2>/dev/null | head -n1 || true)
            [ -n "$deb" ] || { echo "docker26.sh: cannot download $p from $suite and no cached package in ../shared/deps" >&2; exit 1; }
            if [ -f "$shared/SHA256SUMS" ]; then
                (cd "$shared" && grep " $(basename "$deb")\$" SHA256SUMS | sha256sum -c --quiet -) \
                    || { echo "docker26.sh: $deb does not match its SHA256SUMS" >&2; exit 1; }
            fi
            debs+=("$deb")
        done
    fi
    for deb in "${debs[@]}"; do
        dpkg -x "$deb" "$cache"
    done
    [ -x "$dockerd" ] && [ -x "$docker" ] || { echo "docker26.sh: ${debs[*]} hold no usr/sbin/dockerd and usr/bin/docker" >&2; exit 1; }
    check_version
}

check_version() {
    local v major minor patch
    v=$("$dockerd" --version | sed -n 's/^Docker version \([0-9]*\.[0-9]*\.[0-9]*\).*/\1/p')
    IFS=. read -r major minor patch <<<"$v"
    if ! { [ "${major:-0}" -ge 29 ] || { [ "$major" -eq 28 ] && [ "$minor" -ge 2 ]; } \
           || { [ "$major" -eq 25 ] && [ "$patch" -ge 12 ]; } || [ "$major" -eq 23 ] || [ "$major" -eq 24 ]; }; then
        echo "docker26.sh: dockerd $v from $suite cannot reach CSI plugins (fixed in 25.0.12 and 28.2.0); unpacked in $cache" >&2
        exit 1
    fi
}

answers() {
    "$docker" -H "unix://$sock" version >/dev/null 2>&1
}

running_pid() {
    local pid
    pid=$(cat "$pidfile" 2>/dev/null || true)
    [ -n "$pid" ] && [ -d "/proc/$pid" ] && [ "$(readlink "/proc/$pid/exe" 2>/dev/null)" = "$dockerd" ] && echo "$pid"
}

alive() {
    [ -n "$1" ] && kill -0 "$1" 2>/dev/null
}

start() {
    local log=/var/log/rbdvol-docker26.log owner=""
    while [ $# -gt 0 ]; do
        case $1 in
            --owner-pid) owner=$2; shift 2 ;;
            *) [ -n "$1" ] && log=$1; shift ;;
        esac
    done
    fetch
    local reaper="" reaper_owner=""
    [ -f "$reaperfile" ] && read -r reaper reaper_owner <"$reaperfile" || true
    if alive "$reaper" && ! alive "$reaper_owner"; then
        # A finished owner's reaper still purging: let it finish first.
        for _ in $(seq 600); do alive "$reaper" || break; sleep 0.2; done
        alive "$reaper" && { echo "docker26.sh: the reaper $reaper (of pid $reaper_owner, gone) has not purged $sock within 120 s" >&2; exit 1; }
    fi
    if answers; then
        if [ -n "$owner" ] && alive "$reaper" && [ "$reaper_owner" != "$owner" ]; then
            echo "docker26.sh: $sock is in use by pid $reaper_owner (purged when it exits)" >&2
            exit 1
        fi
        return 0
    fi
    # A throwaway daemon (--owner-pid): whatever a crash or a reboot left of
    # an earlier one (a swarm's state, plugins) goes first.
    if [ -n "$owner" ] && [ -d "$data_root" ]; then purge; fi
    for t in containerd containerd-shim-runc-v2 runc; do
        command -v "$t" >/dev/null || { echo "docker26.sh: $t is missing (apt-get install containerd runc)" >&2; exit 1; }
    done
    if [ -z "$(running_pid)" ]; then
        mkdir -p "$data_root" "$exec_root"
        if ! ip link show "$br" >/dev/null 2>&1; then
            ip link add "$br" type bridge
            ip addr add "$br_net" dev "$br"
            ip link set "$br" up
        fi
        [ -f "$data_root/daemon.json" ] || echo '{}' >"$data_root/daemon.json"
        # Its own usr/sbin first: its docker-proxy (unused: --userland-proxy=false).
        PATH=$cache/usr/sbin:$cache/usr/bin:$PATH setsid "$dockerd" \
            -H "unix://$sock" \
            --config-file "$data_root/daemon.json" \
            --data-root "$data_root" \
            --exec-root "$exec_root" \
            --pidfile "$pidfile" \
            --containerd-namespace "$ns" \
            --containerd-plugins-namespace "$ns-plugins" \
            --cgroup-parent "rbdvol-docker26$suffix" \
            --bridge "$br" --iptables=false --ip6tables=false --ip-forward=false --ip-masq=false \
            --userland-proxy=false \
            >"$log" 2>&1 </dev/null &
        echo $!
    fi
    if [ -n "$owner" ]; then
        # The reaper: detached (its own session, its output not tied to the
        # caller's pipes), purges as soon as the owner is gone.
        setsid bash -c '
            owner=$1; script=$2; file=$3
            echo "$$ $owner" >"$file"
            while kill -0 "$owner" 2>/dev/null; do sleep 1; done
            "$script" purge
        ' reaper "$owner" "$(readlink -f "$0")" "$reaperfile" </dev/null >/dev/null 2>&1 &
    fi
    for _ in $(seq 300); do
        if answers; then
            if ! "$docker" -H "unix://$sock" network inspect docker_gwbridge >/dev/null 2>&1; then
                "$docker" -H "unix://$sock" network create --driver bridge --subnet "$gw_net" \
                    --opt com.docker.network.bridge.name="$gw" \
                    --opt com.docker.network.bridge.enable_icc=false \
                    --opt com.docker.network.bridge.enable_ip_masquerade=false \
                    docker_gwbridge >/dev/null
            fi
            return 0
        fi
        sleep 0.2
    done
    echo "docker26.sh: dockerd did not answer on $sock within 60 s; its log ($log):" >&2
    tail -n 20 "$log" >&2 || true
    exit 1
}

stop() {
    local pid
    pid=$(running_pid || true)
    [ -n "$pid" ] || return 0
    kill -TERM "$pid"
    for _ in $(seq 300); do
        [ -d "/proc/$pid" ] || return 0
        sleep 0.2
    done
    echo "docker26.sh: dockerd (pid $pid) did not stop within 60 s" >&2
    exit 1
}

# The pids whose command line has the fixed string $1.
pids_with() {
    local f pid
    for f in /proc/[0-9]*/cmdline; do
        pid=${f#/proc/}; pid=${pid%/cmdline}
        [ "$pid" = "$$" ] && continue
        tr '\0' ' ' <"$f" 2>/dev/null | grep -qF -- "$1" && echo "$pid"
    done
    return 0
}

# The descendants of pid $1.
descendants() {
    ps -e -o pid=,ppid= | awk -v root="$1" '
        { parent[$1] = $2 }
        END { for (p in parent) { q = p; while (q in parent && q != 1 && q != 0) { q = parent[q]; if (q == root) { print p; break } } } }'
}

# What a dockerd that died (a panic, a kill -9) leaves, once it is not
# running: its containerd and the shims of its containers and plugins (all
# named by its exec root on their command lines) with the processes they
# run, and their mounts under its roots. Killed by pid, unmounted lazily,
# deepest first.
reap_crashed() {
    [ -z "$(running_pid || true)" ] || return 0
    local pids pid m
    pids=$(pids_with "$exec_root/containerd/")
    if [ -n "$pids" ]; then
        echo "docker26.sh: killing what its dead dockerd left running: $(echo $pids)" >&2
        for pid in $pids; do
            # shellcheck disable=SC2046
            kill -KILL $(descendants "$pid") "$pid" 2>/dev/null || true
        done
        sleep 0.5
    fi
    awk -v d="$data_root" -v e="$exec_root" '$5 == d || $5 == e || index($5, d "/") == 1 || index($5, e "/") == 1 { print length($5), $5 }' /proc/self/mountinfo \
        | sort -rn | cut -d' ' -f2- | while read -r m; do umount -l "$m" 2>/dev/null || true; done
}

purge() {
    # An owner's reaper, unless we are it: this purge does its work.
    local reaper="" reaper_owner=""
    [ -f "$reaperfile" ] && read -r reaper reaper_owner <"$reaperfile" || true
    if [ -n "$reaper" ] && [ "$reaper" != "$PPID" ] && alive "$reaper" \
        && tr '\0' ' ' <"/proc/$reaper/cmdline" 2>/dev/null | grep -qF -- "$reaperfile"; then
        kill -TERM "$reaper" 2>/dev/null || true
    fi
    stop
    reap_crashed
    # Never delete through a mount (a plugin's propagated mount, an overlay):
    # a stopped daemon leaves none; if one is left, say so and stop.
    local left
    left=$(awk -v a="$data_root/" -v b="$exec_root/" 'index($5, a) == 1 || index($5, b) == 1 { print $5 }' /proc/self/mountinfo)
    if [ -n "$left" ]; then
        echo "docker26.sh: mounts left under its roots, not deleting:" >&2
        echo "$left" >&2
        exit 1
    fi
    rm -rf --one-file-system "$data_root" "$exec_root"
    rm -f "$pidfile" "$reaperfile"
    [ -S "$sock" ] && rm -f "$sock"
    ip link del "$br" 2>/dev/null || true
    ip link del "$gw" 2>/dev/null || true
}

# A one-node swarm on ports that a 20.10 swarm does not use.
swarm_init() {
    local D=("$docker" -H "unix://$sock")
    [ "$("${D[@]}" info --format '{{.Swarm.LocalNodeState}}')" = active ] && return 0
    "${D[@]}" swarm init --advertise-addr "$swarm_addr" --listen-addr "$swarm_addr:$swarm_port" --data-path-port "$data_path_port" >/dev/null
}

case ${1:-path} in
    path) fetch; echo "$dockerd"; echo "$docker" ;;
    start) shift; start "$@" ;;
    stop) stop ;;
    purge) purge ;;
    swarm-init) swarm_init ;;
    env) echo "export DOCKER_HOST=unix://$sock" ;;
    *) echo "usage: $0 [path|start [LOG] [--owner-pid PID]|stop|purge|swarm-init|env]" >&2; exit 2 ;;
esac
