//! The `rbdvol` binary: the command line, and the only place `anyhow` is used.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use rbdvol::ceph::{self, Cluster, CreateOptions};
use rbdvol::config::consul::{self, Consul, ConsulSettings};
use rbdvol::config::{CephSettings, ConfigError};
use rbdvol::daemon::{add_consul, base_sources, read_consul_cache, Reported, CONSUL_CACHE};
use rbdvol::settings::resolve;
use rbdvol::host::mapper::MapperConfig;

#[derive(Parser)]
#[command(name = "rbdvol", version, about = "Docker volume plugin for Ceph RBD")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
struct ServeArgs {
    /// The plugin socket (legacy plugins: /run/docker/plugins/<driver>.sock).
    #[arg(long, env = "RBDVOL_SOCKET", default_value = "/run/docker/plugins/rbd.sock")]
    socket: PathBuf,
    /// Names this host in locks and image metadata.
    #[arg(long, env = "RBDVOL_HOST_ID")]
    host_id: Option<String>,
    /// This host's state (mounted volumes and their containers).
    #[arg(long, env = "RBDVOL_STATE_DIR", default_value = "/var/lib/rbdvol")]
    state_dir: PathBuf,
    /// Where volumes are mounted, as <mount-root>/<volume>.
    #[arg(long, env = "RBDVOL_MOUNT_ROOT", default_value = "/var/lib/rbdvol/mnt")]
    mount_root: PathBuf,
    /// Runtime files (the user-space mapper's servers).
    #[arg(long, env = "RBDVOL_RUN_DIR", default_value = "/run/rbdvol")]
    run_dir: PathBuf,
    /// auto, krbd, nbd or userspace.
    #[arg(long, env = "RBDVOL_MAPPER", default_value = "auto")]
    mapper: String,
    /// sysfs root (for krbd).
    #[arg(long, env = "RBDVOL_SYSFS", default_value = "/sys", hide = true)]
    sysfs: PathBuf,
    /// Default pool for new volumes; also holds the volume directory.
    #[arg(long, env = "RBD_CONF_POOL")]
    pool: Option<String>,
    /// Default RADOS namespace for new volumes.
    #[arg(long, env = "RBD_CONF_NAMESPACE")]
    namespace: Option<String>,
    /// Default size of new volumes (a plain number is MiB; default 512).
    #[arg(long, env = "VOLUME_SIZE")]
    default_size: Option<String>,
    /// Default filesystem of new volumes (default ext4).
    #[arg(long, env = "VOLUME_FSTYPE")]
    default_fstype: Option<String>,
    /// Default mkfs options (replace ceph-csi's defaults when set).
    #[arg(long, env = "VOLUME_MKFS_OPTIONS")]
    default_mkfs_options: Option<String>,
    /// Default mount options.
    #[arg(long, env = "MOUNT_OPTIONS")]
    default_mount_options: Option<String>,
    /// Default image features of new volumes (e.g. layering,exclusive-lock).
    #[arg(long, env = "VOLUME_FEATURES")]
    default_features: Option<String>,
    /// Take over a volume whose holder's Consul session lapsed and whose
    /// clients no longer watch it, fencing the holder first (true/false;
    /// default true; needs Consul).
    #[arg(long, env = "RBDVOL_AUTO_TAKEOVER")]
    auto_takeover: Option<String>,
    /// TTL in seconds of this host's Consul session (default 15).
    #[arg(long, env = "RBDVOL_SESSION_TTL")]
    session_ttl: Option<String>,
    /// How long, in seconds, a fenced client stays blocklisted (default 3600).
    #[arg(long, env = "RBDVOL_BLOCKLIST_EXPIRY")]
    blocklist_expiry: Option<String>,
    /// Seconds between checks of the mounted volumes: taken over by another
    /// host (release), grown (grow the filesystem). Default 5.
    #[arg(long, env = "RBDVOL_CHECK_INTERVAL")]
    check_interval: Option<String>,
}

impl ServeArgs {
    fn host_id(&self) -> String {
        non_empty(&self.host_id).unwrap_or_else(rbdvol::host::sys::hostname)
    }

    fn blocklist_expiry(&self) -> Result<Duration> {
        Ok(rbdvol::daemon::blocklist_expiry(&self.blocklist_expiry)?)
    }

    /// What `serve` runs with.
    fn config(self) -> rbdvol::daemon::ServeConfig {
        rbdvol::daemon::ServeConfig {
            host_id: self.host_id(),
            flags: flag_sources(&self),
            socket: self.socket,
            state_dir: self.state_dir,
            mount_root: self.mount_root,
            run_dir: self.run_dir,
            mapper: self.mapper,
            sysfs: self.sysfs,
            auto_takeover: self.auto_takeover,
            session_ttl: self.session_ttl,
            blocklist_expiry: self.blocklist_expiry,
            check_interval: self.check_interval,
        }
    }
}

#[derive(Subcommand)]
enum ConsulCommand {
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
enum SnapshotCommand {
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

/// Prints `value` as JSON for scripts, else `text` for people.
fn say(json: bool, value: serde_json::Value, text: String) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else if !text.is_empty() {
        println!("{text}");
    }
    Ok(())
}

fn vol_at_snap(target: &str) -> Result<(&str, &str)> {
    target
        .split_once('@')
        .filter(|(v, s)| !v.is_empty() && !s.is_empty())
        .with_context(|| format!("'{target}' is not VOLUME@SNAPSHOT"))
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// The effective settings, with their sources.
    Show(ServeArgs),
}

#[derive(Subcommand)]
enum Command {
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

fn main() -> Result<()> {
    init_logging();
    let cli = Cli::parse();
    match cli.command {
        Command::Check { pool, namespace, write } => check(&pool, &namespace, write),
        Command::Serve(args) => Ok(rbdvol::daemon::serve(args.config())?),
        Command::UserspaceServe => Ok(rbdvol::host::fusefs::serve()?),
        Command::Config { what: ConfigCommand::Show(args) } => config_show(&args),
        Command::Ls { json, settings } => admin_ls(&settings, json),
        Command::Doctor { json, settings } => doctor(&settings, json),
        Command::Resize { volume, size, json, settings } => {
            let bytes = rbdvol::engine::options::parse_size(&size).map_err(|e| anyhow::anyhow!("invalid size '{size}': {e}"))?;
            let (cluster, pool) = admin_cluster(&settings)?;
            use std::io::IsTerminal;
            let tty = std::io::stderr().is_terminal() && !json;
            let progress = move |done: u64, total: u64| {
                if tty && total > 0 {
                    eprint!("\rgrowing: {:3}%", done * 100 / total);
                }
            };
            let grown = rbdvol::engine::admin::resize(&cluster, &pool, &volume, bytes, &progress)?;
            if tty {
                eprintln!();
            }
            match grown {
                ceph::Grow::Grown { from, to } => say(
                    json,
                    serde_json::json!({ "volume": volume, "grown": true, "from": from, "to": to }),
                    format!(
                        "volume '{volume}' grown from {} to {} MiB; its filesystem grows online where it is mounted, else at its next mount",
                        from >> 20,
                        to >> 20
                    ),
                ),
                ceph::Grow::AlreadyThatSize(s) => {
                    say(json, serde_json::json!({ "volume": volume, "grown": false, "to": s }), format!("volume '{volume}' is already {} MiB", s >> 20))
                }
            }
        }
        Command::Snapshot { what } => {
            use rbdvol::engine::admin;
            match what {
                SnapshotCommand::Create { target, json, settings } => {
                    let (vol, snap) = vol_at_snap(&target)?;
                    let (cluster, pool) = admin_cluster(&settings)?;
                    let done = admin::snapshot_create(&cluster, &pool, vol, snap)?;
                    let text = match done {
                        ceph::Done::Changed => format!("created snapshot {target}"),
                        ceph::Done::AlreadyDone => format!("snapshot {target} already exists"),
                    };
                    say(json, serde_json::json!({ "snapshot": target, "created": done == ceph::Done::Changed }), text)
                }
                SnapshotCommand::Ls { volume, json, settings } => {
                    let (cluster, pool) = admin_cluster(&settings)?;
                    let snaps = admin::snapshot_list(&cluster, &pool, &volume)?;
                    let rows: Vec<_> = snaps.iter().map(|s| serde_json::json!({ "snapshot": format!("{volume}@{}", s.name), "size": s.size })).collect();
                    let text = snaps.iter().map(|s| format!("{volume}@{}\t{} MiB", s.name, s.size >> 20)).collect::<Vec<_>>().join("\n");
                    say(json, rows.into(), text)
                }
                SnapshotCommand::Rm { target, json, settings } => {
                    let (vol, snap) = vol_at_snap(&target)?;
                    let (cluster, pool) = admin_cluster(&settings)?;
                    let done = admin::snapshot_remove(&cluster, &pool, vol, snap)?;
                    let text = match done {
                        ceph::Done::Changed => format!("removed snapshot {target}"),
                        ceph::Done::AlreadyDone => format!("snapshot {target} does not exist"),
                    };
                    say(json, serde_json::json!({ "snapshot": target, "removed": done == ceph::Done::Changed }), text)
                }
            }
        }
        Command::Inspect { volume, settings } => {
            let (cluster, pool) = admin_cluster(&settings)?;
            let v = rbdvol::engine::admin::inspect(&cluster, &pool, &volume)?;
            println!("{}", serde_json::to_string_pretty(&v)?);
            Ok(())
        }
        Command::Takeover { volume, json, settings } => {
            let (cluster, pool) = admin_cluster(&settings)?;
            let me = settings.host_id();
            let taken = rbdvol::engine::admin::takeover(&cluster, &pool, &volume, &me, settings.blocklist_expiry()?)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "volume": volume, "host": me, "taken_over": taken }))?);
            } else if let Some(t) = taken {
                println!(
                    "volume '{volume}' taken over from host '{}' for host '{me}': blocklisted {} for {} s",
                    t.from,
                    t.fenced.join(", "),
                    t.expiry_secs
                );
            } else {
                println!("volume '{volume}' was not held by another host; now held for host '{me}'");
            }
            Ok(())
        }
        Command::Unlock { volume, force, json, settings } => {
            let (cluster, pool) = admin_cluster(&settings)?;
            match rbdvol::engine::admin::unlock(&cluster, &pool, &volume, force)? {
                rbdvol::engine::admin::Unlocked::Broken { host } => {
                    say(json, serde_json::json!({ "volume": volume, "broken": host }), format!("broke host '{host}'s lock on volume '{volume}'"))
                }
                rbdvol::engine::admin::Unlocked::NotLocked => {
                    say(json, serde_json::json!({ "volume": volume, "broken": null }), format!("volume '{volume}' is not locked"))
                }
            }
        }
        Command::Consul { what: ConsulCommand::Seed { conf, keyring, user } } => consul_seed(conf, keyring, user),
        Command::Plugin { args } => {
            let exe = std::env::current_exe().context("locating the rbdvol binary")?;
            let serve: Vec<std::ffi::OsString> = std::iter::once("serve".into()).chain(args).collect();
            let code = rbdvol::host::supervise::run(&exe, &serve)?;
            std::process::exit(code)
        }
    }
}

/// wetopi's `LOG_LEVEL` (0 error, 1 warn, 2 info, 3 debug) unless `RUST_LOG` is set.
fn init_logging() {
    let level = match std::env::var("LOG_LEVEL").ok().as_deref().map(str::trim) {
        Some("0") => "error",
        Some("1") => "warn",
        Some("3") => "debug",
        _ => "info",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

fn check(pool_name: &str, namespace: &str, write: bool) -> Result<()> {
    let settings = CephSettings::from_env()?;
    let (major, minor, extra) = ceph::librbd_version();
    println!("librbd {major}.{minor}.{extra}");
    let start = Instant::now();
    let cluster = Cluster::connect(&settings)?;
    println!(
        "connected to {} as client.{} in {} ms (fsid {}, address {})",
        cluster.mon_host(),
        cluster.user(),
        start.elapsed().as_millis(),
        cluster.fsid()?,
        cluster.own_address()?
    );
    let pool = cluster.open_pool(pool_name, namespace)?;
    println!("pool '{pool_name}' has {} images", pool.list_images()?.len());
    if write {
        let name = format!("rbdvol-check-{}", std::process::id());
        pool.create_image(&name, 64 << 20, &CreateOptions::default())?;
        let probe = (|| -> Result<()> {
            let image = pool.open_image(&name)?;
            image.metadata_set("rbdvol.check", "ok")?;
            image.grow(128 << 20, &|_, _| {})?;
            image.write_at(0, b"rbdvol")?;
            let mut buf = [0u8; 6];
            image.read_at(0, &mut buf)?;
            anyhow::ensure!(&buf == b"rbdvol", "probe image '{pool_name}/{name}' read back other data");
            println!(
                "probe image '{pool_name}/{name}': created 64 MiB, grown to {} MiB, metadata and data round-tripped",
                image.size()? >> 20
            );
            Ok(())
        })();
        pool.remove_image(&name).with_context(|| format!("removing probe image '{pool_name}/{name}'"))?;
        probe?;
        println!("probe image removed");
    }
    println!("ok");
    Ok(())
}

/// A managed plugin passes unset variables as empty strings.
fn non_empty(value: &Option<String>) -> Option<String> {
    value.clone().filter(|v| !v.trim().is_empty())
}

/// The flag-or-environment values clap found for the volume defaults.
fn flag_sources(args: &ServeArgs) -> BTreeMap<String, String> {
    [
        ("RBD_CONF_POOL", &args.pool),
        ("RBD_CONF_NAMESPACE", &args.namespace),
        ("VOLUME_SIZE", &args.default_size),
        ("VOLUME_FSTYPE", &args.default_fstype),
        ("VOLUME_MKFS_OPTIONS", &args.default_mkfs_options),
        ("MOUNT_OPTIONS", &args.default_mount_options),
        ("VOLUME_FEATURES", &args.default_features),
    ]
    .into_iter()
    .filter_map(|(n, v)| non_empty(v).map(|v| (n.to_string(), v)))
    .collect()
}

/// The settings a CLI command runs with: the same sources as `serve`
/// (Consul read once, or its cache when it does not answer).
fn cli_effective(args: &ServeArgs) -> Result<rbdvol::settings::Effective> {
    let mut sources = base_sources(flag_sources(args));
    let mut reported = Reported::default();
    if let Some(c) = ConsulSettings::from_vars(std::env::vars()) {
        let prefix = c.prefix.clone();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let client = Consul::new(c)?;
        let kv = match runtime.block_on(client.read(None, Duration::ZERO)) {
            Ok(snap) => Some(snap.kv),
            Err(e) => {
                eprintln!("{e}: using the settings cached from consul, if any");
                read_consul_cache(&args.state_dir.join(CONSUL_CACHE), &prefix)
            }
        };
        if let Some(kv) = kv {
            add_consul(&mut sources, &kv, &prefix, &mut reported);
        }
    }
    Ok(resolve(&sources, |r| eprintln!("{r}")))
}

fn admin_cluster(args: &ServeArgs) -> Result<(Cluster, String)> {
    let eff = cli_effective(args)?;
    let cluster = Cluster::connect(&eff.ceph?)?;
    Ok((cluster, eff.defaults.pool))
}

fn admin_ls(args: &ServeArgs, json: bool) -> Result<()> {
    let (cluster, pool) = admin_cluster(args)?;
    let rows = rbdvol::engine::admin::list(&cluster, &pool)?;
    // Mapped here: this host's own state (see `serve --state-dir`).
    let mapped = |name: &str| args.state_dir.join("volumes").join(format!("{name}.json")).exists();
    if json {
        let out: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| {
                let mut v = serde_json::to_value(r).expect("serializes");
                v["mapped_here"] = mapped(&r.name).into();
                v
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!("{:<32} {:<12} {:>10} {:>10} {:<6} {:<20} mapped", "name", "pool", "size", "used", "fstype", "host");
    for r in rows {
        let pool = if r.namespace.is_empty() { r.pool.clone() } else { format!("{}/{}", r.pool, r.namespace) };
        let mib = |b: u64| format!("{} MiB", b >> 20);
        println!(
            "{:<32} {:<12} {:>10} {:>10} {:<6} {:<20} {}",
            r.name,
            pool,
            mib(r.size),
            mib(r.used),
            r.fstype,
            if r.host.is_empty() { "-" } else { &r.host },
            if mapped(&r.name) { "here" } else { "-" }
        );
    }
    Ok(())
}

fn doctor(args: &ServeArgs, json: bool) -> Result<()> {
    use rbdvol::engine::doctor::{self, DoctorInput};
    // The settings serve would run with; a Consul that cannot even be set
    // up is reported by the consul check, the rest still runs.
    let eff = cli_effective(args).unwrap_or_else(|e| {
        let mut eff = resolve(&base_sources(flag_sources(args)), |_| {});
        if eff.ceph.is_err() {
            eff.ceph = Err(ConfigError::Consul(e.to_string()));
        }
        eff
    });
    let input = DoctorInput {
        mapper: args.mapper.clone(),
        mapper_config: MapperConfig {
            run_dir: args.run_dir.clone(),
            sysfs: args.sysfs.clone(),
            exe: std::env::current_exe().context("locating the rbdvol binary")?,
        },
        state_dir: args.state_dir.clone(),
        host_id: non_empty(&args.host_id).unwrap_or_else(rbdvol::host::sys::hostname),
        settings: eff.ceph,
        dir_pool: eff.defaults.pool,
        consul: ConsulSettings::from_vars(std::env::vars()),
    };
    let checks = doctor::run(&input);
    let ok = doctor::all_ok(&checks);
    if json {
        println!("{}", serde_json::to_string_pretty(&doctor::Report { checks: &checks, ok })?);
    } else {
        for c in &checks {
            println!("{:<5} {:<13} {}", c.status.as_str(), c.name, c.detail);
        }
        println!("{}", if ok { "ok" } else { "failed: fix the lines marked fail" });
    }
    if !ok {
        use std::io::Write;
        std::io::stdout().flush()?;
        std::process::exit(1);
    }
    Ok(())
}

fn config_show(args: &ServeArgs) -> Result<()> {
    let eff = cli_effective(args)?;
    println!("{:<40} {:<40} source", "setting", "value");
    for s in &eff.shown {
        println!("{:<40} {:<40} {}", s.name, s.value, s.source);
    }
    if let Err(e) = &eff.ceph {
        println!("cluster settings: {e}");
    }
    Ok(())
}

fn consul_seed(conf: Option<PathBuf>, keyring: Option<PathBuf>, user: Option<String>) -> Result<()> {
    let settings = ConsulSettings::from_vars(std::env::vars()).context("CONSUL_HTTP_ADDR is not set: where is consul?")?;
    let entries: Vec<(String, String)> = match (&conf, &keyring) {
        (Some(conf), Some(keyring)) => {
            let read = |p: &PathBuf| std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()));
            let (entries, skipped) = consul::seed_from_ceph_conf(&read(conf)?, &read(keyring)?, user.as_deref());
            for s in skipped {
                println!("left out {s} (a daemon's or this host's own setting)");
            }
            anyhow::ensure!(entries.iter().any(|(k, _)| k == "conf/keyring/key"), "no key for {} in {}", user.as_deref().unwrap_or("any user"), keyring.display());
            entries
        }
        _ => std::env::vars()
            .filter(|(n, v)| !v.trim().is_empty() && (n.starts_with("RBD_CONF_") || consul::DEFAULT_KEYS.iter().any(|(_, e)| e == n)))
            .filter_map(|(n, v)| Some((consul::kv_key_of(&n).filter(|k| consul::env_name_of(k).is_some())?, v)))
            .collect(),
    };
    anyhow::ensure!(!entries.is_empty(), "nothing to seed: give --conf and --keyring, or set RBD_CONF_* variables");
    for (key, value) in &entries {
        if let Err(reason) = consul::check_value(&consul::env_name_of(key).unwrap_or_default(), value) {
            anyhow::bail!("not seeding {key}: {reason}");
        }
    }
    let prefix = settings.prefix.clone();
    let client = Consul::new(settings)?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    for (key, value) in &entries {
        runtime.block_on(client.put(key, value))?;
        let shown = if key == "conf/keyring/key" { "(the key)" } else { value.as_str() };
        println!("{prefix}{key} = {shown}");
    }
    Ok(())
}
