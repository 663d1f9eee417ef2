//! The managed plugin's first process: runs `rbdvol serve` as its child,
//! restarts it when it dies, forwards SIGTERM, and reaps orphans.
//!
//! Docker tears a plugin's container down — every process in it — when its
//! first process exits. Were that `serve` itself, a crash of serve would also
//! kill the user-space mapper's servers, and with them the I/O of every
//! container using a volume. Under this supervisor a crashed serve is
//! restarted in milliseconds, finds its volumes still mounted and served,
//! and carries on; the servers (serve's children) are reparented here and
//! reaped when they exit.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::{self, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::HostError;

/// A serve that lived shorter than this is restarted after a pause, so a
/// serve that cannot start does not spin.
const STEADY: Duration = Duration::from_secs(10);
const MAX_PAUSE: Duration = Duration::from_secs(30);

fn signals() -> SigSet {
    let mut set = SigSet::empty();
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGCHLD] {
        set.add(s);
    }
    set
}

fn spawn(exe: &Path, args: &[OsString]) -> Result<Pid, HostError> {
    let mut cmd = Command::new(exe);
    cmd.args(args);
    // SAFETY: the closure runs in the forked child before exec and only
    // calls sigprocmask, which is async-signal-safe; it allocates nothing.
    unsafe {
        cmd.pre_exec(|| {
            signal::sigprocmask(SigmaskHow::SIG_UNBLOCK, Some(&signals()), None).map_err(std::io::Error::from)
        });
    }
    let child = cmd.spawn().map_err(HostError::io("start", exe))?;
    // The pid is waited for below with waitpid, not through `child`.
    Ok(Pid::from_raw(child.id() as i32))
}

/// Runs `exe args` until it exits after a SIGTERM (or SIGINT) forwarded to
/// it; returns its exit code. Any other exit is a crash: it is restarted.
pub fn run(exe: &Path, args: &[OsString]) -> Result<i32, HostError> {
    // Outside a container (PID 1 reaps by itself), adopt orphans anyway.
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes one integer argument
    // and touches no memory of ours.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    signals().thread_block().map_err(HostError::sys("block signals in", exe))?;
    let mut child = spawn(exe, args)?;
    // `serve` or `csi`, as the logs name it.
    let what = args.first().map(|a| a.to_string_lossy().into_owned()).unwrap_or_default();
    let mut started = Instant::now();
    let mut pause = Duration::ZERO;
    let mut stopping = false;
    loop {
        let sig = signals().wait().map_err(HostError::sys("wait for signals in", exe))?;
        if sig != Signal::SIGCHLD {
            tracing::info!("{sig}: stopping {what} ({child})");
            stopping = true;
            let _ = signal::kill(child, Signal::SIGTERM);
            continue;
        }
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(nix::errno::Errno::ECHILD) => break,
                Ok(status) if status.pid() == Some(child) => {
                    let code = match status {
                        WaitStatus::Exited(_, code) => code,
                        WaitStatus::Signaled(_, s, _) => 128 + s as i32,
                        _ => continue,
                    };
                    if stopping {
                        return Ok(code);
                    }
                    if started.elapsed() >= STEADY {
                        pause = Duration::ZERO;
                    }
                    tracing::error!("{what} exited ({status:?}) {} ms after start: restarting it in {} s", started.elapsed().as_millis(), pause.as_secs());
                    std::thread::sleep(pause);
                    pause = (pause * 2).clamp(Duration::from_secs(1), MAX_PAUSE);
                    child = spawn(exe, args)?;
                    started = Instant::now();
                }
                Ok(_) => {} // an orphan (a user-space server) reaped
                Err(e) => return Err(HostError::Sys { op: "wait for children of", path: exe.into(), errno: e }),
            }
        }
    }
}
