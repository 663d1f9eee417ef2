//! Swarm's cluster volumes (CSI) on this host. Staging a volume is a Mount
//! under a reference of its own (`csi-stage:<staging path>`) with its
//! mountpoint bound at the staging path; publishing adds a reference
//! (`csi-publish:<target>`) and binds the mountpoint at the target. The
//! references are the Mount IDs of the classic path, kept in this host's
//! state, so a restart of the plugin knows what is staged and published.
//!
//! Swarm never sends NodeUnstageVolume after a normal unpublish
//! (moby/swarmkit#3178): the last unpublish of a volume also unstages it
//! (unmounts, unmaps, releases the host lock), so a drained volume can be
//! deleted or used on another node. NodeUnstage still works, for the
//! orchestrators that send it and for swarm after a restart of dockerd.
//!
//! Every bind is undone before the reference that keeps the filesystem
//! mounted goes: the last reference unmaps the device, which must then be
//! mounted nowhere.

use std::path::{Path, PathBuf};

use super::{Engine, EngineError, Inner, Unmounted, VolumeDriver};
use crate::host::crash;
use crate::host::mounts::Unbound;

const STAGE: &str = "csi-stage:";
const PUBLISH: &str = "csi-publish:";

fn stage_ref(staging: &Path) -> String {
    format!("{STAGE}{}", staging.display())
}

fn publish_ref(target: &Path) -> String {
    format!("{PUBLISH}{}", target.display())
}

/// What an unpublish did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unpublished {
    /// Unbound; the volume stays staged for other publishes.
    StillStaged,
    /// The last publish: the volume was also unstaged (unmapped, unlocked).
    Unstaged,
    /// Neither published nor staged here (a repeated call).
    NotPublished,
}

impl Engine {
    /// Stages volume `name` at `staging`: maps and mounts it (formatting a
    /// new volume) as Mount does, under the host lock, and binds its
    /// mountpoint at `staging`. Repeating it changes nothing.
    pub async fn stage(&self, name: &str, staging: &Path) -> Result<PathBuf, EngineError> {
        let reference = stage_ref(staging);
        let mounted = self.mount(name, &reference).await?;
        crash::point("stage.mounted", name);
        let (n, source, target) = (name.to_string(), mounted.path().to_path_buf(), staging.to_path_buf());
        self.locked("stage", name, move |inner| inner.bind_for(&n, &reference, &source, &target, false)).await?;
        Ok(staging.to_path_buf())
    }

    /// Publishes volume `name` at `target`: one more reference, and its
    /// mountpoint bound there (read-only if asked, or if the volume is).
    /// A volume not staged here is staged by this call's reference alone.
    pub async fn publish(&self, name: &str, target: &Path, read_only: bool) -> Result<(), EngineError> {
        let reference = publish_ref(target);
        let mounted = self.mount(name, &reference).await?;
        crash::point("publish.mounted", name);
        let (n, source, target) = (name.to_string(), mounted.path().to_path_buf(), target.to_path_buf());
        self.locked("publish", name, move |inner| inner.bind_for(&n, &reference, &source, &target, read_only)).await
    }

    /// Unpublishes volume `name` from `target`; the last publish unstages
    /// it too. One hold of the volume's lock: no publish comes between the
    /// count of the others and the unstage.
    pub async fn unpublish(&self, name: &str, target: &Path) -> Result<Unpublished, EngineError> {
        let (n, target) = (name.to_string(), target.to_path_buf());
        let (unpublished, released) = self.locked("unpublish", name, move |inner| inner.unpublish(&n, &target)).await?;
        if released {
            self.changed(name);
        }
        Ok(unpublished)
    }

    /// Unstages volume `name` from `staging`: unbinds it and drops its
    /// reference; the last reference unmounts, unmaps and unlocks.
    pub async fn unstage(&self, name: &str, staging: &Path) -> Result<Unmounted, EngineError> {
        let (n, staging) = (name.to_string(), staging.to_path_buf());
        let unmounted = self.locked("unstage", name, move |inner| inner.unstage(&n, &staging)).await?;
        if unmounted == Unmounted::Released {
            self.changed(name);
        }
        Ok(unmounted)
    }

    /// Why the cluster is taken for down, if it is (a CSI Probe answers
    /// "not ready" then).
    pub fn cluster_down(&self) -> Option<String> {
        self.inner.health.down_anywhere().map(|d| d.describe())
    }

    /// Whether the settings in force hold `key` (a key from a Swarm secret
    /// is in force once the settings watchers resolved again).
    pub fn has_settings_with_key(&self, key: &crate::config::Secret) -> bool {
        self.inner.connection.settings().is_ok_and(|s| s.key == *key)
    }

    /// Whether a connection to the cluster is made with the settings in
    /// force, and they hold `key`.
    pub fn connected_with_key(&self, key: &crate::config::Secret) -> bool {
        self.has_settings_with_key(key) && self.inner.connection.is_connected()
    }

    /// This host's id (the CSI node id).
    pub fn host_id(&self) -> &str {
        &self.inner.cfg.host_id
    }

    /// The references volume `name` is mounted with here (none when it is
    /// not mounted here).
    pub fn references(&self, name: &str) -> Vec<String> {
        self.inner.references(name)
    }
}

/// The binds a volume's CSI references name (its staging and publish
/// targets), for a teardown that takes the volume off this host.
pub(super) fn bind_targets(refs: &std::collections::BTreeMap<String, u32>) -> Vec<PathBuf> {
    refs.keys().filter_map(|r| r.strip_prefix(STAGE).or_else(|| r.strip_prefix(PUBLISH))).map(PathBuf::from).collect()
}

impl Inner {
    fn references(&self, name: &str) -> Vec<String> {
        self.mounted.lock().unwrap().get(name).map(|v| v.refs.keys().cloned().collect()).unwrap_or_default()
    }

    fn unpublish(&self, name: &str, target: &Path) -> Result<(Unpublished, bool), EngineError> {
        let refs = self.references(name);
        let this = publish_ref(target);
        let was_published = refs.contains(&this);
        let mut released = false;
        // Only what this volume's references name is touched: a target of
        // another volume, or a mount rbdvol did not make, is left alone.
        if was_published {
            self.unbind(name, target)?;
            crash::point("unpublish.unbound", name);
            released |= self.unmount(name, &this)? == Unmounted::Released;
        }
        if refs.iter().any(|r| r.starts_with(PUBLISH) && *r != this) {
            return Ok((Unpublished::StillStaged, released));
        }
        let stages: Vec<PathBuf> = refs.iter().filter_map(|r| r.strip_prefix(STAGE)).map(PathBuf::from).collect();
        if stages.is_empty() && !was_published {
            return Ok((Unpublished::NotPublished, released));
        }
        crash::point("unpublish.unreferenced", name);
        for staging in stages {
            released |= self.unstage(name, &staging)? == Unmounted::Released;
        }
        Ok((Unpublished::Unstaged, released))
    }

    fn unstage(&self, name: &str, staging: &Path) -> Result<Unmounted, EngineError> {
        let this = stage_ref(staging);
        if !self.references(name).contains(&this) {
            // Not staged there. Not mounted here at all: Unmount's answer,
            // which also releases a lock a crash left.
            if !self.mounted.lock().unwrap().contains_key(name) {
                return self.unmount(name, &this);
            }
            return Ok(Unmounted::NotMounted);
        }
        self.unbind(name, staging)?;
        self.unmount(name, &this)
    }

    /// Undoes the volume's bind at `path` and removes the directory; a
    /// foreign mount there is left, with its directory, and the call goes
    /// on (the reference goes: the volume's own bind is not there).
    fn unbind(&self, name: &str, path: &Path) -> Result<(), EngineError> {
        let Some((device, mountpoint)) = self.mounted.lock().unwrap().get(name).map(|v| (v.device.clone(), v.mountpoint.clone())) else {
            return Ok(());
        };
        if self.mount_table.unbind(&device, &mountpoint, path, false)? != Unbound::Foreign {
            self.mount_table.remove_dir(path)?;
        }
        Ok(())
    }

    /// Binds the volume's mountpoint at `target` while `reference` still
    /// holds it (an unstage or a takeover may have come between the Mount
    /// and this).
    fn bind_for(&self, name: &str, reference: &str, source: &Path, target: &Path, read_only: bool) -> Result<(), EngineError> {
        let holds = self.mounted.lock().unwrap().get(name).is_some_and(|v| v.refs.contains_key(reference) && v.mountpoint == source);
        if !holds {
            return Err(EngineError::NotStaged { name: name.to_string(), path: target.to_path_buf() });
        }
        // A failed bind keeps the reference (it may be an earlier call's,
        // whose bind a container uses): Swarm retries, or unpublishes, and
        // an unbind touches only the volume's own filesystem.
        self.mount_table.bind(source, target, read_only)?;
        Ok(())
    }
}
