#!/usr/bin/env bash
# Data path through a mounted volume, as a ratio of `rbd bench` on the same
# throwaway cluster in the same run, and against Ceph's own user-space path
# (rbd-fuse + loop device + ext4). Needs a release build (cargo build --release).
#
#   benches/datapath.sh            # prints a table (medians of ROUNDS=3 rounds); ~4 minutes
#
# Jobs: 4 MiB sequential write and read (queue depth 16), 4 KiB random write
# (queue depth 16). fio writes with O_DIRECT to a file on the volume's ext4;
# rbd bench drives librbd directly with 16 threads.
set -euo pipefail
cd "$(dirname "$0")/.."
top=$(pwd)
bin=$top/target/release/rbdvol
[ -x "$bin" ] || { echo "build first: cargo build --release" >&2; exit 1; }
for t in fio rbd-fuse losetup mkfs.ext4 curl python3; do
    command -v $t >/dev/null || { echo "missing $t: scripts/deps.sh installs it" >&2; exit 1; }
done
SEQ_TOTAL=${SEQ_TOTAL:-1024M}
RAND_TOTAL=${RAND_TOTAL:-128M}
work=$(mktemp -d /tmp/rbdvol-datapath.XXXXXX)
cluster=$work/ceph
serve_pid=""
cleanup() {
    set +e
    umount "$work/peer-mnt" 2>/dev/null
    [ -n "${peer_dev:-}" ] && losetup -d "$peer_dev" 2>/dev/null
    fusermount3 -u "$work/peer-fuse" 2>/dev/null
    if [ -n "$serve_pid" ]; then
        curl -s --unix-socket "$work/rbd.sock" -X POST http://p/VolumeDriver.Unmount -d '{"Name":"bench","ID":"b"}' >/dev/null
        kill "$serve_pid"
    fi
    "$top/scripts/ceph-test-cluster.sh" down "$cluster"
    rm -rf "$work"
}
trap cleanup EXIT
"$top/scripts/ceph-test-cluster.sh" up "$cluster" --owner-pid $$ --pools rbd >"$work/env"
conf=$cluster/ceph.conf
mon=$(sed -n 's/^CEPH_MON_HOST=//p' "$work/env")

# --- rbd bench: librbd directly --------------------------------------------
rbd -c "$conf" create --size 2G rbd/raw
rbd_bench() { # type pattern size total -> bytes/s and ops/s of the summary line
    rbd -c "$conf" bench --io-type "$1" --io-pattern "$2" --io-size "$3" --io-total "$4" --io-threads 16 rbd/raw 2>/dev/null \
        | awk '/^elapsed:/ {for (i=1;i<=NF;i++) {if ($i=="ops/sec:") o=$(i+1); if ($i=="bytes/sec:") {b=$(i+1); u=$(i+2)}}}
               END {m=1; if (u ~ /^KiB/) m=1024; if (u ~ /^MiB/) m=1048576; if (u ~ /^GiB/) m=1073741824; printf "%.0f %.0f\n", b*m, o}'
}

fio_job() { # dir rw bs size -> bytes/s and iops
    fio --name=b --directory="$1" --filename=fio.dat --rw="$2" --bs="$3" --size="$4" --iodepth=16 \
        --ioengine=libaio --direct=1 --end_fsync=1 --output-format=json 2>/dev/null \
        | python3 -c 'import json,sys; j=json.load(sys.stdin)["jobs"][0]; d=j["write"] if j["write"]["io_bytes"] else j["read"]; print(int(d["bw_bytes"]), int(d["iops"]))'
}
run_fio() { # dir -> seqwrite seqread randwrite(iops)
    local sw sr rw
    read -r sw _ < <(fio_job "$1" write 4M "$SEQ_TOTAL")
    echo 3 > /proc/sys/vm/drop_caches
    read -r sr _ < <(fio_job "$1" read 4M "$SEQ_TOTAL")
    rm -f "$1/fio.dat"
    read -r _ rw < <(fio_job "$1" randwrite 4K "$RAND_TOTAL")
    rm -f "$1/fio.dat"
    echo "$sw $sr $rw"
}

# --- rbdvol: user-space mapper, ext4, through the plugin API ---------------
RBD_CONF_GLOBAL_MON_HOST=$mon RBD_CONF_KEYRING_USER=admin \
RBD_CONF_KEYRING_KEY=$(sed -n 's/^[[:space:]]*key = //p' "$cluster/admin.keyring") \
    "$bin" serve --socket "$work/rbd.sock" --state-dir "$work/state" --mount-root "$work/mnt" --run-dir "$work/run" \
    >"$work/serve.log" 2>&1 &
serve_pid=$!
for _ in $(seq 100); do [ -S "$work/rbd.sock" ] && break; sleep 0.05; done
api() { curl -s --unix-socket "$work/rbd.sock" -X POST "http://p/VolumeDriver.$1" -d "$2"; }
api Create '{"Name":"bench","Opts":{"size":"2G"}}' >/dev/null
mp=$(api Mount '{"Name":"bench","ID":"b"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["Mountpoint"])')

# --- Ceph's rbd-fuse + loop + ext4 -----------------------------------------
rbd -c "$conf" create --size 2G rbd/peer
mkdir -p "$work/peer-fuse" "$work/peer-mnt"
rbd-fuse -c "$conf" -p rbd -r peer "$work/peer-fuse"
peer_dev=$(losetup --direct-io=on --show -f "$work/peer-fuse/peer")
mkfs.ext4 -q -F -m0 -E nodiscard,lazy_itable_init=1,lazy_journal_init=1 "$peer_dev"
mount "$peer_dev" "$work/peer-mnt"

# --- rounds: the three paths take turns, so drift hits them alike -----------
: >"$work/results"
for round in $(seq "${ROUNDS:-3}"); do
    read -r rbd_sw _ < <(rbd_bench write seq 4M "$SEQ_TOTAL")
    read -r rbd_sr _ < <(rbd_bench read seq 4M "$SEQ_TOTAL")
    read -r _ rbd_rw < <(rbd_bench write rand 4K "$RAND_TOTAL")
    read -r ours_sw ours_sr ours_rw < <(run_fio "$mp")
    read -r peer_sw peer_sr peer_rw < <(run_fio "$work/peer-mnt")
    echo "$rbd_sw $rbd_sr $rbd_rw $ours_sw $ours_sr $ours_rw $peer_sw $peer_sr $peer_rw" >>"$work/results"
done

python3 - "$work/results" <<'EOF'
import statistics, sys
rows = [list(map(float, l.split())) for l in open(sys.argv[1]) if l.strip()]
rbd_sw, rbd_sr, rbd_rw, o_sw, o_sr, o_rw, p_sw, p_sr, p_rw = (statistics.median(c) for c in zip(*rows))
print(f"medians of {len(rows)} rounds")
mib = 1 << 20
print(f"{'job':<24}{'rbd bench':>12}{'rbdvol':>12}{'% of rbd':>10}{'rbd-fuse+loop':>15}{'rbdvol/fuse':>12}")
for name, r, o, p, unit, div in [
    ("4 MiB seq write", rbd_sw, o_sw, p_sw, "MiB/s", mib),
    ("4 MiB seq read", rbd_sr, o_sr, p_sr, "MiB/s", mib),
    ("4 KiB rand write", rbd_rw, o_rw, p_rw, "IOPS", 1),
]:
    print(f"{name + ' (' + unit + ')':<24}{r/div:>12.0f}{o/div:>12.0f}{100*o/r:>9.0f}%{p/div:>15.0f}{o/p:>11.2f}x")
EOF
