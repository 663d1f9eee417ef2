#!/usr/bin/env bash
# The whole test suite: installs what it needs, starts dockerd when none
# runs, then runs every unit test, every system test (each test binary boots
# its own throwaway Ceph cluster) and a one-pass run of the benchmarks.
# Fails, never skips, when a service cannot start.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
# A real Consul agent for tests/consul.rs (Debian 11's, unless one is on PATH).
echo "consul: $(scripts/consul.sh)"
export PATH="${HOME:-/root}/.cargo/bin:$PATH"
started=$(scripts/dockerd.sh /tmp/rbdvol-test-dockerd.log)
stop_dockerd() { if [ -n "$started" ]; then kill "$started" 2>/dev/null || true; fi; }
trap stop_dockerd EXIT
cargo test --locked --workspace --all-targets
