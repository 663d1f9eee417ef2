//! The command line: its definition and dispatch. Each command's work is in
//! its own module; `serve` is the library's daemon.

mod admin;
mod args;
mod check;
mod config;
mod doctor;
mod output;

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use args::ServeArgs;

#[derive(Parser)]
#[command(name = "rbdvol", version, about = "Docker volume plugin for Ceph RBD")]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
pub enum ConsulCommand {
    /// Write rbdvol's settings to Consul (CONSUL_HTTP_ADDR, CONSUL_HTTP_TOKEN,
    /// RBDVOL_CONSUL_PREFIX): from a ceph.conf and a keyring, or, without
    /// --conf, from this environment's RBD_CONF_* and volume defaults.
    Seed {
        /// A ceph.conf: its [global] and [client] options a client uses.
        #[arg(long, requires = "keyring")]
        conf: Option<PathBuf>,
        /// A keyring holding the user's key.
        #[arg(long)]
        keyring: Option<PathBuf>,
        /// The user whose key to take from the keyring (default: its first).
        #[arg(long)]
        user: Option<String>,
    },
}

#[derive(Subcommand)]
pub enum SnapshotCommand {
    Create {
        /// VOL@SNAP
        target: String,
        /// JSON for scripts.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        settings: ServeArgs,
    },
    Ls {
        volume: String,
        /// JSON for scripts.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        settings: ServeArgs,
    },
    Rm {
        /// VOL@SNAP
        target: String,
        /// JSON for scripts.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        settings: ServeArgs,
    },
}

#[derive(Subcommand)]
pub enum ConfigCommand {
    /// The effective settings, with their sources.
    Show(ServeArgs),
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the Docker volume plugin on its socket.
    Serve(ServeArgs),
    /// Print the effective settings and where each comes from (built-in
    /// default, Consul, environment or flag); the key is never shown.
    Config {
        #[command(subcommand)]
        what: ConfigCommand,
    },
    /// List the volumes: name, pool, size, used, fstype, the host that has
    /// it, and whether it is mapped on this host.
    Ls {
        /// JSON for scripts.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        settings: ServeArgs,
    },
    /// One volume in detail, as JSON.
    Inspect {
        volume: String,
        #[command(flatten)]
        settings: ServeArgs,
    },
    /// Break a stale host lock (a host that died with the volume mounted)
    /// without mapping anything. Refused while the holder still has the
    /// image open, unless --force.
    Unlock {
        volume: String,
        /// Break it even though the holder still watches the image.
        #[arg(long)]
        force: bool,
        /// JSON for scripts.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        settings: ServeArgs,
    },
    /// Diagnose this host and the cluster: mapper, tools, capabilities,
    /// settings, monitors, auth, consul, image features, leftovers. Exits 1
    /// when a check fails (warnings allowed).
    Doctor {
        /// JSON for scripts: {"checks":[{"name","status","detail"}],"ok":bool}.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        settings: ServeArgs,
    },
    /// Fence the host that holds a volume (blocklist its clients, break its
    /// lock, wait for its watches to go) and hold the volume for this host,
    /// whose plugin mounts it next. For a host known to be dead or cut off.
    Takeover {
        volume: String,
        /// JSON for scripts.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        settings: ServeArgs,
    },
    /// Grow a volume: its filesystem grows online on the host that has it
    /// mounted (within RBDVOL_CHECK_INTERVAL), else at its next mount.
    /// Shrinking is refused.
    Resize {
        volume: String,
        /// The new size (a plain number is MiB; K/M/G/T suffixes).
        size: String,
        /// JSON for scripts.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        settings: ServeArgs,
    },
    /// Snapshots of a volume: create VOL@SNAP, ls VOL, rm VOL@SNAP.
    Snapshot {
        #[command(subcommand)]
        what: SnapshotCommand,
    },
    /// Consul: seed rbdvol's settings.
    Consul {
        #[command(subcommand)]
        what: ConsulCommand,
    },
    /// Internal: the user-space mapper's server for one image.
    #[command(hide = true)]
    UserspaceServe,
    /// The managed plugin's entrypoint: `serve` under a supervisor that
    /// restarts it if it dies, so its user-space servers (and the I/O of
    /// the containers on them) outlive a crash.
    Plugin {
        /// Arguments for `serve`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
    /// Connect to the cluster with the settings from the environment
    /// (RBD_CONF_GLOBAL_MON_HOST, RBD_CONF_KEYRING_USER, RBD_CONF_KEYRING_KEY,
    /// RBD_CONF_<SECTION>_<OPTION>) and report what rbdvol sees.
    Check {
        /// Pool to check.
        #[arg(long, env = "RBD_CONF_POOL", default_value = "rbd")]
        pool: String,
        /// RADOS namespace in the pool.
        #[arg(long, env = "RBD_CONF_NAMESPACE", default_value = "")]
        namespace: String,
        /// Also create, grow, tag and remove a small probe image.
        #[arg(long)]
        write: bool,
    },
}

/// Runs one command line.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Check { pool, namespace, write } => check::check(&pool, &namespace, write),
        Command::Serve(args) => Ok(rbdvol::daemon::serve(args.config())?),
        Command::UserspaceServe => Ok(rbdvol::host::fusefs::serve()?),
        Command::Config { what: ConfigCommand::Show(args) } => config::config_show(&args),
        Command::Ls { json, settings } => admin::ls(&settings, json),
        Command::Doctor { json, settings } => doctor::doctor(&settings, json),
        Command::Resize { volume, size, json, settings } => admin::resize(&volume, &size, json, &settings),
        Command::Snapshot { what } => match what {
            SnapshotCommand::Create { target, json, settings } => admin::snapshot_create(&target, json, &settings),
            SnapshotCommand::Ls { volume, json, settings } => admin::snapshot_ls(&volume, json, &settings),
            SnapshotCommand::Rm { target, json, settings } => admin::snapshot_rm(&target, json, &settings),
        },
        Command::Inspect { volume, settings } => admin::inspect(&volume, &settings),
        Command::Takeover { volume, json, settings } => admin::takeover(&volume, json, &settings),
        Command::Unlock { volume, force, json, settings } => admin::unlock(&volume, force, json, &settings),
        Command::Consul { what: ConsulCommand::Seed { conf, keyring, user } } => config::consul_seed(conf, keyring, user),
        Command::Plugin { args } => {
            let exe = std::env::current_exe().context("locating the rbdvol binary")?;
            let serve: Vec<std::ffi::OsString> = std::iter::once("serve".into()).chain(args).collect();
            let code = rbdvol::host::supervise::run(&exe, &serve)?;
            std::process::exit(code)
        }
    }
}
