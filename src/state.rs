//! This host's own state, persisted so a restart of `rbdvol serve` loses
//! nothing: which volumes are mounted here, by which containers (a multiset
//! of Mount IDs), through which device. One small JSON file per volume,
//! written atomically, mode 0600, in a 0700 directory.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{op} {path}: {source}")]
    Io { op: &'static str, path: PathBuf, source: std::io::Error },
}

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StateError {
    let path = path.to_path_buf();
    move |source| StateError::Io { op, path, source }
}

/// How long after an unanswered Mount of an ID another Mount of it counts
/// as dockerd retrying it (dockerd retries a failed transport for ~30 s).
pub const RETRY_WINDOW_SECS: u64 = 60;

/// What a mapping was made with, beyond its image and device.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MappedWith {
    /// The map options it was made with (checked by the engine's allowlist
    /// for this mapper; `name` or `name=value`): rbd-nbd's `attach` takes
    /// them again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub map_options: Vec<String>,
    /// The options its unmap takes (krbd: `force`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unmap_options: Vec<String>,
    /// rbd-nbd: the device's cookie, which a new rbd-nbd must name to
    /// attach to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie: Option<String>,
    /// Mapped read-only (a read-only volume): rbd-nbd's `attach` is
    /// read-only again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
}

impl MappedWith {
    pub fn is_empty(&self) -> bool {
        *self == MappedWith::default()
    }
}

/// A volume mounted on this host.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MountedVolume {
    pub name: String,
    pub pool: String,
    #[serde(default)]
    pub namespace: String,
    pub image: String,
    /// The image id (its header is reached without opening the image);
    /// absent in state written by older versions.
    #[serde(default)]
    pub image_id: Option<String>,
    pub mapper: String,
    pub device: PathBuf,
    pub mountpoint: PathBuf,
    pub fstype: String,
    /// Mount ID → how many times it mounted (docker cp sends the same ID twice).
    pub refs: BTreeMap<String, u32>,
    /// Mount IDs whose last Mount may not have been answered (a crash, a
    /// caller gone): that Mount's attempt number and when it was made (Unix
    /// seconds). dockerd's retry of it, within `RETRY_WINDOW`, is the same
    /// Mount, not another.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub unanswered: BTreeMap<String, (u64, u64)>,
    /// Mapped and mounted read-only, under the shared host lock.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
    /// What its mapping was made with (absent in state written by older
    /// versions, and when there is nothing to say).
    #[serde(default, skip_serializing_if = "MappedWith::is_empty")]
    pub mapped_with: MappedWith,
}

/// Mount IDs that are a reference once however often they are mounted:
/// CSI's stages and publishes (`csi-stage:<path>`, `csi-publish:<path>`),
/// which the orchestrator repeats as it likes. Docker's Mount IDs (hex)
/// count each Mount (`docker cp` mounts twice with one ID).
pub const COUNTS_ONCE: &str = "csi-";

fn counts_once(id: &str) -> bool {
    id.starts_with(COUNTS_ONCE)
}

impl MountedVolume {
    pub fn add_ref(&mut self, id: &str) {
        if counts_once(id) {
            self.refs.insert(id.to_string(), 1);
            return;
        }
        *self.refs.entry(id.to_string()).or_insert(0) += 1;
    }

    /// Mount `attempt` of `id` at `now` (Unix seconds), not yet answered:
    /// one more reference, unless the last Mount of `id` was not answered
    /// either and is recent (then this is dockerd's retry of it, and takes
    /// it over). Returns whether it added one.
    pub fn add_unanswered_ref(&mut self, id: &str, attempt: u64, now: u64) -> bool {
        // A CSI stage or publish made again is the same one: nothing new
        // to answer for, and a caller that gives up on it drops nothing.
        if counts_once(id) && self.refs.contains_key(id) && !self.unanswered.contains_key(id) {
            return false;
        }
        let retry = self.unanswered.get(id).is_some_and(|(_, at)| now.saturating_sub(*at) <= RETRY_WINDOW_SECS);
        self.unanswered.insert(id.to_string(), (attempt, now));
        if retry {
            return false;
        }
        self.add_ref(id);
        true
    }

    /// Mount `attempt` of `id` was answered. Returns whether that changed
    /// anything (a later attempt may have taken it over).
    pub fn answered(&mut self, id: &str, attempt: u64) -> bool {
        if self.is_unanswered(id, attempt) {
            self.unanswered.remove(id);
            return true;
        }
        false
    }

    /// Whether Mount `attempt` of `id` is still unanswered and not taken
    /// over by a retry.
    pub fn is_unanswered(&self, id: &str, attempt: u64) -> bool {
        self.unanswered.get(id).is_some_and(|(a, _)| *a == attempt)
    }

    /// Drops the reference of Mount `attempt` of `id`, whose caller went
    /// away before its answer (and its mark with it).
    pub fn drop_unanswered_ref(&mut self, id: &str, attempt: u64) -> bool {
        if !self.is_unanswered(id, attempt) {
            return false;
        }
        self.unanswered.remove(id);
        self.drop_ref(id);
        true
    }

    /// Drops one reference of `id`; unknown IDs change nothing.
    pub fn drop_ref(&mut self, id: &str) {
        if let Some(n) = self.refs.get_mut(id) {
            // Outright for a CSI reference (state of an earlier version
            // may count one twice).
            *n = if counts_once(id) { 0 } else { *n - 1 };
            if *n == 0 {
                self.refs.remove(id);
                self.unanswered.remove(id);
            }
        }
    }

    pub fn ref_count(&self) -> u32 {
        self.refs.values().sum()
    }
}

/// Writes a file atomically: temp file, fsync, rename, fsync the directory;
/// mode 0600.
pub fn write_atomic(path: &Path, contents: &[u8]) -> Result<(), StateError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(".{}.tmp", path.file_name().and_then(|n| n.to_str()).unwrap_or("state")));
    {
        let mut f = OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp).map_err(io("create", &tmp))?;
        f.write_all(contents).map_err(io("write", &tmp))?;
        f.sync_all().map_err(io("sync", &tmp))?;
    }
    std::fs::rename(&tmp, path).map_err(io("rename into", path))?;
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

pub struct StateStore {
    dir: PathBuf,
}

/// This installation's id (`<state_dir>/install-id`), made on first use:
/// 16 hex digits from the kernel's random source. It tells this machine's
/// host locks from another's given the same host id.
pub fn install_id(state_dir: &Path) -> Result<String, StateError> {
    let path = state_dir.join("install-id");
    if let Ok(id) = std::fs::read_to_string(&path) {
        let id = id.trim().to_string();
        if id.len() == 16 && id.chars().all(|c| c.is_ascii_hexdigit()) {
            return Ok(id.to_ascii_lowercase());
        }
        tracing::warn!("{} is not an installation id: making a new one", path.display());
    }
    let mut bytes = [0u8; 8];
    File::open("/dev/urandom").and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes)).map_err(io("read", Path::new("/dev/urandom")))?;
    let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(state_dir).map_err(io("create", state_dir))?;
    write_atomic(&path, id.as_bytes())?;
    Ok(id)
}

/// The host locks this host may hold: each volume's name is noted here
/// before its lock is taken and cleared once it is released, so a crash
/// in between leaves a note that the next start acts on. Files named as
/// the state files are, holding the name.
pub struct LockNotes {
    dir: PathBuf,
}

impl LockNotes {
    pub fn open(dir: PathBuf) -> Result<LockNotes, StateError> {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&dir).map_err(io("create", &dir))?;
        Ok(LockNotes { dir })
    }

    pub fn note(&self, name: &str) -> Result<(), StateError> {
        let path = self.dir.join(file_name(name));
        if path.exists() {
            return Ok(());
        }
        write_atomic(&path, &serde_json::to_vec(name).expect("a name serializes"))
    }

    pub fn clear(&self, name: &str) -> Result<(), StateError> {
        let path = self.dir.join(file_name(name));
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(StateError::Io { op: "remove", path, source: e }),
            _ => Ok(()),
        }
    }

    /// Every volume noted.
    pub fn all(&self) -> Result<Vec<String>, StateError> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.dir).map_err(io("read", &self.dir))? {
            let path = entry.map_err(io("read", &self.dir))?.path();
            if path.extension().is_some_and(|e| e == "json") {
                match std::fs::read(&path).ok().and_then(|b| serde_json::from_slice::<String>(&b).ok()) {
                    Some(name) => out.push(name),
                    None => tracing::warn!("ignoring unreadable lock note {}", path.display()),
                }
            }
        }
        out.sort();
        Ok(out)
    }
}

/// The state file of volume `volume`: the name itself when it is plain
/// (ASCII letters, digits, `_`, `-`, and `.` after the first character),
/// else `%` and its bytes in hex. One file per name and one name per file
/// (a plain name never starts with `%`), at most 206 bytes (names are at
/// most 100), never a dot-file (temporary files are), whatever the name.
pub fn file_name(volume: &str) -> String {
    let plain = |(i, c): (usize, char)| c.is_ascii_alphanumeric() || c == '_' || c == '-' || (c == '.' && i > 0);
    if !volume.is_empty() && volume.chars().enumerate().all(plain) {
        format!("{volume}.json")
    } else {
        let hex: String = volume.bytes().map(|b| format!("{b:02x}")).collect();
        format!("%{hex}.json")
    }
}

impl StateStore {
    pub fn open(dir: PathBuf) -> Result<StateStore, StateError> {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&dir).map_err(io("create", &dir))?;
        Ok(StateStore { dir })
    }

    /// The store in `dir` when it exists; never creates it (for readers
    /// such as `rbdvol doctor`).
    pub fn open_existing(dir: PathBuf) -> Option<StateStore> {
        dir.is_dir().then_some(StateStore { dir })
    }

    pub fn save(&self, volume: &MountedVolume) -> Result<(), StateError> {
        let json = serde_json::to_vec_pretty(volume).expect("state serializes");
        write_atomic(&self.dir.join(file_name(&volume.name)), &json)
    }

    pub fn remove(&self, name: &str) -> Result<(), StateError> {
        let path = self.dir.join(file_name(name));
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(StateError::Io { op: "remove", path, source: e }),
            _ => Ok(()),
        }
    }

    /// Whether volume `name` is recorded here.
    pub fn has(&self, name: &str) -> bool {
        self.dir.join(file_name(name)).exists()
    }

    /// Every saved volume; unreadable files are skipped with a warning. A
    /// file an older version named otherwise is renamed to its name now.
    pub fn load_all(&self) -> Result<Vec<MountedVolume>, StateError> {
        let mut out = Vec::new();
        let mut misnamed = Vec::new();
        for entry in std::fs::read_dir(&self.dir).map_err(io("read", &self.dir))? {
            let path = entry.map_err(io("read", &self.dir))?.path();
            // Temporary files (`.NAME.json.tmp`) end otherwise; a rename an
            // earlier start left half-done ends in `.migrating`.
            let migrating = path.extension().is_some_and(|e| e == "migrating");
            if !migrating && path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            match std::fs::read(&path).ok().and_then(|b| serde_json::from_slice::<MountedVolume>(&b).ok()) {
                Some(v) => {
                    let canonical = self.dir.join(file_name(&v.name));
                    if path != canonical {
                        misnamed.push((path, canonical));
                    }
                    out.push(v)
                }
                None => tracing::warn!("ignoring unreadable state file {}", path.display()),
            }
        }
        // Renamed in two steps: one file's new name may be another file's
        // old one (an older version named files after the volume).
        let mut moved = Vec::new();
        for (path, canonical) in misnamed {
            let aside = self.dir.join(format!(".{}.migrating", canonical.file_name().unwrap_or_default().to_string_lossy()));
            if path != aside {
                std::fs::rename(&path, &aside).map_err(io("rename into", &aside))?;
            }
            moved.push((aside, canonical));
        }
        for (aside, canonical) in moved {
            std::fs::rename(&aside, &canonical).map_err(io("rename into", &canonical))?;
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn vol(name: &str) -> MountedVolume {
        MountedVolume {
            name: name.into(),
            pool: "rbd".into(),
            namespace: String::new(),
            image: name.into(),
            image_id: Some("10ab".into()),
            mapper: "userspace".into(),
            device: "/dev/loop3".into(),
            mountpoint: format!("/var/lib/rbdvol/mnt/{name}").into(),
            fstype: "ext4".into(),
            refs: BTreeMap::new(),
            unanswered: Default::default(),
            read_only: false,
            mapped_with: Default::default(),
        }
    }

    #[test]
    fn a_retried_unanswered_mount_is_one_reference_an_answered_one_two() {
        let mut v = vol("a");
        assert!(v.add_unanswered_ref("c1", 1, 1000));
        assert!(!v.add_unanswered_ref("c1", 2, 1010), "dockerd's retry of an unanswered Mount");
        assert_eq!(v.ref_count(), 1);
        assert!(!v.is_unanswered("c1", 1) && v.is_unanswered("c1", 2), "the retry took it over");
        assert!(!v.answered("c1", 1));
        assert!(v.answered("c1", 2));
        assert!(v.add_unanswered_ref("c1", 3, 1020), "docker cp: a second Mount of an answered ID");
        assert!(v.drop_unanswered_ref("c1", 3) && v.ref_count() == 1 && v.unanswered.is_empty(), "abandoned: dropped with its mark");
        // A mark a crash left long ago is no retry: a later Mount is another.
        v.unanswered.insert("c1".into(), (4, 1000));
        assert!(v.add_unanswered_ref("c1", 5, 1000 + RETRY_WINDOW_SECS + 1));
        assert_eq!(v.ref_count(), 2);
        v.drop_ref("c1");
        v.drop_ref("c1");
        assert!(v.refs.is_empty() && v.unanswered.is_empty());
        // State written before this field reads as all answered.
        let old: MountedVolume = serde_json::from_str(r#"{"name":"a","pool":"rbd","image":"a","mapper":"userspace","device":"/dev/loop3","mountpoint":"/m/a","fstype":"ext4","refs":{"c1":1}}"#).unwrap();
        assert!(old.unanswered.is_empty() && old.ref_count() == 1);
    }

    #[test]
    fn state_without_map_options_reads_as_before_and_with_them_round_trips() {
        // As versions before map options wrote it.
        let old = r#"{"name":"a","pool":"rbd","namespace":"","image":"a","image_id":"10ab","mapper":"nbd","device":"/dev/nbd0","mountpoint":"/m/a","fstype":"ext4","refs":{"c1":1}}"#;
        let v: MountedVolume = serde_json::from_str(old).unwrap();
        assert!(v.mapped_with.is_empty());
        assert_eq!(serde_json::to_string(&v).unwrap(), old, "nothing new is written when there is nothing to say");
        let with = MappedWith { map_options: vec!["io-timeout=60".into()], unmap_options: vec![], cookie: Some("c00k1e".into()), read_only: false };
        let v = MountedVolume { mapped_with: with.clone(), ..v };
        let json = serde_json::to_string(&v).unwrap();
        assert!(json.ends_with(r#""mapped_with":{"map_options":["io-timeout=60"],"cookie":"c00k1e"}}"#), "{json}");
        assert_eq!(serde_json::from_str::<MountedVolume>(&json).unwrap().mapped_with, with);
    }

    #[test]
    fn refs_are_a_multiset() {
        let mut v = vol("a");
        v.add_ref("c1");
        v.add_ref("c1");
        v.add_ref("c2");
        assert_eq!(v.ref_count(), 3);
        v.drop_ref("c1");
        v.drop_ref("unknown");
        assert_eq!(v.ref_count(), 2);
        v.drop_ref("c1");
        v.drop_ref("c2");
        assert_eq!(v.ref_count(), 0);
        assert!(v.refs.is_empty());
    }

    #[test]
    fn every_valid_name_has_its_own_state_file_that_is_never_skipped() {
        let long = "é".repeat(50);
        let names = [".x", "..x", "x.", "a%b", "%61", "a", "A", "é", "-", "_.", "x.json", ".x.json", long.as_str(), "a:b", "a\\b"];
        let files: std::collections::BTreeSet<String> = names.iter().map(|n| file_name(n)).collect();
        assert_eq!(files.len(), names.len(), "two names share a file: {files:?}");
        for f in &files {
            assert!(!f.starts_with('.') && f.ends_with(".json") && f.len() <= 206 && !f.contains('/'), "{f}");
        }
        assert_eq!(file_name("data-01.v2"), "data-01.v2.json", "plain names stay readable");
        assert_eq!(file_name(".x"), "%2e78.json");
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path().join("volumes")).unwrap();
        for n in names {
            store.save(&vol(n)).unwrap();
        }
        let loaded: Vec<String> = store.load_all().unwrap().into_iter().map(|v| v.name).collect();
        assert_eq!(loaded.len(), names.len(), "{loaded:?}");
        for n in names {
            assert!(store.has(n), "{n}");
            store.remove(n).unwrap();
        }
        assert!(store.load_all().unwrap().is_empty());
    }

    #[test]
    fn a_state_file_an_older_version_named_after_a_dot_name_is_read_and_renamed() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path().join("volumes")).unwrap();
        let old = dir.path().join("volumes/.x.json");
        write_atomic(&old, &serde_json::to_vec(&vol(".x")).unwrap()).unwrap();
        assert_eq!(store.load_all().unwrap(), vec![vol(".x")]);
        assert!(!old.exists() && store.has(".x"));
        store.remove(".x").unwrap();
        assert!(store.load_all().unwrap().is_empty(), "nothing of it left");
    }

    /// Upgrade from a85fad5 (state files named `<name>.json`): volumes "é"
    /// and "%c3a9" both mounted. The new loader renames "é.json" onto
    /// "%c3a9.json", the old file of the other volume.
    #[test]
    fn an_upgrade_renaming_state_files_never_overwrites_another_volumes() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path().join("volumes")).unwrap();
        for n in ["é", "%c3a9"] {
            write_atomic(&dir.path().join(format!("volumes/{n}.json")), &serde_json::to_vec(&vol(n)).unwrap()).unwrap();
        }
        let mut loaded: Vec<String> = store.load_all().unwrap().into_iter().map(|v| v.name).collect();
        loaded.sort();
        let mut after: Vec<String> = store.load_all().unwrap().into_iter().map(|v| v.name).collect();
        after.sort();
        eprintln!("first load: {loaded:?}, second load: {after:?}");
        assert_eq!(after, vec!["%c3a9".to_string(), "é".to_string()], "a volume's state was lost in the upgrade");
    }

    #[test]
    fn the_installation_id_is_made_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let id = install_id(dir.path()).unwrap();
        assert!(id.len() == 16 && id.chars().all(|c| c.is_ascii_hexdigit()), "{id}");
        assert_eq!(install_id(dir.path()).unwrap(), id);
        assert_ne!(install_id(tempfile::tempdir().unwrap().path()).unwrap(), id);
    }

    #[test]
    fn lock_notes_are_kept_until_cleared_for_any_name() {
        let dir = tempfile::tempdir().unwrap();
        let notes = LockNotes::open(dir.path().join("locks")).unwrap();
        for n in [".x", "a", "é"] {
            notes.note(n).unwrap();
            notes.note(n).unwrap();
        }
        assert_eq!(notes.all().unwrap(), vec![".x".to_string(), "a".into(), "é".into()]);
        notes.clear("a").unwrap();
        notes.clear("a").unwrap();
        assert_eq!(notes.all().unwrap(), vec![".x".to_string(), "é".into()]);
    }

    #[test]
    fn save_load_remove_privately() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path().join("volumes")).unwrap();
        let mut a = vol("a");
        a.add_ref("c1");
        store.save(&a).unwrap();
        store.save(&vol("b")).unwrap();
        assert_eq!(store.load_all().unwrap(), vec![a.clone(), vol("b")]);
        let mode = std::fs::metadata(dir.path().join("volumes/a.json")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let dmode = std::fs::metadata(dir.path().join("volumes")).unwrap().permissions().mode();
        assert_eq!(dmode & 0o777, 0o700);
        store.remove("a").unwrap();
        store.remove("a").unwrap();
        assert_eq!(store.load_all().unwrap(), vec![vol("b")]);
    }

    #[test]
    fn a_csi_reference_counts_once_however_often_it_is_mounted_and_a_docker_id_counts_each_mount() {
        let mut v: MountedVolume = serde_json::from_value(serde_json::json!({
            "name": "v", "pool": "rbd", "image": "v", "mapper": "userspace", "device": "/dev/loop0",
            "mountpoint": "/m/v", "fstype": "ext4", "refs": {}
        }))
        .unwrap();
        v.add_ref("csi-stage:/data/staged/a");
        v.add_ref("csi-stage:/data/staged/a");
        assert!(!v.add_unanswered_ref("csi-stage:/data/staged/a", 7, 100), "a repeat adds nothing");
        assert!(!v.is_unanswered("csi-stage:/data/staged/a", 7), "and leaves nothing to drop if its caller goes");
        v.add_ref("c1");
        v.add_ref("c1");
        assert_eq!(v.ref_count(), 3);
        v.drop_ref("csi-stage:/data/staged/a");
        assert_eq!(v.refs.keys().collect::<Vec<_>>(), vec!["c1"]);
        // State of an earlier version may count a CSI reference twice.
        v.refs.insert("csi-publish:/data/published/a".into(), 2);
        v.drop_ref("csi-publish:/data/published/a");
        assert_eq!(v.refs.keys().collect::<Vec<_>>(), vec!["c1"]);
    }

}
