//! The mount table, behind a trait so the engine's host path can be unit
//! tested with a recording fake (as youki keeps its syscalls): the real
//! [`SystemMounts`] calls `sys`, [`fake::FakeMounts`] records and fails on
//! request.

use std::path::Path;

use super::sys::{self, MountEntry};
use super::HostError;

pub trait MountTable: Send + Sync {
    fn mount(&self, device: &Path, target: &Path, fstype: &str, options: &str) -> Result<(), HostError>;
    fn unmount(&self, target: &Path) -> Result<(), HostError>;
    /// Detaches `target` from the tree at once (lazy unmount).
    fn unmount_detached(&self, target: &Path) -> Result<(), HostError>;
    /// What is mounted now.
    fn mounts(&self) -> Result<Vec<MountEntry>, HostError>;
    /// Binds the directory `source` at `target` (made if missing), read-only
    /// if asked; `target` already a mount point is left as it is.
    fn bind(&self, source: &Path, target: &Path, read_only: bool) -> Result<(), HostError>;
    /// Removes the empty directory `dir` (a publish or staging target);
    /// gone already is fine.
    fn remove_dir(&self, dir: &Path) -> Result<(), HostError>;
    /// Undoes a bind at `target` of the filesystem on `device` (mounted at
    /// `mountpoint`, or no longer mounted anywhere else), detached at once
    /// if asked. Anything else at `target` is left as it is.
    fn unbind(&self, device: &Path, mountpoint: &Path, target: &Path, detach: bool) -> Result<Unbound, HostError>;
}

/// What an `unbind` found at its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unbound {
    /// The volume's bind: unmounted.
    Unmounted,
    /// Nothing mounted there (or no such path).
    NothingThere,
    /// Another filesystem is mounted there: left alone.
    Foreign,
}

/// This host's mount table.
pub struct SystemMounts;

impl MountTable for SystemMounts {
    fn mount(&self, device: &Path, target: &Path, fstype: &str, options: &str) -> Result<(), HostError> {
        sys::mount(device, target, fstype, options)
    }
    fn unmount(&self, target: &Path) -> Result<(), HostError> {
        sys::unmount(target)
    }
    fn unmount_detached(&self, target: &Path) -> Result<(), HostError> {
        sys::unmount_detached(target)
    }
    fn mounts(&self) -> Result<Vec<MountEntry>, HostError> {
        sys::mounts()
    }
    fn bind(&self, source: &Path, target: &Path, read_only: bool) -> Result<(), HostError> {
        // mountinfo names paths resolved: a root reached through a symlink
        // is compared as the kernel sees it (or every repeat stacks a bind).
        let source = sys::resolved_existing(source)?;
        let mounts = sys::mounts()?;
        // The last mount at a path is the one seen there.
        let Some(source_dev) = mounts.iter().rev().find(|m| m.target == source).map(|m| m.dev.as_str()) else {
            return Err(HostError::Invalid { what: "bind source", value: source.display().to_string(), reason: "nothing is mounted there: the volume is not mounted on this host".into() });
        };
        let target = sys::resolved(target)?;
        let (source, target) = (source.as_path(), target.as_path());
        if let Some(there) = mounts.iter().rev().find(|m| m.target == target) {
            if source_dev == there.dev {
                return Ok(());
            }
            return Err(HostError::Invalid {
                what: "bind target",
                value: target.display().to_string(),
                reason: format!("something other than {} is mounted there ({}): unmount it first", source.display(), there.source),
            });
        }
        sys::bind(source, target, read_only)
    }
    fn remove_dir(&self, dir: &Path) -> Result<(), HostError> {
        sys::remove_empty_dir(dir)
    }
    fn unbind(&self, device: &Path, mountpoint: &Path, target: &Path, detach: bool) -> Result<Unbound, HostError> {
        let target = match std::fs::canonicalize(target) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Unbound::NothingThere),
            Err(e) => return Err(HostError::io("resolve", target)(e)),
        };
        let mounts = sys::mounts()?;
        let Some(there) = mounts.iter().rev().find(|m| m.target == target) else { return Ok(Unbound::NothingThere) };
        // The volume's filesystem: its device's (also once its mountpoint is
        // gone), or the one at its mountpoint.
        let mountpoint = std::fs::canonicalize(mountpoint).unwrap_or_else(|_| mountpoint.to_path_buf());
        let at_mountpoint = mounts.iter().rev().find(|m| m.target == mountpoint).map(|m| m.dev.as_str());
        if Path::new(&there.source) != device && at_mountpoint != Some(there.dev.as_str()) {
            tracing::warn!("{}: left mounted: {} is mounted there, not volume device {}", target.display(), there.source, device.display());
            return Ok(Unbound::Foreign);
        }
        if detach {
            sys::unmount_detached(&target)?;
        } else {
            sys::unmount(&target)?;
        }
        Ok(Unbound::Unmounted)
    }
}

#[cfg(test)]
pub mod fake {
    use std::collections::BTreeSet;
    use std::path::{Path, PathBuf};
    use std::sync::{Arc, Mutex};

    use super::{MountEntry, MountTable};
    use crate::host::mapper::fake::Journal;
    use crate::host::HostError;

    /// A mount table in memory: records mounts and unmounts in a journal
    /// (shared with the other fakes, so a test sees the order of all
    /// steps) and fails the calls named in `fail`.
    #[derive(Clone, Default)]
    pub struct FakeMounts {
        pub journal: Journal,
        mounted: Arc<Mutex<Vec<MountEntry>>>,
        failing: Arc<Mutex<BTreeSet<String>>>,
        /// While true, `unmount` waits.
        unmount_held: Arc<(Mutex<bool>, std::sync::Condvar)>,
    }

    impl FakeMounts {
        pub fn new(journal: Journal) -> FakeMounts {
            FakeMounts { journal, ..Default::default() }
        }

        /// Makes every later `mount` or `unmount` fail.
        pub fn fail(&self, call: &str) {
            self.failing.lock().unwrap().insert(call.to_string());
        }

        pub fn unfail(&self, call: &str) {
            self.failing.lock().unwrap().remove(call);
        }

        /// From now on `unmount` waits until `release_unmount`.
        pub fn hold_unmount(&self) {
            *self.unmount_held.0.lock().unwrap() = true;
        }

        pub fn release_unmount(&self) {
            *self.unmount_held.0.lock().unwrap() = false;
            self.unmount_held.1.notify_all();
        }

        /// Adds a mount as if left by an earlier run.
        pub fn add(&self, device: &Path, target: &Path) {
            self.mounted.lock().unwrap().push(MountEntry { source: device.display().to_string(), target: target.to_path_buf(), fstype: "ext4".into(), dev: String::new() });
        }

        pub fn targets(&self) -> Vec<PathBuf> {
            self.mounted.lock().unwrap().iter().map(|m| m.target.clone()).collect()
        }

        fn check(&self, call: &str, target: &Path) -> Result<(), HostError> {
            if self.failing.lock().unwrap().contains(call) {
                return Err(HostError::Invalid { what: "fail point", value: target.display().to_string(), reason: format!("{call} fails on request") });
            }
            Ok(())
        }
    }

    impl MountTable for FakeMounts {
        fn mount(&self, device: &Path, target: &Path, fstype: &str, _options: &str) -> Result<(), HostError> {
            self.check("mount", target)?;
            self.journal.lock().unwrap().push(format!("mount {}", target.display()));
            self.mounted.lock().unwrap().push(MountEntry { source: device.display().to_string(), target: target.to_path_buf(), fstype: fstype.into(), dev: String::new() });
            Ok(())
        }
        fn unmount(&self, target: &Path) -> Result<(), HostError> {
            self.check("unmount", target)?;
            let mut held = self.unmount_held.0.lock().unwrap();
            while *held {
                held = self.unmount_held.1.wait(held).unwrap();
            }
            drop(held);
            let mut mounted = self.mounted.lock().unwrap();
            let before = mounted.len();
            mounted.retain(|m| m.target != target);
            // Like umount(2): not mounted is no change.
            if mounted.len() != before {
                self.journal.lock().unwrap().push(format!("unmount {}", target.display()));
            }
            Ok(())
        }
        fn unmount_detached(&self, target: &Path) -> Result<(), HostError> {
            self.check("unmount_detached", target)?;
            let mut mounted = self.mounted.lock().unwrap();
            let before = mounted.len();
            mounted.retain(|m| m.target != target);
            if mounted.len() != before {
                self.journal.lock().unwrap().push(format!("unmount_detached {}", target.display()));
            }
            Ok(())
        }
        fn mounts(&self) -> Result<Vec<MountEntry>, HostError> {
            Ok(self.mounted.lock().unwrap().clone())
        }
        fn bind(&self, source: &Path, target: &Path, read_only: bool) -> Result<(), HostError> {
            self.check("bind", target)?;
            let mut mounted = self.mounted.lock().unwrap();
            // Like the kernel: a bind shows the device of the filesystem
            // mounted at its source.
            let Some(device) = mounted.iter().rev().find(|m| m.target == source).map(|m| m.source.clone()) else {
                return Err(HostError::Invalid { what: "bind source", value: source.display().to_string(), reason: "nothing is mounted there".into() });
            };
            if let Some(there) = mounted.iter().rev().find(|m| m.target == target) {
                if there.source == device {
                    return Ok(());
                }
                return Err(HostError::Invalid { what: "bind target", value: target.display().to_string(), reason: format!("{} is mounted there", there.source) });
            }
            let ro = if read_only { " ro" } else { "" };
            self.journal.lock().unwrap().push(format!("bind {} {}{ro}", source.display(), target.display()));
            mounted.push(MountEntry { source: device, target: target.to_path_buf(), fstype: "bind".into(), dev: String::new() });
            Ok(())
        }
        fn remove_dir(&self, dir: &Path) -> Result<(), HostError> {
            self.check("remove_dir", dir)?;
            self.journal.lock().unwrap().push(format!("rmdir {}", dir.display()));
            Ok(())
        }
        fn unbind(&self, device: &Path, mountpoint: &Path, target: &Path, detach: bool) -> Result<super::Unbound, HostError> {
            self.check("unbind", target)?;
            let mut mounted = self.mounted.lock().unwrap();
            let Some(i) = mounted.iter().rposition(|m| m.target == target) else { return Ok(super::Unbound::NothingThere) };
            let at_mountpoint = mounted.iter().rev().find(|m| m.target == mountpoint).map(|m| m.source.clone());
            let source = &mounted[i].source;
            if *source != device.display().to_string() && Some(source) != at_mountpoint.as_ref() {
                return Ok(super::Unbound::Foreign);
            }
            mounted.remove(i);
            let verb = if detach { "unmount_detached" } else { "unmount" };
            self.journal.lock().unwrap().push(format!("{verb} {}", target.display()));
            Ok(super::Unbound::Unmounted)
        }
    }
}
