//! `rbdvol config show` and `rbdvol consul seed`, and the settings every
//! command but `serve` runs with.

use std::time::Duration;

use anyhow::{Context, Result};
use rbdvol::config::ceph_files;
use rbdvol::config::consul::{self, Consul, ConsulSettings};
use rbdvol::daemon::{add_consul, base_sources, read_consul_cache, Reported, CONSUL_CACHE};
use rbdvol::settings::resolve;

use super::args::{CephArgs, ClusterArgs};

/// The settings a CLI command runs with: the same sources as `serve`
/// (Consul read once, or its cache when it does not answer).
pub fn cli_effective(args: &ClusterArgs) -> Result<rbdvol::settings::Effective> {
    let mut sources = base_sources(args.flag_sources(), args.ceph_sources());
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

pub fn config_show(args: &ClusterArgs) -> Result<()> {
    let eff = cli_effective(args)?;
    println!("{:<40} {:<40} source", "setting", "value");
    for s in &eff.shown {
        println!("{:<40} {:<40} {}", s.name, s.value, s.source);
    }
    if !eff.looked.is_empty() {
        println!("ceph files: {}", eff.looked.join(", "));
    }
    if let Err(e) = &eff.ceph {
        println!("cluster settings: {e}");
    }
    Ok(())
}

pub fn consul_seed(ceph: &CephArgs, user: Option<String>) -> Result<()> {
    let settings = ConsulSettings::from_vars(std::env::vars()).context("CONSUL_HTTP_ADDR is not set: where is consul?")?;
    let files = ceph.sources(&rbdvol::host::sys::hostname()).files;
    let entries: Vec<(String, String)> = if files.conf.is_some() || files.keyring.is_some() {
        // What rbdvol itself reads from these files (and only that).
        let user = match user.or_else(|| ceph.id.clone()).or_else(|| ceph.name.clone()).filter(|u| !u.trim().is_empty()) {
            Some(u) => u.strip_prefix("client.").unwrap_or(&u).to_string(),
            None => match &files.keyring {
                Some((keyring, _)) => ceph_files::first_user(keyring)?.unwrap_or_else(|| "admin".into()),
                None => "admin".into(),
            },
        };
        let read = ceph_files::read(&files, &user, ceph_files::WantKey::Yes)?;
        for s in &read.skipped {
            println!("left out {s} (a daemon's or this host's own setting)");
        }
        for l in &read.ignored {
            println!("left out {l}");
        }
        let Some((key, _)) = read.key else {
            anyhow::bail!("no key for client.{user} in a keyring (looked at {}): give it with --keyring", read.looked.join(", "));
        };
        let mut entries: Vec<(String, String)> = read.values.into_iter().filter_map(|v| Some((consul::kv_key_of(&v.var)?, v.value))).collect();
        entries.push(("conf/keyring/user".into(), format!("client.{user}")));
        entries.push(("conf/keyring/key".into(), key.expose().to_string()));
        entries
    } else {
        std::env::vars()
            .filter(|(n, v)| !v.trim().is_empty() && (n.starts_with("RBD_CONF_") || consul::DEFAULT_KEYS.iter().any(|(_, e)| e == n)))
            .filter_map(|(n, v)| Some((consul::kv_key_of(&n).filter(|k| consul::env_name_of(k).is_some())?, v)))
            .collect()
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
