//! The volume engine: Docker's volume operations on top of Ceph (the source
//! of truth) and the host (mappers, filesystems, mounts).
//!
//! What rbdvol keeps in Ceph is described in `records`; this host's mounts
//! and their container references are in `state`.
//!
//! Every operation holds its volume's lock (never a global one) and runs its
//! blocking work through `ceph::offload`. Get, List, Path and Capabilities
//! take no volume lock.
//!
//! The map:
//! - `records`: the on-Ceph format (directory entries, rbdvol's metadata keys);
//! - `store`: the narrow interface over the RADOS calls of the host path;
//! - `connection`: the cluster handle and the settings in force;
//! - `health`: whether the cluster answers (one background prober);
//! - `directory`: the volume directory and its caches;
//! - `host_lock`: one host at a time (take, release, a dead holder);
//! - `fence`: fencing kept until the fenced host let go;
//! - `create`, `format`: Create and clones, and formatting new volumes;
//! - `adopt`: volumes of images rbdvol did not make (`-o image=`), and
//!   forgetting them;
//! - `mount`: Mount and Unmount, as a transaction undone in reverse;
//! - `publish`: Swarm's cluster volumes (CSI): stage, publish, unpublish;
//! - `check`: the periodic check of mounted volumes (taken over, grown);
//! - `remove`: Remove and the background deletion (purge);
//! - `status`: Get and List;
//! - `reconcile`: what a previous run left, at start-up and after;
//! - `observe`: what the metrics report, read from memory at scrape time;
//! - `admin`, `takeover`, `doctor`: the admin CLI's operations;
//! - `options`: names, sizes and volume options; `fs_options`: the mkfs and
//!   mount options allowed.

pub mod admin;
pub mod adopt;
mod check;
mod connection;
mod create;
mod directory;
pub mod doctor;
mod fence;
mod format;
pub mod health;
pub mod fs_options;
mod host_lock;
mod mount;
mod observe;
mod publish;
pub mod options;
pub mod map_options;
pub mod qos;
mod reconcile;
pub mod records;
mod remove;
mod status;
mod store;
pub mod takeover;
mod timing;
pub mod trash;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::ceph::{self, CephError};
use crate::config::{CephSettings, ConfigError};
use crate::host::mapper::{Mapper, MapperKind};
use crate::host::mounts::{MountTable, SystemMounts};
use crate::host::tools::Tools;
use crate::host::HostError;
use crate::state::{LockNotes, MountedVolume, StateError, StateStore};
use connection::Connection;
use directory::DirectoryCache;
use options::Defaults;

pub use observe::Observed;
pub use publish::Unpublished;

pub(crate) use connection::settings_to_fix;

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

    #[error("volume '{name}' is held by another machine that also calls itself host '{host}' (another rbdvol installation, lock cookie '{cookie}'): give each machine its own RBDVOL_HOST_ID; if this machine was reinstalled while it had the volume mounted, release it with rbdvol unlock {name}")]
    DuplicateHostId { name: String, host: String, cookie: String },

    #[error("volume '{name}' is mounted read-only on host(s) '{hosts}': it cannot be mounted read-write or removed until they unmount it (a host that died keeps its share until its plugin restarts; rbdvol unlock --force {name} breaks every share)")]
    ReadOnlyHolders { name: String, hosts: String },

    #[error("volume '{name}' is read-only and mounted by host(s) '{hosts}': a read-only mapping leaves nothing Ceph can check, so a dead reader cannot be told from a live one; rbdvol unlock --force {name} breaks every share (live readers' plugins then let go of it)")]
    ReadersUnknown { name: String, hosts: String },

    #[error("volume '{name}' is read-only: {why}")]
    NotForReadOnly { name: String, why: &'static str },

    #[error("volume '{name}' has snapshots ({snapshots}): remove them first (rbdvol snapshot rm {name}@<snapshot>)")]
    HasSnapshots { name: String, snapshots: String },

    #[error("cannot restore volume '{name}' from the trash: {reason}")]
    TrashRestore { name: String, reason: String },

    #[error("volume '{name}' is held by host '{host}', whose consul session lapsed, but its clients still watch the image ({watchers}): retry in a few seconds (a dead client's watch times out within ~30 s); if that host still works with ceph, rbdvol takeover {name} fences it")]
    HolderDying { name: String, host: String, watchers: String },

    #[error("volume '{name}' has clones ({clones}): remove them first")]
    HasClones { name: String, clones: String },

    #[error("volume '{volume}' has no snapshot '{snapshot}' to clone (rbdvol snapshot ls {volume})")]
    NoSuchSnapshot { volume: String, snapshot: String },

    #[error("volume '{name}' is mounted on this host for {containers} container(s): stop them first")]
    InUseHere { name: String, containers: u32 },

    #[error("volume '{name}' records {what} that rbdvol does not allow ({reason}): correct its metadata ({key}) or remove the volume")]
    RefusedRecord { name: String, what: &'static str, key: &'static str, reason: String },

    #[error("volume '{name}': its device {} cannot be read ({source}): its mapping failed (the mapper's log says why); retry the mount", device.display())]
    DeviceUnreadable { name: String, device: std::path::PathBuf, source: std::io::Error },

    #[error("volume '{name}' does not exist as of {when} (the cluster is {detail})")]
    NotFoundAsOf { name: String, when: String, detail: String },

    #[error("the cluster is {detail}: nothing was changed; retry once it answers (rbdvol doctor shows what does not)")]
    ClusterUnreachable { detail: String },

    #[error("image '{image}' already exists and is not an rbdvol volume: choose another volume name")]
    NotOurs { image: String },

    #[error("cannot adopt image '{image}': {reason}")]
    CannotAdopt { image: String, reason: String },

    #[error("volume '{name}' was created by rbdvol, not adopted: rbdvol forget only forgets adopted images (docker volume rm {name} deletes it)")]
    NotAdopted { name: String },
    #[error("volume '{name}' is not staged on this host for {}: stage it again (it was unstaged, or taken over by another host)", path.display())]
    NotStaged { name: String, path: PathBuf },

    #[error("volume '{name}' is being taken back after a restart of the plugin (its device still serves its containers and is mounted again within seconds): retry the mount")]
    TakingBack { name: String },

    #[error("{0}")]
    Config(#[from] ConfigError),

    #[error("{source}; settings to fix: {settings}")]
    /// The source is boxed: a `CephError` beside the settings' names made
    /// every `Result<_, EngineError>` large.
    Connect { source: Box<CephError>, settings: &'static str },

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
    /// How long a removed volume's image stays in the RBD trash, restorable
    /// (`RBDVOL_TRASH_DELAY`; zero: purged at once, in the background).
    pub trash_delay: Duration,
}

type VolumeLock = Arc<tokio::sync::Mutex<()>>;

/// How long a read (Get, List, Path) waits for a cluster the prober has
/// not (yet) found down before it answers from memory: long enough that a
/// merely busy cluster or host gets fresh answers, short beside dockerd's
/// 30 s.
const READ_DEADLINE: Duration = Duration::from_secs(2);

struct Inner {
    cfg: EngineConfig,
    /// The cluster settings and the connection made with them.
    connection: Connection,
    /// The volume defaults now in force: replaced as a whole when the
    /// settings change (Consul), never edited in place.
    defaults: std::sync::RwLock<Defaults>,
    tools: Tools,
    mapper: Box<dyn Mapper>,
    mount_table: Box<dyn MountTable>,
    state: StateStore,
    /// The volumes mounted here, as `state` records them.
    mounted: Mutex<BTreeMap<String, MountedVolume>>,
    /// One lock per volume, held by every operation on it.
    locks: Mutex<HashMap<String, VolumeLock>>,
    /// The directory and Get's answers, briefly cached (and kept for reads
    /// while the cluster does not answer).
    cache: DirectoryCache,
    /// Whether the cluster answers.
    health: health::Health,
    /// This host's lock cookie: its host id and installation id.
    cookie: String,
    /// The host locks this host may hold, noted on disk before each is taken.
    lock_notes: LockNotes,
    /// Volumes whose host lock this host holds but no longer uses (left by
    /// a crash, or a release that failed): released in the background,
    /// retried at every check until it is.
    stale_locks: Mutex<BTreeSet<String>>,
    /// Told the name of each volume a Create, Remove, first Mount or last
    /// Unmount changed (for the volume records in Consul).
    changes: Mutex<Option<tokio::sync::mpsc::UnboundedSender<String>>>,
    /// Says whether another host is alive (Consul sessions), for automatic
    /// takeover.
    liveness: std::sync::OnceLock<Arc<dyn takeover::HostLiveness>>,
    /// Numbers each Mount call (from the clock at start: never one a state
    /// file of an earlier run holds).
    attempts: std::sync::atomic::AtomicU64,
    /// When this host last renewed the fencing of each volume's fenced hosts.
    fence_renewed: Mutex<HashMap<String, std::time::Instant>>,
    /// Volumes whose online grow failed, with the size tried: not retried
    /// until the image grows again (the next mount grows them).
    grow_failed: Mutex<HashMap<String, u64>>,
    /// Volumes kept at start-up whose mount was gone but whose device still
    /// serves their containers (a managed plugin's `disable -f`: dockerd
    /// detaches the plugin's mounts; krbd keeps the device, rbd-nbd's waits
    /// to be reattached): mounted again by the next check.
    remount: Mutex<BTreeSet<String>>,
}

impl Inner {
    fn volume_lock(&self, name: &str) -> VolumeLock {
        let mut locks = self.locks.lock().unwrap();
        Arc::clone(locks.entry(name.to_string()).or_default())
    }

    /// The volume's lock, from blocking work that does not hold it yet.
    fn volume_lock_blocking(&self, name: &str) -> tokio::sync::OwnedMutexGuard<()> {
        self.volume_lock(name).blocking_lock_owned()
    }
}

/// The engine. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
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
        Engine::start_with(cfg, Connection::new(settings), tools, mapper, Box::new(SystemMounts))
    }

    fn start_with(
        cfg: EngineConfig,
        connection: Connection,
        tools: Tools,
        mapper: Box<dyn Mapper>,
        mount_table: Box<dyn MountTable>,
    ) -> Result<Engine, EngineError> {
        let state = StateStore::open(cfg.state_dir.join("volumes"))?;
        let lock_notes = LockNotes::open(cfg.state_dir.join("locks"))?;
        let cookie = records::LockCookie::format(&cfg.host_id, &crate::state::install_id(&cfg.state_dir)?);
        std::fs::create_dir_all(&cfg.mount_root).map_err(HostError::io("create", &cfg.mount_root))?;
        let engine = Engine {
            inner: Arc::new(Inner {
                defaults: std::sync::RwLock::new(cfg.defaults.clone()),
                cfg,
                connection,
                tools,
                mapper,
                mount_table,
                state,
                mounted: Mutex::new(BTreeMap::new()),
                locks: Mutex::new(HashMap::new()),
                cache: DirectoryCache::default(),
                health: Default::default(),
                cookie,
                lock_notes,
                stale_locks: Mutex::new(BTreeSet::new()),
                changes: Mutex::new(None),
                liveness: std::sync::OnceLock::new(),
                grow_failed: Mutex::new(HashMap::new()),
                remount: Mutex::new(BTreeSet::new()),
                fence_renewed: Mutex::new(HashMap::new()),
                attempts: std::sync::atomic::AtomicU64::new(
                    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1),
                ),
            }),
        };
        // The first settings in force: generation 1.
        crate::metrics::global().settings_applied();
        engine.inner.reconcile()?;
        if let Ok(settings) = engine.inner.connection.settings() {
            engine.inner.mapper.warm_up(&settings);
        }
        Ok(engine)
    }

    pub fn mapper_kind(&self) -> MapperKind {
        self.inner.mapper.kind()
    }

    /// Puts new settings in force (a change in Consul). Operations running
    /// finish with the connection they have; the next ones connect with the
    /// new settings (a new RADOS client: a rotated key, new monitors).
    /// Mounted volumes keep their mappings, which hold their own connections.
    pub fn update_settings(&self, settings: Result<CephSettings, ConfigError>, defaults: Defaults) {
        // The defaults first: a Create that finds the new connection must
        // find the new defaults too (never a volume of the old default size
        // made with the settings that came with the new one).
        let defaults_changed = {
            let mut current = self.inner.defaults.write().unwrap();
            let changed = *current != defaults;
            if changed {
                tracing::info!("new volume defaults in force: {defaults:?}");
                *current = defaults;
                self.inner.cache.forget_listing();
            }
            changed
        };
        let replaced = self.inner.connection.replace_settings(settings);
        if defaults_changed || replaced.is_some() {
            crate::metrics::global().settings_applied();
        }
        if let Some(Ok(s)) = replaced {
            self.inner.mapper.warm_up(&s);
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

    fn volume_lock(&self, name: &str) -> VolumeLock {
        self.inner.volume_lock(name)
    }

    /// Runs `work` on the blocking pool while holding the volume's lock.
    /// The lock goes with the work: it is released when the work ends, not
    /// when the caller stops waiting (a dropped future leaves the blocking
    /// work running).
    async fn locked<T: Send + 'static>(
        &self,
        op: &'static str,
        name: &str,
        work: impl FnOnce(&Inner) -> Result<T, EngineError> + Send + 'static,
    ) -> Result<T, EngineError> {
        let guard = self.volume_lock(name).lock_owned().await;
        let inner = Arc::clone(&self.inner);
        let n = name.to_string();
        ceph::offload(move || {
            let _guard = guard;
            timing::start();
            let r = work(&inner);
            tracing::debug!("{op} '{n}' took {}", timing::finish());
            r
        })
        .await
    }

    /// The pools a call on volume `name` needs: the directory's, and the
    /// volume's own as last known.
    fn pools_of(&self, name: &str) -> Vec<String> {
        let mut pools = vec![self.inner.defaults.read().unwrap().pool.clone()];
        pools.extend(self.inner.known_pool(name));
        pools
    }

    /// A read (Get, List, Path) that never waits on a cluster that does
    /// not answer: while the health view says it is down, or when the read
    /// takes longer than `READ_DEADLINE` (it goes on in the background and
    /// fills the caches), or fails for want of an answer, the answer comes
    /// from `memory`.
    async fn read_or_remember<T: Send + 'static>(
        &self,
        pools: Vec<String>,
        read: impl FnOnce(&Inner) -> Result<T, EngineError> + Send + 'static,
        memory: impl FnOnce(&Inner, &health::Down) -> Result<T, EngineError>,
    ) -> Result<T, EngineError> {
        if let Some(down) = self.inner.health.down_for(pools.iter().map(String::as_str)) {
            return memory(&self.inner, &down);
        }
        let inner = Arc::clone(&self.inner);
        let mut task = tokio::spawn(ceph::offload(move || read(&inner)));
        let now = std::time::SystemTime::now();
        match tokio::time::timeout(READ_DEADLINE, &mut task).await {
            Ok(done) => match done.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic())) {
                Err(e) if health::is_unanswered(&e) => {
                    self.inner.health.saw(&e);
                    memory(&self.inner, &health::Down { since: now, what: e.to_string() })
                }
                r => r,
            },
            Err(_) => {
                let down = health::Down { since: now, what: format!("no answer within {} ms", READ_DEADLINE.as_millis()) };
                match memory(&self.inner, &down) {
                    // Nothing to answer from: wait for the read after all.
                    Err(EngineError::ClusterUnreachable { .. }) => task.await.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic())),
                    r => r,
                }
            }
        }
    }

    /// Runs a Docker call in a task of its own, so that it runs to its end —
    /// and what follows it (the Consul record, the background deletion) —
    /// even when the caller goes away (dockerd timed out and closed the
    /// connection).
    async fn to_the_end<T: Send + 'static>(
        &self,
        call: impl std::future::Future<Output = Result<T, EngineError>> + Send + 'static,
    ) -> Result<T, EngineError> {
        match tokio::spawn(call).await {
            Ok(r) => r,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }

    /// Mount, to its end. When the caller went away before the answer,
    /// dockerd counts the Mount as failed and never unmounts that ID (a
    /// transport error makes it retry with the same ID): that reference is
    /// dropped again, so nothing pins the volume. A reference stays
    /// "unanswered" until its answer is handed over, so a retry of a Mount
    /// whose answer a crash swallowed is the same reference, not a second.
    async fn mount_to_the_end(&self, name: String, id: String) -> Result<Mounted, EngineError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let engine = self.clone();
        tokio::spawn(async move {
            let attempt = engine.inner.attempts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let (n, i) = (name.clone(), id.clone());
            let mounted = engine.locked("mount", &name, move |inner| inner.mount(&n, &i, attempt)).await;
            if matches!(mounted, Ok(Mounted::First(_))) {
                engine.changed(&name);
            }
            let answered = mounted.is_ok();
            match tx.send(mounted) {
                Ok(()) if answered && engine.inner.note_answered(&name, &id, attempt) => {
                    let (n, i) = (name.clone(), id.clone());
                    if let Err(e) = engine.locked("mount answered", &name, move |inner| inner.mount_answered(&n, &i, attempt)).await {
                        tracing::warn!("volume '{name}': cannot note that its mount for {id} was answered: {e}");
                    }
                }
                Ok(()) | Err(Err(_)) => {}
                Err(Ok(_)) => {
                    tracing::warn!("mount of volume '{name}' for {id} ended after its caller went away: dropping that reference");
                    let (n, i) = (name.clone(), id.clone());
                    match engine.locked("unmount", &name, move |inner| inner.drop_unanswered(&n, &i, attempt)).await {
                        Ok(Some(Unmounted::Released)) => engine.changed(&name),
                        Ok(_) => {}
                        Err(e) => tracing::error!(
                            "volume '{name}': cannot drop the reference of a mount whose caller went away (it is unmounted with its last container): {e}"
                        ),
                    }
                }
            }
        });
        rx.await.expect("the mount task answers or panics")
    }
}

#[async_trait::async_trait]
impl VolumeDriver for Engine {
    async fn create(&self, name: &str, opts: BTreeMap<String, String>) -> Result<Created, EngineError> {
        options::validate_name(name)?;
        // Before the defaults are read: settings (Consul's) may arrive while
        // it waits.
        self.first_verdict().await;
        let tools = self.inner.tools.clone();
        let defaults = self.inner.defaults.read().unwrap().clone();
        let pool = opts.get("pool").cloned().unwrap_or_else(|| defaults.pool.clone());
        let opts = options::parse(&opts, &defaults.for_pool(&pool), |f| f.available(&tools))?;
        self.reachable(&[&defaults.pool, &pool]).await?;
        let (engine, name) = (self.clone(), name.to_string());
        self.to_the_end(async move {
            let n = name.clone();
            let created = engine.locked("create", &name, move |inner| inner.create(&n, &opts)).await?;
            if created == Created::New {
                engine.changed(&name);
            }
            Ok(created)
        })
        .await
    }

    async fn remove(&self, name: &str) -> Result<Removed, EngineError> {
        options::validate_name(name)?;
        self.reachable(&self.pools_of(name)).await?;
        let (engine, name) = (self.clone(), name.to_string());
        self.to_the_end(async move {
            let n = name.clone();
            let removed = engine.locked("remove", &name, move |inner| inner.remove(&n)).await?;
            if removed == Removed::Removed {
                engine.schedule_purge(&name);
                engine.changed(&name);
            }
            Ok(removed)
        })
        .await
    }

    async fn mount(&self, name: &str, id: &str) -> Result<Mounted, EngineError> {
        options::validate_name(name)?;
        // A volume mounted here gets another reference from local state
        // alone; any other needs the cluster.
        if !self.inner.mounted.lock().unwrap().contains_key(name) {
            self.reachable(&self.pools_of(name)).await?;
        }
        self.mount_to_the_end(name.to_string(), id.to_string()).await
    }

    async fn unmount(&self, name: &str, id: &str) -> Result<Unmounted, EngineError> {
        options::validate_name(name)?;
        // The last container leaving with the cluster down: the filesystem's
        // last writes wait for the cluster (up to the mappers' I/O bound),
        // and Docker need not. Answered now; the unmount finishes in the
        // background, holding the volume (a new Mount waits for it).
        let last = self.inner.mounted.lock().unwrap().get(name).is_some_and(|v| v.ref_count() <= 1);
        let down = last && self.inner.health.down_for(self.pools_of(name).iter().map(String::as_str)).is_some();
        let (engine, name, id) = (self.clone(), name.to_string(), id.to_string());
        let (name_for_ref, id_for_ref) = (name.clone(), id.clone());
        let call = async move {
            let n = name.clone();
            let unmounted = engine.locked("unmount", &name, move |inner| inner.unmount(&n, &id)).await;
            match &unmounted {
                Ok(Unmounted::Released) => engine.changed(&name),
                Err(e) if down => tracing::error!("volume '{name}': unmount after its last container left, with the cluster down, failed: {e}"),
                _ => {}
            }
            unmounted
        };
        if down {
            let (n, i) = (name_for_ref.clone(), id_for_ref.clone());
            self.locked("unmount", &name_for_ref, move |inner| inner.drop_ref(&n, &i)).await?;
            tokio::spawn(call);
            return Ok(Unmounted::Released);
        }
        self.to_the_end(call).await
    }

    async fn path(&self, name: &str) -> Result<Option<PathBuf>, EngineError> {
        options::validate_name(name)?;
        if let Some(mp) = self.inner.mounted.lock().unwrap().get(name).map(|v| v.mountpoint.clone()) {
            return Ok(Some(mp));
        }
        // Not mounted here: no path, if the volume exists at all.
        let n = name.to_string();
        let exists = self.read_or_remember(self.pools_of(name), move |inner| inner.exists(&n), |inner, down| inner.remembered_exists(name, down)).await?;
        if exists {
            Ok(None)
        } else {
            Err(EngineError::NotFound(name.to_string()))
        }
    }

    async fn get(&self, name: &str) -> Result<VolumeInfo, EngineError> {
        options::validate_name(name)?;
        if let Some(info) = self.inner.cached_status(name) {
            return Ok(info);
        }
        let n = name.to_string();
        self.read_or_remember(self.pools_of(name), move |inner| inner.get(&n), |inner, down| inner.remembered_status(name, down)).await
    }

    async fn list(&self) -> Result<Vec<VolumeInfo>, EngineError> {
        let pool = self.inner.defaults.read().unwrap().pool.clone();
        self.read_or_remember(vec![pool], |inner| inner.list(), |inner, _| Ok(inner.remembered_list())).await
    }
}
