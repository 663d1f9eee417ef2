//! ceph.conf and keyring files as a settings source, found where Ceph's own
//! tools find them: the settings of a host where `rbd ls` works. The lowest
//! source: Consul, the environment and flags override what the files say.

use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use super::ceph_conf::{self, Entry};
use super::{ConfigError, Secret};

/// Where to look, as the Ceph tools' `--cluster`, `--conf`, `--keyring`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Locations {
    /// The cluster name in default paths (`/etc/ceph/<cluster>.conf`).
    pub cluster: String,
    /// A ceph.conf named by a flag or variable, and which one named it:
    /// it must be there.
    pub conf: Option<(PathBuf, String)>,
    /// A keyring named by a flag or variable, and which one named it.
    pub keyring: Option<(PathBuf, String)>,
    /// Ceph's directory (`/etc/ceph`; a fixture tree in tests).
    pub etc: PathBuf,
    /// This host's name, for `$host` in paths.
    pub host: String,
}

impl Default for Locations {
    fn default() -> Self {
        Locations { cluster: "ceph".into(), conf: None, keyring: None, etc: PathBuf::from("/etc/ceph"), host: String::new() }
    }
}

/// A value and the line it came from (`/etc/ceph/ceph.conf:3`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileValue {
    /// The setting as its variable names it (`RBD_CONF_GLOBAL_MON_HOST`).
    pub var: String,
    pub value: String,
    pub origin: String,
}

/// What the files say for one user, and where they were looked for.
#[derive(Debug, Default)]
pub struct FileSettings {
    pub values: Vec<FileValue>,
    /// The user's key and where it came from.
    pub key: Option<(Secret, String)>,
    /// Each place looked at, with what was found there, for `doctor` and
    /// for the error when a setting is found nowhere.
    pub looked: Vec<String>,
    /// The options of the client's sections not passed on: daemons' and
    /// this host's own (`[client] keyring`).
    pub skipped: Vec<String>,
    /// Lines Ceph would ignore (`/etc/ceph/ceph.conf line 5: why`), for the
    /// log; never quoting the line.
    pub ignored: Vec<String>,
}

/// Whether a key is wanted from the files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WantKey {
    /// A higher source gives the user's key.
    No,
    /// None gives one: the files must, if there are any.
    Yes,
    /// A lower source than the user's gives one (it may be another user's):
    /// the user's key from the files if they have it, no error if not.
    IfThere,
}

/// Options of a ceph.conf that only daemons or this host's own files use,
/// or that belong to a keyring: never passed to librados (rbdvol holds the
/// key in memory and logs through its own log).
pub fn host_or_daemon_only(option: &str) -> bool {
    const EXACT: [&str; 12] = [
        "keyring",
        "key",
        "keyfile",
        "admin_socket",
        "log_file",
        "log_to_file",
        "pid_file",
        "run_dir",
        "public_addr",
        "cluster_addr",
        "public_network",
        "cluster_network",
    ];
    const PREFIXES: [&str; 7] = ["osd_", "mgr_", "mds_", "memstore_", "bluestore_", "filestore_", "caps_"];
    const CLIENT_MON: [&str; 4] = ["mon_host", "mon_initial_members", "mon_dns_srv_name", "mon_client_"];
    EXACT.contains(&option)
        || option.ends_with("_data")
        || PREFIXES.iter().any(|p| option.starts_with(p))
        || (option.starts_with("mon_") && !CLIENT_MON.iter().any(|m| option.starts_with(m)))
}

/// Ceph's default keyring search list (in /etc/ceph).
const DEFAULT_KEYRINGS: [&str; 4] = ["$cluster.$name.keyring", "$cluster.keyring", "keyring", "keyring.bin"];

/// The most a ceph.conf or keyring may hold: a few KiB in practice.
const MAX_FILE: u64 = 1 << 20;

/// Reads the files for the client `client.<user>`; the key as `want_key`
/// says. A file that was named and is missing, or any file found that is
/// malformed, is an error naming it (and the line); files not there are
/// noted in `looked`.
pub fn read(loc: &Locations, user: &str, want_key: WantKey) -> Result<FileSettings, ConfigError> {
    let mut out = FileSettings::default();
    if loc.cluster.is_empty() || !loc.cluster.chars().all(|c| c.is_ascii_alphanumeric() || "_-".contains(c)) {
        // It becomes part of a file name.
        return Err(ConfigError::Invalid { name: "RBD_CONF_CLUSTER".into(), reason: format!("{:?} is not a cluster name (letters, digits, '_' or '-', e.g. ceph)", loc.cluster) });
    }
    // `$host` is the short host name, as Ceph expands it.
    let host = loc.host.split('.').next().unwrap_or_default();
    let expand = |p: &str| ceph_conf::expand(p, &loc.cluster, user, host);
    let conf_path = match &loc.conf {
        Some((path, _)) => Some(path.clone()),
        None => {
            let default = loc.etc.join(format!("{}.conf", loc.cluster));
            if default.exists() {
                Some(default)
            } else {
                out.looked.push(format!("{} (not there)", default.display()));
                None
            }
        }
    };
    let mut effective: Vec<Entry> = Vec::new();
    let mut conf_display = String::new();
    if let Some(path) = &conf_path {
        let shown = match &loc.conf {
            Some((_, by)) => shown_named(path, by),
            None => path.display().to_string(),
        };
        let text = read_text(path).map_err(|e| ConfigError::File(format!("cannot read the ceph.conf {shown}: {e}")))?;
        // Errors and origins name the file by its path alone.
        let display = if path.is_absolute() { path.display().to_string() } else { shown.clone() };
        let parsed = ceph_conf::parse(Path::new(&display), &text).map_err(|e| ConfigError::File(e.to_string()))?;
        out.ignored.extend(parsed.ignored.iter().map(|l| format!("{display} {l}")));
        let entries = parsed.entries;
        effective = for_client(&entries, user);
        conf_display = display;
        out.looked.push(format!("{conf_display} (read)"));
        if !effective.iter().any(|e| e.option == "mon_host") {
            // Old-style files name each monitor in its own [mon.X] section.
            let mons: Vec<&Entry> = entries.iter().filter(|e| e.section.starts_with("mon.") && e.option == "mon_addr").collect();
            if let Some(first) = mons.first() {
                let value = mons.iter().map(|e| e.value.as_str()).collect::<Vec<_>>().join(",");
                effective.push(Entry { section: "global".into(), option: "mon_host".into(), value, line: first.line });
            }
        }
    }
    let origin = |e: &Entry| format!("{conf_display}:{}", e.line);
    for e in &effective {
        if host_or_daemon_only(&e.option) {
            out.skipped.push(format!("[{}] {}", e.section, e.option));
            continue;
        }
        let section = if e.option == "mon_host" || e.section == "global" { "GLOBAL" } else { "CLIENT" };
        out.values.push(FileValue { var: format!("RBD_CONF_{section}_{}", e.option.to_ascii_uppercase()), value: e.value.clone(), origin: origin(e) });
    }
    if want_key == WantKey::No {
        return Ok(out);
    }
    let if_there = want_key == WantKey::IfThere;

    // The key, in Ceph's order: the conf's `key`, then its `keyfile`, then
    // a keyring: the one named by flag or variable (which stands for the
    // conf's `keyring` option), else that option, else Ceph's list.
    let option = |name: &str| effective.iter().find(|e| e.option == name);
    if let Some(e) = option("key").filter(|e| !e.value.is_empty()) {
        out.key = Some((Secret::new(e.value.clone()), origin(e)));
        return Ok(out);
    }
    if let Some(e) = option("keyfile").filter(|e| !e.value.is_empty()) {
        let path = PathBuf::from(expand(&e.value));
        let shown = shown_path(&path, &origin(e));
        let text = match read_text(&path) {
            Ok(t) => t,
            Err(_) if if_there => return Ok(out),
            Err(err) => return Err(ConfigError::File(format!("cannot read the keyfile {shown}: {err}"))),
        };
        let key = text.trim();
        if key.is_empty() || key.contains(char::is_whitespace) {
            return Err(ConfigError::File(format!("the keyfile {shown} holds no key: it holds the base64 key alone")));
        }
        out.key = Some((Secret::new(key), shown));
        return Ok(out);
    }
    if let Some((path, by)) = &loc.keyring {
        let shown = shown_named(path, by);
        match key_from_keyring(path, &shown, user) {
            Ok(key) => out.key = Some(key),
            Err(_) if if_there => {}
            Err(e) => return Err(e),
        }
        out.looked.push(format!("{shown} (read)"));
        return Ok(out);
    }
    let candidates: Vec<(PathBuf, String)> = match option("keyring") {
        Some(e) => e.value.split([',', ';', ' ', '\t']).filter(|c| !c.is_empty()).map(|c| {
            let path = PathBuf::from(expand(c));
            let shown = shown_path(&path, &origin(e));
            (path, shown)
        }).collect(),
        None => DEFAULT_KEYRINGS.iter().map(|f| {
            let path = PathBuf::from(expand(&loc.etc.join(f).display().to_string()));
            let shown = path.display().to_string();
            (path, shown)
        }).collect(),
    };
    for (path, shown) in candidates {
        if path.exists() {
            match key_from_keyring(&path, &shown, user) {
                Ok(key) => out.key = Some(key),
                Err(_) if if_there => {}
                Err(e) => return Err(e),
            }
            out.looked.push(format!("{shown} (read)"));
            return Ok(out);
        }
        out.looked.push(format!("{shown} (not there)"));
    }
    Ok(out)
}

/// A path named by a flag or variable as it may be shown: an absolute path
/// as it is (with what named it), anything else (a key given where a path
/// belongs, say) only by what named it.
fn shown_named(path: &Path, by: &str) -> String {
    if path.is_absolute() {
        format!("{} (named by {by})", path.display())
    } else {
        format!("named by {by} (not an absolute path)")
    }
}

/// A path from a file's `keyfile` or `keyring` line as it may be shown: an
/// absolute path as it is, anything else (a key written where a path
/// belongs, say) only as the line it came from.
fn shown_path(path: &Path, origin: &str) -> String {
    if path.is_absolute() {
        path.display().to_string()
    } else {
        format!("named at {origin}")
    }
}

/// The effective options of `client.<user>`: each option from its most
/// specific section (`[client.<user>]`, then `[client]`, then `[global]`),
/// the last line of that section winning, as Ceph reads them.
fn for_client(entries: &[Entry], user: &str) -> Vec<Entry> {
    let name = format!("client.{user}");
    let mut out: Vec<Entry> = Vec::new();
    for section in [name.as_str(), "client", "global"] {
        for e in entries.iter().rev().filter(|e| e.section == section) {
            if !out.iter().any(|o| o.option == e.option) {
                out.push(e.clone());
            }
        }
    }
    out.sort_by_key(|e| e.line);
    out
}

/// The key of `client.<user>` in the keyring at `path` (shown as `shown`),
/// and its line. The key never appears in an error.
fn key_from_keyring(path: &Path, shown: &str, user: &str) -> Result<(Secret, String), ConfigError> {
    let text = read_text(path).map_err(|e| ConfigError::File(format!("cannot read the keyring {shown}: {e}")))?;
    // Lines and origins name the file by its path alone.
    let display = if path.is_absolute() { path.display().to_string() } else { shown.to_string() };
    let entries = ceph_conf::parse(Path::new(&display), &text).map_err(|e| ConfigError::File(e.to_string()))?.entries;
    let name = format!("client.{user}");
    match entries.iter().rev().find(|e| e.section == name && e.option == "key") {
        Some(e) if !e.value.is_empty() => Ok((Secret::new(e.value.clone()), format!("{display}:{}", e.line))),
        _ => {
            let mut holds: Vec<&str> = entries.iter().filter(|e| e.option == "key").map(|e| e.section.as_str()).collect();
            holds.dedup();
            let holds = if holds.is_empty() { "no key at all".to_string() } else { format!("keys of {}", holds.join(", ")) };
            Err(ConfigError::File(format!(
                "the keyring {shown} has no key for {name} (it holds {holds}): give the user with --id or RBD_CONF_KEYRING_USER, or the keyring with --keyring or RBDVOL_KEYRING"
            )))
        }
    }
}

/// The first user a keyring holds a key of (`consul seed` without a user).
pub fn first_user(path: &Path) -> Result<Option<String>, ConfigError> {
    let text = read_text(path).map_err(|e| ConfigError::File(format!("cannot read the keyring {}: {e}", path.display())))?;
    let entries = ceph_conf::parse(path, &text).map_err(|e| ConfigError::File(e.to_string()))?.entries;
    Ok(entries.iter().find(|e| e.option == "key").and_then(|e| e.section.strip_prefix("client.")).map(str::to_string))
}

/// A regular text file of at most `MAX_FILE` bytes, wiped from memory when
/// dropped (it may hold a key). A FIFO, a device or a directory is refused
/// before it is opened: reading one could block or never end.
pub fn read_text(path: &Path) -> Result<Zeroizing<String>, String> {
    use std::io::Read;
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    if meta.len() > MAX_FILE {
        return Err(format!("{} bytes: larger than the {MAX_FILE} a ceph.conf or keyring may be", meta.len()));
    }
    let mut bytes = Zeroizing::new(Vec::new());
    std::fs::File::open(path).map_err(|e| e.to_string())?.take(MAX_FILE + 1).read_to_end(&mut bytes).map_err(|e| e.to_string())?;
    if bytes.len() as u64 > MAX_FILE {
        return Err(format!("larger than the {MAX_FILE} bytes a ceph.conf or keyring may be"));
    }
    match std::str::from_utf8(&bytes) {
        Ok(text) => Ok(Zeroizing::new(text.to_string())),
        Err(_) => Err("not a text file (a binary keyring? export it as text with `ceph auth get client.<user> -o FILE`)".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "AQBXhS1kAAAAABAAr0bjXwBQ0p7BzUgFP5D7Yg==";
    const KEY2: &str = "AQCZhS1kAAAAABAAnLkQ1V3fsgRZ8ZmVPnt9ow==";

    struct Etc(tempfile::TempDir);

    impl Etc {
        fn new() -> Etc {
            Etc(tempfile::tempdir().unwrap())
        }
        fn file(&self, name: &str, text: &str) -> PathBuf {
            let p = self.0.path().join(name);
            std::fs::write(&p, text).unwrap();
            p
        }
        fn loc(&self) -> Locations {
            Locations { etc: self.0.path().to_path_buf(), host: "node1".into(), ..Locations::default() }
        }
    }

    fn value<'a>(s: &'a FileSettings, var: &str) -> Option<(&'a str, &'a str)> {
        s.values.iter().find(|v| v.var == var).map(|v| (v.value.as_str(), v.origin.as_str()))
    }

    #[test]
    fn the_default_files_give_monitors_options_and_the_users_key_with_their_lines() {
        let etc = Etc::new();
        let conf = etc.file(
            "ceph.conf",
            "[global]\nfsid = abc\nmon host = 10.0.0.1\nlog file = /var/log/x\nosd pool default size = 1\n[client]\nrbd cache = false\n[client.docker]\nrbd cache = true\n[osd]\nx = 1\n",
        );
        let keyring = etc.file("ceph.client.docker.keyring", &format!("[client.docker]\n\tkey = {KEY}\n"));
        let s = read(&etc.loc(), "docker", WantKey::Yes).unwrap();
        let c = conf.display();
        assert_eq!(value(&s, "RBD_CONF_GLOBAL_MON_HOST"), Some(("10.0.0.1", format!("{c}:3").as_str())));
        assert_eq!(value(&s, "RBD_CONF_GLOBAL_FSID"), Some(("abc", format!("{c}:2").as_str())));
        assert_eq!(value(&s, "RBD_CONF_CLIENT_RBD_CACHE"), Some(("true", format!("{c}:9").as_str())), "[client.docker] beats [client]");
        assert_eq!(s.values.len(), 3, "daemon and host options stay out: {:?}", s.values);
        let (key, origin) = s.key.unwrap();
        assert_eq!((key.expose(), origin), (KEY, format!("{}:2", keyring.display())));
    }

    #[test]
    fn keyrings_are_searched_in_cephs_order_and_a_conf_keyring_with_metavariables_wins() {
        let etc = Etc::new();
        etc.file("ceph.conf", "[global]\nmon_host = m\n");
        etc.file("keyring", &format!("[client.admin]\nkey = {KEY2}\n"));
        etc.file("ceph.keyring", &format!("[client.admin]\nkey = {KEY}\n"));
        let s = read(&etc.loc(), "admin", WantKey::Yes).unwrap();
        assert_eq!(s.key.unwrap().0.expose(), KEY, "ceph.keyring comes before keyring");
        assert!(s.looked.iter().any(|l| l.ends_with("ceph.client.admin.keyring (not there)")), "{:?}", s.looked);

        let priv_dir = etc.0.path().join("priv");
        std::fs::create_dir(&priv_dir).unwrap();
        std::fs::write(priv_dir.join("ceph.client.admin.keyring"), format!("[client.admin]\nkey = {KEY2}\n")).unwrap();
        etc.file("ceph.conf", &format!("[global]\nmon_host = m\n[client]\nkeyring = {}/$cluster.$name.keyring\n", priv_dir.display()));
        let s = read(&etc.loc(), "admin", WantKey::Yes).unwrap();
        assert_eq!(s.key.unwrap().0.expose(), KEY2);
    }

    #[test]
    fn a_named_cluster_reads_its_own_files() {
        let etc = Etc::new();
        etc.file("backup.conf", "[global]\nmon host = b\n");
        etc.file("backup.client.admin.keyring", &format!("[client.admin]\nkey = {KEY}\n"));
        etc.file("ceph.conf", "[global]\nmon host = a\n");
        let s = read(&Locations { cluster: "backup".into(), ..etc.loc() }, "admin", WantKey::Yes).unwrap();
        assert_eq!(value(&s, "RBD_CONF_GLOBAL_MON_HOST").unwrap().0, "b");
        assert_eq!(s.key.unwrap().0.expose(), KEY);
    }

    #[test]
    fn key_and_keyfile_options_come_before_keyrings() {
        let etc = Etc::new();
        let keyfile = etc.file("secret", &format!("{KEY2}\n"));
        etc.file("ceph.keyring", &format!("[client.admin]\nkey = {KEY}\n"));
        etc.file("ceph.conf", &format!("[global]\nmon_host = m\n[client]\nkeyfile = {}\n", keyfile.display()));
        assert_eq!(read(&etc.loc(), "admin", WantKey::Yes).unwrap().key.unwrap().0.expose(), KEY2);
        etc.file("ceph.conf", &format!("[global]\nmon_host = m\n[client.admin]\nkey = {KEY2}\n"));
        let s = read(&etc.loc(), "admin", WantKey::Yes).unwrap();
        assert_eq!(s.key.as_ref().unwrap().0.expose(), KEY2);
        assert!(s.values.iter().all(|v| !v.value.contains(KEY2)), "the key is not an option: {:?}", s.values);
    }

    #[test]
    fn only_cephs_own_list_is_searched_never_beside_a_named_conf() {
        let etc = Etc::new();
        etc.file("ceph.client.admin.keyring", &format!("[client.admin]\nkey = {KEY}\n"));
        let elsewhere = tempfile::tempdir().unwrap();
        let conf = elsewhere.path().join("ceph.conf");
        std::fs::write(&conf, "[global]\nmon host = m\n").unwrap();
        std::fs::write(elsewhere.path().join("ceph.client.admin.keyring"), format!("[client.admin]\nkey = {KEY2}\n")).unwrap();
        let s = read(&Locations { conf: Some((conf, "RBDVOL_CEPH_CONF".into())), ..etc.loc() }, "admin", WantKey::Yes).unwrap();
        assert_eq!(s.key.unwrap().0.expose(), KEY, "a keyring planted beside a conf is not used, as rbd -c does not");
    }

    #[test]
    fn the_confs_key_and_keyfile_come_before_a_named_keyring_as_in_ceph() {
        let etc = Etc::new();
        let keyring = etc.file("k", &format!("[client.admin]\nkey = {KEY}\n"));
        etc.file("ceph.conf", &format!("[global]\nmon host = m\n[client.admin]\nkey = {KEY2}\n"));
        let s = read(&Locations { keyring: Some((keyring, "--keyring".into())), ..etc.loc() }, "admin", WantKey::Yes).unwrap();
        assert_eq!(s.key.unwrap().0.expose(), KEY2);
    }

    #[test]
    fn without_want_key_no_keyring_is_read_or_can_fail() {
        let etc = Etc::new();
        etc.file("ceph.conf", "[global]\nmon host = m\n");
        let keyring = etc.file("k", &format!("[client.admin]\nkey = {KEY}\n"));
        let s = read(&Locations { keyring: Some((keyring, "--keyring".into())), ..etc.loc() }, "docker", WantKey::No).unwrap();
        assert!(s.key.is_none() && s.values.len() == 1);
    }

    #[test]
    fn host_is_the_short_host_name_and_client_monitor_options_pass() {
        let etc = Etc::new();
        etc.file("ceph.conf", "[global]\nmon host = m\nmon client hunt interval = 2\nmon allow pool delete = true\n[client]\nkeyring = /nonexistent/$host.keyring\n");
        let s = read(&Locations { host: "node1.example.com".into(), ..etc.loc() }, "admin", WantKey::Yes).unwrap();
        assert!(s.looked.iter().any(|l| l == "/nonexistent/node1.keyring (not there)"), "{:?}", s.looked);
        assert!(value(&s, "RBD_CONF_GLOBAL_MON_CLIENT_HUNT_INTERVAL").is_some() && value(&s, "RBD_CONF_GLOBAL_MON_ALLOW_POOL_DELETE").is_none());
    }

    #[test]
    fn a_pasted_key_or_an_option_in_capitals_is_skipped_without_echoing_it() {
        let etc = Etc::new();
        etc.file("ceph.conf", &format!("[global]\nmon host = m\nMon_Host = x\n[client]\n{KEY}\n"));
        let s = read(&etc.loc(), "admin", WantKey::Yes).unwrap();
        assert_eq!(value(&s, "RBD_CONF_GLOBAL_MON_HOST").unwrap().0, "m");
        assert_eq!(s.values.len(), 1, "{:?}", s.values);
        assert_eq!(s.ignored.len(), 2, "{:?}", s.ignored);
        assert!(!format!("{:?}", s.ignored).contains("AQBX"), "{:?}", s.ignored);
    }

    #[test]
    fn too_large_a_file_is_refused_before_it_is_read() {
        let etc = Etc::new();
        let big = etc.file("big.conf", &"#".repeat((MAX_FILE + 1) as usize));
        let e = read(&Locations { conf: Some((big, "--conf".into())), ..etc.loc() }, "admin", WantKey::Yes).unwrap_err().to_string();
        assert!(e.contains("larger than"), "{e}");
        let e = read(&Locations { conf: Some((etc.0.path().to_path_buf(), "--conf".into())), ..etc.loc() }, "admin", WantKey::Yes).unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
    }

    #[test]
    fn old_style_monitor_sections_give_the_monitors() {
        let etc = Etc::new();
        etc.file("ceph.conf", "[global]\nfsid = f\n[mon.a]\nmon addr = 10.0.0.1:6789\n[mon.b]\nmon addr = 10.0.0.2:6789\n");
        let s = read(&etc.loc(), "admin", WantKey::Yes).unwrap();
        assert_eq!(value(&s, "RBD_CONF_GLOBAL_MON_HOST").unwrap().0, "10.0.0.1:6789,10.0.0.2:6789");
    }

    #[test]
    fn nothing_there_is_no_error_and_says_where_it_looked() {
        let etc = Etc::new();
        let s = read(&etc.loc(), "admin", WantKey::Yes).unwrap();
        assert!(s.values.is_empty() && s.key.is_none());
        assert_eq!(s.looked.len(), 5, "{:?}", s.looked);
        assert!(s.looked[0].ends_with("ceph.conf (not there)"), "{:?}", s.looked);
    }

    #[test]
    fn named_files_that_are_missing_or_wrong_are_errors_naming_them() {
        let etc = Etc::new();
        let missing = etc.0.path().join("nope.conf");
        let loc = Locations { conf: Some((missing.clone(), "--conf".into())), ..etc.loc() };
        let e = read(&loc, "admin", WantKey::Yes).unwrap_err().to_string();
        assert!(e.contains(&missing.display().to_string()) && e.contains("named by --conf"), "{e}");

        let bad = etc.file("bad.conf", "[global]\nmon host = a\nthis is not ini\n");
        let e = read(&Locations { conf: Some((bad.clone(), "--conf".into())), ..etc.loc() }, "admin", WantKey::Yes).unwrap_err().to_string();
        assert_eq!(e, format!("{} line 3: expected 'option = value' or a [section] header", bad.display()));

        let keyring = etc.file("k", &format!("[client.admin]\nkey = {KEY}\n"));
        let e = read(&Locations { keyring: Some((keyring.clone(), "RBDVOL_KEYRING".into())), ..etc.loc() }, "docker", WantKey::Yes).unwrap_err().to_string();
        assert!(e.contains("has no key for client.docker (it holds keys of client.admin)") && e.contains("named by RBDVOL_KEYRING"), "{e}");
        let s = read(&Locations { keyring: Some((keyring.clone(), "RBDVOL_KEYRING".into())), ..etc.loc() }, "docker", WantKey::IfThere).unwrap();
        assert!(s.key.is_none(), "IfThere: no error, no key");
        let e = read(&Locations { keyring: Some((PathBuf::from(KEY), "RBDVOL_KEYRING".into())), ..etc.loc() }, "admin", WantKey::Yes).unwrap_err().to_string();
        assert!(!e.contains(KEY) && e.contains("named by RBDVOL_KEYRING (not an absolute path)"), "{e}");
        let e = read(&Locations { conf: Some((PathBuf::from(KEY), "RBDVOL_CEPH_CONF".into())), ..etc.loc() }, "admin", WantKey::Yes).unwrap_err().to_string();
        assert!(!e.contains(KEY), "{e}");
        let e = read(&Locations { cluster: "my.cluster".into(), ..etc.loc() }, "admin", WantKey::Yes).unwrap_err().to_string();
        assert!(e.contains("RBD_CONF_CLUSTER"), "{e}");
        assert!(!e.contains(KEY), "{e}");

        let binary = etc.0.path().join("keyring.bin");
        std::fs::write(&binary, [0x01u8, 0xff, 0xfe, 0x00]).unwrap();
        let e = read(&etc.loc(), "admin", WantKey::Yes).unwrap_err().to_string();
        assert!(e.contains("keyring.bin") && e.contains("not a text file"), "{e}");
    }

    // Found by the attack pass.

    #[test]
    fn a_key_written_where_a_path_belongs_never_reaches_an_error_or_looked() {
        let etc = Etc::new();
        etc.file("ceph.conf", &format!("[global]\nmon host = m\n[client]\nkeyfile = {KEY}\n"));
        let e = read(&etc.loc(), "admin", WantKey::Yes).unwrap_err().to_string();
        assert!(!e.contains(KEY), "the key is in the error: {e}");
        etc.file("ceph.conf", &format!("[global]\nmon host = m\n[client]\nkeyring = {KEY}\n"));
        let s = read(&etc.loc(), "admin", WantKey::Yes).unwrap();
        assert!(!s.looked.iter().any(|l| l.contains(KEY)), "the key is in looked (config show, doctor, errors): {:?}", s.looked);
    }

    #[test]
    fn a_fifo_as_conf_is_refused_without_hanging() {
        let etc = Etc::new();
        let fifo = etc.0.path().join("fifo.conf");
        assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
        let loc = Locations { conf: Some((fifo, "--conf".into())), ..etc.loc() };
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(read(&loc, "admin", WantKey::Yes).is_err());
        });
        assert_eq!(rx.recv_timeout(std::time::Duration::from_secs(3)), Ok(true), "reading a FIFO named as --conf hangs");
    }

    #[test]
    fn a_keyrings_caps_in_a_conf_are_not_passed_to_librados() {
        // A ceph.conf with the keyring appended (or a keyring given as
        // --conf): `rbd -c` works, rbdvol fails with "ceph option 'caps_mds'
        // is unknown or its value is invalid (errno 2)".
        let etc = Etc::new();
        etc.file("ceph.conf", &format!("[global]\nmon host = m\n[client.admin]\nkey = {KEY}\ncaps mon = \"allow *\"\ncaps osd = \"allow *\"\n"));
        let s = read(&etc.loc(), "admin", WantKey::Yes).unwrap();
        assert!(s.values.iter().all(|v| !v.var.contains("CAPS")), "caps reach librados: {:?}", s.values.iter().map(|v| &v.var).collect::<Vec<_>>());
    }
}
