#!/usr/bin/env bash
# The QEMU guest test bed: Debian's own kernel (which has the rbd and nbd
# modules this project's machines lack), booted with software emulation,
# running the real rbdvol binary from the managed plugin's rootfs.
#
#   guest.sh build --binary PATH --out DIR
#       DIR/vmlinuz and DIR/initramfs.cpio.gz: Debian's kernel package,
#       downloaded once into /var/cache/rbdvol/guest and unpacked (not
#       installed); the plugin rootfs from docker/build.sh with PATH as
#       rbdvol, plus busybox (the guest's shell), curl (to speak to the
#       plugin's socket), the modules for virtio-net, rbd, nbd, ext4 and xfs
#       with their dependencies and a modules.dep, and guest/init.
#   guest.sh tap-up NAME ADDR/24 --owner-pid PID
#       a tap device with the host's address; a detached reaper removes it
#       as soon as PID is gone (a failed or killed test leaves nothing).
#   guest.sh tap-down NAME
#
# The guest reads its parameters (monitors, key, scenario) from a second
# cpio archive the test appends to the initramfs: the key never appears on
# the kernel command line or the console.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
cache=/var/cache/rbdvol/guest
die() { echo "guest.sh: $*" >&2; exit 1; }

kernel_version() {
    # What Debian 12's linux-image-amd64 points to, e.g. 6.1.0-57-amd64.
    apt-cache depends linux-image-amd64 2>/dev/null | sed -n 's/.*Depends: linux-image-\([0-9].*-amd64\)$/\1/p' | head -1
}

# Unpacks the kernel package into $cache/<version>/root; prints the version.
kernel() {
    local version=${RBDVOL_GUEST_KERNEL:-}
    if [ -z "$version" ]; then
        version=$(ls "$cache" 2>/dev/null | grep -E '^[0-9].*-amd64$' | sort -V | tail -1 || true)
        [ -n "$version" ] && [ -f "$cache/$version/root/boot/vmlinuz-$version" ] || version=$(kernel_version)
    fi
    [ -n "$version" ] || die "cannot tell which kernel linux-image-amd64 depends on (apt-get update first)"
    local dir=$cache/$version
    if [ ! -f "$dir/root/boot/vmlinuz-$version" ]; then
        mkdir -p "$dir/deb"
        if ! ls "$dir"/deb/linux-image-*.deb >/dev/null 2>&1; then
            (cd "$dir/deb" && apt-get download "linux-image-$version" >&2) || die "apt-get download linux-image-$version failed"
        fi
        rm -rf "$dir/root.tmp" "$dir/root"
        dpkg -x "$dir"/deb/linux-image-*.deb "$dir/root.tmp"
        mv "$dir/root.tmp" "$dir/root"
    fi
    echo "$version"
}

# The modules to load and everything they depend on (modinfo's depends).
modules_closure() {
    local tree=$1; shift
    local -A seen=()
    local queue=("$@") m file dep
    while [ ${#queue[@]} -gt 0 ]; do
        m=${queue[0]}; queue=("${queue[@]:1}")
        [ -n "${seen[$m]:-}" ] && continue
        file=$(find "$tree" -name "$m.ko" -o -name "${m//_/-}.ko" | head -1)
        [ -n "$file" ] || die "module $m not found in $tree"
        seen[$m]=1
        echo "$file"
        for dep in $(modinfo -F depends "$file" | tr ',' ' '); do queue+=("$dep"); done
    done
}

build() {
    local binary="" out=""
    while [ $# -gt 0 ]; do
        case $1 in
            --binary) binary=$2; shift 2 ;;
            --out) out=$2; shift 2 ;;
            *) die "usage: guest.sh build --binary PATH --out DIR" ;;
        esac
    done
    [ -x "$binary" ] && [ -n "$out" ] || die "usage: guest.sh build --binary PATH --out DIR"
    for t in busybox curl modinfo depmod gzip; do command -v "$t" >/dev/null || die "$t is missing: run scripts/deps.sh"; done
    busybox --list >/dev/null 2>&1 && ! ldd "$(command -v busybox)" >/dev/null 2>&1 || die "busybox must be busybox-static"
    local version tree
    version=$(kernel)
    tree=$cache/$version/root/lib/modules/$version
    mkdir -p "$out"
    "$here/docker/build.sh" --binary "$binary" --out "$out/plugin" >/dev/null
    local root=$out/plugin/rootfs
    # busybox for the shell and the usual tools, where rbdvol's tools are not.
    mkdir -p "$root/bin" "$root/guest"
    cp "$(command -v busybox)" "$root/guest/busybox"
    local a
    for a in $(busybox --list); do
        [ "$a" = busybox ] || [ -e "$root/usr/bin/$a" ] || [ -e "$root/usr/sbin/$a" ] || ln -s /guest/busybox "$root/usr/bin/$a"
    done
    # curl and its libraries, to call the plugin's Unix socket.
    local f
    for f in "$(command -v curl)" $(ldd "$(command -v curl)" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }'); do
        f=$(realpath "$f")
        mkdir -p "$root$(dirname "$f")"
        [ -e "$root$f" ] || cp "$f" "$root$f"
    done
    ldconfig -r "$root"
    # The kernel's modules: only what the tests load, with modules.dep.
    local mods=$root/lib/modules/$version
    mkdir -p "$mods"
    cp "$tree"/modules.order "$tree"/modules.builtin* "$mods/" 2>/dev/null || true
    # crc32c_generic: libcrc32c wants a crc32c (a soft dependency, not in
    # modinfo's depends).
    for f in $(modules_closure "$tree" virtio_pci virtio_net crc32c_generic rbd nbd ext4 xfs gcm ghash_generic ctr); do
        mkdir -p "$mods/$(dirname "${f#"$tree"/}")"
        cp "$f" "$mods/${f#"$tree"/}"
    done
    depmod -b "$root" "$version"
    mkdir -p "$root"/{proc,sys,dev,tmp,run,mnt,var/lib}
    install -m 0755 "$here/scripts/guest-init.sh" "$root/init"
    cp "$cache/$version/root/boot/vmlinuz-$version" "$out/vmlinuz"
    (cd "$root" && find . | busybox cpio -o -H newc 2>/dev/null | gzip -1) >"$out/initramfs.cpio.gz"
    rm -rf "$out/plugin"
    echo "KERNEL=$version"
    echo "VMLINUZ=$out/vmlinuz"
    echo "INITRAMFS=$out/initramfs.cpio.gz"
}

tap_up() {
    local name=$1 addr=$2 owner=""
    shift 2
    [ "${1:-}" = --owner-pid ] && owner=$2
    [ -c /dev/net/tun ] || die "/dev/net/tun is missing: the guest's network needs it"
    ip tuntap add dev "$name" mode tap
    ip addr add "$addr" dev "$name"
    ip link set "$name" up
    if [ -n "$owner" ]; then
        setsid bash -c 'while kill -0 "$1" 2>/dev/null; do sleep 1; done; ip link del "$2" 2>/dev/null' \
            reaper "$owner" "$name" </dev/null >/dev/null 2>&1 &
    fi
}

case ${1:-} in
    build) shift; build "$@" ;;
    kernel) kernel ;;
    tap-up) [ $# -ge 3 ] || die "usage: guest.sh tap-up NAME ADDR/24 [--owner-pid PID]"; shift; tap_up "$@" ;;
    tap-down) [ $# -eq 2 ] || die "usage: guest.sh tap-down NAME"; ip link del "$2" 2>/dev/null || true ;;
    *) die "usage: guest.sh build|kernel|tap-up|tap-down ..." ;;
esac
