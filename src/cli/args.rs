//! The arguments the commands share. Each command takes only what it uses:
//! the admin commands `ClusterArgs`, `doctor` also `MapperArgs`, `takeover`
//! also `FenceArgs`, and `serve` all of them and its own.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;

/// This host and the volume defaults: what every command that talks to
/// the cluster needs (and `config show` reports).
#[derive(clap::Args)]
pub struct ClusterArgs {
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

/// `serve`: the cluster, the mapper and fencing, and what only a running
/// plugin uses.
#[derive(clap::Args)]
pub struct ServeArgs {
    /// The plugin socket (legacy plugins: /run/docker/plugins/<driver>.sock).
    #[arg(long, env = "RBDVOL_SOCKET", default_value = "/run/docker/plugins/rbd.sock")]
    pub socket: PathBuf,
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
    pub fn config(self) -> rbdvol::daemon::ServeConfig {
        rbdvol::daemon::ServeConfig {
            host_id: self.cluster.host_id(),
            flags: self.cluster.flag_sources(),
            socket: self.socket,
            state_dir: self.cluster.state_dir,
            mount_root: self.mount_root,
            run_dir: self.mapper.run_dir,
            mapper: self.mapper.mapper,
            sysfs: self.mapper.sysfs,
            auto_takeover: self.auto_takeover,
            session_ttl: self.session_ttl,
            blocklist_expiry: self.fence.blocklist_expiry,
            check_interval: self.check_interval,
            metrics_addr: self.metrics_addr,
        }
    }
}

/// A managed plugin passes unset variables as empty strings.
fn non_empty(value: &Option<String>) -> Option<String> {
    value.clone().filter(|v| !v.trim().is_empty())
}
