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
# Everything is built first. The guest binary (a QEMU VM running Debian's
# kernel, ~4 min, waiting mostly on the emulated guest) then runs beside
# the other binaries, which run one after the other as before: the whole
# run stays inside CI's 30 minutes. Its output is printed when it ends; a
# failure of either fails the run.
cargo test --locked --workspace --all-targets --no-run
guest_exe=$(cargo test --locked --test guest --no-run --message-format=json \
    | python3 -c 'import json,sys; print([m["executable"] for m in map(json.loads, sys.stdin) if m.get("executable") and m["target"]["name"] == "guest"][0])')
guest_log=$(mktemp /tmp/rbdvol-guest-tests.XXXXXX)
"$guest_exe" > "$guest_log" 2>&1 &
guest_pid=$!
others=(--lib --bins --benches)
for t in tests/*.rs; do
    name=$(basename "$t" .rs)
    [ "$name" = guest ] || others+=(--test "$name")
done
status=0
cargo test --locked --workspace "${others[@]}" || status=$?
guest_status=0
wait "$guest_pid" || guest_status=$?
echo "---- tests/guest.rs (run beside the others) ----"
cat "$guest_log"
rm -f "$guest_log"
[ "$guest_status" -eq 0 ] || { echo "tests/guest.rs failed (exit $guest_status)"; status=1; }
exit "$status"
