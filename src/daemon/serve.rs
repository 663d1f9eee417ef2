//! `rbdvol serve` once its arguments are parsed: the settings, the engine,
//! the plugin socket, the background tasks, and a graceful stop.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::consul::{Consul, ConsulSettings};
use crate::config::ConfigError;
use crate::engine::{Engine, EngineConfig, VolumeDriver};
use crate::host::mapper::{self, MapperConfig, MapperKind};
use crate::host::tools::Tools;
use crate::settings::resolve;

use super::{add_consul, base_sources, keep_session, keep_volume_records, read_consul_cache, watch_consul};
use super::{ConsulLiveness, DaemonError, Reported, CONSUL_CACHE};

/// What `serve` runs with. The tunables are kept as given (flag or
/// environment; a managed plugin passes unset variables as empty strings)
/// and checked by `serve`, which names the variable of a bad one.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// The plugin socket (Docker's volume protocol), or CSI's endpoint.
    pub socket: PathBuf,
    /// What is served on it.
    pub front: Front,
    /// Names this host in locks and image metadata.
    pub host_id: String,
    /// This host's state, and the consul cache.
    pub state_dir: PathBuf,
    /// Where volumes are mounted, as `<mount_root>/<volume>`.
    pub mount_root: PathBuf,
    /// Runtime files (the user-space mapper's servers).
    pub run_dir: PathBuf,
    /// auto, krbd, nbd or userspace.
    pub mapper: String,
    /// sysfs root (for krbd).
    pub sysfs: PathBuf,
    /// The volume defaults given as flags (or their variables), by variable
    /// name (`RBD_CONF_POOL`, `VOLUME_SIZE`, ...).
    pub flags: BTreeMap<String, String>,
    /// The cephx user given as a flag, and where the ceph.conf and keyring are.
    pub ceph: super::CephSources,
    /// RBDVOL_AUTO_TAKEOVER.
    pub auto_takeover: Option<String>,
    /// RBDVOL_SESSION_TTL.
    pub session_ttl: Option<String>,
    /// RBDVOL_BLOCKLIST_EXPIRY.
    pub blocklist_expiry: Option<String>,
    /// RBDVOL_CHECK_INTERVAL.
    pub check_interval: Option<String>,
    /// RBDVOL_TRASH_DELAY.
    pub trash_delay: Option<String>,
    /// RBDVOL_METRICS_ADDR: where the metrics endpoint listens (empty: off).
    pub metrics_addr: Option<String>,
}

/// The protocol served on the socket.
#[derive(Debug, Clone)]
pub enum Front {
    /// Docker's `docker.volumedriver/1.0` (`rbdvol serve`).
    VolumeDriver,
    /// CSI v1 for Swarm's cluster volumes (`rbdvol csi`).
    Csi(crate::csi::CsiPaths),
}

/// Where `rbdvol csi` keeps a key from a Swarm secret, in the state
/// directory (0600).
pub const SWARM_KEY_FILE: &str = "swarm-key";

/// A managed plugin passes unset variables as empty strings.
fn non_empty(value: &Option<String>) -> Option<&str> {
    value.as_deref().filter(|v| !v.trim().is_empty())
}

/// A whole number of seconds, at least `min`; `default` when unset or
/// blank. `name` is the variable named in the error.
pub fn seconds(value: &Option<String>, name: &str, default: u64, min: u64) -> Result<Duration, DaemonError> {
    match non_empty(value) {
        None => Ok(Duration::from_secs(default)),
        Some(v) => match v.trim().parse::<u64>() {
            Ok(n) if n >= min => Ok(Duration::from_secs(n)),
            _ => Err(DaemonError::InvalidSetting {
                name: name.to_string(),
                value: v.to_string(),
                expected: format!("a whole number of seconds, at least {min}"),
            }),
        },
    }
}

/// How often the cluster's health is probed while it answers (at once
/// again when a stalled probe returns).
const HEALTH_INTERVAL: Duration = Duration::from_secs(2);

/// How long a fenced client stays blocklisted unless its host says it let
/// go first (then the entries are removed): 30 days, so no fence lapses
/// while nobody renews it (a takeover by hand, a volume left unmounted).
pub const DEFAULT_BLOCKLIST_EXPIRY: u64 = 30 * 24 * 3600;

/// RBDVOL_BLOCKLIST_EXPIRY: how long a fenced client stays blocklisted.
pub fn blocklist_expiry(value: &Option<String>) -> Result<Duration, DaemonError> {
    seconds(value, "RBDVOL_BLOCKLIST_EXPIRY", DEFAULT_BLOCKLIST_EXPIRY, 60)
}

/// RBDVOL_SESSION_TTL: Consul takes 10 s to 86400 s.
pub fn session_ttl(value: &Option<String>) -> Result<Duration, DaemonError> {
    seconds(value, "RBDVOL_SESSION_TTL", 15, 10)
}

/// RBDVOL_CHECK_INTERVAL: between checks of the mounted volumes.
pub fn check_interval(value: &Option<String>) -> Result<Duration, DaemonError> {
    seconds(value, "RBDVOL_CHECK_INTERVAL", 5, 1)
}

/// RBDVOL_TRASH_DELAY: at most 10 years (librbd keeps the deferment in 32
/// bits of seconds; "forever" is not a delay).
pub fn trash_delay(value: &Option<String>) -> Result<Duration, DaemonError> {
    const MAX: u64 = 10 * 365 * 24 * 3600;
    let d = seconds(value, "RBDVOL_TRASH_DELAY", 0, 0)?;
    if d.as_secs() > MAX {
        return Err(DaemonError::InvalidSetting { name: "RBDVOL_TRASH_DELAY".into(), value: d.as_secs().to_string(), expected: format!("at most {MAX} seconds (10 years)") });
    }
    Ok(d)
}

/// RBDVOL_AUTO_TAKEOVER: true unless false, 0 or no.
pub fn auto_takeover(value: &Option<String>) -> Result<bool, DaemonError> {
    match non_empty(value).map(str::trim) {
        None | Some("true") | Some("1") | Some("yes") => Ok(true),
        Some("false") | Some("0") | Some("no") => Ok(false),
        Some(v) => Err(DaemonError::InvalidSetting {
            name: "RBDVOL_AUTO_TAKEOVER".to_string(),
            value: v.to_string(),
            expected: "use true or false".to_string(),
        }),
    }
}

/// Runs the plugin on its socket until SIGTERM or Ctrl-C.
pub fn serve(cfg: ServeConfig) -> Result<(), DaemonError> {
    let started = Instant::now();
    // Missing or bad settings never stop the plugin: every call then says
    // which setting to fix.
    let consul_settings = ConsulSettings::from_vars(std::env::vars());
    let cache_path = cfg.state_dir.join(CONSUL_CACHE);
    let base = base_sources(cfg.flags.clone(), cfg.ceph.clone());
    let swarm_key_file = cfg.state_dir.join(SWARM_KEY_FILE);
    if matches!(cfg.front, Front::Csi(_)) {
        // The key a Swarm secret gave before a restart: NodeUnpublish and
        // NodeUnstage carry no secrets.
        if let Ok(key) = std::fs::read_to_string(&swarm_key_file) {
            base.swarm_key.set(crate::config::Secret::new(key.trim()));
        }
    }
    let mut sources = base.clone();
    let mut reported = Reported::default();
    let cached = consul_settings.as_ref().and_then(|c| read_consul_cache(&cache_path, &c.prefix));
    if let (Some(c), Some(kv)) = (&consul_settings, &cached) {
        tracing::info!("using the settings cached from consul at {} until it answers", c.addr);
        add_consul(&mut sources, kv, &c.prefix, &mut reported);
    }
    let effective = resolve(&sources, |r| reported.error(r));
    let mut settings = effective.ceph;
    if let (Some(c), None, Err(e)) = (&consul_settings, &cached, &settings) {
        settings = Err(ConfigError::Consul(format!("waiting for the settings from consul at {} (none cached on this host yet): {e}", c.addr)));
    }
    match &settings {
        // The CSI plugin's key may come with Swarm's calls.
        Err(ConfigError::Missing { name, .. } | ConfigError::NotFound { name, .. }) if *name == "RBD_CONF_KEYRING_KEY" && matches!(cfg.front, Front::Csi(_)) => {
            tracing::info!("no cephx key in the settings: waiting for one from a swarm secret (docker volume create --secret key=<secret id>)")
        }
        Err(e) => tracing::error!("{e}"),
        Ok(_) => {}
    }
    let tools = Tools::discover()?;
    let mapper_config = MapperConfig {
        run_dir: cfg.run_dir.clone(),
        sysfs: cfg.sysfs.clone(),
        exe: std::env::current_exe().map_err(DaemonError::CurrentExe)?,
    };
    let kind = match cfg.mapper.as_str() {
        "auto" => mapper::detect(&mapper_config, &tools),
        other => MapperKind::parse(other).ok_or_else(|| DaemonError::InvalidSetting {
            name: "--mapper".to_string(),
            value: other.to_string(),
            expected: "use auto, krbd, nbd or userspace".to_string(),
        })?,
    };
    let config = EngineConfig {
        host_id: cfg.host_id.clone(),
        defaults: effective.defaults,
        mount_root: cfg.mount_root.clone(),
        state_dir: cfg.state_dir.clone(),
        auto_takeover: auto_takeover(&cfg.auto_takeover)?,
        blocklist_expiry: blocklist_expiry(&cfg.blocklist_expiry)?,
        trash_delay: trash_delay(&cfg.trash_delay)?,
    };
    let (session_ttl, check_interval) = (session_ttl(&cfg.session_ttl)?, check_interval(&cfg.check_interval)?);
    let metrics_addr = crate::metrics::MetricsAddr::parse(cfg.metrics_addr.as_deref().unwrap_or(""))?;
    let host_id = config.host_id.clone();
    let mapper = mapper::build(kind, &mapper_config, &tools);
    let started_with = settings.clone();
    let swarm_key = base.swarm_key.clone();
    let engine = Engine::start(config, settings, tools, mapper)?;
    tracing::info!("host '{host_id}', mapper {}", engine.mapper_kind().as_str());

    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(DaemonError::Runtime)?;
    let socket = cfg.socket;
    let served = runtime.block_on(async move {
        if let Some(dir) = socket.parent() {
            std::fs::create_dir_all(dir).map_err(|source| DaemonError::CreateDir { path: dir.to_path_buf(), source })?;
        }
        match std::fs::remove_file(&socket) {
            Err(source) if source.kind() != std::io::ErrorKind::NotFound => {
                return Err(DaemonError::RemoveStaleSocket { path: socket.clone(), source })
            }
            _ => {}
        }
        // Before listening: a SIGTERM from then on is a clean stop.
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).map_err(DaemonError::SignalHandler)?;
        // Made private under another name, then renamed into place: the
        // socket is never seen with any other mode.
        let making = socket.with_extension("sock.new");
        let _ = std::fs::remove_file(&making);
        let listener = tokio::net::UnixListener::bind(&making).map_err(|source| DaemonError::Listen { path: making.clone(), source })?;
        std::fs::set_permissions(&making, std::fs::Permissions::from_mode(0o660)).map_err(DaemonError::SocketMode)?;
        std::fs::rename(&making, &socket).map_err(|source| DaemonError::Listen { path: socket.clone(), source })?;
        tracing::info!("listening on {} ({} ms after start)", socket.display(), started.elapsed().as_millis());
        if let Some(addr) = &metrics_addr {
            let listener = super::bind_metrics(addr).await?;
            super::serve_metrics(listener, engine.clone());
            tracing::info!("metrics on {addr}/metrics");
        }
        if let Some(c) = consul_settings {
            let (records_tx, records_rx) = tokio::sync::mpsc::unbounded_channel();
            // Changes made here and changes seen in Consul, to one queue.
            engine.send_changes_to(records_tx.clone());
            tokio::spawn(keep_volume_records(engine.clone(), c.clone(), host_id.clone(), records_rx));
            tokio::spawn(keep_session(c.clone(), host_id.clone(), session_ttl));
            match Consul::new(c.clone()) {
                Ok(client) => engine.set_liveness(Arc::new(ConsulLiveness::new(client, tokio::runtime::Handle::current()))),
                Err(e) => tracing::error!("{e}"),
            }
            // "Has settings": working ones, from the cache or the files.
            tokio::spawn(watch_consul(engine.clone(), c, base, cache_path, started_with.is_ok(), records_tx));
        } else {
            tokio::spawn(super::watch_files(engine.clone(), base, started_with, super::FILES_INTERVAL));
        }
        let e = engine.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(check_interval);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                e.check_all_mounted().await;
            }
        });
        let e = engine.clone();
        tokio::spawn(async move {
            // resume_background_work looks at start; this, every 5 min.
            let mut every = tokio::time::interval(Duration::from_secs(300));
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            every.tick().await;
            loop {
                every.tick().await;
                e.sweep_removals().await;
            }
        });
        engine.health_watched();
        let e = engine.clone();
        tokio::spawn(async move { e.watch_health(HEALTH_INTERVAL).await });
        let e = engine.clone();
        tokio::spawn(async move { e.resume_background_work().await });
        let stop = async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            tracing::info!("stopping: mounted volumes stay mounted for their containers");
        };
        match cfg.front {
            Front::VolumeDriver => {
                let driver: Arc<dyn VolumeDriver> = Arc::new(engine);
                axum::serve(listener, crate::api::router(driver)).with_graceful_shutdown(stop).await.map_err(DaemonError::Serve)?;
            }
            Front::Csi(paths) => {
                let csi = crate::csi::Csi::new(engine, paths, swarm_key, swarm_key_file);
                crate::csi::serve(listener, csi, stop).await.map_err(|e| DaemonError::Serve(std::io::Error::other(e)))?;
            }
        }
        let _ = std::fs::remove_file(&socket);
        if let Some(crate::metrics::MetricsAddr::Unix(path)) = &metrics_addr {
            let _ = std::fs::remove_file(path);
        }
        Ok(())
    });
    // Background work still running (a deletion waiting for watchers to
    // go, a check) is left: it resumes at the next start, as after a crash.
    // Dropping the runtime would wait for it.
    runtime.shutdown_timeout(Duration::from_secs(1));
    served
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trash_delay_is_capped_at_ten_years_and_never_overflows() {
        assert_eq!(trash_delay(&None).unwrap(), Duration::ZERO);
        assert_eq!(trash_delay(&Some("3600".into())).unwrap(), Duration::from_secs(3600));
        for bad in ["18446744073709551615", "315360001", "-1", "soon"] {
            let e = trash_delay(&Some(bad.into())).unwrap_err().to_string();
            assert!(e.contains("RBDVOL_TRASH_DELAY"), "{bad}: {e}");
        }
    }

    fn some(v: &str) -> Option<String> {
        Some(v.to_string())
    }

    #[test]
    fn seconds_default_when_unset_or_blank() {
        assert_eq!(seconds(&None, "X", 7, 1).unwrap(), Duration::from_secs(7));
        assert_eq!(seconds(&some(""), "X", 7, 1).unwrap(), Duration::from_secs(7));
        assert_eq!(seconds(&some("  "), "X", 7, 1).unwrap(), Duration::from_secs(7));
    }

    #[test]
    fn seconds_take_whole_numbers_from_the_minimum_up() {
        assert_eq!(seconds(&some("60"), "X", 3600, 60).unwrap(), Duration::from_secs(60));
        assert_eq!(seconds(&some(" 90 "), "X", 3600, 60).unwrap(), Duration::from_secs(90));
        assert_eq!(check_interval(&some("1")).unwrap(), Duration::from_secs(1));
        assert_eq!(session_ttl(&None).unwrap(), Duration::from_secs(15));
        assert_eq!(blocklist_expiry(&None).unwrap(), Duration::from_secs(30 * 24 * 3600));
        assert_eq!(check_interval(&None).unwrap(), Duration::from_secs(5));
    }

    #[test]
    fn seconds_below_the_minimum_or_not_a_number_name_the_variable() {
        let e = session_ttl(&some("9")).unwrap_err();
        assert_eq!(e.to_string(), "invalid RBDVOL_SESSION_TTL '9': a whole number of seconds, at least 10");
        let e = blocklist_expiry(&some("1h")).unwrap_err();
        assert_eq!(e.to_string(), "invalid RBDVOL_BLOCKLIST_EXPIRY '1h': a whole number of seconds, at least 60");
        let e = check_interval(&some("-1")).unwrap_err();
        assert_eq!(e.to_string(), "invalid RBDVOL_CHECK_INTERVAL '-1': a whole number of seconds, at least 1");
        let e = check_interval(&some("0")).unwrap_err();
        assert_eq!(e.to_string(), "invalid RBDVOL_CHECK_INTERVAL '0': a whole number of seconds, at least 1");
    }

    #[test]
    fn auto_takeover_is_on_unless_turned_off() {
        for v in [None, some(""), some("true"), some("1"), some("yes"), some(" yes ")] {
            assert!(auto_takeover(&v).unwrap(), "{v:?}");
        }
        for v in ["false", "0", "no", " no "] {
            assert!(!auto_takeover(&some(v)).unwrap(), "{v}");
        }
    }

    #[test]
    fn auto_takeover_rejects_other_words() {
        assert_eq!(auto_takeover(&some("off")).unwrap_err().to_string(), "invalid RBDVOL_AUTO_TAKEOVER 'off': use true or false");
        assert_eq!(auto_takeover(&some("TRUE")).unwrap_err().to_string(), "invalid RBDVOL_AUTO_TAKEOVER 'TRUE': use true or false");
    }
}

