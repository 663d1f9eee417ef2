//! The `rbdvol` binary: the command line, and the only place `anyhow` is used.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use rbdvol::ceph::{self, Cluster, CreateOptions};
use rbdvol::config::CephSettings;
use rbdvol::engine::options::{parse_size, Defaults};
use rbdvol::engine::{Engine, EngineConfig, VolumeDriver};
use rbdvol::host::fs::Fstype;
use rbdvol::host::mapper::{self, MapperConfig, MapperKind};
use rbdvol::host::tools::Tools;

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
    #[arg(long, env = "RBD_CONF_POOL", default_value = "rbd")]
    pool: String,
    /// Default RADOS namespace for new volumes.
    #[arg(long, env = "RBD_CONF_NAMESPACE", default_value = "")]
    namespace: String,
    /// Default size of new volumes (a plain number is MiB).
    #[arg(long, env = "VOLUME_SIZE", default_value = "512")]
    default_size: String,
    /// Default filesystem of new volumes.
    #[arg(long, env = "VOLUME_FSTYPE", default_value = "ext4")]
    default_fstype: String,
    /// Default mkfs options (replace ceph-csi's defaults when set).
    #[arg(long, env = "VOLUME_MKFS_OPTIONS")]
    default_mkfs_options: Option<String>,
    /// Default mount options.
    #[arg(long, env = "MOUNT_OPTIONS", default_value = "")]
    default_mount_options: String,
    /// Default image features of new volumes (e.g. layering,exclusive-lock).
    #[arg(long, env = "VOLUME_FEATURES")]
    default_features: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the Docker volume plugin on its socket.
    Serve(ServeArgs),
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
        Command::Serve(args) => serve(args),
        Command::UserspaceServe => Ok(rbdvol::host::fusefs::serve()?),
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

fn serve(args: ServeArgs) -> Result<()> {
    let started = Instant::now();
    // Missing or bad settings never stop the plugin: every call then says
    // which setting to fix.
    let settings = CephSettings::from_env();
    if let Err(e) = &settings {
        tracing::error!("{e}");
    }
    let tools = Tools::discover()?;
    let mapper_config = MapperConfig {
        run_dir: args.run_dir.clone(),
        sysfs: args.sysfs.clone(),
        exe: std::env::current_exe().context("locating the rbdvol binary")?,
    };
    let kind = match args.mapper.as_str() {
        "auto" => mapper::detect(&mapper_config, &tools),
        other => MapperKind::parse(other)
            .with_context(|| format!("invalid --mapper '{other}': use auto, krbd, nbd or userspace"))?,
    };
    let default_fstype = Fstype::parse(&args.default_fstype)
        .with_context(|| format!("invalid VOLUME_FSTYPE '{}': use ext4, xfs or btrfs", args.default_fstype))?;
    let default_size = parse_size(&args.default_size)
        .map_err(|e| anyhow::anyhow!("invalid VOLUME_SIZE '{}': {e}", args.default_size))?;
    let config = EngineConfig {
        host_id: non_empty(&args.host_id).unwrap_or_else(rbdvol::host::sys::hostname),
        defaults: Defaults {
            pool: args.pool.clone(),
            namespace: args.namespace.clone(),
            size: default_size,
            fstype: default_fstype,
            mkfs_options: non_empty(&args.default_mkfs_options),
            mount_options: args.default_mount_options.clone(),
            features: non_empty(&args.default_features),
        },
        mount_root: args.mount_root.clone(),
        state_dir: args.state_dir.clone(),
    };
    let host_id = config.host_id.clone();
    let mapper = mapper::build(kind, &mapper_config, &tools);
    let engine = Engine::start(config, settings, tools, mapper)?;
    tracing::info!("host '{host_id}', mapper {}", engine.mapper_kind().as_str());

    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        if let Some(dir) = args.socket.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        match std::fs::remove_file(&args.socket) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("removing stale socket {}", args.socket.display()))
            }
            _ => {}
        }
        // Before listening: a SIGTERM from then on is a clean stop.
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).context("installing the SIGTERM handler")?;
        let listener = tokio::net::UnixListener::bind(&args.socket)
            .with_context(|| format!("listening on {}", args.socket.display()))?;
        std::fs::set_permissions(&args.socket, std::fs::Permissions::from_mode(0o660))?;
        tracing::info!("listening on {} ({} ms after start)", args.socket.display(), started.elapsed().as_millis());
        if engine.has_settings() {
            let e = engine.clone();
            tokio::spawn(async move { e.resume_background_work().await });
        }
        let driver: Arc<dyn VolumeDriver> = Arc::new(engine);
        axum::serve(listener, rbdvol::api::router(driver))
            .with_graceful_shutdown(async move {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
                tracing::info!("stopping: mounted volumes stay mounted for their containers");
            })
            .await?;
        let _ = std::fs::remove_file(&args.socket);
        Ok(())
    })
}
