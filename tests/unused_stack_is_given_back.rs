//! `host::sys::release_unused_stack` on a real main thread (this test has
//! no harness: the test harness would run it on a thread of its own).

use std::hint::black_box;

/// Resident KiB of this process's `[stack]` mapping.
fn stack_rss_kib() -> u64 {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let at = smaps.find("[stack]").expect("a [stack] mapping");
    smaps[at..].lines().find_map(|l| l.strip_prefix("Rss:")).and_then(|v| v.split_whitespace().next()?.parse().ok()).unwrap()
}

/// Touches `kib` KiB of stack below the caller, as Ceph's static
/// constructors do, then returns.
#[inline(never)]
fn touch_stack(kib: usize) -> u8 {
    let mut page = [0u8; 4096];
    page[0] = kib as u8;
    let below = if kib > 4 { touch_stack(kib - 4) } else { 0 };
    black_box(&mut page)[4095].wrapping_add(below)
}

fn main() {
    // A canary in this frame, which must survive.
    let canary = black_box([0x5au8; 48 << 10]);
    black_box(touch_stack(1024));
    let before = stack_rss_kib();
    assert!(before >= 1024, "touching 1 MiB of stack left only {before} KiB resident");
    rbdvol::host::sys::release_unused_stack().unwrap();
    let after = stack_rss_kib();
    assert!(before - after >= 900, "the stack went from {before} to {after} KiB resident: not given back");
    assert!(canary.iter().all(|&b| b == 0x5a), "the caller's frame was damaged");
    // The stack works as before: deep calls fault pages back in.
    black_box(touch_stack(1024));
    println!("releasing the unused stack: {before} KiB resident before, {after} KiB after");
}
