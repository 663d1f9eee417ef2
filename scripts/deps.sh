#!/usr/bin/env bash
# Installs what building and testing rbdvol needs on Debian 12, skipping what
# is already there. Run as root.
set -euo pipefail

packages=(
    # build
    gcc pkg-config librbd-dev librados-dev
    # the throwaway test cluster
    ceph-mon ceph-osd ceph-mgr ceph-common uuid-runtime python3 procps
    # what rbdvol runs on the host: filesystems, blkid, FUSE, modprobe
    e2fsprogs xfsprogs util-linux fuse3 kmod
    # end-to-end tests: a real dockerd and a static busybox for the test image
    docker.io busybox-static docker-compose
    # `docker plugin upgrade` pulls the new plugin from a registry: a local one
    docker-registry
    # docker/build.sh: strip and ldconfig
    binutils libc-bin
    # benchmarks: the peers' way (rbd CLI is in ceph-common), fio, fuser (their teardown)
    rbd-fuse fio curl psmisc
    # the QEMU guest test bed (Debian's kernel, krbd and rbd-nbd): the
    # emulator, rbd-nbd for the guest, tap devices, the kernel package tools
    qemu-system-x86 rbd-nbd iproute2 dpkg
    # the metrics endpoint's test: a real Prometheus scraping it, and promtool
    prometheus
)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "deps: installing ${missing[*]}" >&2
    [ "$(id -u)" = 0 ] || { echo "deps: run as root to install ${missing[*]}" >&2; exit 1; }
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Rust: Debian 12's rustc (1.63) is too old for the crates rbdvol uses.
if ! command -v cargo >/dev/null; then
    [ -x "${HOME:-/root}/.cargo/bin/cargo" ] && export PATH="${HOME:-/root}/.cargo/bin:$PATH"
fi
command -v cargo >/dev/null \
    || { echo "deps: cargo is missing: install Rust 1.85 or newer with rustup (https://rustup.rs)" >&2; exit 1; }
rustc_minor=$(rustc --version | sed -E 's/^rustc 1\.([0-9]+).*/\1/')
[ "$rustc_minor" -ge 85 ] \
    || { echo "deps: $(rustc --version) is too old: rbdvol needs Rust 1.85 or newer (rustup update)" >&2; exit 1; }
