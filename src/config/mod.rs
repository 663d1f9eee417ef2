//! Settings held in memory. For now the Ceph connection settings and how to
//! read them from wetopi-compatible `RBD_CONF_*` environment variables; the
//! full settings module (Consul KV, flags, precedence) builds on this.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

pub mod ceph_conf;
pub mod ceph_files;
pub mod consul;
pub mod swarm_key;

use zeroize::Zeroizing;

/// A secret (cephx key, token). Never printed: `Debug` and `Display` show a
/// placeholder, and the memory is wiped on drop.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(Zeroizing::new(value.into()))
    }

    /// The secret itself, for the one place that hands it to Ceph.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Bounds on every blocking RADOS call. Ceph's defaults wait 300 s for the
/// first monitor session and forever for monitor and OSD operations, which
/// would hang a Docker call: these are the values rbdvol sets instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// `client_mount_timeout`: connecting and authenticating.
    pub connect: Duration,
    /// `rados_mon_op_timeout`: monitor commands (blocklist, pool lookups).
    pub mon_op: Duration,
    /// `rados_osd_op_timeout`: every OSD operation (image create, metadata, I/O).
    pub osd_op: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(10),
            mon_op: Duration::from_secs(30),
            osd_op: Duration::from_secs(30),
        }
    }
}

/// How to reach and authenticate to one Ceph cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CephSettings {
    /// Monitor addresses, as ceph.conf's `mon_host` takes them.
    pub mon_host: String,
    /// The cephx user id without the `client.` prefix (e.g. `admin`).
    pub user: String,
    /// The cephx key, base64.
    pub key: Secret,
    /// Any other ceph option, set through `rados_conf_set` (e.g. `fsid`,
    /// `rbd_default_features`, `ms_mode`).
    pub options: BTreeMap<String, String>,
    /// Those of `options` that came from a ceph.conf: one librados does not
    /// know is skipped with a warning, as the Ceph tools skip it (a name
    /// from a variable or Consul must be right).
    pub lenient: BTreeSet<String>,
    pub timeouts: Timeouts,
}

/// The names of rbdvol's own settings that become ceph options.
pub const CLIENT_VARS: &[&str] = &["RBDVOL_MS_MODE", "RBDVOL_CRUSH_LOCATION"];

/// librados' `ms_client_mode` for an `RBDVOL_MS_MODE` (krbd's names).
pub fn ms_client_mode(mode: &str) -> Option<&'static str> {
    match mode {
        "secure" => Some("secure"),
        "crc" => Some("crc"),
        "prefer-secure" => Some("secure crc"),
        "prefer-crc" => Some("crc secure"),
        _ => None,
    }
}

/// Ceph's `crush_location` (`host=a rack=b`) from `RBDVOL_CRUSH_LOCATION`,
/// written `host=a rack=b`, `host=a|rack=b` or krbd's `host:a|rack:b`.
pub fn crush_location(value: &str) -> Result<String, String> {
    let word = |s: &str, extra: &str| !s.is_empty() && s.len() <= 64 && s.chars().all(|c| c.is_ascii_alphanumeric() || extra.contains(c));
    let mut out = Vec::new();
    for pair in value.split([' ', '|', ',']).filter(|p| !p.is_empty()) {
        match pair.split_once(['=', ':']) {
            Some((k, v)) if word(k, "_-") && word(v, "_-.") => out.push(format!("{k}={v}")),
            _ => return Err(format!("'{pair}' is not TYPE=NAME (e.g. host=node1 rack=r2; letters, digits, '_', '-', '.')")),
        }
    }
    if out.is_empty() {
        return Err("it names no place: write e.g. host=node1 rack=r2".into());
    }
    Ok(out.join(" "))
}

/// A setting that is missing or malformed, named so the operator can fix it.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("setting {name} is missing: {hint}")]
    Missing { name: &'static str, hint: &'static str },
    #[error("setting {name} is invalid: {reason}")]
    Invalid { name: String, reason: String },
    /// A setting found in no source, with the files looked at.
    #[error("setting {name} is missing: {hint}; or give a ceph.conf and keyring (--conf and --keyring, RBDVOL_CEPH_CONF and RBDVOL_KEYRING); looked at {looked}")]
    NotFound { name: &'static str, hint: &'static str, looked: String },
    /// Settings that should come from Consul, which has not answered yet.
    #[error("{0}")]
    Consul(String),
    /// A ceph.conf or keyring that cannot be read or is malformed, named
    /// with the line.
    #[error("{0}")]
    File(String),
}

/// Environment variables that are rbdvol's own, not ceph options.
const TIMEOUT_VARS: [&str; 3] = [
    "RBDVOL_CONNECT_TIMEOUT",
    "RBDVOL_MON_OP_TIMEOUT",
    "RBDVOL_OSD_OP_TIMEOUT",
];

impl CephSettings {
    /// Reads wetopi-compatible variables: `RBD_CONF_KEYRING_USER`,
    /// `RBD_CONF_KEYRING_KEY`, `RBD_CONF_GLOBAL_MON_HOST`, and every other
    /// `RBD_CONF_<SECTION>_<OPTION>` as the ceph option `<option>`; plus the
    /// timeouts `RBDVOL_{CONNECT,MON_OP,OSD_OP}_TIMEOUT` in seconds.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(std::env::vars())
    }

    pub fn from_vars(vars: impl IntoIterator<Item = (String, String)>) -> Result<Self, ConfigError> {
        let mut mon_host = None;
        let mut user = None;
        let mut key = None;
        let mut key_file = None;
        let mut options = BTreeMap::new();
        let mut timeouts = Timeouts::default();
        for (name, value) in vars {
            // A managed plugin passes every declared variable, unset ones
            // as empty strings: empty means unset.
            if value.trim().is_empty() {
                continue;
            }
            match name.as_str() {
                "RBD_CONF_GLOBAL_MON_HOST" => mon_host = Some(value),
                "RBD_CONF_KEYRING_USER" => user = Some(value),
                "RBD_CONF_KEYRING_KEY" => key = Some(Secret::new(value)),
                "RBD_CONF_KEYRING_KEY_FILE" => key_file = Some(value),
                // Caps describe the key to whoever creates it; not a client option.
                n if n.starts_with("RBD_CONF_KEYRING_") => {}
                // wetopi's cluster name and rbdvol's own pool/namespace/device
                // settings are not ceph options.
                "RBD_CONF_CLUSTER" | "RBD_CONF_POOL" | "RBD_CONF_NAMESPACE" | "RBD_CONF_DEVICE_MAP_ROOT" => {}
                "RBDVOL_MS_MODE" => {
                    let mode = ms_client_mode(value.trim()).ok_or_else(|| ConfigError::Invalid {
                        name: name.clone(),
                        reason: format!("'{value}' is not an msgr2 mode: use secure, crc, prefer-secure or prefer-crc"),
                    })?;
                    // The monitors' sessions and every other: all of it, as krbd's ms_mode.
                    options.insert("ms_client_mode".into(), mode.into());
                    options.insert("ms_mon_client_mode".into(), mode.into());
                }
                "RBDVOL_CRUSH_LOCATION" => {
                    let loc = crush_location(value.trim()).map_err(|reason| ConfigError::Invalid { name: name.clone(), reason })?;
                    options.insert("crush_location".into(), loc);
                }
                n if TIMEOUT_VARS.contains(&n) => {
                    let secs: f64 = value.trim().parse().ok().filter(|s: &f64| *s > 0.0 && s.is_finite()).ok_or_else(|| {
                        ConfigError::Invalid {
                            name: n.to_string(),
                            reason: format!("'{value}' is not a positive number of seconds"),
                        }
                    })?;
                    let d = Duration::from_secs_f64(secs);
                    match n {
                        "RBDVOL_CONNECT_TIMEOUT" => timeouts.connect = d,
                        "RBDVOL_MON_OP_TIMEOUT" => timeouts.mon_op = d,
                        _ => timeouts.osd_op = d,
                    }
                }
                n => {
                    if let Some(option) = ceph_option_from_env(n) {
                        options.insert(option, value);
                    }
                }
            }
        }
        let mon_host = mon_host.filter(|m| !m.trim().is_empty()).ok_or(ConfigError::Missing {
            name: "RBD_CONF_GLOBAL_MON_HOST",
            hint: "set it to the monitor addresses, e.g. 10.0.0.1:6789,10.0.0.2:6789",
        })?;
        let user = user.unwrap_or_else(|| "admin".to_string());
        let user = user.strip_prefix("client.").unwrap_or(&user).to_string();
        if user.is_empty() || !user.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)) {
            return Err(ConfigError::Invalid {
                name: "RBD_CONF_KEYRING_USER".into(),
                reason: format!("{:?} is not a cephx user id (letters, digits, '.', '_' or '-', e.g. client.docker)", user),
            });
        }
        let key = match (key, key_file) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::Invalid {
                    name: "RBD_CONF_KEYRING_KEY_FILE".into(),
                    reason: "set either it or RBD_CONF_KEYRING_KEY, not both".into(),
                })
            }
            (None, Some(path)) => Some(read_key_file(path.trim())?),
            (key, None) => key,
        };
        let key = key.filter(|k| !k.is_empty()).ok_or(ConfigError::Missing {
            name: "RBD_CONF_KEYRING_KEY",
            hint: "set it to the cephx key of RBD_CONF_KEYRING_USER (ceph auth get-key client.<user>)",
        })?;
        Ok(CephSettings { mon_host, user, key, options, lenient: BTreeSet::new(), timeouts })
    }
}

/// The key in `path`: the key alone, or a keyring (`key = ...` in it). The
/// file's contents never appear in an error, nor its path unless absolute
/// (a key set here by mistake would be one).
fn read_key_file(path: &str) -> Result<Secret, ConfigError> {
    let shown = if path.starts_with('/') { path } else { "(not an absolute path)" };
    let invalid = |reason: String| ConfigError::Invalid { name: "RBD_CONF_KEYRING_KEY_FILE".into(), reason };
    let text = ceph_files::read_text(std::path::Path::new(path)).map_err(|e| invalid(format!("cannot read {shown}: {e}")))?;
    let key = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("key").map(str::trim_start).and_then(|r| r.strip_prefix('=')).map(str::trim))
        .unwrap_or_else(|| text.trim());
    if key.is_empty() || key.contains(char::is_whitespace) {
        return Err(invalid(format!("{shown} holds no cephx key (the key alone, or a keyring with a 'key = ' line)")));
    }
    Ok(Secret::new(key))
}

/// `RBD_CONF_<SECTION>_<OPTION>` → `option` for the sections a client reads
/// (`global`, `client`); the option keeps ceph's underscore spelling.
pub(crate) fn ceph_option_from_env(name: &str) -> Option<String> {
    let rest = name.strip_prefix("RBD_CONF_")?;
    let option = rest.strip_prefix("GLOBAL_").or_else(|| rest.strip_prefix("CLIENT_"))?;
    (!option.is_empty()).then(|| option.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn reads_wetopi_variables() {
        let s = CephSettings::from_vars(vars(&[
            ("RBD_CONF_GLOBAL_MON_HOST", "10.0.0.1:6789"),
            ("RBD_CONF_KEYRING_USER", "client.docker"),
            ("RBD_CONF_KEYRING_KEY", "AQBXhS1kAAAAABAAr0bjXwBQ0p7BzUgFP5D7Yg=="),
            ("RBD_CONF_KEYRING_CAPS_MON", "allow r"),
            ("RBD_CONF_GLOBAL_FSID", "abc"),
            ("RBD_CONF_CLIENT_RBD_DEFAULT_FEATURES", "3"),
            ("RBD_CONF_POOL", "rbd"),
            ("RBDVOL_CONNECT_TIMEOUT", "2.5"),
            ("PATH", "/bin"),
        ]))
        .unwrap();
        assert_eq!(s.mon_host, "10.0.0.1:6789");
        assert_eq!(s.user, "docker");
        assert_eq!(s.options.get("fsid").map(String::as_str), Some("abc"));
        assert_eq!(s.options.get("rbd_default_features").map(String::as_str), Some("3"));
        assert_eq!(s.options.len(), 2);
        assert_eq!(s.timeouts.connect, Duration::from_millis(2500));
    }

    #[test]
    fn the_hosts_msgr2_mode_and_crush_location_become_ceph_options_and_bad_ones_name_the_setting() {
        let base = [("RBD_CONF_GLOBAL_MON_HOST", "10.0.0.1"), ("RBD_CONF_KEYRING_KEY", "AQBXhS1kAAAAABAAr0bjXwBQ0p7BzUgFP5D7Yg==")];
        let with = |extra: &[(&str, &str)]| CephSettings::from_vars(vars(&[&base[..], extra].concat()));
        let s = with(&[("RBDVOL_MS_MODE", "prefer-crc"), ("RBDVOL_CRUSH_LOCATION", "host:node1|rack:r2")]).unwrap();
        assert_eq!(s.options.get("ms_client_mode").map(String::as_str), Some("crc secure"));
        assert_eq!(s.options.get("ms_mon_client_mode").map(String::as_str), Some("crc secure"));
        assert_eq!(s.options.get("crush_location").map(String::as_str), Some("host=node1 rack=r2"));
        assert_eq!(with(&[("RBDVOL_MS_MODE", "secure")]).unwrap().options["ms_client_mode"], "secure");
        let e = with(&[("RBDVOL_MS_MODE", "plain")]).unwrap_err().to_string();
        assert!(e.contains("RBDVOL_MS_MODE") && e.contains("secure, crc"), "{e}");
        for bad in ["host", "host=a b", "host=/etc", "=x"] {
            let e = with(&[("RBDVOL_CRUSH_LOCATION", bad)]).unwrap_err().to_string();
            assert!(e.contains("RBDVOL_CRUSH_LOCATION"), "{bad}: {e}");
        }
    }

    #[test]
    fn empty_values_are_unset_as_a_managed_plugin_passes_them() {
        let s = CephSettings::from_vars(vars(&[
            ("RBD_CONF_GLOBAL_MON_HOST", "10.0.0.1"),
            ("RBD_CONF_KEYRING_KEY", "AQBXhS1kAAAAABAAr0bjXwBQ0p7BzUgFP5D7Yg=="),
            ("RBD_CONF_GLOBAL_FSID", ""),
            ("RBD_CONF_CLIENT_RBD_DEFAULT_FEATURES", " "),
            ("RBDVOL_CONNECT_TIMEOUT", ""),
        ]))
        .unwrap();
        assert!(s.options.is_empty(), "{:?}", s.options);
        assert_eq!(s.timeouts, Timeouts::default());
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("key");
        std::fs::write(&raw, "AQBXhS1kAAAAABAAr0bjXwBQ0p7BzUgFP5D7Yg==\n").unwrap();
        let keyring = dir.path().join("keyring");
        std::fs::write(&keyring, "[client.docker]\n\tkey = AQBXhS1kAAAAABAAr0bjXwBQ0p7BzUgFP5D7Yg==\n\tcaps mon = \"profile rbd\"\n").unwrap();
        for f in [&raw, &keyring] {
            let s = CephSettings::from_vars(vars(&[("RBD_CONF_GLOBAL_MON_HOST", "10.0.0.1"), ("RBD_CONF_KEYRING_KEY_FILE", f.to_str().unwrap())])).unwrap();
            assert_eq!(s.key.expose(), "AQBXhS1kAAAAABAAr0bjXwBQ0p7BzUgFP5D7Yg==");
        }
        let e = CephSettings::from_vars(vars(&[("RBD_CONF_GLOBAL_MON_HOST", "10.0.0.1"), ("RBD_CONF_KEYRING_KEY_FILE", "/nonexistent/key")])).unwrap_err();
        assert!(e.to_string().contains("RBD_CONF_KEYRING_KEY_FILE") && e.to_string().contains("/nonexistent/key"), "{e}");
        let both = [("RBD_CONF_GLOBAL_MON_HOST", "10.0.0.1"), ("RBD_CONF_KEYRING_KEY", "k"), ("RBD_CONF_KEYRING_KEY_FILE", raw.to_str().unwrap())];
        assert!(CephSettings::from_vars(vars(&both)).unwrap_err().to_string().contains("not both"));
        let garbage = dir.path().join("garbage");
        std::fs::write(&garbage, "not a key at all").unwrap();
        let e = CephSettings::from_vars(vars(&[("RBD_CONF_GLOBAL_MON_HOST", "10.0.0.1"), ("RBD_CONF_KEYRING_KEY_FILE", garbage.to_str().unwrap())])).unwrap_err();
        assert!(!e.to_string().contains("not a key at all"), "the file's contents never appear: {e}");
        let e = CephSettings::from_vars(vars(&[("RBD_CONF_GLOBAL_MON_HOST", "10.0.0.1"), ("RBD_CONF_KEYRING_KEY", "")])).unwrap_err();
        assert!(e.to_string().contains("RBD_CONF_KEYRING_KEY is missing"), "{e}");
    }

    #[test]
    fn missing_key_names_the_variable() {
        let e = CephSettings::from_vars(vars(&[("RBD_CONF_GLOBAL_MON_HOST", "1.2.3.4")])).unwrap_err();
        assert!(e.to_string().contains("RBD_CONF_KEYRING_KEY"), "{e}");
        let e = CephSettings::from_vars(vars(&[("RBD_CONF_KEYRING_KEY", "k")])).unwrap_err();
        assert!(e.to_string().contains("RBD_CONF_GLOBAL_MON_HOST"), "{e}");
    }

    #[test]
    fn bad_timeout_is_refused() {
        let e = CephSettings::from_vars(vars(&[
            ("RBD_CONF_GLOBAL_MON_HOST", "1.2.3.4"),
            ("RBD_CONF_KEYRING_KEY", "k"),
            ("RBDVOL_OSD_OP_TIMEOUT", "0"),
        ]))
        .unwrap_err();
        assert!(e.to_string().contains("RBDVOL_OSD_OP_TIMEOUT"), "{e}");
    }

    #[test]
    fn secret_is_never_printed() {
        let s = CephSettings::from_vars(vars(&[
            ("RBD_CONF_GLOBAL_MON_HOST", "1.2.3.4"),
            ("RBD_CONF_KEYRING_KEY", "SUPERSECRETKEY"),
        ]))
        .unwrap();
        assert!(!format!("{s:?}").contains("SUPERSECRETKEY"));
        assert!(!format!("{}", s.key).contains("SUPERSECRETKEY"));
        assert_eq!(s.key.expose(), "SUPERSECRETKEY");
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig { cases: 1000, .. ProptestConfig::default() })]

            /// Whatever else is set, and however wrong, the key never
            /// appears in an error or a debug print.
            #[test]
            fn the_key_never_appears_in_an_error_or_a_debug_print(
                key in "[A-Za-z0-9+/]{38}==",
                others in proptest::collection::vec((prop_oneof![
                    Just("RBD_CONF_GLOBAL_MON_HOST".to_string()),
                    Just("RBD_CONF_KEYRING_USER".to_string()),
                    Just("RBDVOL_OSD_OP_TIMEOUT".to_string()),
                    Just("RBD_CONF_KEYRING_KEY_FILE".to_string()),
                    "RBD_CONF_[A-Z_]{1,12}",
                ], ".{0,20}"), 0..5),
            ) {
                let mut vars: Vec<(String, String)> = others;
                vars.push(("RBD_CONF_KEYRING_KEY".into(), key.clone()));
                match CephSettings::from_vars(vars) {
                    Ok(s) => {
                        let shown = format!("{:?}", s);
                        prop_assert!(!shown.contains(&key));
                    }
                    Err(e) => {
                        let shown = format!("{} {:?}", e, e);
                        prop_assert!(!shown.contains(&key));
                    }
                }
            }
        }
    }
}
