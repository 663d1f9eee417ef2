#!/usr/bin/env bash
# Quick start: installs what rbdvol needs, builds it, boots a throwaway local
# Ceph cluster and runs `rbdvol check --write` against it (connect, create,
# grow, tag, write, read back and remove an image, all through librbd).
# Everything it starts is stopped when it exits.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --locked --release
dir=$(mktemp -d /tmp/rbdvol-quickstart.XXXXXX)
rmdir "$dir"
trap 'scripts/ceph-test-cluster.sh down "$dir"' EXIT
echo "booting a throwaway ceph cluster in $dir ..." >&2
cluster=$(scripts/ceph-test-cluster.sh up "$dir" --owner-pid $$)
eval "$(grep -E '^CEPH_(MON_HOST|KEYRING)=' <<<"$cluster")"
export RBD_CONF_GLOBAL_MON_HOST=$CEPH_MON_HOST
export RBD_CONF_KEYRING_USER=client.admin
# The key goes through the environment, never the command line.
RBD_CONF_KEYRING_KEY=$(sed -n 's/^[[:space:]]*key = //p' "$CEPH_KEYRING")
export RBD_CONF_KEYRING_KEY
target/release/rbdvol check --pool rbd --write
