#!/usr/bin/env bash
# The whole test suite: installs what it needs, then runs every unit test,
# system test (each boots its own throwaway Ceph cluster) and a one-pass run
# of the benchmarks. Fails, never skips, when a service cannot start.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo test --locked --workspace --all-targets
