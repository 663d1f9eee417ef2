//! Named crash points, for the crash tests: in debug builds, when
//! `RBDVOL_CRASH_AT` is `POINT@VOLUME`, reaching that point for that volume
//! kills this process with SIGKILL, as a crash or `kill -9` would, at
//! exactly that step (other volumes pass). Release builds compile every
//! point to nothing (and never read the variable).

/// Every crash point, in the order an operation reaches them.
pub const POINTS: &[&str] = &[
    "create.intent",
    "create.image",
    "create.marked",
    "create.copy",
    "create.formatted",
    "clone.cloned",
    "mount.locked",
    "mount.mapped",
    "mount.mounted",
    "mount.recorded",
    "mount.saved",
    "unmount.unmounted",
    "unmount.unmapped",
    "unmount.forgotten",
    "unmount.unrecorded",
    "remove.locked",
    "remove.hidden",
    "purge.deleted",
    "grow.refreshed",
    "grow.grown",
    "takeover.blocklisted",
    "takeover.broken",
];

/// Dies here if `RBDVOL_CRASH_AT` is `point@volume` (debug builds only).
#[cfg(debug_assertions)]
pub fn point(point: &'static str, volume: &str) {
    static AT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    debug_assert!(POINTS.contains(&point), "unknown crash point {point}");
    let at = AT.get_or_init(|| std::env::var("RBDVOL_CRASH_AT").ok());
    if at.as_deref().and_then(|a| a.split_once('@')) == Some((point, volume)) {
        eprintln!("crash point {point}: killing this process");
        // SAFETY: kill(2) on our own pid with a signal number; no memory.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    }
}

#[cfg(not(debug_assertions))]
#[inline(always)]
pub fn point(_point: &'static str, _volume: &str) {}
