//! Where settings come from, in order of precedence: built-in defaults <
//! ceph.conf and keyring files (cluster settings only) < Consul KV <
//! environment < command-line flags. Each source's value is
//! checked on its own: a malformed one is reported (naming where it came
//! from) and the next source down is used, so one bad key never stops the
//! rest from applying.

use std::collections::BTreeMap;

use crate::config::ceph_files::{self, Locations, WantKey};
use crate::config::consul::DEFAULT_KEYS;
use crate::config::{ceph_option_from_env, CephSettings, ConfigError};
use crate::engine::options::{parse_size, Defaults, PoolDefaults};
use crate::host::fs::Fstype;

/// The sources, each as environment-style names (`RBD_CONF_POOL`, ...).
/// No `Debug`: the environment and Consul's entries hold the key.
#[derive(Default, Clone)]
pub struct Sources {
    /// Command-line flags (clap also fills these from the environment,
    /// which ranks just below flags: both rank above Consul).
    pub flags: BTreeMap<String, String>,
    /// The process environment (non-empty values).
    pub env: BTreeMap<String, String>,
    /// Consul KV: name → (value, KV key).
    pub consul: BTreeMap<String, (String, String)>,
    /// Consul's per-pool overrides: pool → name → (value, KV key).
    pub pools: BTreeMap<String, BTreeMap<String, (String, String)>>,
    /// Cluster settings given as flags (`--id`): name → (value, flag).
    pub cluster_flags: BTreeMap<String, (String, String)>,
    /// Where the ceph.conf and keyring files are, if they are a source.
    pub files: Option<Locations>,
    /// The key a Swarm secret gave (`rbdvol csi`), ranked as the files.
    pub swarm_key: crate::config::swarm_key::SwarmKey,
}

/// One setting as `rbdvol config show` prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shown {
    pub name: String,
    pub value: String,
    pub source: String,
}

pub struct Effective {
    pub ceph: Result<CephSettings, ConfigError>,
    pub defaults: Defaults,
    pub shown: Vec<Shown>,
    /// The ceph.conf and keyring paths looked at, with what was there.
    pub looked: Vec<String>,
}

fn check_default(name: &str, value: &str) -> Result<(), String> {
    match name {
        "VOLUME_SIZE" => parse_size(value).map(drop),
        "VOLUME_FSTYPE" => Fstype::parse(value).map(drop).ok_or_else(|| "not ext4, xfs or btrfs".to_string()),
        "VOLUME_FEATURES" => crate::ceph::features_from_str(value).map(drop).map_err(|e| e.to_string()),
        "RBD_CONF_POOL" if value.contains('/') => Err("a pool name has no '/'".into()),
        "RBDVOL_MAP_OPTIONS" => crate::engine::map_options::parse(crate::engine::map_options::Which::Map, value).map(drop),
        "RBDVOL_UNMAP_OPTIONS" => crate::engine::map_options::parse(crate::engine::map_options::Which::Unmap, value).map(drop),
        _ => Ok(()),
    }
}

fn builtin(name: &str) -> &'static str {
    match name {
        "RBD_CONF_POOL" => "rbd",
        "VOLUME_SIZE" => "512",
        "VOLUME_FSTYPE" => "ext4",
        _ => "",
    }
}

/// Resolves the sources; `report` gets one line per ignored value.
pub fn resolve(sources: &Sources, mut report: impl FnMut(String)) -> Effective {
    let mut shown = Vec::new();
    let mut chosen = BTreeMap::new();
    for (_, name) in DEFAULT_KEYS {
        let candidates = [
            sources.flags.get(name).map(|v| (v.clone(), "flag or environment".to_string())),
            sources.consul.get(name).map(|(v, key)| (v.clone(), format!("consul {key}"))),
            Some((builtin(name).to_string(), "default".to_string())),
        ];
        for (value, source) in candidates.into_iter().flatten() {
            match check_default(name, value.trim()) {
                Ok(()) => {
                    shown.push(Shown { name: name.to_string(), value: value.trim().to_string(), source });
                    chosen.insert(name, value.trim().to_string());
                    break;
                }
                Err(reason) => report(format!("{source} {name}='{value}' ignored: {reason}")),
            }
        }
    }
    let get = |n: &str| chosen.get(n).cloned().unwrap_or_default();
    let defaults = Defaults {
        pool: get("RBD_CONF_POOL"),
        namespace: get("RBD_CONF_NAMESPACE"),
        size: parse_size(&get("VOLUME_SIZE")).unwrap_or(512 << 20),
        fstype: Fstype::parse(&get("VOLUME_FSTYPE")).unwrap_or(Fstype::Ext4),
        mkfs_options: Some(get("VOLUME_MKFS_OPTIONS")).filter(|s| !s.is_empty()),
        mount_options: get("MOUNT_OPTIONS"),
        features: Some(get("VOLUME_FEATURES")).filter(|s| !s.is_empty()),
        pools: BTreeMap::new(),
        mapper_options: crate::engine::map_options::Given {
            map: Some(get("RBDVOL_MAP_OPTIONS")).filter(|s| !s.is_empty()),
            unmap: Some(get("RBDVOL_UNMAP_OPTIONS")).filter(|s| !s.is_empty()),
        },
    };
    let mut defaults = defaults;
    for (pool, settings) in &sources.pools {
        let mut p = PoolDefaults::default();
        for (name, (value, key)) in settings {
            // The environment and flags rank above Consul, its pools included.
            if sources.flags.contains_key(name) {
                continue;
            }
            if let Err(reason) = check_default(name, value) {
                report(format!("consul {key} {name}='{value}' ignored: {reason}"));
                continue;
            }
            match name.as_str() {
                "VOLUME_SIZE" => p.size = parse_size(value).ok(),
                "VOLUME_FSTYPE" => p.fstype = Fstype::parse(value),
                "VOLUME_MKFS_OPTIONS" => p.mkfs_options = Some(value.clone()),
                "MOUNT_OPTIONS" => p.mount_options = Some(value.clone()),
                "VOLUME_FEATURES" => p.features = Some(value.clone()),
                _ => continue,
            }
            shown.push(Shown { name: format!("{name} (pool {pool})"), value: value.clone(), source: format!("consul {key}") });
        }
        defaults.pools.insert(pool.clone(), p);
    }

    // Cluster settings: Consul's, then the environment's and the flags'
    // over them, then what the files add below them all.
    let mut vars: BTreeMap<String, (String, String)> = sources.consul.iter().map(|(n, (v, k))| (n.clone(), (v.clone(), format!("consul {k}")))).collect();
    for (n, v) in &sources.env {
        if n.starts_with("RBD_CONF_") || n.starts_with("RBDVOL_") && n.ends_with("_TIMEOUT") || crate::config::CLIENT_VARS.contains(&n.as_str()) {
            vars.insert(n.clone(), (v.clone(), "environment".into()));
        }
    }
    vars.extend(sources.cluster_flags.clone());
    let swarm_key = sources.swarm_key.get();
    let mut looked = Vec::new();
    let mut file_error = None;
    let mut from_files = Vec::new();
    // Files are read for a valid user only: a bad one is the error below.
    if let (Some(loc), Some(user)) = (&sources.files, user_of(&vars)) {
        // The key must be the user's: one from a lower source than the
        // user's (Consul's, say, under `--id`) may be another user's, so
        // the user's own from the files wins if they have it.
        let rank_of = |var: &str| vars.get(var).map(|(_, source)| rank(source));
        let key_rank = rank_of("RBD_CONF_KEYRING_KEY").or(rank_of("RBD_CONF_KEYRING_KEY_FILE"));
        let want_key = match key_rank {
            // A Swarm secret's key ranks below the files': theirs if they
            // have one, no error if not.
            None if swarm_key.is_some() => WantKey::IfThere,
            None => WantKey::Yes,
            Some(k) if k >= rank_of("RBD_CONF_KEYRING_USER").unwrap_or(0) => WantKey::No,
            Some(_) => WantKey::IfThere,
        };
        match ceph_files::read(loc, &user, want_key) {
            Ok(files) => {
                looked = files.looked;
                files.ignored.into_iter().for_each(&mut report);
                from_files = add_files(&mut vars, files.values, files.key);
            }
            Err(e) => file_error = Some(e),
        }
    }
    if let Some(key) = swarm_key.filter(|_| !vars.contains_key("RBD_CONF_KEYRING_KEY") && !vars.contains_key("RBD_CONF_KEYRING_KEY_FILE")) {
        vars.insert("RBD_CONF_KEYRING_KEY".into(), (key.expose().to_string(), SWARM_SECRET.into()));
    }
    for (n, (v, source)) in &vars {
        if n.starts_with("RBD_CONF_") && !DEFAULT_KEYS.iter().any(|(_, d)| d == n) || n.ends_with("_TIMEOUT") || crate::config::CLIENT_VARS.contains(&n.as_str()) {
            let value = if n == "RBD_CONF_KEYRING_KEY" { "(set; not shown)".to_string() } else { v.clone() };
            shown.push(Shown { name: n.clone(), value, source: source.clone() });
        }
    }
    if !vars.contains_key("RBD_CONF_KEYRING_USER") {
        shown.push(Shown { name: "RBD_CONF_KEYRING_USER".into(), value: "admin".into(), source: "default".into() });
    }
    let ceph = CephSettings::from_vars(vars.into_iter().map(|(n, (v, _))| (n, v))).map(|mut s| {
        s.lenient = from_files.into_iter().filter(|o| s.options.contains_key(o)).collect();
        s
    });
    let ceph = match (ceph, file_error) {
        // A file that was named, or that was needed, and is unreadable or
        // malformed is the error; one not needed is reported.
        (Ok(s), Some(e)) if sources.files.as_ref().is_some_and(|l| l.conf.is_none() && l.keyring.is_none()) => {
            report(format!("{e} (ignored: the other sources give every cluster setting)"));
            Ok(s)
        }
        (_, Some(e)) => Err(e),
        (Err(ConfigError::Missing { name, hint }), None) if sources.files.is_some() => {
            Err(ConfigError::NotFound { name, hint, looked: looked.join(", ") })
        }
        (ceph, None) => ceph,
    };
    Effective { ceph, defaults, shown, looked }
}

/// How `config show` names a key from a Swarm secret.
const SWARM_SECRET: &str = "swarm secret";

/// How a source ranks: flags above the environment above Consul above the
/// files above the defaults (its label as `config show` prints it).
fn rank(source: &str) -> u8 {
    match source {
        s if s.starts_with("flag") => 4,
        "environment" => 3,
        s if s.starts_with("consul") => 2,
        "default" => 0,
        _ => 1,
    }
}

/// The cephx user the higher sources name (the files are read for it), if
/// it is one: no `/`, space or control character reaches a path.
fn user_of(vars: &BTreeMap<String, (String, String)>) -> Option<String> {
    let user = vars.get("RBD_CONF_KEYRING_USER").map(|(v, _)| v.trim()).filter(|v| !v.is_empty()).unwrap_or("admin");
    let user = user.strip_prefix("client.").unwrap_or(user);
    let valid = !user.is_empty() && user.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    valid.then(|| user.to_string())
}

/// Adds the files' settings where no higher source has set them (also not
/// under another section's spelling of the same ceph option); returns the
/// ceph options added.
fn add_files(vars: &mut BTreeMap<String, (String, String)>, values: Vec<ceph_files::FileValue>, key: Option<(crate::config::Secret, String)>) -> Vec<String> {
    let mut added = Vec::new();
    for v in values {
        let option = ceph_option_from_env(&v.var);
        let set_above = vars.contains_key(&v.var) || (option.is_some() && vars.keys().any(|k| ceph_option_from_env(k) == option));
        if !set_above {
            added.extend(option);
            vars.insert(v.var, (v.value, v.origin));
        }
    }
    if let Some((key, origin)) = key {
        // Only asked for when no source above gives the user's key.
        vars.remove("RBD_CONF_KEYRING_KEY_FILE");
        vars.insert("RBD_CONF_KEYRING_KEY".into(), (key.expose().to_string(), origin));
    }
    added
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn consul(pairs: &[(&str, &str, &str)]) -> BTreeMap<String, (String, String)> {
        pairs.iter().map(|(n, v, k)| (n.to_string(), (v.to_string(), k.to_string()))).collect()
    }

    const KEY_A: &str = "AQBXhS1kAAAAABAAr0bjXwBQ0p7BzUgFP5D7Yg==";
    const KEY_B: &str = "AQCZhS1kAAAAABAAnLkQ1V3fsgRZ8ZmVPnt9ow==";

    #[test]
    fn environment_beats_consul_beats_defaults() {
        let sources = Sources {
            flags: map(&[("VOLUME_SIZE", "1G")]),
            env: map(&[("RBD_CONF_KEYRING_KEY", KEY_B), ("PATH", "/bin")]),
            consul: consul(&[
                ("RBD_CONF_GLOBAL_MON_HOST", "10.0.0.1", "conf/global/mon_host"),
                ("RBD_CONF_KEYRING_KEY", KEY_A, "conf/keyring/key"),
                ("VOLUME_SIZE", "2G", "defaults/size"),
                ("VOLUME_FSTYPE", "xfs", "defaults/fstype"),
            ]),
            ..Default::default()
        };
        let e = resolve(&sources, |r| panic!("{r}"));
        let ceph = e.ceph.unwrap();
        assert_eq!(ceph.mon_host, "10.0.0.1");
        assert_eq!(ceph.key.expose(), KEY_B, "the environment's key wins");
        assert_eq!(e.defaults.size, 1 << 30, "the flag wins");
        assert_eq!(e.defaults.fstype, Fstype::Xfs, "consul beats the default");
        assert_eq!(e.defaults.pool, "rbd");
        let key = e.shown.iter().find(|s| s.name == "RBD_CONF_KEYRING_KEY").unwrap();
        assert_eq!((key.value.as_str(), key.source.as_str()), ("(set; not shown)", "environment"));
        let mon = e.shown.iter().find(|s| s.name == "RBD_CONF_GLOBAL_MON_HOST").unwrap();
        assert_eq!(mon.source, "consul conf/global/mon_host");
        assert!(!format!("{:?}", e.shown).contains(KEY_A) && !format!("{:?}", e.shown).contains(KEY_B));
    }

    #[test]
    fn a_key_from_a_swarm_secret_is_used_only_where_no_other_source_gives_one() {
        let swarm_key = crate::config::swarm_key::SwarmKey::default();
        let sources = Sources { env: map(&[("RBD_CONF_GLOBAL_MON_HOST", "10.0.0.1")]), swarm_key: swarm_key.clone(), ..Default::default() };
        assert!(resolve(&sources, |r| panic!("{r}")).ceph.is_err(), "no key anywhere yet");
        swarm_key.set(crate::config::Secret::new(KEY_A));
        let e = resolve(&sources, |r| panic!("{r}"));
        assert_eq!(e.ceph.unwrap().key.expose(), KEY_A);
        let shown = e.shown.iter().find(|s| s.name == "RBD_CONF_KEYRING_KEY").unwrap();
        assert_eq!((shown.value.as_str(), shown.source.as_str()), ("(set; not shown)", "swarm secret"));
        let with_env = Sources { env: map(&[("RBD_CONF_GLOBAL_MON_HOST", "10.0.0.1"), ("RBD_CONF_KEYRING_KEY", KEY_B)]), swarm_key, ..Default::default() };
        assert_eq!(resolve(&with_env, |r| panic!("{r}")).ceph.unwrap().key.expose(), KEY_B, "the environment's key wins");
    }

    #[test]
    fn a_keyring_file_for_the_default_user_wins_over_a_swarm_secret() {
        let keyring = format!("[client.admin]\nkey = {KEY_A}\n");
        let (_dir, loc) = etc_with(&[("ceph.conf", "[global]\nmon host = m\n"), ("ceph.client.admin.keyring", &keyring)]);
        let swarm_key = crate::config::swarm_key::SwarmKey::default();
        let sources = Sources { files: Some(loc.clone()), swarm_key: swarm_key.clone(), ..Default::default() };
        assert_eq!(resolve(&sources, |_| {}).ceph.unwrap().key.expose(), KEY_A, "the keyring file alone");
        swarm_key.set(crate::config::Secret::new(KEY_B));
        assert_eq!(resolve(&sources, |_| {}).ceph.unwrap().key.expose(), KEY_A, "the keyring file beats a swarm secret");
        // A ceph.conf and no keyring: the secret's key, and no error.
        let (_dir, loc) = etc_with(&[("ceph.conf", "[global]\nmon host = m\n")]);
        let e = resolve(&Sources { files: Some(loc), swarm_key, ..Default::default() }, |r| panic!("{r}"));
        assert_eq!(e.ceph.unwrap().key.expose(), KEY_B);
    }

    #[test]
    fn default_map_options_come_from_a_flag_or_consul_and_a_bad_one_is_reported_and_not_used() {
        let sources = Sources {
            flags: map(&[("RBDVOL_UNMAP_OPTIONS", "krbd:force")]),
            consul: consul(&[
                ("RBDVOL_MAP_OPTIONS", "krbd:queue_depth=256;nbd:io-timeout=60", "defaults/map_options"),
                ("RBD_CONF_GLOBAL_MON_HOST", "10.0.0.1", "conf/global/mon_host"),
                ("RBD_CONF_KEYRING_KEY", KEY_A, "conf/keyring/key"),
            ]),
            env: map(&[("RBDVOL_MS_MODE", "secure"), ("RBDVOL_CRUSH_LOCATION", "host=node1")]),
            ..Default::default()
        };
        let e = resolve(&sources, |r| panic!("{r}"));
        assert_eq!(e.defaults.mapper_options.map.as_deref(), Some("krbd:queue_depth=256;nbd:io-timeout=60"));
        assert_eq!(e.defaults.mapper_options.unmap.as_deref(), Some("krbd:force"));
        let ceph = e.ceph.unwrap();
        assert_eq!((ceph.options["ms_client_mode"].as_str(), ceph.options["crush_location"].as_str()), ("secure", "host=node1"));
        assert!(e.shown.iter().any(|s| s.name == "RBDVOL_MS_MODE" && s.source == "environment"), "{:?}", e.shown);
        let bad = Sources { consul: consul(&[("RBDVOL_MAP_OPTIONS", "krbd:secret=x", "defaults/map_options")]), ..Default::default() };
        let mut reports = Vec::new();
        let e = resolve(&bad, |r| reports.push(r));
        assert_eq!(e.defaults.mapper_options.map, None);
        assert!(reports.iter().any(|r| r.contains("defaults/map_options") && r.contains("RBDVOL_MAP_OPTIONS") && r.contains("'secret' is not allowed")), "{reports:?}");
    }

    #[test]
    fn per_pool_overrides_apply_to_their_pool_only_and_below_the_environment() {
        let mut pools = BTreeMap::new();
        pools.insert(
            "ssd".to_string(),
            consul(&[("VOLUME_SIZE", "2G", "pools/ssd/size"), ("VOLUME_FSTYPE", "xfs", "pools/ssd/fstype"), ("MOUNT_OPTIONS", "noatime", "pools/ssd/mount_options")]),
        );
        let sources = Sources { flags: map(&[("VOLUME_FSTYPE", "ext4")]), pools, ..Default::default() };
        let e = resolve(&sources, |r| panic!("{r}"));
        let ssd = e.defaults.for_pool("ssd");
        assert_eq!((ssd.size, ssd.fstype, ssd.mount_options.as_str()), (2 << 30, Fstype::Ext4, "noatime"));
        let other = e.defaults.for_pool("rbd");
        assert_eq!((other.size, other.mount_options.as_str()), (512 << 20, ""));
    }

    #[test]
    fn a_malformed_value_falls_back_to_the_next_source_and_is_reported() {
        let sources = Sources {
            consul: consul(&[("VOLUME_SIZE", "lots", "defaults/size"), ("VOLUME_FSTYPE", "ntfs", "defaults/fstype")]),
            flags: map(&[("VOLUME_FSTYPE", "xfs")]),
            ..Default::default()
        };
        let mut reports = Vec::new();
        let e = resolve(&sources, |r| reports.push(r));
        assert_eq!(e.defaults.size, 512 << 20);
        assert_eq!(e.defaults.fstype, Fstype::Xfs);
        assert_eq!(reports.len(), 1, "{reports:?}");
        assert!(reports[0].contains("consul defaults/size") && reports[0].contains("lots"), "{reports:?}");
        assert!(matches!(e.ceph, Err(ConfigError::Missing { name: "RBD_CONF_GLOBAL_MON_HOST", .. })));
    }

    fn etc_with(files: &[(&str, &str)]) -> (tempfile::TempDir, Locations) {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        let loc = Locations { etc: dir.path().to_path_buf(), ..Locations::default() };
        (dir, loc)
    }

    /// `--id USER` as the CLI passes it.
    fn id_flag(user: &str) -> BTreeMap<String, (String, String)> {
        BTreeMap::from([("RBD_CONF_KEYRING_USER".to_string(), (user.to_string(), "flag --id".to_string()))])
    }

    #[test]
    fn ceph_conf_and_keyring_alone_suffice_and_config_show_names_their_lines() {
        let keyring = format!("[client.docker]\nkey = {KEY_A}\n");
        let (dir, loc) = etc_with(&[("ceph.conf", "[global]\nmon host = 10.0.0.9\n[client]\nrbd cache = false\n"), ("ceph.client.docker.keyring", &keyring)]);
        let cluster_flags = id_flag("docker");
        let e = resolve(&Sources { files: Some(loc), cluster_flags, ..Default::default() }, |r| panic!("{r}"));
        let ceph = e.ceph.unwrap();
        assert_eq!((ceph.mon_host.as_str(), ceph.user.as_str(), ceph.key.expose()), ("10.0.0.9", "docker", KEY_A));
        assert_eq!(ceph.options.get("rbd_cache").map(String::as_str), Some("false"));
        let source = |n: &str| e.shown.iter().find(|s| s.name == n).map(|s| s.source.clone()).unwrap();
        let d = dir.path().display();
        assert_eq!(source("RBD_CONF_GLOBAL_MON_HOST"), format!("{d}/ceph.conf:2"));
        assert_eq!(source("RBD_CONF_KEYRING_KEY"), format!("{d}/ceph.client.docker.keyring:2"));
        assert_eq!(source("RBD_CONF_KEYRING_USER"), "flag --id");
        assert!(!format!("{:?}", e.shown).contains(KEY_A));
    }

    #[test]
    fn consul_and_the_environment_rank_above_the_files() {
        let keyring = format!("[client.admin]\nkey = {KEY_A}\n");
        let (_dir, loc) = etc_with(&[("ceph.conf", "[global]\nmon host = from-file\nrbd cache = true\nfsid = f\n"), ("ceph.keyring", &keyring)]);
        let sources = Sources {
            env: map(&[("RBD_CONF_KEYRING_KEY", KEY_B), ("RBD_CONF_CLIENT_RBD_CACHE", "false")]),
            consul: consul(&[("RBD_CONF_GLOBAL_MON_HOST", "from-consul", "conf/global/mon_host")]),
            files: Some(loc),
            ..Default::default()
        };
        let ceph = resolve(&sources, |r| panic!("{r}")).ceph.unwrap();
        assert_eq!((ceph.mon_host.as_str(), ceph.key.expose()), ("from-consul", KEY_B));
        assert_eq!(ceph.options.get("rbd_cache").map(String::as_str), Some("false"), "[client] in the environment beats [global] in the file");
        assert_eq!(ceph.options.get("fsid").map(String::as_str), Some("f"), "what only the file sets still applies");
    }

    #[test]
    fn with_nothing_anywhere_the_error_says_where_it_looked() {
        let (dir, loc) = etc_with(&[]);
        let e = resolve(&Sources { files: Some(loc), ..Default::default() }, |r| panic!("{r}")).ceph.unwrap_err().to_string();
        let d = dir.path().display();
        assert!(e.starts_with("setting RBD_CONF_GLOBAL_MON_HOST is missing"), "{e}");
        assert!(e.contains(&format!("{d}/ceph.conf (not there)")) && e.contains(&format!("{d}/ceph.client.admin.keyring (not there)")), "{e}");
    }

    #[test]
    fn a_key_from_a_source_below_the_users_gives_way_to_the_users_own_in_the_files() {
        let keyring = format!("[client.docker]\nkey = {KEY_B}\n");
        let (_dir, loc) = etc_with(&[("ceph.conf", "[global]\nmon host = m\n"), ("ceph.client.docker.keyring", &keyring)]);
        let cluster_flags = id_flag("docker");
        let consul = consul(&[("RBD_CONF_KEYRING_USER", "client.admin", "conf/keyring/user"), ("RBD_CONF_KEYRING_KEY", KEY_A, "conf/keyring/key")]);
        let e = resolve(&Sources { consul: consul.clone(), cluster_flags: cluster_flags.clone(), files: Some(loc.clone()), ..Default::default() }, |r| panic!("{r}"));
        let ceph = e.ceph.unwrap();
        assert_eq!((ceph.user.as_str(), ceph.key.expose()), ("docker", KEY_B), "docker's key, not admin's from consul");
        // With no key of docker's in the files, the lower key stays (and
        // fails at the cluster, naming the user), with no file error.
        let (_dir2, bare) = etc_with(&[("ceph.conf", "[global]\nmon host = m\n")]);
        let e = resolve(&Sources { consul, cluster_flags, files: Some(bare), ..Default::default() }, |r| panic!("{r}"));
        assert_eq!(e.ceph.unwrap().key.expose(), KEY_A);
    }

    #[test]
    fn lines_ceph_ignores_are_reported_by_file_and_line() {
        let keyring = format!("[client.admin]\nkey = {KEY_A}\n");
        let (_dir, loc) = etc_with(&[("ceph.conf", &format!("[global]\nmon host = m\n{KEY_B}\n")), ("ceph.keyring", &keyring)]);
        let mut reports = Vec::new();
        assert!(resolve(&Sources { files: Some(loc), ..Default::default() }, |r| reports.push(r)).ceph.is_ok());
        assert!(reports.len() == 1 && reports[0].contains("ceph.conf line 3") && !reports[0].contains(KEY_B), "{reports:?}");
    }

    #[test]
    fn a_broken_default_file_is_reported_when_not_needed_and_an_error_when_named() {
        let (dir, loc) = etc_with(&[("ceph.conf", "[global]\nmon host\n")]);
        let env = map(&[("RBD_CONF_GLOBAL_MON_HOST", "10.0.0.1"), ("RBD_CONF_KEYRING_KEY", KEY_A)]);
        let mut reports = Vec::new();
        let e = resolve(&Sources { env: env.clone(), files: Some(loc.clone()), ..Default::default() }, |r| reports.push(r));
        assert!(e.ceph.is_ok());
        assert!(reports.len() == 1 && reports[0].contains("ceph.conf line 2"), "{reports:?}");
        let named = Locations { conf: Some((dir.path().join("ceph.conf"), "--conf".into())), ..loc.clone() };
        let e = resolve(&Sources { env, files: Some(named), ..Default::default() }, |r| panic!("{r}")).ceph.unwrap_err();
        assert!(e.to_string().contains("ceph.conf line 2: expected"), "{e}");
        let e = resolve(&Sources { files: Some(loc), ..Default::default() }, |_| {}).ceph.unwrap_err();
        assert!(e.to_string().contains("ceph.conf line 2"), "needed, so the error: {e}");
    }

    // Found by the attack pass.

    #[test]
    fn a_key_from_the_environment_makes_a_keyring_without_the_user_irrelevant() {
        // A named ceph.conf whose keyring holds only client.admin; the
        // environment gives user docker and its key: nothing is missing.
        let keyring = format!("[client.admin]\nkey = {KEY_A}\n");
        let (dir, loc) = etc_with(&[("ceph.conf", "[global]\nmon host = m\n"), ("ceph.client.docker.keyring.unused", ""), ("ceph.keyring", &keyring)]);
        let named = Locations { conf: Some((dir.path().join("ceph.conf"), "--conf".into())), ..loc };
        let env = map(&[("RBD_CONF_KEYRING_USER", "docker"), ("RBD_CONF_KEYRING_KEY", KEY_B)]);
        let e = resolve(&Sources { env, files: Some(named), ..Default::default() }, |_| {});
        let ceph = e.ceph.expect("the environment gives user and key");
        assert_eq!((ceph.mon_host.as_str(), ceph.user.as_str(), ceph.key.expose()), ("m", "docker", KEY_B));
    }
}
