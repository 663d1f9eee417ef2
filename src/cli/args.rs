//! The arguments the commands share. Each command takes only what it uses:
//! the admin commands `ClusterArgs`, `doctor` also `MapperArgs`, `takeover`
//! also `FenceArgs`, and `serve` all of them and its own.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;

/// The cluster and the user as the Ceph tools (`rbd`, `ceph`, `rados`)
/// take them, before or after the command: a host where `rbd ls` works
/// needs nothing else. The files rank below Consul and the environment.
#[derive(clap::Args, Clone, Default)]
pub struct CephArgs {
    /// The cluster name in the default paths: /etc/ceph/NAME.conf and
    /// /etc/ceph/NAME.client.USER.keyring (default ceph).
    // Checked where the settings resolve, not here: a bad value from a
    // managed plugin's settings must not stop the plugin from starting.
    #[arg(long, global = true, env = "RBD_CONF_CLUSTER", value_name = "NAME")]
    pub cluster: Option<String>,
    /// The cephx user, without `client.` (default admin; ranks above
    /// RBD_CONF_KEYRING_USER).
    #[arg(long = "id", global = true, value_name = "USER", conflicts_with = "name", value_parser = cephx_id)]
    pub id: Option<String>,
    /// The cephx user as `client.USER`.
    #[arg(long, short = 'n', global = true, value_name = "client.USER", value_parser = client_name)]
    pub name: Option<String>,
    /// A ceph.conf (default /etc/ceph/NAME.conf when it is there): its
    /// [global], [client] and [client.USER] options a client uses.
    // Strings, not paths: a managed plugin passes an unset variable as "",
    // which clap's path parser refuses.
    #[arg(long, short = 'c', global = true, env = "RBDVOL_CEPH_CONF", value_name = "PATH")]
    pub conf: Option<String>,
    /// A keyring with the user's key (default: the ceph.conf's `keyring`,
    /// else Ceph's search list in /etc/ceph).
    #[arg(long, short = 'k', global = true, env = "RBDVOL_KEYRING", value_name = "PATH")]
    pub keyring: Option<String>,
}

/// A cephx user id: letters, digits, `.`, `_`, `-` (a usage error
/// otherwise, before anything is read).
pub fn cephx_id(value: &str) -> Result<String, String> {
    let valid = !value.is_empty() && value.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if valid {
        Ok(value.to_string())
    } else {
        Err("a cephx user id is letters, digits, '.', '_' or '-' (e.g. docker)".into())
    }
}

/// `client.USER`: rbdvol connects as a client, never as a daemon.
fn client_name(value: &str) -> Result<String, String> {
    match value.strip_prefix("client.") {
        Some(id) => cephx_id(id).map(|_| value.to_string()),
        None => Err("rbdvol connects as a client: give client.USER (e.g. client.docker)".into()),
    }
}

impl CephArgs {
    /// The flags again, for a child `serve` (the managed plugin's
    /// supervisor): what was given here reaches it.
    pub fn to_args(&self) -> Vec<std::ffi::OsString> {
        let mut args = Vec::new();
        for (flag, value) in [("--cluster", &self.cluster), ("--id", &self.id), ("--name", &self.name), ("--conf", &self.conf), ("--keyring", &self.keyring)] {
            if let Some(v) = non_empty(value) {
                args.push(flag.into());
                args.push(v.into());
            }
        }
        args
    }

    /// The sources these flags make, for a host called `host`.
    pub fn sources(&self, host: &str) -> rbdvol::daemon::CephSources {
        let named = |p: &Option<String>, by: &str| non_empty(p).map(|p| (PathBuf::from(p), by.to_string()));
        let files = rbdvol::config::ceph_files::Locations {
            cluster: non_empty(&self.cluster).map(|c| c.trim().to_string()).unwrap_or_else(|| "ceph".into()),
            conf: named(&self.conf, "--conf or RBDVOL_CEPH_CONF"),
            keyring: named(&self.keyring, "--keyring or RBDVOL_KEYRING"),
            host: host.to_string(),
            ..Default::default()
        };
        let mut flags = BTreeMap::new();
        if let Some(id) = non_empty(&self.id) {
            flags.insert("RBD_CONF_KEYRING_USER".to_string(), (id, "flag --id".to_string()));
        } else if let Some(name) = non_empty(&self.name) {
            flags.insert("RBD_CONF_KEYRING_USER".to_string(), (name, "flag --name".to_string()));
        }
        rbdvol::daemon::CephSources { flags, files }
    }
}

/// This host and the volume defaults: what every command that talks to
/// the cluster needs (and `config show` reports).
#[derive(clap::Args)]
pub struct ClusterArgs {
    /// The Ceph-style flags, given to the whole command line.
    #[arg(skip)]
    pub ceph: CephArgs,
    /// Names this host in locks and image metadata.
    #[arg(long, env = "RBDVOL_HOST_ID")]
    pub host_id: Option<String>,
    /// This host's state (mounted volumes and their containers).
    #[arg(long, env = "RBDVOL_STATE_DIR", default_value = "/var/lib/rbdvol")]
    pub state_dir: PathBuf,
    /// Default pool for new volumes; also holds the volume directory.
    #[arg(long, env = "RBD_CONF_POOL")]
    pub pool: Option<String>,
    /// Default RADOS namespace for new volumes.
    #[arg(long, env = "RBD_CONF_NAMESPACE")]
    pub namespace: Option<String>,
    /// Default size of new volumes (a plain number is MiB; default 512).
    #[arg(long, env = "VOLUME_SIZE")]
    pub default_size: Option<String>,
    /// Default filesystem of new volumes (default ext4).
    #[arg(long, env = "VOLUME_FSTYPE")]
    pub default_fstype: Option<String>,
    /// Default mkfs options (replace ceph-csi's defaults when set).
    #[arg(long, env = "VOLUME_MKFS_OPTIONS")]
    pub default_mkfs_options: Option<String>,
    /// Default mount options.
    #[arg(long, env = "MOUNT_OPTIONS")]
    pub default_mount_options: Option<String>,
    /// Default image features of new volumes (e.g. layering,exclusive-lock).
    #[arg(long, env = "VOLUME_FEATURES")]
    pub default_features: Option<String>,
    /// Map options of the kernel mappers for volumes without their own,
    /// e.g. `krbd:queue_depth=256;nbd:io-timeout=60`.
    #[arg(long, env = "RBDVOL_MAP_OPTIONS")]
    pub default_map_options: Option<String>,
    /// Unmap options likewise (`krbd:force`).
    #[arg(long, env = "RBDVOL_UNMAP_OPTIONS")]
    pub default_unmap_options: Option<String>,
}

/// The mapper: `serve` maps with it, `doctor` checks it.
#[derive(clap::Args)]
pub struct MapperArgs {
    /// Runtime files (the user-space mapper's servers).
    #[arg(long, env = "RBDVOL_RUN_DIR", default_value = "/run/rbdvol")]
    pub run_dir: PathBuf,
    /// auto, krbd, nbd or userspace.
    #[arg(long, env = "RBDVOL_MAPPER", default_value = "auto")]
    pub mapper: String,
    /// sysfs root (for krbd).
    #[arg(long, env = "RBDVOL_SYSFS", default_value = "/sys", hide = true)]
    pub sysfs: PathBuf,
}

/// Fencing: `takeover` fences by hand, `serve` automatically.
#[derive(clap::Args)]
pub struct FenceArgs {
    /// How long, in seconds, a fenced client stays blocklisted unless its
    /// host says it let go first (default 2592000: 30 days).
    #[arg(long, env = "RBDVOL_BLOCKLIST_EXPIRY")]
    pub blocklist_expiry: Option<String>,
}

/// `serve`: Docker's volume plugin protocol on a socket.
#[derive(clap::Args)]
pub struct ServeCommand {
    /// The plugin socket (legacy plugins: /run/docker/plugins/<driver>.sock).
    #[arg(long, env = "RBDVOL_SOCKET", default_value = "/run/docker/plugins/rbd.sock")]
    pub socket: PathBuf,
    #[command(flatten)]
    pub args: ServeArgs,
}

/// `csi`: CSI v1 for Swarm's cluster volumes on a unix socket.
#[derive(clap::Args)]
pub struct CsiCommand {
    /// The CSI endpoint: unix:///PATH or an absolute path.
    #[arg(long, env = "CSI_ENDPOINT", default_value = "unix:///run/docker/plugins/csi.sock")]
    pub endpoint: String,
    /// Where the orchestrator stages volumes (<stage-root>/<id>).
    #[arg(long, env = "RBDVOL_STAGE_ROOT", default_value = "/data/staged")]
    pub stage_root: PathBuf,
    /// Where the orchestrator publishes volumes (<publish-root>/<id>): the
    /// managed plugin's propagated mount.
    #[arg(long, env = "RBDVOL_PUBLISH_ROOT", default_value = "/data/published")]
    pub publish_root: PathBuf,
    #[command(flatten)]
    pub args: ServeArgs,
}

impl CsiCommand {
    /// The endpoint as a socket path; the roots must be absolute.
    pub fn config(self) -> anyhow::Result<rbdvol::daemon::ServeConfig> {
        let path = self.endpoint.strip_prefix("unix://").unwrap_or(&self.endpoint);
        anyhow::ensure!(path.starts_with('/'), "invalid CSI_ENDPOINT '{}': use unix:///PATH (a unix socket)", self.endpoint);
        for (name, root) in [("RBDVOL_STAGE_ROOT", &self.stage_root), ("RBDVOL_PUBLISH_ROOT", &self.publish_root)] {
            anyhow::ensure!(root.is_absolute() && root.parent().is_some(), "invalid {name} '{}': an absolute directory below /", root.display());
        }
        let paths = rbdvol::csi::CsiPaths { stage_root: self.stage_root, publish_root: self.publish_root };
        Ok(self.args.config(PathBuf::from(path), rbdvol::daemon::Front::Csi(paths)))
    }
}

/// `serve` and `csi`: the cluster, the mapper and fencing, and what only a
/// running plugin uses.
#[derive(clap::Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Where volumes are mounted, as <mount-root>/<volume>.
    #[arg(long, env = "RBDVOL_MOUNT_ROOT", default_value = "/var/lib/rbdvol/mnt")]
    pub mount_root: PathBuf,
    #[command(flatten)]
    pub mapper: MapperArgs,
    /// Take over a volume whose holder's Consul session lapsed and whose
    /// clients no longer watch it, fencing the holder first (true/false;
    /// default true; needs Consul).
    #[arg(long, env = "RBDVOL_AUTO_TAKEOVER")]
    pub auto_takeover: Option<String>,
    /// TTL in seconds of this host's Consul session (default 15).
    #[arg(long, env = "RBDVOL_SESSION_TTL")]
    pub session_ttl: Option<String>,
    #[command(flatten)]
    pub fence: FenceArgs,
    /// Seconds between checks of the mounted volumes: taken over by another
    /// host (release), grown (grow the filesystem). Default 5.
    #[arg(long, env = "RBDVOL_CHECK_INTERVAL")]
    pub check_interval: Option<String>,
    /// Seconds a removed volume's image stays in the RBD trash, restorable
    /// with `rbdvol trash restore` (default 0: purged at once, in the
    /// background).
    #[arg(long, env = "RBDVOL_TRASH_DELAY")]
    pub trash_delay: Option<String>,
    /// Serve Prometheus metrics at /metrics on this address: IP:PORT
    /// (:PORT for every address), or unix:PATH (or an absolute path) for a
    /// unix socket. Empty: off (the default).
    #[arg(long, env = "RBDVOL_METRICS_ADDR")]
    pub metrics_addr: Option<String>,
}

impl ClusterArgs {
    /// This host's id: the flag or variable, else the hostname.
    pub fn host_id(&self) -> String {
        non_empty(&self.host_id).unwrap_or_else(rbdvol::host::sys::hostname)
    }

    /// The cluster's sources other than the environment and Consul.
    pub fn ceph_sources(&self) -> rbdvol::daemon::CephSources {
        self.ceph.sources(&rbdvol::host::sys::hostname())
    }

    /// The flag-or-environment values clap found for the volume defaults.
    pub fn flag_sources(&self) -> BTreeMap<String, String> {
        [
            ("RBD_CONF_POOL", &self.pool),
            ("RBD_CONF_NAMESPACE", &self.namespace),
            ("VOLUME_SIZE", &self.default_size),
            ("VOLUME_FSTYPE", &self.default_fstype),
            ("VOLUME_MKFS_OPTIONS", &self.default_mkfs_options),
            ("MOUNT_OPTIONS", &self.default_mount_options),
            ("VOLUME_FEATURES", &self.default_features),
            ("RBDVOL_MAP_OPTIONS", &self.default_map_options),
            ("RBDVOL_UNMAP_OPTIONS", &self.default_unmap_options),
        ]
        .into_iter()
        .filter_map(|(n, v)| non_empty(v).map(|v| (n.to_string(), v)))
        .collect()
    }
}

impl FenceArgs {
    pub fn blocklist_expiry(&self) -> Result<Duration> {
        Ok(rbdvol::daemon::blocklist_expiry(&self.blocklist_expiry)?)
    }
}

impl ServeArgs {
    /// What `serve` runs with.
    pub fn config(self, socket: PathBuf, front: rbdvol::daemon::Front) -> rbdvol::daemon::ServeConfig {
        rbdvol::daemon::ServeConfig {
            front,
            host_id: self.cluster.host_id(),
            flags: self.cluster.flag_sources(),
            ceph: self.cluster.ceph_sources(),
            socket,
            state_dir: self.cluster.state_dir,
            mount_root: self.mount_root,
            run_dir: self.mapper.run_dir,
            mapper: self.mapper.mapper,
            sysfs: self.mapper.sysfs,
            auto_takeover: self.auto_takeover,
            session_ttl: self.session_ttl,
            blocklist_expiry: self.fence.blocklist_expiry,
            check_interval: self.check_interval,
            trash_delay: self.trash_delay,
            metrics_addr: self.metrics_addr,
        }
    }
}

/// A managed plugin passes unset variables as empty strings.
fn non_empty(value: &Option<String>) -> Option<String> {
    value.clone().filter(|v| !v.trim().is_empty())
}
