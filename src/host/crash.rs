//! Named crash points, for the crash tests: in debug builds, when
//! `RBDVOL_CRASH_AT` is `POINT@VOLUME`, reaching that point for that volume
//! kills this process with SIGKILL, as a crash or `kill -9` would, at
//! exactly that step (other volumes pass). Release builds compile every
//! point to nothing (and never read the variable). The user-space servers
//! get the variable from the plugin (`pass_on`), and their points are
//! keyed by image name. With `RBDVOL_CRASH_LOG` set, a dying process first
//! appends `POINT@VOLUME` to that file: the test learns which process died
//! where, also when it is a server whose own log goes with it.

/// Every crash point, in the order an operation reaches them.
pub const POINTS: &[&str] = &[
    "create.intent",
    "create.image",
    "create.limited",
    "create.marked",
    "create.copy",
    "create.formatted",
    "clone.cloned",
    "adopt.intent",
    "adopt.marked",
    "forget.stripped",
    "mount.locked",
    "mount.mapped",
    "mount.mounted",
    "mount.recorded",
    "mount.saved",
    "unmount.unmounted",
    "unmount.unmapped",
    "unmount.forgotten",
    "unmount.released",
    "stage.mounted",
    "publish.mounted",
    "unpublish.unbound",
    "unpublish.unreferenced",
    "remove.locked",
    "remove.hidden",
    "remove.recorded",
    "remove.trashed",
    "purge.deleted",
    "restore.restored",
    "restore.listed",
    "grow.refreshed",
    "grow.grown",
    "takeover.blocklisted",
    "takeover.broken",
    "resize.grown",
    "server.opened",
    "server.ready",
    "server.flushed",
];

/// The variables that arm crash points.
const VARS: [&str; 2] = ["RBDVOL_CRASH_AT", "RBDVOL_CRASH_LOG"];

/// Passes the crash-point variables on to a child that runs rbdvol code
/// (debug builds only; children otherwise get a clean environment).
pub fn pass_on(cmd: &mut std::process::Command) {
    if cfg!(debug_assertions) {
        for var in VARS {
            if let Ok(v) = std::env::var(var) {
                cmd.env(var, v);
            }
        }
    }
}

/// Dies here if `RBDVOL_CRASH_AT` is `point@volume` (debug builds only).
#[cfg(debug_assertions)]
pub fn point(point: &'static str, volume: &str) {
    static AT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    debug_assert!(POINTS.contains(&point), "unknown crash point {point}");
    let at = AT.get_or_init(|| std::env::var("RBDVOL_CRASH_AT").ok());
    if at.as_deref().and_then(|a| a.split_once('@')) == Some((point, volume)) {
        eprintln!("crash point {point}: killing this process");
        if let Ok(log) = std::env::var(VARS[1]) {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let opened = std::fs::OpenOptions::new().append(true).create(true).mode(0o600).custom_flags(libc::O_NOFOLLOW).open(log);
            if let Ok(mut f) = opened {
                let _ = writeln!(f, "{point}@{volume} {}", std::process::id());
            }
        }
        // SAFETY: kill(2) on our own pid with a signal number; no memory.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    }
}

#[cfg(not(debug_assertions))]
#[inline(always)]
pub fn point(_point: &'static str, _volume: &str) {}
