//! The volume engine: Docker's volume operations on top of Ceph (the source
//! of truth) and the host (mappers, filesystems, mounts).
//!
//! Where things live:
//! - the volume directory: pool metadata `rbdvol.volume.<name>` in the
//!   default pool, `{"pool","namespace","state"}`; a volume is visible only
//!   in state `ready`, so nothing half-made is ever exposed;
//! - per volume: the image `<pool>/<namespace>/<name>` and its metadata
//!   `rbdvol.*` (marker, fstype, options, created-at, formatted, mounted-by);
//! - the host lock: a RADOS exclusive lock `rbdvol` on the image header with
//!   the host id as cookie — one host at a time;
//! - this host's mounts and their container references: `state`.
//!
//! Every operation holds its volume's lock (never a global one) and runs its
//! blocking work through `ceph::offload`. Get, List, Path and Capabilities
//! take no volume lock.

pub mod admin;
pub mod doctor;
pub mod options;
pub mod takeover;
mod timing;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::ceph::{self, CephError, Cluster, Done, Header, Image, Pool};
use crate::config::{CephSettings, ConfigError};
use crate::host::fs::{self, Fstype};
use crate::host::mapper::{Mapper, MapperKind, Mapping};
use crate::host::tools::Tools;
use crate::host::{sys, HostError, ImageRef};
use crate::state::{MountedVolume, StateError, StateStore};
use options::{Defaults, VolumeOptions};

/// Errors of the engine, worded for `docker` users.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("invalid volume name '{name}': {reason}")]
    InvalidName { name: String, reason: String },

    #[error("unknown option '{option}': valid options are {valid}")]
    UnknownOption { option: String, valid: String },

    #[error("invalid value '{value}' for option '{option}': {reason}")]
    InvalidOption { option: String, value: String, reason: String },

    #[error("volume '{0}' does not exist")]
    NotFound(String),

    #[error("volume '{name}' is mounted on host '{host}' (since {since}): unmount it there first")]
    MountedElsewhere { name: String, host: String, since: String },

    #[error("volume '{name}' is held by host '{host}' (since {since}), which still has it open ({watchers}): unmount it there; if that host is dead, wait ~30 s for its watch to time out, or use --force")]
    StillWatched { name: String, host: String, since: String, watchers: String },

    #[error("volume '{name}' has snapshots ({snapshots}): remove them first (rbdvol snapshot rm {name}@<snapshot>)")]
    HasSnapshots { name: String, snapshots: String },

    #[error("volume '{name}' is held by host '{host}', whose consul session lapsed, but its clients still watch the image ({watchers}): retry in a few seconds (a dead client's watch times out within ~30 s); if that host still works with ceph, rbdvol takeover {name} fences it")]
    HolderDying { name: String, host: String, watchers: String },

    #[error("volume '{name}' has clones ({clones}): remove them first")]
    HasClones { name: String, clones: String },

    #[error("volume '{volume}' has no snapshot '{snapshot}' to clone (rbdvol snapshot ls {volume})")]
    NoSuchSnapshot { volume: String, snapshot: String },

    #[error("volume '{name}' is mounted on this host for {containers} container(s): stop them first")]
    InUseHere { name: String, containers: u32 },

    #[error("image '{image}' already exists and is not an rbdvol volume: choose another volume name")]
    NotOurs { image: String },

    #[error("{0}")]
    Config(#[from] ConfigError),

    #[error("{source}; settings to fix: {settings}")]
    Connect { source: CephError, settings: &'static str },

    #[error(transparent)]
    Ceph(#[from] CephError),

    #[error(transparent)]
    Host(#[from] HostError),

    #[error(transparent)]
    State(#[from] StateError),
}

/// What `create` did: it is idempotent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    New,
    AlreadyExisted,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removed {
    Removed,
    AlreadyGone,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mounted {
    /// Mapped and mounted for this first reference.
    First(PathBuf),
    /// Already mounted here; one more reference.
    Again(PathBuf),
}

impl Mounted {
    pub fn path(&self) -> &Path {
        match self {
            Mounted::First(p) | Mounted::Again(p) => p,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unmounted {
    /// Other references remain: still mounted.
    StillUsed(u32),
    /// The last reference: unmounted, unmapped, unlocked.
    Released,
    /// Not mounted here (a repeated Unmount).
    NotMounted,
}

/// What a check of a mounted volume found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checked {
    Fine,
    /// Its image had grown: the filesystem was grown online.
    Grown(u64),
    /// Another host took it over: released here.
    Released,
}

/// A volume as Get and List report it.
#[derive(Debug, Clone, PartialEq)]
pub struct VolumeInfo {
    pub name: String,
    pub mountpoint: Option<PathBuf>,
    pub created_at: Option<String>,
    pub status: serde_json::Map<String, serde_json::Value>,
}

/// The operations the API forwards to.
#[async_trait::async_trait]
pub trait VolumeDriver: Send + Sync {
    async fn create(&self, name: &str, opts: BTreeMap<String, String>) -> Result<Created, EngineError>;
    async fn remove(&self, name: &str) -> Result<Removed, EngineError>;
    async fn mount(&self, name: &str, id: &str) -> Result<Mounted, EngineError>;
    async fn unmount(&self, name: &str, id: &str) -> Result<Unmounted, EngineError>;
    async fn path(&self, name: &str) -> Result<Option<PathBuf>, EngineError>;
    async fn get(&self, name: &str) -> Result<VolumeInfo, EngineError>;
    async fn list(&self) -> Result<Vec<VolumeInfo>, EngineError>;
}

#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Names this host in locks and metadata (default: the hostname).
    pub host_id: String,
    pub defaults: Defaults,
    /// Where volumes are mounted: `<mount_root>/<name>`.
    pub mount_root: PathBuf,
    /// This host's state (`<state_dir>/volumes/*.json`).
    pub state_dir: PathBuf,
    /// Take over a volume whose holder's Consul session lapsed (and whose
    /// clients no longer watch the image), fencing the holder first.
    pub auto_takeover: bool,
    /// How long a fenced client stays blocklisted.
    pub blocklist_expiry: Duration,
}

const DIR_PREFIX: &str = "rbdvol.volume.";
/// The marker and the volume's settings, JSON (`VolumeMeta`).
const META_VOLUME: &str = "rbdvol.volume";
/// Present once formatted: the filesystem's size in bytes (grown at mount).
const META_FORMATTED: &str = "rbdvol.formatted";
/// Who has it mounted, JSON (`MountedBy`); removed at the last Unmount.
const META_MOUNTED: &str = "rbdvol.mounted";
/// How long a Mount waits for a dead holder's watches to time out before
/// it answers (dockerd gives a managed plugin's calls 30 s).
const MOUNT_WAITS_FOR_WATCHES: Duration = Duration::from_secs(15);
/// How many times the background deletion of a removed volume's image
/// tries while its watchers go (10 s each, then 5, 10, 20, 40 s apart).
const PURGE_ATTEMPTS: u32 = 5;
/// How long Remove waits for watchers that are closing.
const WATCHERS_SETTLE: Duration = Duration::from_secs(10);
const DIRECTORY_TTL: Duration = Duration::from_secs(1);
const STATUS_TTL: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
enum EntryState {
    Creating,
    Ready,
    Removing,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct DirEntry {
    pool: String,
    #[serde(default)]
    namespace: String,
    state: EntryState,
    /// The image id, once the image exists: its header is then reached
    /// without a lookup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id: Option<String>,
}

/// What rbdvol keeps in the image's metadata about a volume.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct VolumeMeta {
    name: String,
    fstype: Fstype,
    #[serde(default)]
    mkfs_options: Vec<String>,
    #[serde(default)]
    mount_options: String,
    uid: Option<u32>,
    gid: Option<u32>,
    mode: Option<u32>,
    created_at: String,
    /// `VOLUME@SNAPSHOT` for a clone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cloned_from: Option<String>,
}

impl VolumeMeta {
    /// The metadata of an rbdvol volume called `name`, if the image is one.
    fn of(meta: &BTreeMap<String, String>, name: &str) -> Option<VolumeMeta> {
        meta.get(META_VOLUME).and_then(|v| serde_json::from_str::<VolumeMeta>(v).ok()).filter(|v| v.name == name)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct MountedBy {
    host: String,
    addr: String,
    since: String,
    /// Every client that watched the image once it was mapped: the
    /// mapper's (librbd or kernel) and the plugin's. Fenced at takeover.
    #[serde(default)]
    clients: Vec<String>,
}

/// Whether an image may hold data. One this very call created is thin and
/// all zeros: it is formatted in a scratch file and only the written blocks
/// are copied in (no mapping, no blkid probe). Any other is mapped, probed,
/// and formatted only when blank.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Blank {
    New,
    Probe,
}

type VolumeLock = Arc<tokio::sync::Mutex<()>>;

struct Inner {
    cfg: EngineConfig,
    /// The cluster settings and volume defaults now in force: replaced as
    /// a whole when the settings change (Consul), never edited in place.
    settings: std::sync::RwLock<Result<CephSettings, ConfigError>>,
    defaults: std::sync::RwLock<Defaults>,
    cluster: Mutex<Option<Cluster>>,
    tools: Tools,
    mapper: Box<dyn Mapper>,
    state: StateStore,
    mounted: Mutex<BTreeMap<String, MountedVolume>>,
    locks: Mutex<HashMap<String, VolumeLock>>,
    directory: Mutex<Option<(Instant, BTreeMap<String, DirEntry>)>>,
    status: Mutex<HashMap<String, (Instant, VolumeInfo)>>,
    last_connect_error: Mutex<Option<String>>,
    /// Volumes start-up found recorded as mounted here but no longer
    /// mounted: their host locks are released once the cluster answers.
    leftovers: Mutex<Vec<String>>,
    /// Told the name of each volume a Create, Remove, first Mount or last
    /// Unmount changed (for the volume records in Consul).
    changes: Mutex<Option<tokio::sync::mpsc::UnboundedSender<String>>>,
    /// Says whether another host is alive (Consul sessions), for automatic
    /// takeover.
    liveness: std::sync::OnceLock<Arc<dyn takeover::HostLiveness>>,
    /// Volumes whose online grow failed, with the size tried: not retried
    /// until the image grows again (the next mount grows them).
    grow_failed: Mutex<HashMap<String, u64>>,
}

/// The engine. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

/// Every entry of the volume directory in `dir` (unreadable ones left out).
fn read_directory(dir: &Pool) -> Result<BTreeMap<String, DirEntry>, EngineError> {
    Ok(dir
        .metadata_list(DIR_PREFIX)?
        .into_iter()
        .filter_map(|(k, v)| Some((k.strip_prefix(DIR_PREFIX)?.to_string(), serde_json::from_str(&v).ok()?)))
        .collect())
}

impl MountedBy {
    /// The record on `header`, if any (an unreadable one counts as none).
    fn read(header: &Header) -> Result<Option<MountedBy>, CephError> {
        Ok(header.metadata_get(META_MOUNTED)?.and_then(|m| serde_json::from_str(&m).ok()))
    }

    /// Every client address the holder mounted with.
    fn all_clients(self) -> std::collections::BTreeSet<String> {
        self.clients.into_iter().chain([self.addr]).collect()
    }
}

/// When the holder of the host lock mounted the volume, for error messages.
fn mounted_since(header: &Header) -> Result<String, EngineError> {
    Ok(MountedBy::read(header)?.map(|m| m.since).unwrap_or_else(|| "an unknown time".into()))
}

/// The settings to fix for a failed connect, named in the error.
pub(crate) fn settings_to_fix(e: &CephError) -> &'static str {
    match e {
        CephError::Auth { .. } => "RBD_CONF_KEYRING_USER, RBD_CONF_KEYRING_KEY",
        CephError::TimedOut { .. } => "RBD_CONF_GLOBAL_MON_HOST (and that the monitors are reachable from this host)",
        CephError::InvalidArgument { .. } | CephError::BadOption { .. } => "RBD_CONF_GLOBAL_MON_HOST, RBD_CONF_<SECTION>_<OPTION>",
        _ => "RBD_CONF_GLOBAL_MON_HOST, RBD_CONF_KEYRING_USER, RBD_CONF_KEYRING_KEY",
    }
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

impl Engine {
    /// Builds the engine and reconciles what a previous run left on this
    /// host. Needs no cluster: settings errors surface on each call.
    pub fn start(
        cfg: EngineConfig,
        settings: Result<CephSettings, ConfigError>,
        tools: Tools,
        mapper: Box<dyn Mapper>,
    ) -> Result<Engine, EngineError> {
        let state = StateStore::open(cfg.state_dir.join("volumes"))?;
        std::fs::create_dir_all(&cfg.mount_root).map_err(HostError::io("create", &cfg.mount_root))?;
        let engine = Engine {
            inner: Arc::new(Inner {
                defaults: std::sync::RwLock::new(cfg.defaults.clone()),
                cfg,
                settings: std::sync::RwLock::new(settings),
                cluster: Mutex::new(None),
                tools,
                mapper,
                state,
                mounted: Mutex::new(BTreeMap::new()),
                locks: Mutex::new(HashMap::new()),
                directory: Mutex::new(None),
                status: Mutex::new(HashMap::new()),
                last_connect_error: Mutex::new(None),
                leftovers: Mutex::new(Vec::new()),
                changes: Mutex::new(None),
                liveness: std::sync::OnceLock::new(),
                grow_failed: Mutex::new(HashMap::new()),
            }),
        };
        engine.inner.reconcile()?;
        if let Ok(settings) = &*engine.inner.settings.read().unwrap() {
            engine.inner.mapper.warm_up(settings);
        }
        Ok(engine)
    }

    pub fn mapper_kind(&self) -> MapperKind {
        self.inner.mapper.kind()
    }

    /// Deletes, in the background, the image of a volume just removed. It
    /// holds the volume's lock, so a Create of the same name waits for it.
    fn schedule_purge(&self, name: &str) {
        let engine = self.clone();
        let name = name.to_string();
        tokio::spawn(async move {
            // A mapper still closing the image keeps its watch a while (one
            // killed after its stop timeout, ~30 s more): try again then,
            // without holding the volume's lock meanwhile.
            let mut delay = Duration::from_secs(5);
            for attempt in 1..=PURGE_ATTEMPTS {
                let n = name.clone();
                match engine.locked("purge", &name, move |inner| inner.purge(&n)).await {
                    Ok(()) => return,
                    Err(e @ EngineError::Ceph(CephError::InUse { .. })) if attempt < PURGE_ATTEMPTS => {
                        tracing::debug!("deleting the image of removed volume '{name}': {e}; trying again in {delay:?}");
                        tokio::time::sleep(delay).await;
                        delay *= 2;
                    }
                    Err(e) => {
                        tracing::error!("deleting the image of removed volume '{name}' failed (retried at the next start): {e}");
                        return;
                    }
                }
            }
        });
    }

    /// Puts new settings in force (a change in Consul). Operations running
    /// finish with the connection they have; the next ones connect with the
    /// new settings (a new RADOS client: a rotated key, new monitors).
    /// Mounted volumes keep their mappings, which hold their own connections.
    pub fn update_settings(&self, settings: Result<CephSettings, ConfigError>, defaults: Defaults) {
        let changed = *self.inner.settings.read().unwrap() != settings;
        if changed {
            match &settings {
                Ok(s) => tracing::info!("new cluster settings in force (monitors {}, user client.{})", s.mon_host, s.user),
                Err(e) => tracing::error!("{e}"),
            }
            if let Ok(s) = &settings {
                self.inner.mapper.warm_up(s);
            }
            *self.inner.settings.write().unwrap() = settings;
            *self.inner.cluster.lock().unwrap() = None;
            *self.inner.last_connect_error.lock().unwrap() = None;
        }
        let mut current = self.inner.defaults.write().unwrap();
        if *current != defaults {
            tracing::info!("new volume defaults in force: {defaults:?}");
            *current = defaults;
            *self.inner.directory.lock().unwrap() = None;
        }
    }

    /// From now on, asks `liveness` whether the holder of a volume is dead
    /// (automatic takeover, when enabled).
    pub fn set_liveness(&self, liveness: Arc<dyn takeover::HostLiveness>) {
        let _ = self.inner.liveness.set(liveness);
    }

    /// From now on, sends `to` the name of each volume whose state changes.
    pub fn send_changes_to(&self, to: tokio::sync::mpsc::UnboundedSender<String>) {
        *self.inner.changes.lock().unwrap() = Some(to);
    }

    fn changed(&self, name: &str) {
        if let Some(tx) = self.inner.changes.lock().unwrap().as_ref() {
            let _ = tx.send(name.to_string());
        }
    }

    /// Finishes what a previous run left: deletions (of any host) and this
    /// host's locks on volumes it no longer has mounted.
    pub async fn resume_background_work(&self) {
        let inner = Arc::clone(&self.inner);
        match ceph::offload(move || inner.pending_purges()).await {
            Ok(names) => names.iter().for_each(|n| self.schedule_purge(n)),
            Err(e) => tracing::warn!("cannot look for removed volumes left to delete: {e}"),
        }
        let leftovers = std::mem::take(&mut *self.inner.leftovers.lock().unwrap());
        for name in leftovers {
            let n = name.clone();
            if let Err(e) = self.locked("release", &name, move |inner| inner.release_leftovers(&n)).await {
                tracing::warn!("cannot release this host's lock on volume '{name}' (the next Mount or Unmount here retries): {e}");
            }
        }
    }

    /// Checks each volume mounted here against Ceph (serve calls it every
    /// few seconds). One another host took over — this host was fenced —
    /// is released here without another write: detached from the mount
    /// tree, unmapped, forgotten; its containers get I/O errors, as the
    /// fencing already made them. One whose image grew (`rbdvol resize`
    /// on any host) gets its filesystem grown online.
    pub async fn check_mounted(&self) {
        let names: Vec<String> = self.inner.mounted.lock().unwrap().keys().cloned().collect();
        for name in names {
            let n = name.clone();
            match self.locked("check", &name, move |inner| inner.check_mounted(&n)).await {
                Ok(Checked::Released) => self.changed(&name),
                Ok(_) => {}
                // The cluster being unreachable is logged by the connection.
                Err(e) => tracing::debug!("cannot check volume '{name}': {e}"),
            }
        }
    }

    fn volume_lock(&self, name: &str) -> VolumeLock {
        let mut locks = self.inner.locks.lock().unwrap();
        Arc::clone(locks.entry(name.to_string()).or_default())
    }

    /// Runs `work` on the blocking pool while holding the volume's lock.
    async fn locked<T: Send + 'static>(
        &self,
        op: &'static str,
        name: &str,
        work: impl FnOnce(&Inner) -> Result<T, EngineError> + Send + 'static,
    ) -> Result<T, EngineError> {
        let lock = self.volume_lock(name);
        let _guard = lock.lock().await;
        let inner = Arc::clone(&self.inner);
        let n = name.to_string();
        ceph::offload(move || {
            timing::start();
            let r = work(&inner);
            tracing::debug!("{op} '{n}' took {}", timing::finish());
            r
        })
        .await
    }
}

#[async_trait::async_trait]
impl VolumeDriver for Engine {
    async fn create(&self, name: &str, opts: BTreeMap<String, String>) -> Result<Created, EngineError> {
        options::validate_name(name)?;
        let tools = self.inner.tools.clone();
        let defaults = self.inner.defaults.read().unwrap().clone();
        let pool = opts.get("pool").cloned().unwrap_or_else(|| defaults.pool.clone());
        let opts = options::parse(&opts, &defaults.for_pool(&pool), |f| f.available(&tools))?;
        let n = name.to_string();
        let created = self.locked("create", name, move |inner| inner.create(&n, &opts)).await?;
        if created == Created::New {
            self.changed(name);
        }
        Ok(created)
    }

    async fn remove(&self, name: &str) -> Result<Removed, EngineError> {
        options::validate_name(name)?;
        let n = name.to_string();
        let removed = self.locked("remove", name, move |inner| inner.remove(&n)).await?;
        if removed == Removed::Removed {
            self.schedule_purge(name);
            self.changed(name);
        }
        Ok(removed)
    }

    async fn mount(&self, name: &str, id: &str) -> Result<Mounted, EngineError> {
        options::validate_name(name)?;
        let (n, id) = (name.to_string(), id.to_string());
        let mounted = self.locked("mount", name, move |inner| inner.mount(&n, &id)).await?;
        if matches!(mounted, Mounted::First(_)) {
            self.changed(name);
        }
        Ok(mounted)
    }

    async fn unmount(&self, name: &str, id: &str) -> Result<Unmounted, EngineError> {
        options::validate_name(name)?;
        let (n, id) = (name.to_string(), id.to_string());
        let unmounted = self.locked("unmount", name, move |inner| inner.unmount(&n, &id)).await?;
        if unmounted == Unmounted::Released {
            self.changed(name);
        }
        Ok(unmounted)
    }

    async fn path(&self, name: &str) -> Result<Option<PathBuf>, EngineError> {
        options::validate_name(name)?;
        Ok(self.inner.mounted.lock().unwrap().get(name).map(|v| v.mountpoint.clone()))
    }

    async fn get(&self, name: &str) -> Result<VolumeInfo, EngineError> {
        options::validate_name(name)?;
        if let Some((at, info)) = self.inner.status.lock().unwrap().get(name) {
            if at.elapsed() < STATUS_TTL {
                let mut info = info.clone();
                self.inner.add_local_status(&mut info);
                return Ok(info);
            }
        }
        let inner = Arc::clone(&self.inner);
        let n = name.to_string();
        ceph::offload(move || inner.get(&n)).await
    }

    async fn list(&self) -> Result<Vec<VolumeInfo>, EngineError> {
        let inner = Arc::clone(&self.inner);
        ceph::offload(move || inner.list()).await
    }
}

impl Inner {
    fn settings(&self) -> Result<CephSettings, EngineError> {
        self.settings.read().unwrap().clone().map_err(EngineError::Config)
    }

    /// The shared connection, made on first use (so the plugin starts even
    /// while the cluster is unreachable).
    fn cluster(&self) -> Result<Cluster, EngineError> {
        let mut slot = self.cluster.lock().unwrap();
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let settings = self.settings()?;
        let c = Cluster::connect(&settings).map_err(|source| {
            let settings = settings_to_fix(&source);
            let e = EngineError::Connect { source, settings };
            // Once per distinct failure, not once per Docker call.
            let text = e.to_string();
            let mut last = self.last_connect_error.lock().unwrap();
            if last.as_deref() != Some(text.as_str()) {
                tracing::error!("{text}");
                *last = Some(text);
            }
            e
        })?;
        *self.last_connect_error.lock().unwrap() = None;
        *slot = Some(c.clone());
        Ok(c)
    }

    /// Forgets a connection that the cluster has fenced, so the next call
    /// reconnects with a new identity.
    fn note_error(&self, e: &EngineError) {
        if let EngineError::Ceph(CephError::Blocklisted { .. }) = e {
            *self.cluster.lock().unwrap() = None;
        }
    }

    fn directory_pool(&self, cluster: &Cluster) -> Result<Pool, EngineError> {
        let pool = self.defaults.read().unwrap().pool.clone();
        Ok(cluster.open_pool(&pool, "")?)
    }

    fn dir_get(&self, dir: &Pool, name: &str) -> Result<Option<DirEntry>, EngineError> {
        let raw = dir.metadata_get(&format!("{DIR_PREFIX}{name}"))?;
        Ok(raw.and_then(|r| serde_json::from_str(&r).ok()))
    }

    fn dir_put(&self, dir: &Pool, name: &str, entry: &DirEntry) -> Result<(), EngineError> {
        dir.metadata_set(&format!("{DIR_PREFIX}{name}"), &serde_json::to_string(entry).expect("entry serializes"))?;
        if let Some((_, map)) = self.directory.lock().unwrap().as_mut() {
            map.insert(name.to_string(), entry.clone());
        }
        self.status.lock().unwrap().remove(name);
        Ok(())
    }

    fn dir_remove(&self, dir: &Pool, name: &str) -> Result<(), EngineError> {
        dir.metadata_remove(&format!("{DIR_PREFIX}{name}"))?;
        if let Some((_, map)) = self.directory.lock().unwrap().as_mut() {
            map.remove(name);
        }
        self.status.lock().unwrap().remove(name);
        Ok(())
    }

    /// The directory, at most DIRECTORY_TTL old.
    fn directory(&self) -> Result<BTreeMap<String, DirEntry>, EngineError> {
        if let Some((at, map)) = self.directory.lock().unwrap().as_ref() {
            if at.elapsed() < DIRECTORY_TTL {
                return Ok(map.clone());
            }
        }
        let map = self.read_directory()?;
        *self.directory.lock().unwrap() = Some((Instant::now(), map.clone()));
        Ok(map)
    }

    /// The directory as it is now, bypassing (and not filling) the cache.
    fn read_directory(&self) -> Result<BTreeMap<String, DirEntry>, EngineError> {
        read_directory(&self.directory_pool(&self.cluster()?)?)
    }

    fn image_ref(name: &str, entry: &DirEntry) -> ImageRef {
        ImageRef { pool: entry.pool.clone(), namespace: entry.namespace.clone(), image: name.to_string() }
    }

    fn mountpoint(&self, name: &str) -> PathBuf {
        self.cfg.mount_root.join(name)
    }

    fn cookie(&self) -> &str {
        &self.cfg.host_id
    }

    // ---- create ----------------------------------------------------------

    fn create(&self, name: &str, opts: &VolumeOptions) -> Result<Created, EngineError> {
        let r = self.create_inner(name, opts);
        if let Err(e) = &r {
            self.note_error(e);
        }
        r
    }

    fn create_inner(&self, name: &str, opts: &VolumeOptions) -> Result<Created, EngineError> {
        let cluster = self.cluster()?;
        let dir = self.directory_pool(&cluster)?;
        let resuming = match self.dir_get(&dir, name)? {
            Some(DirEntry { state: EntryState::Ready, .. }) => return Ok(Created::AlreadyExisted),
            Some(e @ DirEntry { state: EntryState::Removing, .. }) => {
                // Removed, but the image is not deleted yet: finish that
                // before creating anew.
                let pool = cluster.open_pool(&e.pool, &e.namespace)?;
                match self.remove_image_settling(&pool, name) {
                    Ok(()) | Err(CephError::NotFound { .. }) => {}
                    Err(err) => return Err(err.into()),
                }
                false
            }
            Some(DirEntry { state: EntryState::Creating, .. }) => true,
            None => false,
        };
        let entry = DirEntry { pool: opts.pool.clone(), namespace: opts.namespace.clone(), state: EntryState::Creating, id: None };
        // The intent goes first: a crash from here on leaves a `creating`
        // entry, which the next Create or Mount completes.
        self.dir_put(&dir, name, &entry)?;
        timing::step("directory: creating");
        let pool = match cluster.open_pool(&opts.pool, &opts.namespace) {
            Ok(p) => p,
            Err(e) => {
                self.dir_remove(&dir, name)?;
                return Err(e.into());
            }
        };
        if let Some(from) = &opts.from {
            return self.create_clone(&cluster, &dir, &pool, &entry, name, opts, from, resuming);
        }
        let fresh = match pool.create_image(name, opts.size, &opts.create) {
            Ok(()) => Blank::New,
            Err(CephError::AlreadyExists { .. }) => {
                let image = pool.open_image_read_only(name)?;
                let ours = VolumeMeta::of(&image.metadata_list()?, name).is_some();
                if !ours && !resuming {
                    self.dir_remove(&dir, name)?;
                    return Err(EngineError::NotOurs { image: ImageRef { pool: opts.pool.clone(), namespace: opts.namespace.clone(), image: name.into() }.to_string() });
                }
                Blank::Probe
            }
            Err(e) => {
                self.dir_remove(&dir, name)?;
                return Err(e.into());
            }
        };
        timing::step("create image");
        let result = (|| {
            let image = Arc::new(pool.open_image(name)?);
            let header = image.header()?;
            timing::step("open image");
            let all = image.metadata_list()?;
            if VolumeMeta::of(&all, name).is_none() {
                self.write_create_metadata(&header, name, opts)?;
            }
            timing::step("metadata");
            self.ensure_formatted(&image, &header, &Self::image_ref(name, &entry), fresh)?;
            let id = Some(header.id().to_string());
            self.dir_put(&dir, name, &DirEntry { state: EntryState::Ready, id, ..entry.clone() })?;
            timing::step("directory: ready");
            Ok(())
        })();
        if let Err(e) = result {
            // A failure (not a crash) is cleaned up, so a retry starts fresh.
            tracing::warn!("create of volume '{name}' failed, removing what it made: {e}");
            match pool.remove_image(name) {
                Ok(()) | Err(CephError::NotFound { .. }) => self.dir_remove(&dir, name)?,
                Err(cleanup) => tracing::error!("cannot remove half-made image {}: {cleanup}", pool.name()),
            }
            return Err(e);
        }
        Ok(Created::New)
    }

    /// Creates a volume as a copy-on-write clone of a snapshot of another
    /// volume: its filesystem, owner and mode are the snapshot's; nothing
    /// is formatted. The clone is grown when a larger size is asked for
    /// (its filesystem then grows at its first mount).
    #[allow(clippy::too_many_arguments)]
    fn create_clone(
        &self,
        cluster: &Cluster,
        dir: &Pool,
        pool: &Pool,
        entry: &DirEntry,
        name: &str,
        opts: &VolumeOptions,
        from: &options::CloneSource,
        resuming: bool,
    ) -> Result<Created, EngineError> {
        let fail = |e: EngineError| -> Result<Created, EngineError> {
            tracing::warn!("clone of {}@{} as volume '{name}' failed, removing what it made: {e}", from.volume, from.snapshot);
            match pool.remove_image(name) {
                Ok(()) | Err(CephError::NotFound { .. }) => self.dir_remove(dir, name)?,
                Err(cleanup) => tracing::error!("cannot remove half-made clone {}: {cleanup}", Self::image_ref(name, entry)),
            }
            Err(e)
        };
        // Until the clone exists, a failure only takes back the intent.
        let made = (|| {
            let parent_entry = match self.dir_get(dir, &from.volume)? {
                Some(e) if e.state == EntryState::Ready => e,
                _ => return Err(EngineError::NotFound(from.volume.clone())),
            };
            let parent_pool = cluster.open_pool(&parent_entry.pool, &parent_entry.namespace)?;
            let parent = parent_pool.open_image_read_only(&from.volume)?;
            let snap = parent
                .snapshots()?
                .into_iter()
                .find(|s| s.name == from.snapshot)
                .ok_or_else(|| EngineError::NoSuchSnapshot { volume: from.volume.clone(), snapshot: from.snapshot.clone() })?;
            let parent_all = parent.metadata_list()?;
            let parent_meta = VolumeMeta::of(&parent_all, &from.volume).ok_or_else(|| EngineError::NotFound(from.volume.clone()))?;
            if opts.size_given && opts.size < snap.size {
                return Err(EngineError::InvalidOption {
                    option: "size".into(),
                    value: format!("{} MiB", opts.size >> 20),
                    reason: format!("a clone cannot be smaller than its snapshot ({} MiB)", snap.size >> 20),
                });
            }
            match pool.clone_image(&parent_pool, &from.volume, &from.snapshot, name, &opts.create) {
                Ok(()) => {}
                Err(CephError::AlreadyExists { .. }) if resuming => {}
                Err(CephError::AlreadyExists { .. }) => return Err(EngineError::NotOurs { image: Self::image_ref(name, entry).to_string() }),
                Err(e) => return Err(e.into()),
            }
            Ok((snap, parent_all, parent_meta))
        })();
        let (snap, parent_all, parent_meta) = match made {
            Ok(made) => made,
            Err(e) => {
                self.dir_remove(dir, name)?;
                return Err(e);
            }
        };
        timing::step("clone image");
        let result = (|| {
            let image = pool.open_image(name)?;
            let header = image.header()?;
            if opts.size_given && opts.size > image.size()? {
                image.grow(opts.size, &|_, _| {})?;
            }
            // librbd copies the parent's metadata into the clone: make it
            // this volume's own.
            header.metadata_remove(META_MOUNTED)?;
            let fs_size: u64 = parent_all.get(META_FORMATTED).and_then(|s| s.parse().ok()).unwrap_or(snap.size).min(snap.size);
            header.metadata_set(META_FORMATTED, &fs_size.to_string())?;
            let meta = VolumeMeta {
                name: name.to_string(),
                mount_options: if opts.mount_options.is_empty() { parent_meta.mount_options.clone() } else { opts.mount_options.clone() },
                uid: None,
                gid: None,
                mode: None,
                created_at: now_rfc3339(),
                cloned_from: Some(format!("{}@{}", from.volume, from.snapshot)),
                ..parent_meta.clone()
            };
            header.metadata_set(META_VOLUME, &serde_json::to_string(&meta).expect("meta serializes"))?;
            let id = Some(header.id().to_string());
            self.dir_put(dir, name, &DirEntry { state: EntryState::Ready, id, ..entry.clone() })?;
            timing::step("metadata, directory: ready");
            Ok(())
        })();
        match result {
            Ok(()) => Ok(Created::New),
            Err(e) => fail(e),
        }
    }

    fn write_create_metadata(&self, header: &Header, name: &str, opts: &VolumeOptions) -> Result<(), EngineError> {
        let meta = VolumeMeta {
            name: name.to_string(),
            fstype: opts.fstype,
            mkfs_options: opts.mkfs_options.clone(),
            mount_options: opts.mount_options.clone(),
            uid: opts.uid,
            gid: opts.gid,
            mode: opts.mode,
            created_at: now_rfc3339(),
            cloned_from: None,
        };
        header.metadata_set(META_VOLUME, &serde_json::to_string(&meta).expect("meta serializes"))?;
        Ok(())
    }

    /// Formats a volume that is not yet (mkfs only on a blank device), and
    /// applies the root's owner and mode. Takes the host lock meanwhile.
    fn ensure_formatted(&self, image: &Arc<Image>, header: &Header, image_ref: &ImageRef, blank: Blank) -> Result<(), EngineError> {
        let all = image.metadata_list()?;
        if all.contains_key(META_FORMATTED) {
            return Ok(());
        }
        let meta = VolumeMeta::of(&all, &image_ref.image).ok_or_else(|| EngineError::NotFound(image_ref.image.clone()))?;
        let owner = fs::RootOwner { uid: meta.uid, gid: meta.gid, mode: meta.mode };
        self.take_host_lock(header, &image_ref.image)?;
        timing::step("host lock");
        let result = (|| {
            match blank {
                Blank::New => self.format_new(image, image_ref, &meta, owner)?,
                Blank::Probe => self.format_mapped(image, image_ref, &meta, owner)?,
            }
            header.metadata_set(META_FORMATTED, &image.size()?.to_string())?;
            Ok(())
        })();
        self.release_host_lock(header)?;
        timing::step("formatted, unlocked");
        result
    }

    /// mkfs in a scratch file, then its non-zero blocks into the new image.
    fn format_new(&self, image: &Arc<Image>, image_ref: &ImageRef, meta: &VolumeMeta, owner: fs::RootOwner) -> Result<(), EngineError> {
        let dir = self.cfg.state_dir.join("format");
        let scratch = fs::ScratchFs::make(&self.tools, &dir, &image_ref.image, image.size()?, meta.fstype, &meta.mkfs_options, owner)?;
        timing::step("mkfs");
        let writer = ceph::aio::BulkWriter::new(image, 16);
        scratch.for_each_data(4 << 20, |offset, data| writer.write(offset, data).map_err(EngineError::from))?;
        writer.finish()?;
        timing::step("copy");
        Ok(())
    }

    /// Maps the image, formats it if blank (a half-made volume may already
    /// hold a filesystem), unmaps it.
    fn format_mapped(&self, image: &Image, image_ref: &ImageRef, meta: &VolumeMeta, owner: fs::RootOwner) -> Result<(), EngineError> {
        self.mapper.check_features(image_ref, image.features()?)?;
        let mapping = self.mapper.map(image_ref, &self.settings()?)?;
        timing::step("map");
        let formatted = (|| {
            fs::format_if_blank(&self.tools, &mapping.device, meta.fstype, &meta.mkfs_options)?;
            if !owner.is_default() {
                let tmp = self.cfg.state_dir.join("format").join(&image_ref.image);
                fs::set_root_owner(&mapping.device, meta.fstype, &tmp, owner)?;
            }
            timing::step("mkfs");
            Ok::<_, EngineError>(())
        })();
        self.mapper.unmap(&mapping)?;
        timing::step("unmap");
        formatted
    }

    // ---- host lock -------------------------------------------------------

    fn take_host_lock(&self, header: &Header, name: &str) -> Result<(), EngineError> {
        let desc = format!("rbdvol on {}", self.cfg.host_id);
        match header.host_lock(self.cookie(), &desc) {
            Ok(_) => Ok(()),
            Err(CephError::LockBusy { .. }) => {
                let lockers = header.host_lockers()?;
                if let Some(other) = lockers.lockers.iter().find(|l| l.cookie != self.cookie()) {
                    return Err(EngineError::MountedElsewhere { name: name.to_string(), host: other.cookie.clone(), since: mounted_since(header)? });
                }
                // Held under our own host id by an earlier run of this
                // plugin (a restart gives us a new client id): take it over.
                for l in &lockers.lockers {
                    header.host_break_lock(&l.client, &l.cookie)?;
                }
                header.host_lock(self.cookie(), &desc)?;
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Whether `host`, holding the volume, is dead: automatic takeover is on,
    /// its Consul session lapsed, and Ceph agrees — none of the clients it
    /// mounted with still watches the image (a dead client's watch times
    /// out within ~30 s; this waits up to 15 s, then `HolderDying` asks for
    /// a retry). A host cut off from Consul but still working with Ceph
    /// keeps its volumes.
    fn holder_is_dead(&self, image: &Image, header: &Header, host: &str) -> Result<bool, EngineError> {
        let Some(liveness) = self.liveness.get().filter(|_| self.cfg.auto_takeover) else { return Ok(false) };
        match liveness.liveness(host) {
            Ok(takeover::Liveness::Dead) => {}
            Ok(_) => return Ok(false),
            Err(e) => {
                tracing::warn!("cannot tell whether host '{host}' is alive: {e}");
                return Ok(false);
            }
        }
        let Some(by) = MountedBy::read(header)? else { return Ok(true) };
        let theirs = by.all_clients();
        tracing::info!("volume '{}': host '{host}' lost its consul session; waiting for its clients' watches to time out", image.name());
        let start = Instant::now();
        loop {
            let watching = takeover::watching(image, &theirs)?;
            if watching.is_empty() {
                return Ok(true);
            }
            // Well inside dockerd's 30 s: the caller retries.
            if start.elapsed() > MOUNT_WAITS_FOR_WATCHES {
                return Err(EngineError::HolderDying { name: image.name().to_string(), host: host.to_string(), watchers: watching.join(", ") });
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    fn release_host_lock(&self, header: &Header) -> Result<(), EngineError> {
        if header.host_unlock(self.cookie())? == Done::AlreadyDone {
            for l in header.host_lockers()?.lockers.iter().filter(|l| l.cookie == self.cookie()) {
                header.host_break_lock(&l.client, &l.cookie)?;
            }
        }
        Ok(())
    }

    // ---- remove ----------------------------------------------------------

    /// Hides the volume (directory state `removing`): from here on it is
    /// gone for Docker on every host. The image itself is deleted by
    /// `purge`, which the caller schedules right after.
    fn remove(&self, name: &str) -> Result<Removed, EngineError> {
        if let Some(v) = self.mounted.lock().unwrap().get(name) {
            return Err(EngineError::InUseHere { name: name.into(), containers: v.ref_count() });
        }
        let cluster = self.cluster()?;
        let dir = self.directory_pool(&cluster)?;
        let Some(entry) = self.dir_get(&dir, name)? else { return Ok(Removed::AlreadyGone) };
        if entry.state == EntryState::Removing {
            return Ok(Removed::Removed);
        }
        let pool = cluster.open_pool(&entry.pool, &entry.namespace)?;
        let header = match pool.header_of(name, entry.id.as_deref()) {
            Ok(h) => h,
            Err(CephError::NotFound { .. }) => {
                self.dir_remove(&dir, name)?;
                return Ok(Removed::AlreadyGone);
            }
            Err(e) => return Err(e.into()),
        };
        let id = Some(header.id().to_string());
        timing::step("directory");
        if let Some(holder) = header.host_lockers()?.lockers.first() {
            return Err(EngineError::MountedElsewhere { name: name.into(), host: holder.cookie.clone(), since: mounted_since(&header)? });
        }
        timing::step("host lock");
        // Checked now: the deletion in the background could only log it.
        let image = pool.open_image_read_only(name)?;
        let clones = image.children()?;
        if !clones.is_empty() {
            return Err(EngineError::HasClones { name: name.into(), clones: clones.join(", ") });
        }
        let snapshots = image.snapshots()?;
        if !snapshots.is_empty() {
            let snapshots = snapshots.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", ");
            return Err(EngineError::HasSnapshots { name: name.into(), snapshots });
        }
        timing::step("snapshots");
        self.dir_put(&dir, name, &DirEntry { state: EntryState::Removing, id, ..entry })?;
        timing::step("directory: removing");
        Ok(Removed::Removed)
    }

    /// Deletes the image of a removed (`removing`) volume, then its
    /// directory entry. Idempotent; what fails stays `removing` and is
    /// retried at the next start or by a Create of the same name.
    fn purge(&self, name: &str) -> Result<(), EngineError> {
        let cluster = self.cluster()?;
        let dir = self.directory_pool(&cluster)?;
        let Some(entry) = self.dir_get(&dir, name)?.filter(|e| e.state == EntryState::Removing) else { return Ok(()) };
        let pool = cluster.open_pool(&entry.pool, &entry.namespace)?;
        match self.remove_image_settling(&pool, name) {
            Ok(()) | Err(CephError::NotFound { .. }) => {
                timing::step("remove image");
                self.dir_remove(&dir, name)?;
                timing::step("directory: remove");
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Volumes whose image is still to be deleted.
    fn pending_purges(&self) -> Result<Vec<String>, EngineError> {
        Ok(self.read_directory()?.into_iter().filter(|(_, e)| e.state == EntryState::Removing).map(|(n, _)| n).collect())
    }

    /// Removes an image, waiting a little for watchers that are on their
    /// way out: a mapper process closing after the last Unmount, or udev
    /// probing a device just unmapped. A watcher that stays is `InUse`.
    fn remove_image_settling(&self, pool: &Pool, name: &str) -> Result<(), CephError> {
        let start = Instant::now();
        loop {
            match pool.remove_image(name) {
                Err(CephError::InUse { .. }) if start.elapsed() < WATCHERS_SETTLE => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                other => return other,
            }
        }
    }

    // ---- mount / unmount -------------------------------------------------

    fn mount(&self, name: &str, id: &str) -> Result<Mounted, EngineError> {
        if let Some(v) = self.mounted.lock().unwrap().get_mut(name) {
            v.add_ref(id);
            self.state.save(v)?;
            return Ok(Mounted::Again(v.mountpoint.clone()));
        }
        let r = self.mount_first(name, id);
        if let Err(e) = &r {
            self.note_error(e);
        }
        r.map(Mounted::First)
    }

    fn mount_first(&self, name: &str, id: &str) -> Result<PathBuf, EngineError> {
        let cluster = self.cluster()?;
        let dir = self.directory_pool(&cluster)?;
        let entry = match self.dir_get(&dir, name)? {
            Some(e) if e.state != EntryState::Removing => e,
            _ => return Err(EngineError::NotFound(name.into())),
        };
        let image_ref = Self::image_ref(name, &entry);
        let pool = cluster.open_pool(&entry.pool, &entry.namespace)?;
        timing::step("directory");
        let image = Arc::new(pool.open_image(name)?);
        let header = image.header()?;
        timing::step("open image");
        if entry.state == EntryState::Creating {
            // Half-made by a crashed Create: complete it, then expose it.
            if VolumeMeta::of(&image.metadata_list()?, name).is_none() {
                return Err(EngineError::NotFound(name.into()));
            }
            self.ensure_formatted(&image, &header, &image_ref, Blank::Probe)?;
            self.dir_put(&dir, name, &DirEntry { state: EntryState::Ready, ..entry.clone() })?;
        }
        let all = image.metadata_list()?;
        let meta = VolumeMeta::of(&all, name).ok_or_else(|| EngineError::NotFound(name.into()))?;
        let fstype = meta.fstype;
        match self.take_host_lock(&header, name) {
            Err(EngineError::MountedElsewhere { host, .. }) if self.holder_is_dead(&image, &header, &host)? => {
                let own = cluster.own_address()?;
                if let Some(t) = takeover::fence_holder(&header, &image, self.cookie(), &own, self.cfg.blocklist_expiry)? {
                    tracing::warn!("volume '{name}': took it over from host '{}', whose consul session lapsed", t.from);
                }
                self.take_host_lock(&header, name)?;
            }
            r => r?,
        }
        timing::step("host lock");

        // From here on, a failure undoes every step taken.
        let mut mapping: Option<Mapping> = None;
        let mut mounted_at: Option<PathBuf> = None;
        let result = (|| {
            self.mapper.check_features(&image_ref, image.features()?)?;
            let m = self.mapper.map(&image_ref, &self.settings()?)?;
            timing::step("map");
            let device = m.device.clone();
            mapping = Some(m);
            let mp = self.mountpoint(name);
            std::fs::create_dir_all(&mp).map_err(HostError::io("create", &mp))?;
            let mut options = meta.mount_options.clone();
            let implied = fstype.implied_mount_options();
            if !implied.is_empty() && !options.split(',').any(|o| o == implied) {
                options = if options.is_empty() { implied.to_string() } else { format!("{options},{implied}") };
            }
            if let Err(e) = sys::mount(&device, &mp, fstype.as_str(), &options) {
                // Say what is on the device when it is not what we expect.
                return Err(match fs::probe(&self.tools, &device)? {
                    Some(found) if found == fstype.as_str() => e.into(),
                    found => HostError::WrongFilesystem {
                        device,
                        found: found.unwrap_or_else(|| "no".into()),
                        wanted: fstype.as_str().into(),
                    }
                    .into(),
                });
            }
            mounted_at = Some(mp.clone());
            timing::step("mount");
            // Grow the filesystem when the image grew since it was made.
            let size = image.size()?;
            let fs_size: u64 = all.get(META_FORMATTED).and_then(|s| s.parse().ok()).unwrap_or(size);
            if size > fs_size {
                if let Err(online) = fs::grow(&self.tools, fstype, &device, &mp) {
                    if fstype != Fstype::Ext4 {
                        return Err(online.into());
                    }
                    tracing::warn!("growing '{name}' online failed ({online}): growing it offline");
                    sys::unmount(&mp)?;
                    mounted_at = None;
                    fs::grow_ext4_offline(&self.tools, &device)?;
                    sys::mount(&device, &mp, fstype.as_str(), &options)?;
                    mounted_at = Some(mp.clone());
                }
                header.metadata_set(META_FORMATTED, &size.to_string())?;
            }
            let clients = image.watchers()?.into_iter().map(|w| w.addr).collect();
            let by = MountedBy { host: self.cfg.host_id.clone(), addr: cluster.own_address()?, since: now_rfc3339(), clients };
            header.metadata_set(META_MOUNTED, &serde_json::to_string(&by).expect("serializes"))?;
            let mut v = MountedVolume {
                name: name.into(),
                pool: entry.pool.clone(),
                namespace: entry.namespace.clone(),
                image: name.into(),
                image_id: Some(header.id().to_string()),
                mapper: self.mapper.kind().as_str().into(),
                device,
                mountpoint: mp.clone(),
                fstype: fstype.as_str().into(),
                refs: BTreeMap::new(),
            };
            v.add_ref(id);
            self.state.save(&v)?;
            self.mounted.lock().unwrap().insert(name.into(), v);
            timing::step("record");
            Ok(mp)
        })();
        if result.is_err() {
            if let Some(mp) = &mounted_at {
                let _ = sys::unmount(mp);
            }
            if let Some(m) = &mapping {
                if let Err(e) = self.mapper.unmap(m) {
                    tracing::error!("rolling back mount of '{name}': {e}");
                }
            }
            let _ = std::fs::remove_dir(self.mountpoint(name));
            let _ = header.metadata_remove(META_MOUNTED);
            if let Err(e) = self.release_host_lock(&header) {
                tracing::error!("rolling back mount of '{name}': {e}");
            }
        }
        self.status.lock().unwrap().remove(name);
        result
    }

    fn unmount(&self, name: &str, id: &str) -> Result<Unmounted, EngineError> {
        let Some(mut v) = self.mounted.lock().unwrap().get(name).cloned() else {
            // Not mounted here: a lock this host left behind (a crash, a
            // forced plugin stop) is released now.
            if let Err(e) = self.release_leftovers(name) {
                tracing::warn!("cannot release this host's lock on volume '{name}': {e}");
            }
            return Ok(Unmounted::NotMounted);
        };
        v.drop_ref(id);
        if v.ref_count() > 0 {
            self.state.save(&v)?;
            let n = v.ref_count();
            self.mounted.lock().unwrap().insert(name.into(), v);
            return Ok(Unmounted::StillUsed(n));
        }
        sys::unmount(&v.mountpoint)?;
        timing::step("umount");
        self.mapper.unmap(&self.mapping_of(&v))?;
        timing::step("unmap");
        let _ = std::fs::remove_dir(&v.mountpoint);
        // Unmapped: the volume is free on this host whatever happens next.
        self.mounted.lock().unwrap().remove(name);
        self.state.remove(name)?;
        self.status.lock().unwrap().remove(name);
        timing::step("record");
        let header = self.header_of_mounted(&v)?;
        header.metadata_remove(META_MOUNTED)?;
        self.release_host_lock(&header)?;
        timing::step("metadata, unlock");
        Ok(Unmounted::Released)
    }

    /// The mapping of a volume mounted here, as its state records it.
    fn mapping_of(&self, v: &MountedVolume) -> Mapping {
        Mapping {
            image: ImageRef { pool: v.pool.clone(), namespace: v.namespace.clone(), image: v.image.clone() },
            device: v.device.clone(),
            mapper: MapperKind::parse(&v.mapper).unwrap_or(self.mapper.kind()),
        }
    }

    /// The image header of a volume mounted here (no lookup when its id is
    /// recorded).
    fn header_of_mounted(&self, v: &MountedVolume) -> Result<Header, EngineError> {
        Ok(self.cluster()?.open_pool(&v.pool, &v.namespace)?.header_of(&v.image, v.image_id.as_deref())?)
    }

    fn check_mounted(&self, name: &str) -> Result<Checked, EngineError> {
        let Some(v) = self.mounted.lock().unwrap().get(name).cloned() else { return Ok(Checked::Fine) };
        let look = || -> Result<(Header, ceph::Lockers), EngineError> {
            let header = self.header_of_mounted(&v)?;
            let lockers = header.host_lockers()?;
            Ok((header, lockers))
        };
        let looked = match look() {
            // This plugin's own client was fenced with the rest: look with a new one.
            Err(e @ EngineError::Ceph(CephError::Blocklisted { .. })) => {
                self.note_error(&e);
                look()
            }
            r => r,
        };
        let (header, lockers) = match looked {
            Err(EngineError::Ceph(CephError::NotFound { .. })) => {
                tracing::error!("volume '{name}' no longer exists in ceph (taken over and removed by another host): releasing it here");
                self.release_fenced(&v);
                return Ok(Checked::Released);
            }
            r => r?,
        };
        if !lockers.lockers.iter().any(|l| l.cookie == self.cookie()) {
            let by = lockers.lockers.first().map(|l| format!("host '{}'", l.cookie)).unwrap_or_else(|| "an admin (its lock was broken)".into());
            tracing::error!(
                "volume '{name}' was taken over by {by}: this host was fenced; releasing it here without writing to it (its {} container(s) get I/O errors)",
                v.ref_count()
            );
            self.release_fenced(&v);
            return Ok(Checked::Released);
        }
        let size = header.size()?;
        let fs_size: u64 = header.metadata_get(META_FORMATTED)?.and_then(|s| s.parse().ok()).unwrap_or(size);
        if size <= fs_size || self.grow_failed.lock().unwrap().get(name) == Some(&size) {
            return Ok(Checked::Fine);
        }
        let fstype = Fstype::parse(&v.fstype).unwrap_or(Fstype::Ext4);
        let grown = self.mapper.refresh_size(&self.mapping_of(&v), size).and_then(|_| fs::grow(&self.tools, fstype, &v.device, &v.mountpoint));
        if let Err(e) = grown {
            tracing::warn!("volume '{name}' grew to {} MiB but its filesystem could not grow online ({e}); it grows at its next mount", size >> 20);
            self.grow_failed.lock().unwrap().insert(name.to_string(), size);
            return Ok(Checked::Fine);
        }
        header.metadata_set(META_FORMATTED, &size.to_string())?;
        self.status.lock().unwrap().remove(name);
        tracing::info!("volume '{name}': filesystem grown online to {} MiB", size >> 20);
        Ok(Checked::Grown(size))
    }

    /// Lets go of a volume another host took over: nothing of it is written
    /// again from here (the mapping is fenced anyway).
    fn release_fenced(&self, v: &MountedVolume) {
        if let Err(e) = sys::unmount_detached(&v.mountpoint) {
            tracing::warn!("releasing fenced volume '{}': {e}", v.name);
        }
        if let Err(e) = self.mapper.unmap(&self.mapping_of(v)) {
            tracing::warn!("releasing fenced volume '{}': {e}", v.name);
        }
        let _ = std::fs::remove_dir(&v.mountpoint);
        self.mounted.lock().unwrap().remove(&v.name);
        if let Err(e) = self.state.remove(&v.name) {
            tracing::warn!("releasing fenced volume '{}': {e}", v.name);
        }
        self.status.lock().unwrap().remove(&v.name);
    }

    /// Releases this host's host lock and mounted-by record on a volume it
    /// does not have mounted. Idempotent; a lock of another host is left.
    fn release_leftovers(&self, name: &str) -> Result<(), EngineError> {
        if self.mounted.lock().unwrap().contains_key(name) {
            return Ok(());
        }
        let cluster = self.cluster()?;
        let Some(entry) = self.dir_get(&self.directory_pool(&cluster)?, name)? else { return Ok(()) };
        let header = match cluster.open_pool(&entry.pool, &entry.namespace)?.header_of(name, entry.id.as_deref()) {
            Ok(h) => h,
            Err(CephError::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        if !header.host_lockers()?.lockers.iter().any(|l| l.cookie == self.cookie()) {
            return Ok(());
        }
        header.metadata_remove(META_MOUNTED)?;
        self.release_host_lock(&header)?;
        self.status.lock().unwrap().remove(name);
        tracing::info!("released this host's lock on volume '{name}', left by an earlier run");
        Ok(())
    }

    // ---- get / list ------------------------------------------------------

    fn get(&self, name: &str) -> Result<VolumeInfo, EngineError> {
        let entry = match self.directory()?.get(name) {
            Some(e) if e.state == EntryState::Ready => e.clone(),
            _ => {
                // Not in the (possibly stale) cache: ask the directory itself.
                let cluster = self.cluster()?;
                match self.dir_get(&self.directory_pool(&cluster)?, name)? {
                    Some(e) if e.state == EntryState::Ready => e,
                    _ => return Err(EngineError::NotFound(name.into())),
                }
            }
        };
        let cluster = self.cluster()?;
        let image = match cluster.open_pool(&entry.pool, &entry.namespace)?.open_image_read_only(name) {
            Ok(i) => i,
            Err(CephError::NotFound { .. }) => return Err(EngineError::NotFound(name.into())),
            Err(e) => return Err(e.into()),
        };
        let meta = image.metadata_list()?;
        let size = image.size()?;
        let mut status = serde_json::Map::new();
        let mut put = |k: &str, v: serde_json::Value| {
            status.insert(k.to_string(), v);
        };
        put("pool", entry.pool.clone().into());
        if !entry.namespace.is_empty() {
            put("namespace", entry.namespace.clone().into());
        }
        put("image", Self::image_ref(name, &entry).to_string().into());
        put("size", format!("{} MiB", size >> 20).into());
        put("size_bytes", size.into());
        let vm = VolumeMeta::of(&meta, name);
        put("fstype", vm.as_ref().map(|v| v.fstype.as_str()).unwrap_or("ext4").into());
        put("features", ceph::features_to_string(image.features()?).into());
        if let Some(m) = vm.as_ref().map(|v| v.mount_options.clone()).filter(|m| !m.is_empty()) {
            put("mount_options", m.into());
        }
        if let Some(c) = vm.as_ref().and_then(|v| v.cloned_from.clone()) {
            put("cloned_from", c.into());
        }
        let by = meta.get(META_MOUNTED).and_then(|m| serde_json::from_str::<MountedBy>(m).ok());
        put("mounted_by", by.as_ref().map(|b| b.host.clone()).unwrap_or_default().into());
        if let Some(b) = by {
            put("mounted_since", b.since.into());
        }
        let info = VolumeInfo { name: name.into(), mountpoint: None, created_at: vm.map(|v| v.created_at), status };
        self.status.lock().unwrap().insert(name.into(), (Instant::now(), info.clone()));
        let mut info = info;
        self.add_local_status(&mut info);
        Ok(info)
    }

    /// What only this host knows: mapper, device, mountpoint, containers.
    fn add_local_status(&self, info: &mut VolumeInfo) {
        if let Some(v) = self.mounted.lock().unwrap().get(&info.name) {
            info.mountpoint = Some(v.mountpoint.clone());
            info.status.insert("mapper".into(), v.mapper.clone().into());
            info.status.insert("device".into(), v.device.to_string_lossy().into_owned().into());
            info.status.insert("containers".into(), v.ref_count().into());
        }
    }

    fn list(&self) -> Result<Vec<VolumeInfo>, EngineError> {
        let mounted = self.mounted.lock().unwrap().clone();
        Ok(self
            .directory()?
            .into_iter()
            .filter(|(_, e)| e.state == EntryState::Ready)
            .map(|(name, _)| VolumeInfo {
                mountpoint: mounted.get(&name).map(|v| v.mountpoint.clone()),
                name,
                created_at: None,
                status: serde_json::Map::new(),
            })
            .collect())
    }

    // ---- start-up --------------------------------------------------------

    /// Matches saved state against the host: volumes still mounted are
    /// taken back (containers keep running on them); what a crash left
    /// half-done (mapped but not mounted, mounted but never recorded) is
    /// undone. Needs no cluster; host locks left behind are taken over by
    /// the next Mount here or released by the next Unmount.
    fn reconcile(&self) -> Result<(), EngineError> {
        self.mapper.clean_up_dead()?;
        let mounts = sys::mounts()?;
        let mut kept = BTreeMap::new();
        for v in self.state.load_all()? {
            let still_mounted = mounts.iter().any(|m| m.target == v.mountpoint && Path::new(&m.source) == v.device);
            if still_mounted && v.ref_count() > 0 {
                tracing::info!("volume '{}' is still mounted at {} for {} reference(s): keeping it", v.name, v.mountpoint.display(), v.ref_count());
                kept.insert(v.name.clone(), v);
            } else {
                tracing::warn!("volume '{}' was recorded as mounted but is not: cleaning up", v.name);
                if still_mounted {
                    sys::unmount(&v.mountpoint)?;
                }
                let image = ImageRef { pool: v.pool.clone(), namespace: v.namespace.clone(), image: v.image.clone() };
                if let Some(m) = self.mapper.find(&image)? {
                    self.mapper.unmap(&m)?;
                }
                self.state.remove(&v.name)?;
                self.leftovers.lock().unwrap().push(v.name.clone());
            }
        }
        // Mappings nobody recorded: a crash between map and the state write.
        for m in self.mapper.list()? {
            if kept.values().any(|v| v.image == m.image.image && v.pool == m.image.pool && v.namespace == m.image.namespace) {
                continue;
            }
            for mnt in mounts.iter().filter(|mnt| Path::new(&mnt.source) == m.device && mnt.target.starts_with(&self.cfg.mount_root)) {
                sys::unmount(&mnt.target)?;
            }
            tracing::warn!("unmapping {} ({}): mapped but not recorded", m.image, m.device.display());
            self.mapper.unmap(&m)?;
        }
        *self.mounted.lock().unwrap() = kept;
        Ok(())
    }
}
