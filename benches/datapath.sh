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
SEQ_TOTAL=${SEQ_TOTAL:-1024M}
RAND_TOTAL=${RAND_TOTAL:-128M}
. "$(dirname "$0")/bed.sh"

# --- rbd bench: librbd directly --------------------------------------------
rbd -c "$conf" create --size 2G rbd/raw
rbd_bench() { # type pattern size total -> bytes/s and ops/s of the summary line
    rbd -c "$conf" bench --io-type "$1" --io-pattern "$2" --io-size "$3" --io-total "$4" --io-threads 16 rbd/raw 2>/dev/null \
        | awk '/^elapsed:/ {for (i=1;i<=NF;i++) {if ($i=="ops/sec:") o=$(i+1); if ($i=="bytes/sec:") {b=$(i+1); u=$(i+2)}}}
               END {m=1; if (u ~ /^KiB/) m=1024; if (u ~ /^MiB/) m=1048576; if (u ~ /^GiB/) m=1073741824; printf "%.0f %.0f\n", b*m, o}'
}

fio_job() { # dir rw bs size -> bytes/s and iops
    fio --name=b --description="$job_tag" --directory="$1" --filename=fio.dat --rw="$2" --bs="$3" --size="$4" --iodepth=16 \
        --ioengine=libaio --direct=1 --end_fsync=1 --output-format=json 2>/dev/null \
        | python3 -c 'import json,sys; j=json.load(sys.stdin)["jobs"][0]; d=j["write"] if j["write"]["io_bytes"] else j["read"]
if j.get("error") or not d["io_bytes"]: sys.exit("fio job failed: error %s, %s bytes" % (j.get("error"), d["io_bytes"]))
print(int(d["bw_bytes"]), int(d["iops"]))'
}
run_fio() { # dir -> seqwrite seqread randwrite(iops)
    local sw sr rw figs
    figs=$(fio_job "$1" write 4M "$SEQ_TOTAL"); read -r sw _ <<<"$figs"
    echo 3 > /proc/sys/vm/drop_caches
    figs=$(fio_job "$1" read 4M "$SEQ_TOTAL"); read -r sr _ <<<"$figs"
    rm -f "$1/fio.dat"
    figs=$(fio_job "$1" randwrite 4K "$RAND_TOTAL"); read -r _ rw <<<"$figs"
    rm -f "$1/fio.dat"
    echo "$sw $sr $rw"
}

# --- rbdvol: user-space mapper, ext4, through the plugin API ---------------
bed_serve
bed_volume bench 2G; mp=$BED_MP
bed_peer peer 2G; peer_mp=$BED_MP

# --- rounds: the three paths take turns, so drift hits them alike -----------
: >"$work/results"
for round in $(seq "${ROUNDS:-3}"); do
    read -r rbd_sw _ < <(rbd_bench write seq 4M "$SEQ_TOTAL")
    read -r rbd_sr _ < <(rbd_bench read seq 4M "$SEQ_TOTAL")
    read -r _ rbd_rw < <(rbd_bench write rand 4K "$RAND_TOTAL")
    figs=$(run_fio "$mp"); read -r ours_sw ours_sr ours_rw <<<"$figs"
    figs=$(run_fio "$peer_mp"); read -r peer_sw peer_sr peer_rw <<<"$figs"
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
