#!/usr/bin/env bash
# Prints the path of a consul binary, fetching Debian 11's consul 1.8.7
# (MPL-2.0, static) when none is on PATH: first from the bullseye suite of
# this machine's Debian mirror (downloaded, unpacked with dpkg -x, never
# installed), else from the cached package in ../shared/deps/. The binary
# is kept in /var/cache/rbdvol/consul/.
set -euo pipefail

if command -v consul >/dev/null; then
    command -v consul
    exit 0
fi
cache=/var/cache/rbdvol/consul
bin=$cache/usr/bin/consul
if [ -x "$bin" ]; then
    echo "$bin"
    exit 0
fi
mkdir -p "$cache"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
deb=
uri=$(awk '/^URIs:/ { print $2; exit }' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
uri=${uri:-http://deb.debian.org/debian}
echo "deb $uri bullseye main" >"$work/sources.list"
mkdir -p "$work/lists/partial" "$work/cache/archives/partial"
apt_opts=(-o "Dir::Etc::SourceList=$work/sources.list" -o Dir::Etc::SourceParts=/dev/null
          -o "Dir::State::Lists=$work/lists" -o "Dir::Cache=$work/cache")
if apt-get "${apt_opts[@]}" update >/dev/null 2>&1 \
    && (cd "$work" && apt-get "${apt_opts[@]}" download consul >/dev/null 2>&1); then
    deb=$(ls "$work"/consul_*.deb 2>/dev/null | head -n1)
fi
if [ -z "$deb" ]; then
    here=$(cd "$(dirname "$0")/.." && pwd)
    cached=$(ls "$here"/../shared/deps/consul_*_amd64.deb 2>/dev/null | head -n1 || true)
    [ -n "$cached" ] || { echo "consul.sh: cannot download consul from bullseye and no cached package in ../shared/deps" >&2; exit 1; }
    sums=$(dirname "$cached")/SHA256SUMS
    if [ -f "$sums" ]; then
        (cd "$(dirname "$cached")" && grep " $(basename "$cached")\$" SHA256SUMS | sha256sum -c --quiet -) \
            || { echo "consul.sh: $cached does not match its SHA256SUMS" >&2; exit 1; }
    fi
    deb=$cached
fi
dpkg -x "$deb" "$cache"
[ -x "$bin" ] || { echo "consul.sh: $deb holds no usr/bin/consul" >&2; exit 1; }
echo "$bin"
