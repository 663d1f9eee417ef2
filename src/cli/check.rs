//! `rbdvol check`: connect with the settings from the environment and the
//! ceph.conf and keyring files, and report what rbdvol sees.

use std::time::Instant;

use anyhow::{Context, Result};
use rbdvol::ceph::{self, Cluster, CreateOptions};

use super::args::CephArgs;

pub fn check(pool_name: &str, namespace: &str, write: bool, ceph_args: &CephArgs) -> Result<()> {
    let sources = rbdvol::daemon::base_sources(Default::default(), ceph_args.sources(&rbdvol::host::sys::hostname()));
    let settings = rbdvol::settings::resolve(&sources, |r| eprintln!("{r}")).ceph?;
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
