//! The command line: its definition and dispatch. Each command's work is in
//! its own module; `serve` is the library's daemon.

mod admin;
mod args;
mod check;
mod config;
mod doctor;
mod output;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use args::{CephArgs, ClusterArgs, CsiCommand, FenceArgs, MapperArgs, ServeCommand};

#[derive(Parser)]
#[command(name = "rbdvol", version, about = "Docker volume plugin for Ceph RBD")]
pub struct Cli {
    #[command(flatten)]
    ceph: CephArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
pub enum ConsulCommand {
    /// Write rbdvol's settings to Consul (CONSUL_HTTP_ADDR, CONSUL_HTTP_TOKEN,
    /// RBDVOL_CONSUL_PREFIX): from a ceph.conf (--conf: its [global] and
    /// [client] options a client uses) and a keyring (--keyring), or,
    /// without --conf, from this environment's RBD_CONF_* and volume
    /// defaults.
    Seed {
        /// The user whose key to take from the keyring (default: --id, else
        /// the keyring's first).
        #[arg(long, value_parser = args::cephx_id)]
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
        cluster: ClusterArgs,
    },
    Ls {
        volume: String,
        /// JSON for scripts.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    Rm {
        /// VOL@SNAP
        target: String,
        /// JSON for scripts.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
}

#[derive(Subcommand)]
pub enum TrashCommand {
    /// The removed volumes whose images are still in the trash
    /// (RBDVOL_TRASH_DELAY), with when each is purged.
    Ls {
        /// JSON for scripts.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Brings a removed volume back from the trash, with its data and
    /// metadata, for Docker on every host.
    Restore {
        volume: String,
        /// JSON for scripts.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
}

#[derive(Subcommand)]
pub enum ConfigCommand {
    /// The effective settings, with their sources.
    Show(ClusterArgs),
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the Docker volume plugin on its socket.
    Serve(ServeCommand),
    /// Serve CSI v1 for Docker Swarm's cluster volumes (docker volume create
    /// --type mount ...) on CSI_ENDPOINT: the same engine as serve.
    Csi(CsiCommand),
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
        cluster: ClusterArgs,
    },
    /// One volume in detail, as JSON.
    Inspect {
        volume: String,
        #[command(flatten)]
        cluster: ClusterArgs,
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
        cluster: ClusterArgs,
    },
    /// Diagnose this host and the cluster: mapper, tools, capabilities,
    /// settings, monitors, auth, consul, image features, leftovers. Exits 1
    /// when a check fails (warnings allowed).
    Doctor {
        /// JSON for scripts: {"checks":[{"name","status","detail"}],"ok":bool}.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        cluster: ClusterArgs,
        #[command(flatten)]
        mapper: MapperArgs,
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
        cluster: ClusterArgs,
        #[command(flatten)]
        fence: FenceArgs,
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
        cluster: ClusterArgs,
    },
    /// Snapshots of a volume: create VOL@SNAP, ls VOL, rm VOL@SNAP.
    Snapshot {
        #[command(subcommand)]
        what: SnapshotCommand,
    },
    /// A volume's QoS limits: show them, or set them as LIMIT=VALUE
    /// (qos_iops, qos_bps, qos_read_iops, qos_write_iops, qos_read_bps,
    /// qos_write_bps; bps with an optional unit, 100M; 0 removes a limit).
    /// Enforced by every librbd client (user-space, nbd), not by krbd.
    Qos {
        volume: String,
        limits: Vec<String>,
        /// JSON for scripts.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Make a volume of an existing image rbdvol did not make (a peer
    /// plugin's, a restored backup, one made with rbd create), as
    /// `docker volume create -d rbd -o image=IMAGE` does: its filesystem is
    /// kept (an image holding no data is formatted only with -o
    /// format=true); Remove (or rbdvol forget) leaves the image in place.
    Adopt {
        volume: String,
        /// The image, in --pool (the default pool) and --namespace.
        image: String,
        /// Volume options as with docker: -o mount_options=noatime,
        /// -o readonly=true, -o format=true, -o qos_iops=500.
        #[arg(short = 'o', long = "opt", value_name = "KEY=VALUE")]
        opts: Vec<String>,
        /// JSON for scripts.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Forget an adopted volume (no host may have it mounted): Docker no
    /// longer sees it, and its image stays in the pool with its data.
    Forget {
        volume: String,
        /// JSON for scripts.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Removed volumes in the RBD trash: ls, restore VOL.
    Trash {
        #[command(subcommand)]
        what: TrashCommand,
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
    let ceph = cli.ceph;
    let with = |mut cluster: ClusterArgs| {
        cluster.ceph = ceph.clone();
        cluster
    };
    match cli.command {
        Command::Check { pool, namespace, write } => check::check(&pool, &namespace, write, &ceph),
        Command::Serve(mut cmd) => {
            cmd.args.cluster.ceph = ceph.clone();
            Ok(rbdvol::daemon::serve(cmd.args.config(cmd.socket, rbdvol::daemon::Front::VolumeDriver))?)
        }
        Command::Csi(mut cmd) => {
            cmd.args.cluster.ceph = ceph.clone();
            Ok(rbdvol::daemon::serve(cmd.config()?)?)
        }
        Command::UserspaceServe => Ok(rbdvol::host::fusefs::serve()?),
        Command::Config { what: ConfigCommand::Show(args) } => config::config_show(&with(args)),
        Command::Ls { json, cluster } => admin::ls(&with(cluster), json),
        Command::Doctor { json, cluster, mapper } => doctor::doctor(&with(cluster), &mapper, json),
        Command::Resize { volume, size, json, cluster } => admin::resize(&volume, &size, json, &with(cluster)),
        Command::Snapshot { what } => match what {
            SnapshotCommand::Create { target, json, cluster } => admin::snapshot_create(&target, json, &with(cluster)),
            SnapshotCommand::Ls { volume, json, cluster } => admin::snapshot_ls(&volume, json, &with(cluster)),
            SnapshotCommand::Rm { target, json, cluster } => admin::snapshot_rm(&target, json, &with(cluster)),
        },
        Command::Qos { volume, limits, json, cluster } => admin::qos(&volume, &limits, json, &with(cluster)),
        Command::Adopt { volume, image, opts, json, cluster } => admin::adopt(&volume, &image, &opts, json, &with(cluster)),
        Command::Forget { volume, json, cluster } => admin::forget(&volume, json, &with(cluster)),
        Command::Trash { what } => match what {
            TrashCommand::Ls { json, cluster } => admin::trash_ls(json, &with(cluster)),
            TrashCommand::Restore { volume, json, cluster } => admin::trash_restore(&volume, json, &with(cluster)),
        },
        Command::Inspect { volume, cluster } => admin::inspect(&volume, &with(cluster)),
        Command::Takeover { volume, json, cluster, fence } => admin::takeover(&volume, json, &with(cluster), &fence),
        Command::Unlock { volume, force, json, cluster } => admin::unlock(&volume, force, json, &with(cluster)),
        Command::Consul { what: ConsulCommand::Seed { user } } => config::consul_seed(&ceph, user),
        Command::Plugin { args } => {
            let exe = std::env::current_exe().context("locating the rbdvol binary")?;
            // The Ceph-style flags given before `plugin` go to serve too;
            // `plugin csi ...` supervises `csi` (the CSI plugin's entrypoint).
            let (command, args) = match args.split_first() {
                Some((first, rest)) if first == "csi" => ("csi", rest.to_vec()),
                _ => ("serve", args),
            };
            let serve: Vec<std::ffi::OsString> = std::iter::once(command.into()).chain(ceph.to_args()).chain(args).collect();
            let code = rbdvol::host::supervise::run(&exe, &serve)?;
            std::process::exit(code)
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    /// The long flags of a (sub)command, e.g. `["snapshot", "ls"]`.
    fn flags(path: &[&str]) -> Vec<String> {
        let mut cmd = Cli::command();
        for name in path {
            cmd = cmd.find_subcommand(name).unwrap_or_else(|| panic!("no command {path:?}")).clone();
        }
        cmd.get_arguments().flat_map(|a| [Some(a.get_id().to_string()), a.get_long().map(str::to_string)]).flatten().collect()
    }

    const SERVE_ONLY: [&str; 4] = ["socket", "mount-root", "run-dir", "mapper"];

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn admin_commands_take_no_serve_only_flag() {
        let admin: [&[&str]; 14] = [
            &["adopt"],
            &["forget"],
            &["ls"],
            &["inspect"],
            &["unlock"],
            &["resize"],
            &["takeover"],
            &["snapshot", "ls"],
            &["snapshot", "create"],
            &["snapshot", "rm"],
            &["config", "show"],
            &["trash", "ls"],
            &["trash", "restore"],
            &["qos"],
        ];
        for path in admin {
            let flags = flags(path);
            for serve_only in SERVE_ONLY.iter().chain(&["sysfs", "auto-takeover", "session-ttl", "check-interval", "trash-delay"]) {
                assert!(!flags.iter().any(|f| f == serve_only || f.replace('_', "-") == *serve_only), "{path:?} takes --{serve_only}: {flags:?}");
            }
            for needed in ["host-id", "state-dir", "pool", "namespace", "default-size", "default-fstype"] {
                assert!(flags.iter().any(|f| f == needed), "{path:?} lacks --{needed}: {flags:?}");
            }
        }
        assert!(flags(&["takeover"]).iter().any(|f| f == "blocklist-expiry"));
        assert!(!flags(&["ls"]).iter().any(|f| f == "blocklist-expiry"));
    }

    #[test]
    fn serve_keeps_every_flag() {
        let flags = flags(&["serve"]);
        let all = [
            "socket",
            "mount-root",
            "run-dir",
            "mapper",
            "sysfs",
            "host-id",
            "state-dir",
            "pool",
            "namespace",
            "default-size",
            "default-fstype",
            "default-mkfs-options",
            "default-mount-options",
            "default-features",
            "auto-takeover",
            "session-ttl",
            "blocklist-expiry",
            "check-interval",
            "trash-delay",
        ];
        for flag in all {
            assert!(flags.iter().any(|f| f == flag), "serve lacks --{flag}: {flags:?}");
        }
    }

    #[test]
    fn doctor_checks_the_mapper_but_serves_nothing() {
        let flags = flags(&["doctor"]);
        for flag in ["mapper", "run-dir", "sysfs", "host-id", "state-dir", "json"] {
            assert!(flags.iter().any(|f| f == flag), "doctor lacks --{flag}: {flags:?}");
        }
        for flag in ["socket", "mount-root", "session-ttl"] {
            assert!(!flags.iter().any(|f| f == flag), "doctor takes --{flag}: {flags:?}");
        }
    }

    #[test]
    fn the_flags_scripts_and_tests_pass_still_parse() {
        let ok = |args: &[&str]| {
            let argv = std::iter::once("rbdvol").chain(args.iter().copied());
            if let Err(e) = Cli::try_parse_from(argv) {
                panic!("{args:?}: {e}");
            }
        };
        ok(&["serve", "--socket", "/s", "--host-id", "h", "--state-dir", "/st", "--mount-root", "/m", "--run-dir", "/r", "--check-interval", "1"]);
        ok(&["serve", "--mapper", "nbd", "--sysfs", "/sys", "--auto-takeover", "false", "--session-ttl", "10", "--blocklist-expiry", "60"]);
        ok(&["doctor", "--json", "--host-id", "h", "--state-dir", "/st", "--run-dir", "/r"]);
        ok(&["takeover", "v", "--json", "--host-id", "h", "--state-dir", "/st", "--blocklist-expiry", "60"]);
        ok(&["ls", "--json", "--state-dir", "/st"]);
        ok(&["inspect", "v", "--state-dir", "/st"]);
        ok(&["unlock", "v", "--force", "--json", "--state-dir", "/st"]);
        ok(&["resize", "v", "1G", "--json", "--state-dir", "/st"]);
        ok(&["snapshot", "create", "v@s", "--state-dir", "/st"]);
        ok(&["snapshot", "ls", "v", "--json", "--state-dir", "/st"]);
        ok(&["snapshot", "rm", "v@s", "--state-dir", "/st"]);
        ok(&["config", "show", "--pool", "p", "--default-size", "1G"]);
        ok(&["consul", "seed", "--conf", "/c", "--keyring", "/k"]);
        ok(&["check", "--pool", "p", "--write"]);
        ok(&["trash", "ls", "--json", "--state-dir", "/st"]);
        ok(&["trash", "restore", "v", "--json"]);
        ok(&["adopt", "v", "legacy", "-o", "readonly=true", "--opt", "mount_options=noatime", "--pool", "p", "--json"]);
        ok(&["forget", "v", "--json"]);
        ok(&["qos", "v", "qos_iops=500", "qos_bps=100M", "--json"]);
        ok(&["serve", "--trash-delay", "3600"]);
        ok(&["plugin", "--socket", "/s", "--check-interval", "1"]);
        ok(&["-c", "/etc/ceph/ceph.conf", "--id", "docker", "ls"]);
        ok(&["ls", "--cluster", "backup", "-k", "/k", "-n", "client.docker"]);
    }

    #[test]
    fn a_user_that_is_no_cephx_client_id_is_a_usage_error() {
        for args in [&["--id", "ad min", "ls"][..], &["--id", "a\nb", "ls"], &["-n", "docker", "ls"], &["-n", "osd.0", "ls"], &["--id", "a", "-n", "client.b", "ls"]] {
            let argv = std::iter::once("rbdvol").chain(args.iter().copied());
            let e = Cli::try_parse_from(argv).err().unwrap_or_else(|| panic!("{args:?} accepted"));
            assert_eq!(e.exit_code(), 2, "{args:?}: {e}");
        }
    }

    #[test]
    fn the_ceph_flags_given_to_plugin_reach_its_serve() {
        let cli = Cli::try_parse_from(["rbdvol", "--id", "docker", "-c", "/c", "plugin", "--socket", "/s"]).unwrap();
        let forwarded: Vec<String> = cli.ceph.to_args().iter().map(|a| a.to_string_lossy().into_owned()).collect();
        assert_eq!(forwarded, ["--id", "docker", "--conf", "/c"]);
        let serve: Vec<String> = ["rbdvol", "serve"].iter().map(|s| s.to_string()).chain(forwarded).chain(["--socket".into(), "/s".into()]).collect();
        assert!(Cli::try_parse_from(serve).is_ok());
    }

    #[test]
    fn admin_commands_refuse_serve_only_flags() {
        let cases: [&[&str]; 6] = [
            &["ls", "--socket", "/s"],
            &["inspect", "v", "--mount-root", "/m"],
            &["unlock", "v", "--run-dir", "/r"],
            &["resize", "v", "1G", "--mapper", "nbd"],
            &["snapshot", "ls", "v", "--socket", "/s"],
            &["config", "show", "--check-interval", "1"],
        ];
        for args in cases {
            let argv = std::iter::once("rbdvol").chain(args.iter().copied());
            let e = Cli::try_parse_from(argv).err().unwrap_or_else(|| panic!("{args:?} accepted"));
            assert_eq!(e.kind(), clap::error::ErrorKind::UnknownArgument, "{args:?}: {e}");
        }
    }
}
