//! What rbdvol keeps in Ceph, in one place: the format every version must
//! keep reading (see the compatibility tests below).
//!
//! - the volume directory: pool metadata `rbdvol.volume.<name>` in the
//!   default pool, a [`DirEntry`]; a volume is visible only in state
//!   `ready`, so nothing half-made is ever exposed;
//! - per volume, the image's metadata: [`VOLUME_KEY`] (the marker and the
//!   volume's settings, a [`VolumeMeta`]), [`FORMATTED_KEY`] (the
//!   filesystem's size in bytes, present once formatted), [`MOUNTED_KEY`]
//!   (who has it mounted, a [`MountedBy`], removed at the last Unmount);
//! - the trash: pool metadata `rbdvol.trash.<image id>` in the default
//!   pool, a [`TrashRecord`] for each removed volume's image in the RBD
//!   trash, until it is purged (or restored);
//! - the host lock: a RADOS exclusive lock `rbdvol` on the image header
//!   (`ceph::Header::host_lock`) whose cookie is a [`LockCookie`]: the host
//!   id and this installation's id; taken shared, tagged
//!   [`READ_ONLY_TAG`], by every host that mounts a read-only volume.

use std::collections::{BTreeMap, BTreeSet};
use std::time::SystemTime;

use crate::host::fs::Fstype;

/// Prefix of the directory's keys in the default pool's metadata.
pub const DIRECTORY_PREFIX: &str = "rbdvol.volume.";
/// The marker and the volume's settings, JSON ([`VolumeMeta`]).
pub const VOLUME_KEY: &str = "rbdvol.volume";
/// Present once formatted: the filesystem's size in bytes (grown at mount).
pub const FORMATTED_KEY: &str = "rbdvol.formatted";
/// Who has it mounted, JSON ([`MountedBy`]); removed at the last Unmount.
pub const MOUNTED_KEY: &str = "rbdvol.mounted";
/// Hosts fenced off the volume that have not yet let go of it, JSON (a
/// list of [`Fenced`]): their clients stay blocklisted until they do.
pub const FENCED_KEY: &str = "rbdvol.fenced";
/// A pool metadata key nobody writes: the health probe reads it, to see
/// that the pool's OSDs answer.
pub const PROBE_KEY: &str = "rbdvol.probe";

/// The tag of the host lock taken shared, by read-only mounts: any number
/// of hosts at once, never with a read-write holder.
pub const READ_ONLY_TAG: &str = "rbdvol-readonly";

/// Prefix of the trash records' keys in the default pool's metadata.
pub const TRASH_PREFIX: &str = "rbdvol.trash.";

/// The trash record key of image `id`.
pub fn trash_key(id: &str) -> String {
    format!("{TRASH_PREFIX}{id}")
}

/// A removed volume's image in the RBD trash: what `rbdvol trash ls`
/// shows, what the purge deletes when due and what `rbdvol trash restore`
/// brings back. Written before the image moves, deleted after it is
/// purged or restored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TrashRecord {
    /// The volume's name (and its image's).
    pub name: String,
    pub pool: String,
    #[serde(default)]
    pub namespace: String,
    /// The image id: its key in the RBD trash.
    pub id: String,
    /// When it was removed, Unix milliseconds (the latest of a name's
    /// removals is the one a restore brings back).
    pub removed_ms: u64,
    /// When it is to be purged, Unix milliseconds.
    pub purge_after_ms: u64,
}

impl TrashRecord {
    pub fn parse(raw: &str) -> Option<TrashRecord> {
        serde_json::from_str(raw).ok()
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a trash record serializes")
    }
}

/// Every readable trash record of a pool metadata listing.
pub fn parse_trash(listing: Vec<(String, String)>) -> Vec<TrashRecord> {
    listing.into_iter().filter(|(k, _)| k.starts_with(TRASH_PREFIX)).filter_map(|(_, v)| TrashRecord::parse(&v)).collect()
}

/// The directory key of volume `name`.
pub fn directory_key(name: &str) -> String {
    format!("{DIRECTORY_PREFIX}{name}")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryState {
    /// Being created: never shown to Docker; the next Create or Mount
    /// completes it.
    Creating,
    Ready,
    /// Removed for Docker; its image is being deleted.
    Removing,
}

/// A volume's entry in the directory.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DirEntry {
    pub pool: String,
    #[serde(default)]
    pub namespace: String,
    pub state: EntryState,
    /// The image id, once the image exists: its header is then reached
    /// without a lookup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Set by Remove (state `removing`): the remover's `RBDVOL_TRASH_DELAY`,
    /// seconds, which whichever host moves the image to the trash uses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trash_delay_s: Option<u64>,
    /// Set for an adopted image (`-o image=`, one rbdvol did not make):
    /// its name. Remove forgets such a volume and never deletes its image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adopted: Option<String>,
}

impl DirEntry {
    pub fn parse(raw: &str) -> Option<DirEntry> {
        serde_json::from_str(raw).ok()
    }

    /// The name of volume `volume`'s image: its own name, or the adopted
    /// image's.
    pub fn image<'a>(&'a self, volume: &'a str) -> &'a str {
        self.adopted.as_deref().unwrap_or(volume)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a directory entry serializes")
    }
}

/// Every entry of a directory listing (`(key, value)` pairs of the pool's
/// metadata under [`DIRECTORY_PREFIX`]); unreadable ones are left out.
pub fn parse_directory(listing: Vec<(String, String)>) -> BTreeMap<String, DirEntry> {
    listing.into_iter().filter_map(|(k, v)| Some((k.strip_prefix(DIRECTORY_PREFIX)?.to_string(), DirEntry::parse(&v)?))).collect()
}

/// What rbdvol keeps in the image's metadata about a volume.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VolumeMeta {
    pub name: String,
    pub fstype: Fstype,
    #[serde(default)]
    pub mkfs_options: Vec<String>,
    #[serde(default)]
    pub mount_options: String,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub mode: Option<u32>,
    pub created_at: String,
    /// `VOLUME@SNAPSHOT` for a clone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloned_from: Option<String>,
    /// An image rbdvol did not make (`-o image=`): forgotten, never
    /// deleted, by Remove.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub adopted: bool,
    /// Mounted read-only, by any number of hosts at once (`-o readonly=true`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
    /// `-o map_options`, as given (checked again at each Mount).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub map_options: Option<String>,
    /// `-o unmap_options`, as given (checked again at each Mount).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unmap_options: Option<String>,
}

impl VolumeMeta {
    /// The metadata of an rbdvol volume called `name`, if the image is one.
    pub fn of(meta: &BTreeMap<String, String>, name: &str) -> Option<VolumeMeta> {
        meta.get(VOLUME_KEY).and_then(|v| VolumeMeta::parse_any(v)).filter(|v| v.name == name)
    }

    /// A marker's metadata, whichever volume it names.
    pub fn parse_any(raw: &str) -> Option<VolumeMeta> {
        serde_json::from_str(raw).ok()
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("volume metadata serializes")
    }
}

/// Who has a volume mounted.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MountedBy {
    pub host: String,
    pub addr: String,
    pub since: String,
    /// Every client that watched the image once it was mapped: the
    /// mapper's (librbd or kernel) and the plugin's. Fenced at takeover.
    #[serde(default)]
    pub clients: Vec<String>,
}

impl MountedBy {
    /// The record in `raw`, if readable (an unreadable one counts as none).
    pub fn parse(raw: &str) -> Option<MountedBy> {
        serde_json::from_str(raw).ok()
    }

    /// The record among an image's metadata, if any.
    pub fn of(meta: &BTreeMap<String, String>) -> Option<MountedBy> {
        meta.get(MOUNTED_KEY).and_then(|m| MountedBy::parse(m))
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("mounted-by serializes")
    }

    /// Every client address the holder mounted with.
    pub fn all_clients(self) -> BTreeSet<String> {
        self.clients.into_iter().chain([self.addr]).collect()
    }
}

/// The host lock's cookie: `HOST/INSTALL`, the host id and the id of the
/// rbdvol installation (one per state directory) that took it, so two
/// machines given the same host id never take each other's locks for their
/// own. A cookie without an installation id is an older version's, or an
/// admin's (`rbdvol takeover` holds a volume for a host id): that host's,
/// whichever installation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockCookie<'a> {
    pub host: &'a str,
    pub install: Option<&'a str>,
}

/// An installation id: 16 lower-case hex digits.
pub fn is_install_id(s: &str) -> bool {
    s.len() == 16 && s.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
}

impl<'a> LockCookie<'a> {
    pub fn parse(cookie: &'a str) -> LockCookie<'a> {
        match cookie.rsplit_once('/') {
            Some((host, install)) if is_install_id(install) && !host.is_empty() => LockCookie { host, install: Some(install) },
            _ => LockCookie { host: cookie, install: None },
        }
    }

    pub fn format(host: &str, install: &str) -> String {
        format!("{host}/{install}")
    }
}

/// The host named by a lock cookie.
pub fn lock_host(cookie: &str) -> &str {
    LockCookie::parse(cookie).host
}

/// When the holder mounted the volume, from its [`MOUNTED_KEY`] record,
/// for error messages.
pub fn mounted_since(raw: Option<&str>) -> String {
    raw.and_then(MountedBy::parse).map(|m| m.since).unwrap_or_else(|| "an unknown time".into())
}

/// A host fenced off a volume by a takeover, not yet known to have let go
/// of it: whoever holds the volume keeps its clients blocklisted until the
/// host removes this entry (it does once it has released the volume).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Fenced {
    pub host: String,
    pub clients: Vec<String>,
    pub since: String,
}

impl Fenced {
    /// The list in a [`FENCED_KEY`] value (unreadable: none).
    pub fn parse_list(raw: Option<&str>) -> Vec<Fenced> {
        raw.and_then(|r| serde_json::from_str(r).ok()).unwrap_or_default()
    }

    pub fn list_json(list: &[Fenced]) -> String {
        serde_json::to_string(list).expect("fenced hosts serialize")
    }
}

/// The filesystem's size recorded in [`FORMATTED_KEY`], if readable.
pub fn parse_formatted(raw: Option<&str>) -> Option<u64> {
    raw.and_then(|s| s.parse().ok())
}

/// Now, as the records write times.
pub fn now_rfc3339() -> String {
    rfc3339(SystemTime::now())
}

pub fn rfc3339(at: SystemTime) -> String {
    humantime::format_rfc3339_seconds(at).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    // What versions up to 0.1 wrote (copied from a real cluster): every
    // later version must read these as they are.
    const ENTRY_V0: &str = r#"{"pool":"rbd","namespace":"","state":"ready","id":"10a2b3c4d5e6"}"#;
    const ENTRY_V0_NO_ID: &str = r#"{"pool":"rbd","state":"creating"}"#;
    const META_V0: &str = r#"{"name":"db","fstype":"ext4","mkfs_options":["-m0"],"mount_options":"noatime","uid":1000,"gid":null,"mode":448,"created_at":"2026-11-20T10:00:00Z"}"#;
    const META_V0_CLONE: &str = r#"{"name":"c","fstype":"xfs","uid":null,"gid":null,"mode":null,"created_at":"2026-11-20T10:00:00Z","cloned_from":"db@s1"}"#;
    const MOUNTED_V0: &str = r#"{"host":"node1","addr":"10.0.0.1:0/123","since":"2026-11-20T10:00:00Z","clients":["10.0.0.1:0/456"]}"#;
    const MOUNTED_V0_NO_CLIENTS: &str = r#"{"host":"node1","addr":"10.0.0.1:0/123","since":"2026-11-20T10:00:00Z"}"#;

    #[test]
    fn directory_entries_written_by_earlier_versions_are_read() {
        let e = DirEntry::parse(ENTRY_V0).unwrap();
        assert_eq!(e, DirEntry { pool: "rbd".into(), namespace: "".into(), state: EntryState::Ready, id: Some("10a2b3c4d5e6".into()), trash_delay_s: None, adopted: None });
        let e = DirEntry::parse(ENTRY_V0_NO_ID).unwrap();
        assert_eq!((e.state, e.id, e.namespace.as_str()), (EntryState::Creating, None, ""));
        assert_eq!(DirEntry::parse(r#"{"pool":"rbd","state":"removing"}"#).unwrap().state, EntryState::Removing);
    }

    #[test]
    fn directory_entries_round_trip_and_keep_their_field_names() {
        let e = DirEntry { pool: "ssd".into(), namespace: "ns".into(), state: EntryState::Removing, id: Some("abc".into()), trash_delay_s: None, adopted: None };
        assert_eq!(DirEntry::parse(&e.to_json()), Some(e.clone()));
        assert_eq!(e.to_json(), r#"{"pool":"ssd","namespace":"ns","state":"removing","id":"abc"}"#);
        let no_id = DirEntry { id: None, ..e.clone() };
        assert!(!no_id.to_json().contains("\"id\""), "an absent id is not written");
        let removing = DirEntry { trash_delay_s: Some(3600), ..e };
        assert_eq!(removing.to_json(), r#"{"pool":"ssd","namespace":"ns","state":"removing","id":"abc","trash_delay_s":3600}"#);
        assert_eq!(DirEntry::parse(&removing.to_json()), Some(removing));
    }

    #[test]
    fn an_adopted_entry_names_its_image_and_others_use_the_volume_name() {
        let e = DirEntry::parse(r#"{"pool":"rbd","state":"ready","id":"ab","adopted":"legacy-img"}"#).unwrap();
        assert_eq!((e.image("v"), e.adopted.as_deref()), ("legacy-img", Some("legacy-img")));
        assert_eq!(e.to_json(), r#"{"pool":"rbd","namespace":"","state":"ready","id":"ab","adopted":"legacy-img"}"#);
        assert_eq!(DirEntry::parse(ENTRY_V0).unwrap().image("db"), "db");
    }

    const TRASH_V0: &str = r#"{"name":"db","pool":"rbd","namespace":"","id":"10a2b3c4d5e6","removed_ms":1796200000123,"purge_after_ms":1796203600123}"#;

    #[test]
    fn trash_records_keep_their_format_and_are_told_apart_from_the_directory() {
        let r = TrashRecord::parse(TRASH_V0).unwrap();
        assert_eq!(r, TrashRecord { name: "db".into(), pool: "rbd".into(), namespace: "".into(), id: "10a2b3c4d5e6".into(), removed_ms: 1796200000123, purge_after_ms: 1796203600123 });
        assert_eq!(r.to_json(), TRASH_V0);
        let listing = vec![(trash_key("10a2b3c4d5e6"), TRASH_V0.into()), (directory_key("db"), ENTRY_V0.into()), (trash_key("x"), "not json".into())];
        assert_eq!(parse_trash(listing.clone()), vec![r]);
        assert_eq!(parse_directory(listing).keys().collect::<Vec<_>>(), vec!["db"]);
    }

    #[test]
    fn a_directory_listing_keeps_only_readable_entries_under_the_prefix() {
        let dir = parse_directory(vec![
            (directory_key("a"), ENTRY_V0.into()),
            (directory_key("b"), "not json".into()),
            ("rbdvol.other".into(), ENTRY_V0.into()),
            (directory_key(".x"), ENTRY_V0_NO_ID.into()),
        ]);
        assert_eq!(dir.keys().collect::<Vec<_>>(), vec![".x", "a"]);
    }

    #[test]
    fn volume_metadata_written_by_earlier_versions_is_read() {
        let meta = BTreeMap::from([(VOLUME_KEY.to_string(), META_V0.to_string())]);
        let m = VolumeMeta::of(&meta, "db").unwrap();
        assert_eq!((m.fstype, m.uid, m.gid, m.mode), (Fstype::Ext4, Some(1000), None, Some(0o700)));
        assert_eq!((m.mkfs_options, m.mount_options.as_str(), m.cloned_from), (vec!["-m0".to_string()], "noatime", None));
        let meta = BTreeMap::from([(VOLUME_KEY.to_string(), META_V0_CLONE.to_string())]);
        let m = VolumeMeta::of(&meta, "c").unwrap();
        assert_eq!((m.fstype, m.mkfs_options.len(), m.cloned_from.as_deref()), (Fstype::Xfs, 0, Some("db@s1")));
    }

    #[test]
    fn map_and_unmap_options_are_kept_only_when_given_and_earlier_metadata_has_none() {
        let m = VolumeMeta::of(&BTreeMap::from([(VOLUME_KEY.to_string(), META_V0.to_string())]), "db").unwrap();
        assert_eq!((m.map_options.as_deref(), m.unmap_options.as_deref()), (None, None));
        // Written without them: exactly what earlier versions wrote.
        assert_eq!(m.to_json(), META_V0);
        let given = VolumeMeta { map_options: Some("krbd:queue_depth=256;nbd:io-timeout=60".into()), unmap_options: Some("krbd:force".into()), ..m };
        let json = given.to_json();
        assert!(json.ends_with(r#","map_options":"krbd:queue_depth=256;nbd:io-timeout=60","unmap_options":"krbd:force"}"#), "{json}");
        assert_eq!(VolumeMeta::of(&BTreeMap::from([(VOLUME_KEY.to_string(), json)]), "db"), Some(given));
    }

    #[test]
    fn volume_metadata_of_another_name_or_unreadable_is_not_ours() {
        let meta = BTreeMap::from([(VOLUME_KEY.to_string(), META_V0.to_string())]);
        assert_eq!(VolumeMeta::of(&meta, "other"), None);
        assert_eq!(VolumeMeta::of(&BTreeMap::from([(VOLUME_KEY.to_string(), "{".to_string())]), "db"), None);
        assert_eq!(VolumeMeta::of(&BTreeMap::new(), "db"), None);
    }

    #[test]
    fn adopted_and_read_only_are_written_only_when_set() {
        let meta = BTreeMap::from([(VOLUME_KEY.to_string(), META_V0.to_string())]);
        let m = VolumeMeta::of(&meta, "db").unwrap();
        assert!(!m.adopted && !m.read_only);
        assert!(!m.to_json().contains("adopted") && !m.to_json().contains("read_only"), "{}", m.to_json());
        let both = VolumeMeta { adopted: true, read_only: true, ..m };
        assert!(both.to_json().ends_with(r#""adopted":true,"read_only":true}"#), "{}", both.to_json());
        let again = BTreeMap::from([(VOLUME_KEY.to_string(), both.to_json())]);
        assert_eq!(VolumeMeta::of(&again, "db"), Some(both));
    }

    #[test]
    fn volume_metadata_round_trips() {
        let meta = BTreeMap::from([(VOLUME_KEY.to_string(), META_V0.to_string())]);
        let m = VolumeMeta::of(&meta, "db").unwrap();
        let again = BTreeMap::from([(VOLUME_KEY.to_string(), m.to_json())]);
        assert_eq!(VolumeMeta::of(&again, "db"), Some(m));
    }

    #[test]
    fn mounted_by_records_of_earlier_versions_are_read_with_all_their_clients() {
        let by = MountedBy::parse(MOUNTED_V0).unwrap();
        assert_eq!(by.host, "node1");
        assert_eq!(by.clone().all_clients().into_iter().collect::<Vec<_>>(), vec!["10.0.0.1:0/123", "10.0.0.1:0/456"]);
        let by = MountedBy::parse(MOUNTED_V0_NO_CLIENTS).unwrap();
        assert_eq!(by.all_clients().len(), 1);
        assert_eq!(MountedBy::parse(&MountedBy::parse(MOUNTED_V0).unwrap().to_json()), MountedBy::parse(MOUNTED_V0));
        assert_eq!(MountedBy::of(&BTreeMap::from([(MOUNTED_KEY.to_string(), "garbage".to_string())])), None);
    }

    #[test]
    fn the_mount_time_is_named_or_said_unknown() {
        assert_eq!(mounted_since(Some(MOUNTED_V0)), "2026-11-20T10:00:00Z");
        assert_eq!(mounted_since(Some("{")), "an unknown time");
        assert_eq!(mounted_since(None), "an unknown time");
    }

    #[test]
    fn lock_cookies_name_the_host_and_the_installation_and_older_ones_the_host() {
        assert_eq!(LockCookie::parse("node1/0123456789abcdef"), LockCookie { host: "node1", install: Some("0123456789abcdef") });
        assert_eq!(LockCookie::format("node1", "0123456789abcdef"), "node1/0123456789abcdef");
        // What versions up to 0.1 (and `rbdvol takeover`) wrote: the host id alone.
        assert_eq!(LockCookie::parse("node1"), LockCookie { host: "node1", install: None });
        assert_eq!(LockCookie::parse("a/b"), LockCookie { host: "a/b", install: None });
        assert_eq!(LockCookie::parse("/0123456789abcdef"), LockCookie { host: "/0123456789abcdef", install: None });
        assert_eq!(lock_host("x/y/0123456789abcdef"), "x/y");
    }

    #[test]
    fn the_formatted_size_is_a_plain_number_of_bytes() {
        assert_eq!(parse_formatted(Some("536870912")), Some(512 << 20));
        assert_eq!(parse_formatted(Some("x")), None);
        assert_eq!(parse_formatted(None), None);
    }

    #[test]
    fn fenced_hosts_round_trip_and_unreadable_means_none() {
        let list = vec![Fenced { host: "a".into(), clients: vec!["10.0.0.1:0/1".into()], since: "t".into() }];
        assert_eq!(Fenced::parse_list(Some(&Fenced::list_json(&list))), list);
        assert_eq!(Fenced::list_json(&list), r#"[{"host":"a","clients":["10.0.0.1:0/1"],"since":"t"}]"#);
        assert!(Fenced::parse_list(Some("{")).is_empty() && Fenced::parse_list(None).is_empty());
    }

    #[test]
    fn the_key_names_never_change() {
        assert_eq!(FENCED_KEY, "rbdvol.fenced");
        assert_eq!((DIRECTORY_PREFIX, VOLUME_KEY, FORMATTED_KEY, MOUNTED_KEY), ("rbdvol.volume.", "rbdvol.volume", "rbdvol.formatted", "rbdvol.mounted"));
        assert_eq!(directory_key("v"), "rbdvol.volume.v");
        assert_eq!(READ_ONLY_TAG, "rbdvol-readonly");
    }
}
