//! Settings from Consul in force while serving: the sources every command
//! starts from, Consul's entries added to them, the watch that puts each
//! change in force, and the cache on this host that outlives Consul being
//! down.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::consul::{self, Consul, ConsulSettings};
use crate::config::{CephSettings, ConfigError};
use crate::engine::Engine;
use crate::settings::{resolve, Sources};

use super::records;
use super::DaemonError;

/// The cache's file name in the state directory.
pub const CONSUL_CACHE: &str = "consul-cache.json";

/// The sources without Consul: the flag-or-environment values clap found
/// for the volume defaults (`flags`, by variable name) and the process
/// environment (non-empty values).
pub fn base_sources(flags: BTreeMap<String, String>, ceph: CephSources) -> Sources {
    Sources {
        flags,
        env: std::env::vars().filter(|(_, v)| !v.trim().is_empty()).collect(),
        consul: BTreeMap::new(),
        pools: BTreeMap::new(),
        cluster_flags: ceph.flags,
        files: Some(ceph.files),
        swarm_key: Default::default(),
    }
}

/// The cluster's own sources besides the environment and Consul: the
/// Ceph-style flags (`--id`) and where the ceph.conf and keyring are.
#[derive(Debug, Clone, Default)]
pub struct CephSources {
    /// name → (value, the flag that gave it).
    pub flags: BTreeMap<String, (String, String)>,
    pub files: crate::config::ceph_files::Locations,
}

/// The last settings read from Consul, kept on the host (0600) so the
/// plugin starts and works while Consul is down.
#[derive(serde::Serialize, serde::Deserialize)]
struct ConsulCache {
    prefix: String,
    kv: BTreeMap<String, String>,
}

/// The cached entries, if the cache is there, readable and of `prefix`.
pub fn read_consul_cache(path: &Path, prefix: &str) -> Option<BTreeMap<String, String>> {
    let cache: ConsulCache = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    (cache.prefix == prefix).then_some(cache.kv)
}

/// Writes the cache atomically, mode 0600 (`state::write_atomic`).
pub fn save_consul_cache(path: &Path, prefix: &str, kv: &BTreeMap<String, String>) -> Result<(), DaemonError> {
    let cache = ConsulCache { prefix: prefix.to_string(), kv: kv.clone() };
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    crate::state::write_atomic(path, &serde_json::to_vec(&cache).expect("serializes"))?;
    Ok(())
}

fn write_consul_cache(path: &Path, prefix: &str, kv: &BTreeMap<String, String>) {
    if let Err(e) = save_consul_cache(path, prefix, kv) {
        tracing::warn!("cannot cache the settings from consul: {e}");
    }
}

/// Logs each distinct complaint once.
#[derive(Default)]
pub struct Reported(HashSet<String>);

impl Reported {
    pub fn error(&mut self, line: String) {
        if self.0.insert(line.clone()) {
            tracing::error!("{line}");
        }
    }
}

/// Consul's entries as a source: the settings and the per-pool overrides,
/// each bad key logged once.
pub fn add_consul(sources: &mut Sources, kv: &BTreeMap<String, String>, prefix: &str, reported: &mut Reported) {
    let mut lines = Vec::new();
    let mut report = |key: &str, reason: &str| lines.push(format!("consul key {prefix}{key} ignored: {reason}"));
    sources.consul = consul::to_vars(kv, &mut report);
    sources.pools = consul::pool_overrides(kv, &mut report);
    lines.into_iter().for_each(|l| reported.error(l));
}

/// Follows rbdvol's prefix in Consul with blocking queries and puts every
/// change in force. Never in the way of a Docker call: the engine always
/// has settings (the last good ones, or an error saying what is missing).
pub async fn watch_consul(
    engine: Engine,
    consul_settings: ConsulSettings,
    base: Sources,
    cache: PathBuf,
    mut have_settings: bool,
    records: tokio::sync::mpsc::UnboundedSender<String>,
) {
    let prefix = consul_settings.prefix.clone();
    let addr = consul_settings.addr.clone();
    // Not up until it answers.
    crate::metrics::global().consul_answered(false);
    let client = match Consul::new(consul_settings) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("{e}");
            if !have_settings {
                let eff = resolve(&base, |_| {});
                if eff.ceph.is_err() {
                    engine.update_settings(Err(ConfigError::Consul(e.to_string())), eff.defaults);
                }
            }
            return;
        }
    };
    let mut reported = Reported::default();
    let (mut index, mut last, mut failing) = (None::<u64>, None::<BTreeMap<String, String>>, false);
    let mut file_broken = false;
    let mut backoff = Duration::from_secs(1);
    let mut swarm_key = base.swarm_key.subscribe();
    loop {
        // While a ceph.conf or keyring is broken, resolve again every few
        // seconds rather than only at Consul's next change.
        let asked_at = if file_broken {
            tokio::select! {
                _ = tokio::time::sleep(FILES_INTERVAL) => {}
                _ = swarm_key.changed() => {}
            }
            None
        } else {
            index
        };
        // A key from a Swarm secret is put in force at once, with the
        // entries last read (Consul's wait is cut short for it).
        let read = tokio::select! {
            r = client.read(asked_at, Duration::from_secs(300)) => Some(r),
            _ = swarm_key.changed() => None,
        };
        let Some(read) = read else {
            // Consul not read yet (down since the start): its entries as
            // cached on this host.
            if let Some(kv) = last.clone().or_else(|| read_consul_cache(&cache, &prefix)) {
                let kv = &kv;
                let mut sources = base.clone();
                add_consul(&mut sources, kv, &prefix, &mut reported);
                let eff = resolve(&sources, |r| reported.error(r));
                if eff.ceph.is_ok() || !have_settings {
                    have_settings |= eff.ceph.is_ok();
                    engine.update_settings(eff.ceph, eff.defaults);
                }
            }
            continue;
        };
        match read {
            Ok(snap) => {
                crate::metrics::global().consul_answered(true);
                if failing {
                    tracing::info!("consul at {addr} answers again");
                    failing = false;
                }
                backoff = Duration::from_secs(1);
                if index.is_some_and(|i| snap.index < i) {
                    index = None; // consul's index went back (a restarted dev agent): read afresh
                    continue;
                }
                index = Some(snap.index);
                if last.as_ref() == Some(&snap.kv) && !file_broken {
                    continue;
                }
                // Volume records someone else changed or removed: checked
                // against Ceph (our own writes come back too, and settle).
                for name in records::changed_records(last.as_ref(), &snap.kv) {
                    let _ = records.send(name);
                }
                let env_alone_suffices = resolve(&base, |_| {}).ceph.is_ok();
                if have_settings && !env_alone_suffices && !snap.kv.keys().any(|k| k.starts_with("conf/")) {
                    // A Consul that lost its data (or a wrong prefix) must
                    // not take working settings away from running hosts.
                    reported.error(format!("consul at {addr} has no cluster settings under {prefix}conf/: keeping the last good settings"));
                    last = Some(snap.kv);
                    continue;
                }
                let mut sources = base.clone();
                add_consul(&mut sources, &snap.kv, &prefix, &mut reported);
                let eff = resolve(&sources, |r| reported.error(r));
                if have_settings && matches!(eff.ceph, Err(ConfigError::File(_))) {
                    // A ceph.conf or keyring being rewritten (or broken)
                    // must not take working settings away either; a mended
                    // file is taken up within FILES_INTERVAL (see above).
                    if let Err(e) = &eff.ceph {
                        reported.error(format!("{e}: keeping the last good settings"));
                    }
                    file_broken = true;
                    last = Some(snap.kv);
                    continue;
                }
                file_broken = false;
                engine.update_settings(eff.ceph, eff.defaults);
                write_consul_cache(&cache, &prefix, &snap.kv);
                have_settings = true;
                last = Some(snap.kv);
            }
            Err(e) => {
                crate::metrics::global().consul_answered(false);
                if !failing {
                    let keeping = if have_settings { "keeping the last good settings and " } else { "" };
                    tracing::warn!("{e}: {keeping}retrying with backoff");
                    failing = true;
                }
                if !have_settings {
                    let eff = resolve(&base, |_| {});
                    if eff.ceph.is_err() {
                        let why = format!("{e} and no settings from it are cached on this host: Docker calls fail until it answers");
                        engine.update_settings(Err(ConfigError::Consul(why)), eff.defaults);
                    }
                }
                // A new key from a Swarm secret is taken at once (above).
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = swarm_key.changed() => swarm_key.mark_changed(),
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}

/// How often `watch_files` reads the ceph.conf and keyring again.
pub const FILES_INTERVAL: Duration = Duration::from_secs(10);

/// Without Consul, follows the ceph.conf and keyring: a key rotated in the
/// keyring or a monitor added to the ceph.conf takes effect within
/// `every`, as a change in Consul would. A file that turns unreadable or
/// malformed keeps the last good settings (and says so, once).
pub async fn watch_files(engine: Engine, base: Sources, started_with: Result<CephSettings, ConfigError>, every: Duration) {
    let mut reported = Reported::default();
    let mut last = started_with;
    let mut swarm_key = base.swarm_key.subscribe();
    loop {
        // A key from a Swarm secret is put in force at once.
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = swarm_key.changed() => {}
        }
        let sources = base.clone();
        let Ok((eff, lines)) = tokio::task::spawn_blocking(move || {
            let mut lines = Vec::new();
            let eff = resolve(&sources, |r| lines.push(r));
            (eff, lines)
        })
        .await
        else {
            continue;
        };
        lines.into_iter().for_each(|l| reported.error(l));
        if eff.ceph == last {
            continue;
        }
        if let (Ok(_), Err(e)) = (&last, &eff.ceph) {
            reported.error(format!("{e}: keeping the last good settings"));
            continue;
        }
        tracing::info!("the ceph.conf or keyring changed: new cluster settings in force");
        engine.update_settings(eff.ceph.clone(), eff.defaults);
        last = eff.ceph;
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn kv(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn consul_cache_round_trips_for_its_prefix_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state").join(CONSUL_CACHE);
        let entries = kv(&[("conf/global/mon_host", "10.0.0.1"), ("defaults/size", "1G")]);
        save_consul_cache(&path, "rbdvol/", &entries).unwrap();
        assert_eq!(read_consul_cache(&path, "rbdvol/"), Some(entries));
        assert_eq!(read_consul_cache(&path, "other/"), None, "a cache of another prefix is not used");
    }

    #[test]
    fn consul_cache_is_written_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(CONSUL_CACHE);
        save_consul_cache(&path, "rbdvol/", &kv(&[("conf/keyring/key", "AQB...")])).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{mode:o}");
    }

    #[test]
    fn consul_cache_missing_or_malformed_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(CONSUL_CACHE);
        assert_eq!(read_consul_cache(&path, "rbdvol/"), None);
        std::fs::write(&path, b"not json").unwrap();
        assert_eq!(read_consul_cache(&path, "rbdvol/"), None);
    }

    #[test]
    fn consul_cache_that_cannot_be_written_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("file");
        std::fs::write(&blocker, b"").unwrap();
        let path = blocker.join(CONSUL_CACHE);
        let e = save_consul_cache(&path, "rbdvol/", &kv(&[])).unwrap_err();
        assert!(e.to_string().starts_with(&format!("create {}", blocker.join(".consul-cache.json.tmp").display())), "{e}");
    }

    #[test]
    fn consul_entries_become_a_source_and_bad_keys_are_left_out() {
        let mut sources = Sources::default();
        let mut reported = Reported::default();
        let entries = kv(&[("defaults/size", "1G"), ("defaults/nonsense", "x"), ("pools/fast/fstype", "xfs")]);
        add_consul(&mut sources, &entries, "rbdvol/", &mut reported);
        assert_eq!(sources.consul.get("VOLUME_SIZE"), Some(&("1G".to_string(), "defaults/size".to_string())));
        assert_eq!(sources.pools["fast"].get("VOLUME_FSTYPE"), Some(&("xfs".to_string(), "pools/fast/fstype".to_string())));
        assert!(!sources.consul.values().any(|(_, k)| k == "defaults/nonsense"));
        assert!(reported.0.contains("consul key rbdvol/defaults/nonsense ignored: not a known setting"), "{:?}", reported.0);
    }
}
