#!/usr/bin/env bash
# Builds the managed plugin directory (config.json + rootfs/) from a built
# rbdvol binary and exactly what it runs, copied from this host's Debian
# packages: no image registry, no Docker build.
#
#   docker/build.sh [--binary target/release/rbdvol] [--out build/plugin] [--csi]
#   docker plugin create rbd build/plugin
#
# --csi: the CSI plugin for swarm cluster volumes (docker volume create
# --type mount ...; Docker 28.2+ or 25.0.12+): docker/csi/config.json, and
# the directories swarm stages (/data/staged) and publishes (/data/published,
# the propagated mount) volumes under. Same rootfs otherwise.
#
# The rootfs holds: rbdvol (stripped); mkfs.ext4/e2fsck/resize2fs
# (e2fsprogs), mkfs.xfs/xfs_growfs (xfsprogs), blkid (util-linux), modprobe
# (kmod), rbd-nbd when installed; the shared-library closure of all of them
# (librbd, librados, libceph-common, ...) and librados's crypto and
# compressor plugins; an ld.so cache. Nothing else: no shell.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
binary=$here/target/release/rbdvol
out=$here/build/plugin
csi=false
while [ $# -gt 0 ]; do
    case $1 in
        --binary) binary=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        --csi) csi=true; shift ;;
        *) echo "usage: $0 [--binary PATH] [--out DIR] [--csi]" >&2; exit 2 ;;
    esac
done
[ -x "$binary" ] || { echo "build.sh: no rbdvol binary at $binary (cargo build --release first)" >&2; exit 1; }
for t in ldd strip ldconfig; do
    command -v "$t" >/dev/null || { echo "build.sh: $t is missing (apt-get install binutils libc-bin)" >&2; exit 1; }
done

root=$out/rootfs
rm -rf "$out"
mkdir -p "$root"
if $csi; then
    cp "$here/docker/csi/config.json" "$out/config.json"
else
    cp "$here/config.json" "$out/config.json"
fi

# Debian 12 merges /usr: the top-level dirs are links into it.
mkdir -p "$root/usr/bin" "$root/usr/sbin" "$root/usr/lib" "$root/usr/lib64"
for d in bin sbin lib lib64; do ln -s "usr/$d" "$root/$d"; done

# copy PATH: the file at its real directory, and every symlink on the way
# to it, as links.
copy() {
    local path=$1 dir base
    dir=$(realpath "$(dirname "$path")")
    base=$(basename "$path")
    path=$dir/$base
    [ -e "$root$path" ] || [ -L "$root$path" ] && return 0
    mkdir -p "$root$dir"
    if [ -L "$path" ]; then
        local target
        target=$(readlink "$path")
        ln -s "$target" "$root$path"
        case $target in
            /*) copy "$target" ;;
            *) copy "$dir/$target" ;;
        esac
    else
        cp -p "$path" "$root$path"
    fi
}

with_libs() {
    copy "$1"
    local lib
    # ldd prints "name => /path (addr)" and the loader as "/path (addr)".
    for lib in $(ldd "$1" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }'); do
        copy "$lib"
    done
}

install -D -m 0755 "$binary" "$root/usr/bin/rbdvol"
strip "$root/usr/bin/rbdvol"
for lib in $(ldd "$binary" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }'); do
    copy "$lib"
done

tools=(mkfs.ext4 mke2fs e2fsck resize2fs mkfs.xfs xfs_growfs blkid modprobe)
optional=(rbd-nbd)
for t in "${tools[@]}"; do
    p=$(PATH=/usr/sbin:/usr/bin:/sbin:/bin command -v "$t") || { echo "build.sh: $t is missing (apt-get install e2fsprogs xfsprogs util-linux kmod)" >&2; exit 1; }
    with_libs "$p"
done
for t in "${optional[@]}"; do
    if p=$(PATH=/usr/sbin:/usr/bin:/sbin:/bin command -v "$t"); then with_libs "$p"; fi
done

# librados loads these at run time (messenger v2 secure mode, compression).
multiarch=$(dirname "$(ldd "$binary" | awk '/librados/ { print $3 }')")
for d in crypto compressor; do
    [ -d "$multiarch/ceph/$d" ] || continue
    for f in "$multiarch/ceph/$d"/*.so*; do with_libs "$f"; done
done

mkdir -p "$root/etc"
[ -f /etc/mke2fs.conf ] && cp /etc/mke2fs.conf "$root/etc/"
printf 'root:x:0:0:root:/root:/usr/sbin/nologin\n' >"$root/etc/passwd"
printf 'root:x:0:\n' >"$root/etc/group"
ldconfig -r "$root" 2>/dev/null || true
for d in dev proc sys tmp run/docker/plugins run/rbdvol mnt/volumes var/lib/rbdvol lib/modules; do
    mkdir -p "$root/$d"
done
if $csi; then
    # Swarm's NodeStageVolume/NodePublishVolume paths, in the plugin's own
    # filesystem; dockerd makes neither.
    mkdir -p "$root/data/staged" "$root/data/published"
fi
chmod 1777 "$root/tmp"

echo "plugin directory: $out"
echo "rootfs size: $(du -sh "$root" | cut -f1)"
