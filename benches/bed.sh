# Sourced by the data-path benchmarks: a throwaway cluster, rbdvol serve
# (release build, user-space mapper) on a socket of its own, and Ceph's own
# user-space path (rbd-fuse + loop device + ext4) as the peer. Everything is
# torn down on exit, however the script ends.
set -euo pipefail
shopt -s inherit_errexit   # a failing job inside $(...) fails the script
cd "$(dirname "${BASH_SOURCE[0]}")/.."
top=$(pwd)
# RBDVOL_BIN: the binary to test (`cargo test` passes its debug build).
bin=${RBDVOL_BIN:-$top/target/release/rbdvol}
[ -x "$bin" ] || { echo "build first: cargo build --release" >&2; exit 1; }
for t in fio rbd-fuse losetup mkfs.ext4 curl python3 ceph-conf findmnt fuser; do
    command -v $t >/dev/null || { echo "missing $t: scripts/deps.sh installs it" >&2; exit 1; }
done
work=$(mktemp -d /tmp/rbdvol-bench.XXXXXX)
cluster=$work/ceph
# Every job the scripts start carries this in its arguments, so that an
# interrupted run can find what it left running.
job_tag="rbdvol-bench-job:$work"
serve_pid=""
mounted=()   # names of volumes mounted through the plugin
peers=()     # "fuse-dir loop-device mountpoint" of each peer, as far as it got
ramdisks=()  # "file mountpoint" of each RAM disk, as far as it got
bed_cleanup() {
    set +e
    trap '' INT TERM   # a second Ctrl-C must not cut the teardown short
    pkill -f -- "$job_tag" && sleep 1
    # Whatever still uses a filesystem under $work (a job the script was
    # waiting for when it was interrupted) goes first.
    for mp in $(findmnt -rn -o TARGET | grep "^$work/" | sort -r); do fuser -km "$mp" >/dev/null 2>&1; done
    if [ -n "$serve_pid" ]; then
        for name in "${mounted[@]}"; do
            api Unmount "{\"Name\":\"$name\",\"ID\":\"b\"}" >/dev/null
        done
        kill "$serve_pid"
    fi
    # The peer, in order: its filesystem, its loop device (while the FUSE
    # file behind it still has its path: a lazily unmounted one shows as
    # "/peer" and is no longer found under $work), then rbd-fuse.
    for p in "${peers[@]}"; do
        read -r fuse dev mp <<<"$p"
        umount "$mp" || umount -l "$mp"
        losetup -d "$dev"
        fusermount3 -u "$fuse" || umount -l "$fuse"
    done
    for r in "${ramdisks[@]}"; do
        read -r file mp <<<"$r"
        umount "$mp" || umount -l "$mp"
        # Found by its file: an interrupt may come before its name is known.
        losetup -n -O NAME -j "$file" | xargs -r -n1 losetup -d
        rm -f "$file"
    done
    # What the plugin could not unmount: filesystems first, then the loop
    # devices on files under $work, then the FUSE mounts and servers. rm
    # never descends into a mounted filesystem (--one-file-system).
    for mp in $(findmnt -rn -t nofuse,fuse.rbd-fuse,fuse.rbdvol -o TARGET | grep "^$work/" | sort -r); do umount -l "$mp"; done
    losetup -n -O NAME,BACK-FILE | awk -v w="$work/" 'index($2, w) == 1 {print $1}' | xargs -r -n1 losetup -d
    for mp in $(findmnt -rn -o TARGET | grep "^$work/" | sort -r); do umount -l "$mp"; done
    for pid in $(cat "$work"/run/userspace/*/pid 2>/dev/null | awk '{print $1}'); do kill "$pid"; done
    pkill -f -- "rbd-fuse -c $cluster/ceph.conf"
    "$top/scripts/ceph-test-cluster.sh" down "$cluster"
    rm -rf --one-file-system "$work"
}
trap bed_cleanup EXIT
"$top/scripts/ceph-test-cluster.sh" up "$cluster" --owner-pid $$ --pools rbd >"$work/env"
conf=$cluster/ceph.conf
mon=$(sed -n 's/^CEPH_MON_HOST=//p' "$work/env")

api() { curl -s --max-time 60 --unix-socket "$work/rbd.sock" -X POST "http://p/VolumeDriver.$1" -d "$2"; }

# rbdvol serve with the user-space mapper (never krbd or rbd-nbd, whatever
# this host has: the figures are the user-space path's).
bed_serve() {
    RBD_CONF_GLOBAL_MON_HOST=$mon RBD_CONF_KEYRING_USER=admin \
    RBD_CONF_KEYRING_KEY=$(sed -n 's/^[[:space:]]*key = //p' "$cluster/admin.keyring") \
        "$bin" serve --mapper userspace --socket "$work/rbd.sock" --state-dir "$work/state" --mount-root "$work/mnt" --run-dir "$work/run" \
        >"$work/serve.log" 2>&1 &
    serve_pid=$!
    for _ in $(seq 200); do [ -S "$work/rbd.sock" ] && return; sleep 0.05; done
    echo "rbdvol serve did not listen within 10 s: $(cat "$work/serve.log")" >&2; exit 1
}

# The answer's Err, if any (an empty Err is success).
api_err() { python3 -c 'import json,sys; print(json.load(sys.stdin).get("Err", ""))'; }

# bed_volume NAME SIZE: creates and mounts a volume; sets BED_MP to its
# mountpoint (not printed: a $(...) subshell would lose the teardown list).
bed_volume() {
    local answer err
    answer=$(api Create "{\"Name\":\"$1\",\"Opts\":{\"size\":\"$2\"}}")
    err=$(api_err <<<"$answer")
    [ -z "$err" ] || { echo "create $1: $err" >&2; exit 1; }
    mounted+=("$1")
    answer=$(api Mount "{\"Name\":\"$1\",\"ID\":\"b\"}")
    err=$(api_err <<<"$answer")
    [ -z "$err" ] || { echo "mount $1: $err" >&2; exit 1; }
    BED_MP=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["Mountpoint"])' <<<"$answer")
    ls "$work"/run/userspace/*/pid >/dev/null 2>&1 || { echo "volume $1 is not on the user-space mapper" >&2; exit 1; }
}

# bed_peer NAME SIZE: an image mounted the peers' way, through rbd-fuse, a
# loop device (direct I/O) and ext4; sets BED_MP to its mountpoint.
bed_peer() {
    rbd -c "$conf" create --size "$2" "rbd/$1"
    mkdir -p "$work/$1-fuse" "$work/$1-mnt"
    rbd-fuse -c "$conf" -p rbd -r "$1" "$work/$1-fuse"
    local dev
    dev=$(losetup --direct-io=on --show -f "$work/$1-fuse/$1")
    peers+=("$work/$1-fuse $dev $work/$1-mnt")
    [ "$(cat "/sys/block/${dev#/dev/}/loop/dio")" = 1 ] || { echo "$dev does not do direct I/O" >&2; exit 1; }
    mkfs.ext4 -q -F -m0 -E nodiscard,lazy_itable_init=1,lazy_journal_init=1 "$dev"
    mount "$dev" "$work/$1-mnt"
    BED_MP=$work/$1-mnt
}

# bed_ramdisk NAME SIZE: ext4 on a loop device over a file in /dev/shm: the
# kernel's own cost of a buffered job (page cache, ext4, block layer) with a
# device that costs nothing; sets BED_MP to its mountpoint.
bed_ramdisk() {
    local file=/dev/shm/$(basename "$work")-$1.img dev f
    # What a run killed outright (no teardown) left: its work dir is gone.
    for f in /dev/shm/rbdvol-bench.*-*.img; do
        [ -e "$f" ] && [ ! -d "/tmp/$(basename "${f%-*}")" ] || continue
        losetup -n -O NAME -j "$f" | xargs -r -n1 losetup -d || true
        rm -f "$f"
    done
    mkdir -p "$work/$1-mnt"
    ramdisks+=("$file $work/$1-mnt")
    truncate -s "$2" "$file"
    dev=$(losetup --show -f "$file")
    mkfs.ext4 -q -F -m0 -E nodiscard,lazy_itable_init=1,lazy_journal_init=1 "$dev"
    mount "$dev" "$work/$1-mnt"
    BED_MP=$work/$1-mnt
}
