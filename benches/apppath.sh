#!/usr/bin/env bash
# The data path as applications use it, through a mounted volume (ext4 on
# rbdvol's user-space mapper), each job against librbd with the same
# durability (fio's rbd engine, rbd_cache=false: every write acknowledged by
# the OSDs) and against Ceph's own user-space path (rbd-fuse + loop + ext4),
# on the same throwaway cluster. The paths take turns in every round, in a
# rotating order, so drift hits them alike; medians and min-max of ROUNDS
# rounds are printed. The sequential jobs also run on ext4 on a RAM disk:
# the kernel's own buffered path with a device that costs nothing, which
# librbd's jobs (no page cache, no filesystem) never pay. Needs a release build (cargo build --release).
#
#   benches/apppath.sh     # ROUNDS=5 RUNTIME=8 NFILES=10000 SEQ=1G RAND=256M; ~17 minutes
#   JOBS="seqwrite coldread" benches/apppath.sh   # some of the jobs
#
# Jobs:
#   seq write   1 GiB of buffered 4 MiB writes ending in one fsync (cp, tar,
#               log writers), timed to the end of the fsync; librbd: 4 MiB
#               writes, 16 in flight
#   commit      4 KiB random overwrite + fdatasync each, one at a time
#               (how databases commit into their preallocated files);
#               librbd: 4 KiB write + flush, qd 1. Latency is per commit
#               (write + its sync)
#   cold read   1 GiB read sequentially in 4 MiB after dropping caches
#               (buffered, kernel read-ahead); librbd: 4 MiB reads, 16 in flight
#   rand read   4 KiB O_DIRECT random reads, qd 1 and qd 16; librbd the same
#   small files create + write 4 KiB + fsync + close of NFILES files (the
#               filesystem's metadata path; no librbd equivalent)
ROUNDS=${ROUNDS:-5}
RUNTIME=${RUNTIME:-8}
NFILES=${NFILES:-10000}
JOBS=${JOBS:-seqwrite coldread commit randread smallfiles}
SEQ=${SEQ:-1G}        # the sequential jobs' size
RAND=${RAND:-256M}    # the random jobs' range: the start of the sequential file,
                      # written in full (a file fio lays out with fallocate is
                      # unwritten extents: reads of them never reach the device)
. "$(dirname "$0")/bed.sh"

bed_serve
bed_volume app 2G; ours=$BED_MP
bed_peer peer 2G; peer=$BED_MP
# The sequential jobs also run on a RAM disk: how fast the kernel's buffered
# path (page cache, ext4) is here with a device that costs nothing.
bed_ramdisk ram "$(( $(numfmt --from=iec "$SEQ") * 3 / 2 + (64 << 20) ))"; ram=$BED_MP
rbd -c "$conf" create --size 2G rbd/raw
# librbd without its cache: a write returns once the OSDs have it. Its own
# section, which wins over [client] wherever that sits.
nocache=$work/nocache.conf
{ cat "$conf"; printf '[client.admin]\nrbd cache = false\nadmin socket =\n'; } >"$nocache"
[ "$(ceph-conf -c "$nocache" -n client.admin --show-config-value rbd_cache)" = false ] || { echo "apppath: librbd's cache is not off in $nocache" >&2; exit 1; }

results=$work/results
: >"$results"
# fio's JSON -> "iops bytes/s p50_ms p99_ms" of its one job; latency is the
# completion latency plus, when the job syncs, the sync's (the sum of the
# two percentiles: the write's part is microseconds when the page cache
# takes it, the sync's when librbd acknowledges writes itself). A job with
# an error or no I/O fails the script.
fio_figures() {
    python3 -c '
import json, sys
j = json.load(sys.stdin)["jobs"][0]
d = j["write"] if j["write"]["io_bytes"] else j["read"]
if j.get("error") or not d["io_bytes"]:
    sys.exit("fio job failed: error %s, %s bytes" % (j.get("error"), d["io_bytes"]))
pct = lambda s, p: s.get("percentile", {}).get(p, 0) / 1e6
lat = lambda p: pct(d["clat_ns"], p) + pct(j.get("sync", {}).get("lat_ns", {}), p)
print(d["iops"], d["bw_bytes"], lat("50.000000"), lat("99.000000"))'
}
# run_fio PATH JOB ARGS...: fio on PATH ("librbd" = the raw image).
run_fio() {
    local path=$1; shift
    if [ "$path" = librbd ]; then
        CEPH_CONF=$nocache fio --name=j --description="$job_tag" --ioengine=rbd --clientname=admin --pool=rbd --rbdname=raw "$@" --output-format=json 2>"$work/fio.err"
    else
        fio --name=j --description="$job_tag" --directory="$path" "$@" --output-format=json 2>"$work/fio.err"
    fi || { echo "fio $* on $path failed: $(cat "$work/fio.err")" >&2; return 1; }
}
dir_of() { case $1 in ours) echo "$ours";; peer) echo "$peer";; ram) echo "$ram";; librbd) echo librbd;; esac; }
record() { # job path "iops bw p50 p99"
    [[ $3 =~ ^[0-9.e+-]+\ [0-9.e+-]+\ [0-9.e+-]+\ [0-9.e+-]+$ ]] || { echo "apppath: $1 on $2 gave no figures ('$3')" >&2; exit 1; }
    echo "$1 $2 $3" >>"$results"
}

seq_write() { # path
    local d t0 t1
    d=$(dir_of "$1")
    [ "$d" = librbd ] || rm -f "$d/seq.dat"
    sync; echo 3 >/proc/sys/vm/drop_caches
    t0=$(date +%s.%N)
    if [ "$d" = librbd ]; then
        run_fio librbd --rw=write --bs=4M --size="$SEQ" --iodepth=16 | fio_figures >/dev/null
    else
        run_fio "$d" --filename=seq.dat --rw=write --bs=4M --size="$SEQ" --ioengine=psync --end_fsync=1 | fio_figures >/dev/null
    fi
    t1=$(date +%s.%N)
    record seqwrite "$1" "0 $(python3 -c "print($(numfmt --from=iec "$SEQ")/($t1-$t0))") 0 0"
}
cold_read() {
    local d
    d=$(dir_of "$1")
    sync; echo 3 >/proc/sys/vm/drop_caches
    if [ "$d" = librbd ]; then
        figs=$(run_fio librbd --rw=read --bs=4M --size="$SEQ" --iodepth=16 | fio_figures); record coldread "$1" "$figs"
    else
        figs=$(run_fio "$d" --filename=seq.dat --rw=read --bs=4M --size="$SEQ" --ioengine=psync | fio_figures); record coldread "$1" "$figs"
    fi
}
commit() {
    local d
    d=$(dir_of "$1")
    if [ "$d" = librbd ]; then
        figs=$(run_fio librbd --rw=randwrite --bs=4k --size="$RAND" --iodepth=1 --fsync=1 --time_based --runtime="$RUNTIME" | fio_figures); record commit "$1" "$figs"
    else
        figs=$(run_fio "$d" --filename=seq.dat --rw=randwrite --bs=4k --size="$RAND" --ioengine=psync --fdatasync=1 --time_based --runtime="$RUNTIME" | fio_figures); record commit "$1" "$figs"
    fi
}
rand_read() { # path depth
    local d
    d=$(dir_of "$1")
    if [ "$d" = librbd ]; then
        figs=$(run_fio librbd --rw=randread --bs=4k --size="$RAND" --iodepth="$2" --time_based --runtime="$RUNTIME" | fio_figures); record "randread$2" "$1" "$figs"
    else
        figs=$(run_fio "$d" --filename=seq.dat --rw=randread --bs=4k --size="$RAND" --direct=1 --ioengine=libaio --iodepth="$2" --time_based --runtime="$RUNTIME" | fio_figures); record "randread$2" "$1" "$figs"
    fi
}
small_files() {
    local d
    d=$(dir_of "$1")
    [ "$d" = librbd ] && return
    rm -rf "$d/small"; mkdir "$d/small"; sync
    figs=$(python3 - "$d/small" "$NFILES" "$job_tag" <<'PY'
import os, sys, time
d, n = sys.argv[1], int(sys.argv[2])
block = b"x" * 4096
t = time.monotonic()
for i in range(n):
    fd = os.open(f"{d}/f{i:05}", os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o644)
    os.write(fd, block)
    os.fsync(fd)
    os.close(fd)
print(n / (time.monotonic() - t), 0, 0, 0)
PY
)
    record smallfiles "$1" "$figs"
    rm -rf "$d/small"
}

wants() { [[ " $JOBS " == *" $1 "* ]]; }
orders=("ours librbd peer" "librbd peer ours" "peer ours librbd")
for round in $(seq "$ROUNDS"); do
    order=${orders[$(( (round - 1) % 3 ))]}
    # The sequential write makes the file every other job uses.
    for p in $order ram; do seq_write "$p"; done
    wants coldread && for p in $order ram; do cold_read "$p"; done
    wants commit && for p in $order; do commit "$p"; done
    wants randread && for p in $order; do rand_read "$p" 1; done
    wants randread && for p in $order; do rand_read "$p" 16; done
    wants smallfiles && for p in $order; do small_files "$p"; done
    echo "round $round of $ROUNDS done" >&2
done

python3 - "$results" "$ROUNDS" "$SEQ" <<'EOF'
import statistics, sys
from collections import defaultdict
rows = defaultdict(list)
for line in open(sys.argv[1]):
    job, path, *v = line.split()
    rows[job, path].append(list(map(float, v)))
def fig(job, path, i, div=1):
    vals = [r[i] / div for r in rows.get((job, path), [])]
    if not vals:
        return None
    return statistics.median(vals), min(vals), max(vals)
def cell(f, fmt="{:.0f}"):
    if f is None:
        return "—"
    m, lo, hi = f
    return f"{fmt.format(m)} ({fmt.format(lo)}–{fmt.format(hi)})"
def ratio(a, b):
    return f"{a[0] / b[0]:.2f}×" if a and b and b[0] else "—"
mib = 1 << 20
seq = sys.argv[3].replace("G", " GiB").replace("M", " MiB")
print(f"medians (min–max) of {sys.argv[2]} rounds; ratio = rbdvol / baseline of the medians")
print(f"| job | rbdvol | librbd, cache off | rbdvol / librbd | rbd-fuse + loop | rbdvol / rbd-fuse |")
print("|---|---|---|---|---|---|")
for job, label, i, div in [
    ("seqwrite", f"{seq} buffered write + fsync, MiB/s", 1, mib),
    ("coldread", f"{seq} cold sequential read, MiB/s", 1, mib),
    ("commit", "4 KiB write + fdatasync, qd 1, commits/s", 0, 1),
    ("randread1", "4 KiB random read, qd 1, IOPS", 0, 1),
    ("randread16", "4 KiB random read, qd 16, IOPS", 0, 1),
    ("smallfiles", "create + 4 KiB + fsync, files/s", 0, 1),
]:
    o, l, p = fig(job, "ours", i, div), fig(job, "librbd", i, div), fig(job, "peer", i, div)
    print(f"| {label} | {cell(o)} | {cell(l)} | {ratio(o, l)} | {cell(p)} | {ratio(o, p)} |")
for job, label in [("commit", "commit latency, ms"), ("randread1", "4 KiB read latency qd 1, ms")]:
    for i, q in [(2, "p50"), (3, "p99")]:
        o, l, p = fig(job, "ours", i), fig(job, "librbd", i), fig(job, "peer", i)
        print(f"| {label} {q} | {cell(o, '{:.2f}')} | {cell(l, '{:.2f}')} | {ratio(o, l)} | {cell(p, '{:.2f}')} | {ratio(o, p)} |")
ceiling = [(label, fig(job, "ram", 1, mib), fig(job, "librbd", 1, mib)) for job, label in [("seqwrite", f"{seq} buffered write + fsync"), ("coldread", f"{seq} cold sequential read")]]
print()
print("the same jobs on ext4 on a RAM disk (the kernel's buffered path, a device that costs nothing):")
for label, r, l in ceiling:
    if r:
        print(f"  {label}: {cell(r)} MiB/s, {ratio(r, l)} librbd's")
EOF
