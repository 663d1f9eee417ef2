//! `rbdvol doctor`: what stands between this host and working volumes.
//! Host checks (mapper, tools, capabilities, leftovers) always run; the
//! cluster checks run when the settings resolve and the monitors answer,
//! and are reported as skipped (with why) otherwise. Each check says what
//! to do when it is not ok. The cephx key is never part of any detail.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use super::directory::read_directory;
use super::records::EntryState;
use super::{settings_to_fix, EngineError};
use crate::ceph::{features_to_string, CephError, Cluster};
use crate::config::consul::{Consul, ConsulSettings};
use crate::config::{CephSettings, ConfigError};
use crate::host::mapper::{krbd, MapperConfig, MapperKind};
use crate::host::probe::{self, CAP_SYS_ADMIN, CAP_SYS_MODULE};
use crate::host::sys::{self, MountEntry};
use crate::host::tools::{Tool, Tools};
use crate::state::{MountedVolume, StateStore};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warn,
    Fail,
    /// Not run: a check it depends on failed (the detail says which).
    Skip,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "fail",
            Status::Skip => "skip",
        }
    }
}

/// One line of the diagnosis.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Check {
    pub name: String,
    pub status: Status,
    /// One line; when not ok, what to do.
    pub detail: String,
}

impl Check {
    fn new(name: &str, status: Status, detail: impl Into<String>) -> Check {
        Check { name: name.to_string(), status, detail: detail.into() }
    }
}

/// Whether a diagnosis has no failure (warnings are allowed).
pub fn all_ok(checks: &[Check]) -> bool {
    checks.iter().all(|c| c.status != Status::Fail)
}

/// What `rbdvol doctor --json` prints.
#[derive(Debug, serde::Serialize)]
pub struct Report<'a> {
    pub checks: &'a [Check],
    pub ok: bool,
}

/// What the diagnosis looks at: the same settings `serve` runs with.
pub struct DoctorInput {
    /// `auto`, `krbd`, `nbd` or `userspace` (`--mapper`).
    pub mapper: String,
    pub mapper_config: MapperConfig,
    pub state_dir: PathBuf,
    /// The cookie of this host's host locks.
    pub host_id: String,
    pub settings: Result<CephSettings, ConfigError>,
    /// Where the monitors, the user and the key came from (a variable, a
    /// flag, a Consul key, a file and line), as `config show` says.
    pub origins: SettingOrigins,
    /// The default pool, which holds the volume directory.
    pub dir_pool: String,
    /// `None` without CONSUL_HTTP_ADDR.
    pub consul: Option<ConsulSettings>,
}

/// Where each cluster setting came from, and the files looked at.
#[derive(Debug, Clone, Default)]
pub struct SettingOrigins {
    pub mon_host: String,
    pub user: String,
    pub key: String,
    pub looked: Vec<String>,
}

/// Runs every check. Never fails: a check that cannot run says so.
pub fn run(input: &DoctorInput) -> Vec<Check> {
    let mut checks = Vec::new();
    let tools = Tools::look_up();

    let mapper = match probe::probe_mapper(&input.mapper, &input.mapper_config, &tools) {
        Ok(p) => {
            checks.push(match &p.usable {
                Ok(()) => Check::new("mapper", Status::Ok, format!("{} ({})", p.kind.as_str(), p.why)),
                Err(what) => Check::new("mapper", Status::Fail, format!("{}: {what}", p.kind.as_str())),
            });
            Some(p.kind)
        }
        Err(e) => {
            checks.push(Check::new("mapper", Status::Fail, e));
            None
        }
    };
    checks.push(tools_check(&Tool::ALL.map(|t| (t, tools.has(t)))));
    checks.push(match probe::effective_caps() {
        Ok(mask) => capabilities_check(mask),
        Err(e) => Check::new("capabilities", Status::Warn, format!("cannot read this process's capabilities: {e}")),
    });

    let cluster = cluster_checks(input, &mut checks);
    checks.push(consul_check(input.consul.as_ref()));

    // What this host has mounted (by its own state) and what is mounted.
    let state = load_state(input);
    let mounts = sys::mounts();
    let volumes = match &cluster {
        Ok(c) => Ok(volumes_check(c, &input.dir_pool, &mut checks)),
        Err(why) => Err(why.clone()),
    };
    let volumes = volumes.and_then(|v| v.ok_or_else(|| "the volume directory could not be read (see volumes)".to_string()));

    checks.push(match (&volumes, mapper) {
        (Err(why), _) => Check::new("features", Status::Skip, why.clone()),
        (Ok(_), None) => Check::new("features", Status::Skip, "no valid mapper (see mapper)"),
        (Ok(vols), Some(MapperKind::Krbd)) => features_check(vols, krbd::supported_features(&input.mapper_config.sysfs)),
        (Ok(_), Some(kind)) => Check::new("features", Status::Ok, format!("the {} mapper maps every image feature (librbd)", kind.as_str())),
    });

    checks.push(match (&state, &mounts) {
        (Err(e), _) => Check::new("stale-mounts", Status::Warn, format!("cannot read this host's state: {e}")),
        (_, Err(e)) => Check::new("stale-mounts", Status::Warn, format!("cannot read this host's mounts: {e}")),
        (Ok(state), Ok(mounts)) => stale_mounts_check(state, mounts),
    });
    checks.push(stale_loops_check(&probe::dead_userspace_loops()));
    checks.push(match (&volumes, &state) {
        (Err(why), _) => Check::new("stale-locks", Status::Skip, why.clone()),
        (_, Err(e)) => Check::new("stale-locks", Status::Skip, format!("cannot read this host's state: {e}")),
        (Ok(vols), Ok(state)) => stale_locks_check(vols, state, &input.host_id),
    });
    checks
}

// ---- host ------------------------------------------------------------------

/// Required tools missing: fail; the xfs tools: warn; the rest (btrfs,
/// modprobe, rbd-nbd) only matter for optional paths and are just named.
fn tools_check(found: &[(Tool, bool)]) -> Check {
    let missing: Vec<Tool> = found.iter().filter(|(_, f)| !f).map(|(t, _)| *t).collect();
    let named = |tools: &[Tool]| tools.iter().map(|t| format!("{} ({})", t.program(), t.hint())).collect::<Vec<_>>().join(", ");
    let required: Vec<Tool> = missing.iter().copied().filter(|t| t.required()).collect();
    let xfs: Vec<Tool> = missing.iter().copied().filter(|t| matches!(t, Tool::MkfsXfs | Tool::XfsGrowfs)).collect();
    let optional: Vec<&str> = missing.iter().filter(|t| !t.required() && !xfs.contains(t)).map(|t| t.program()).collect();
    let optional = if optional.is_empty() { String::new() } else { format!("; not installed (optional): {}", optional.join(", ")) };
    if !required.is_empty() {
        Check::new("tools", Status::Fail, format!("missing, rbdvol cannot work without: {}{optional}", named(&required)))
    } else if !xfs.is_empty() {
        Check::new("tools", Status::Warn, format!("missing, xfs volumes cannot be made or grown: {}{optional}", named(&xfs)))
    } else {
        Check::new("tools", Status::Ok, format!("all required tools found{optional}"))
    }
}

fn capabilities_check(mask: u64) -> Check {
    if !probe::has_cap(mask, CAP_SYS_ADMIN) {
        return Check::new(
            "capabilities",
            Status::Fail,
            "CAP_SYS_ADMIN is missing (mount, loop devices, krbd): run rbdvol as root with CAP_SYS_ADMIN (managed plugin: it is in config.json)",
        );
    }
    if !probe::has_cap(mask, CAP_SYS_MODULE) {
        return Check::new(
            "capabilities",
            Status::Warn,
            "CAP_SYS_ADMIN present; CAP_SYS_MODULE missing: rbdvol cannot load the rbd or nbd module itself (modprobe rbd on the host, or grant CAP_SYS_MODULE)",
        );
    }
    Check::new("capabilities", Status::Ok, "CAP_SYS_ADMIN and CAP_SYS_MODULE present")
}

fn load_state(input: &DoctorInput) -> Result<Vec<MountedVolume>, String> {
    match StateStore::open_existing(input.state_dir.join("volumes")) {
        None => Ok(Vec::new()),
        Some(store) => store.load_all().map_err(|e| e.to_string()),
    }
}

/// Volumes this host's state says are mounted, whose mount is gone (the
/// same test `serve` makes at start before cleaning up).
fn stale_mounts_check(state: &[MountedVolume], mounts: &[MountEntry]) -> Check {
    let stale: Vec<String> = state
        .iter()
        .filter(|v| !mounts.iter().any(|m| m.target == v.mountpoint && std::path::Path::new(&m.source) == v.device))
        .map(|v| format!("'{}' ({} on {})", v.name, v.device.display(), v.mountpoint.display()))
        .collect();
    if stale.is_empty() {
        Check::new("stale-mounts", Status::Ok, format!("{} volume(s) mounted here, all in the mount table", state.len()))
    } else {
        Check::new(
            "stale-mounts",
            Status::Warn,
            format!("recorded as mounted here but not mounted: {}: restart rbdvol serve (it cleans them up at start)", stale.join(", ")),
        )
    }
}

fn stale_loops_check(dead: &[(PathBuf, PathBuf)]) -> Check {
    if dead.is_empty() {
        return Check::new("stale-loops", Status::Ok, "no loop device on a dead user-space server");
    }
    let devs: Vec<String> = dead.iter().map(|(d, b)| format!("{} ({})", d.display(), b.display())).collect();
    Check::new(
        "stale-loops",
        Status::Warn,
        format!("loop devices whose user-space server died: {}: restart rbdvol serve (it detaches them), or unmount what uses them and losetup -d them", devs.join(", ")),
    )
}

// ---- cluster ---------------------------------------------------------------

/// settings, monitors and auth; the connection, or why there is none.
fn cluster_checks(input: &DoctorInput, checks: &mut Vec<Check>) -> Result<Cluster, String> {
    if !input.origins.looked.is_empty() {
        checks.push(Check::new("ceph files", Status::Ok, input.origins.looked.join(", ")));
    }
    let settings = match &input.settings {
        Ok(s) => {
            let o = &input.origins;
            let from = |what: &str| if what.is_empty() { String::new() } else { format!(" (from {what})") };
            checks.push(Check::new(
                "settings",
                Status::Ok,
                format!("monitors {}{}, user client.{}{}, key set{}", s.mon_host, from(&o.mon_host), s.user, from(&o.user), from(&o.key)),
            ));
            s
        }
        Err(e) => {
            checks.push(Check::new("settings", Status::Fail, e.to_string()));
            let why = "the cluster settings do not resolve (see settings)".to_string();
            checks.push(Check::new("monitors", Status::Skip, why.clone()));
            checks.push(Check::new("auth", Status::Skip, why.clone()));
            return Err(why);
        }
    };
    let (monitors, auth, cluster) = connect_checks(settings, Cluster::connect(settings));
    checks.push(monitors);
    checks.push(auth);
    cluster
}

fn connect_checks(settings: &CephSettings, connected: Result<Cluster, CephError>) -> (Check, Check, Result<Cluster, String>) {
    match connected {
        Ok(c) => (
            Check::new("monitors", Status::Ok, format!("connected to {}", settings.mon_host)),
            Check::new("auth", Status::Ok, format!("client.{} authenticated", settings.user)),
            Ok(c),
        ),
        // The monitors answered, and refused the key.
        Err(e @ CephError::Auth { .. }) => (
            Check::new("monitors", Status::Ok, format!("the monitors at {} answer", settings.mon_host)),
            Check::new("auth", Status::Fail, format!("{e}; settings to fix: {}", settings_to_fix(&e))),
            Err("authentication failed (see auth)".into()),
        ),
        Err(e) => (
            Check::new("monitors", Status::Fail, format!("{e}; settings to fix: {}", settings_to_fix(&e))),
            Check::new("auth", Status::Skip, "no connection to the monitors (see monitors)"),
            Err("no connection to the cluster (see monitors)".into()),
        ),
    }
}

/// One volume as the cluster checks need it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Volume {
    name: String,
    /// `Err`: why the image could not be read.
    features: Result<u64, String>,
    /// Cookies (host ids) of the host lock's holders.
    holders: Vec<String>,
}

/// Reads the volume directory and each volume's features and host lock.
/// `None` (with a failed `volumes` check) when the directory is unreadable.
fn volumes_check(cluster: &Cluster, dir_pool: &str, checks: &mut Vec<Check>) -> Option<Vec<Volume>> {
    let dir = match cluster.open_pool(dir_pool, "") {
        Ok(pool) => read_directory(&pool).map_err(EngineError::from),
        Err(e) => Err(EngineError::from(e)),
    };
    let dir = match dir {
        Ok(d) => d,
        Err(e) => {
            checks.push(Check::new("volumes", Status::Fail, format!("reading the volume directory in pool '{dir_pool}': {e}")));
            return None;
        }
    };
    let mut volumes = Vec::new();
    let mut unreadable = Vec::new();
    for (name, entry) in dir.into_iter().filter(|(_, e)| e.state == EntryState::Ready) {
        let read = || -> Result<(u64, Vec<String>), String> {
            let ceph = |e: CephError| e.to_string();
            let image = cluster.open_pool(&entry.pool, &entry.namespace).and_then(|p| p.open_image_read_only(entry.image(&name))).map_err(ceph)?;
            let holders = image.header().and_then(|h| h.host_lockers()).map_err(ceph)?.lockers.into_iter().map(|l| super::records::lock_host(&l.cookie).to_string()).collect();
            Ok((image.features().map_err(ceph)?, holders))
        };
        match read() {
            Ok((features, holders)) => volumes.push(Volume { name, features: Ok(features), holders }),
            Err(e) => {
                unreadable.push(format!("'{name}': {e}"));
                volumes.push(Volume { name, features: Err(e), holders: Vec::new() });
            }
        }
    }
    checks.push(if unreadable.is_empty() {
        Check::new("volumes", Status::Ok, format!("{} volume(s) in the directory in pool '{dir_pool}'", volumes.len()))
    } else {
        Check::new("volumes", Status::Warn, format!("cannot read {}: check the images with rbd info", unreadable.join("; ")))
    });
    Some(volumes)
}

/// The feature bits of `image` the kernel cannot map.
fn missing_features(image: u64, supported: u64) -> u64 {
    image & !supported
}

/// With krbd: volumes whose image has features the kernel cannot map.
fn features_check(volumes: &[Volume], supported: Option<u64>) -> Check {
    let Some(supported) = supported else {
        return Check::new("features", Status::Ok, "the kernel does not list its supported rbd features: not checked");
    };
    let unmappable: Vec<String> = volumes
        .iter()
        .filter_map(|v| {
            let missing = missing_features(*v.features.as_ref().ok()?, supported);
            (missing != 0).then(|| format!("'{}' needs {}", v.name, features_to_string(missing)))
        })
        .collect();
    if unmappable.is_empty() {
        Check::new("features", Status::Ok, format!("the kernel maps the features of every volume ({} checked)", volumes.len()))
    } else {
        Check::new(
            "features",
            Status::Warn,
            format!(
                "this kernel cannot map: {} (it supports {}): disable those features (rbd feature disable), or use RBDVOL_MAPPER=nbd or userspace",
                unmappable.join(", "),
                features_to_string(supported)
            ),
        )
    }
}

/// Host locks with this host's id on volumes this host has not mounted.
fn stale_locks_check(volumes: &[Volume], state: &[MountedVolume], host_id: &str) -> Check {
    let mounted: BTreeSet<&str> = state.iter().map(|v| v.name.as_str()).collect();
    let stale: Vec<&str> =
        volumes.iter().filter(|v| v.holders.iter().any(|h| h == host_id) && !mounted.contains(v.name.as_str())).map(|v| v.name.as_str()).collect();
    match stale.as_slice() {
        [] => Check::new("stale-locks", Status::Ok, format!("no host lock of '{host_id}' without a mount here")),
        names => Check::new(
            "stale-locks",
            Status::Warn,
            format!(
                "host '{host_id}' holds the lock of {} but has not mounted it: {}",
                names.iter().map(|n| format!("'{n}'")).collect::<Vec<_>>().join(", "),
                names.iter().map(|n| format!("run rbdvol unlock {n}")).collect::<Vec<_>>().join("; ")
            ),
        ),
    }
}

// ---- consul ----------------------------------------------------------------

const CONSUL_TIMEOUT: Duration = Duration::from_secs(10);

fn consul_check(settings: Option<&ConsulSettings>) -> Check {
    let Some(settings) = settings else { return Check::new("consul", Status::Ok, "not configured (CONSUL_HTTP_ADDR is unset)") };
    let (addr, prefix) = (settings.addr.clone(), settings.prefix.clone());
    let client = match Consul::new(settings.clone()) {
        Ok(c) => c,
        Err(e) => return Check::new("consul", Status::Fail, e.to_string()),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => return Check::new("consul", Status::Fail, format!("cannot start a runtime to ask consul: {e}")),
    };
    let key = "conf/global/mon_host";
    match runtime.block_on(async { tokio::time::timeout(CONSUL_TIMEOUT, client.get(key)).await }) {
        Err(_) => Check::new("consul", Status::Fail, format!("consul at {addr} did not answer within {} s: check CONSUL_HTTP_ADDR", CONSUL_TIMEOUT.as_secs())),
        Ok(Ok(Some(_))) => Check::new("consul", Status::Ok, format!("consul at {addr} answers; settings under {prefix}")),
        Ok(Ok(None)) => Check::new("consul", Status::Ok, format!("consul at {addr} answers; no {prefix}{key} (seed it with rbdvol consul seed, or keep the settings in the environment)")),
        Ok(Err(e)) => Check::new("consul", Status::Fail, e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vol(name: &str, features: u64, holders: &[&str]) -> Volume {
        Volume { name: name.into(), features: Ok(features), holders: holders.iter().map(|h| h.to_string()).collect() }
    }

    fn mounted(name: &str) -> MountedVolume {
        MountedVolume {
            name: name.into(),
            pool: "rbd".into(),
            namespace: String::new(),
            image: name.into(),
            image_id: None,
            mapper: "userspace".into(),
            device: "/dev/loop3".into(),
            mountpoint: format!("/var/lib/rbdvol/mnt/{name}").into(),
            fstype: "ext4".into(),
            refs: Default::default(),
            unanswered: Default::default(),
            read_only: false,
            mapped_with: Default::default(),
        }
    }

    #[test]
    fn missing_features_are_the_bits_the_kernel_lacks() {
        // layering 1, exclusive-lock 4, object-map 8, fast-diff 16, deep-flatten 32
        assert_eq!(missing_features(1 | 4 | 8 | 16 | 32, 1 | 4 | 32), 8 | 16);
        assert_eq!(missing_features(1, 0x3f), 0);
    }

    #[test]
    fn features_check_names_the_volume_only_when_the_kernel_lacks_something() {
        // Bits only (no librbd name lookup): an all-supported set is ok.
        let vols = [vol("a", 1, &[]), vol("b", 1 | 4, &[])];
        assert_eq!(features_check(&vols, Some(0xff)).status, Status::Ok);
        assert_eq!(features_check(&vols, None).status, Status::Ok);
        let vols = [vol("a", 1, &[]), vol("c", 1 | 8 | 16, &[])];
        let c = features_check(&vols, Some(1 | 4));
        assert_eq!(c.status, Status::Warn);
        assert!(c.detail.contains("'c' needs fast-diff,object-map") && !c.detail.contains("'a'"), "{}", c.detail);
    }

    #[test]
    fn tools_severity() {
        let all = |missing: &[Tool]| Tool::ALL.map(|t| (t, !missing.contains(&t)));
        assert_eq!(tools_check(&all(&[])).status, Status::Ok);
        let c = tools_check(&all(&[Tool::RbdNbd, Tool::MkfsBtrfs]));
        assert_eq!(c.status, Status::Ok);
        assert!(c.detail.contains("rbd-nbd"), "{}", c.detail);
        let c = tools_check(&all(&[Tool::MkfsXfs]));
        assert_eq!(c.status, Status::Warn);
        assert!(c.detail.contains("mkfs.xfs (apt-get install xfsprogs)"), "{}", c.detail);
        for t in [Tool::MkfsExt4, Tool::Blkid] {
            let c = tools_check(&all(&[t, Tool::MkfsXfs]));
            assert_eq!(c.status, Status::Fail, "{t:?}");
            assert!(c.detail.contains(t.program()), "{}", c.detail);
        }
    }

    #[test]
    fn capabilities_severity() {
        assert_eq!(capabilities_check(1 << CAP_SYS_ADMIN | 1 << CAP_SYS_MODULE).status, Status::Ok);
        assert_eq!(capabilities_check(1 << CAP_SYS_ADMIN).status, Status::Warn);
        let c = capabilities_check(1 << CAP_SYS_MODULE);
        assert_eq!(c.status, Status::Fail);
        assert!(c.detail.contains("CAP_SYS_ADMIN"));
    }

    #[test]
    fn stale_mounts_are_state_entries_without_their_mount() {
        let m = |target: &str, source: &str| MountEntry { source: source.into(), target: target.into(), fstype: "ext4".into(), dev: "7:3".into() };
        let state = [mounted("a"), mounted("b")];
        let mounts = [m("/var/lib/rbdvol/mnt/a", "/dev/loop3"), m("/var/lib/rbdvol/mnt/b", "/dev/loop9")];
        let c = stale_mounts_check(&state, &mounts);
        assert_eq!(c.status, Status::Warn);
        assert!(c.detail.contains("'b'") && !c.detail.contains("'a'"), "{}", c.detail);
        let mounts = [m("/var/lib/rbdvol/mnt/a", "/dev/loop3"), m("/var/lib/rbdvol/mnt/b", "/dev/loop3")];
        assert_eq!(stale_mounts_check(&state, &mounts).status, Status::Ok);
    }

    #[test]
    fn stale_locks_are_our_locks_without_our_mount() {
        let vols = [vol("a", 1, &["me"]), vol("b", 1, &["me"]), vol("c", 1, &["other"]), vol("d", 1, &[])];
        let c = stale_locks_check(&vols, &[mounted("a")], "me");
        assert_eq!(c.status, Status::Warn);
        assert!(c.detail.contains("run rbdvol unlock b"), "{}", c.detail);
        assert!(!c.detail.contains("unlock a") && !c.detail.contains("unlock c"), "{}", c.detail);
        assert_eq!(stale_locks_check(&vols, &[mounted("a"), mounted("b")], "me").status, Status::Ok);
    }

    #[test]
    fn stale_loops_say_what_to_do() {
        assert_eq!(stale_loops_check(&[]).status, Status::Ok);
        let c = stale_loops_check(&[("/dev/loop4".into(), "/run/rbdvol/userspace/x/fuse/disk".into())]);
        assert_eq!(c.status, Status::Warn);
        assert!(c.detail.contains("/dev/loop4") && c.detail.contains("losetup -d"), "{}", c.detail);
    }

    #[test]
    fn consul_unset_is_ok() {
        let c = consul_check(None);
        assert_eq!((c.status, c.detail.as_str()), (Status::Ok, "not configured (CONSUL_HTTP_ADDR is unset)"));
    }

    #[test]
    fn consul_unreachable_fails_naming_it() {
        let settings = ConsulSettings::from_vars([("CONSUL_HTTP_ADDR".to_string(), "127.0.0.1:1".to_string())]).unwrap();
        let c = consul_check(Some(&settings));
        assert_eq!(c.status, Status::Fail);
        assert!(c.detail.contains("127.0.0.1:1"), "{}", c.detail);
    }

    #[test]
    fn a_diagnosis_fails_only_on_fail() {
        let c = |s| Check::new("x", s, "");
        assert!(all_ok(&[c(Status::Ok), c(Status::Warn), c(Status::Skip)]));
        assert!(!all_ok(&[c(Status::Ok), c(Status::Fail)]));
        let json = serde_json::to_value(c(Status::Warn)).unwrap();
        assert_eq!(json, serde_json::json!({"name": "x", "status": "warn", "detail": ""}));
    }
}
