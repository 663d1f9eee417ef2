//! The `rbdvol` binary: the command line, and the only place `anyhow` is used.

use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use rbdvol::ceph::{self, Cluster, CreateOptions};
use rbdvol::config::CephSettings;

#[derive(Parser)]
#[command(name = "rbdvol", version, about = "Docker volume plugin for Ceph RBD")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
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
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
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
