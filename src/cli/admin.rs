//! The admin commands: ls, inspect, unlock, takeover, resize, snapshot
//! create/ls/rm. Each connects with the settings `serve` would use.

use anyhow::{Context, Result};
use rbdvol::ceph::{self, Cluster};
use rbdvol::engine::admin;

use super::args::{ClusterArgs, FenceArgs};
use super::config::cli_effective;
use super::output::say;

fn vol_at_snap(target: &str) -> Result<(&str, &str)> {
    target
        .split_once('@')
        .filter(|(v, s)| !v.is_empty() && !s.is_empty())
        .with_context(|| format!("'{target}' is not VOLUME@SNAPSHOT"))
}

fn admin_cluster(args: &ClusterArgs) -> Result<(Cluster, String)> {
    let eff = cli_effective(args)?;
    let cluster = Cluster::connect(&eff.ceph?)?;
    // A stalled cluster fails the command in seconds, before it changes
    // anything, not after the cluster's 30 s timeouts.
    rbdvol::engine::health::preflight(&cluster, &eff.defaults.pool, rbdvol::engine::health::PROBE_BOUND)?;
    Ok((cluster, eff.defaults.pool))
}

pub fn ls(args: &ClusterArgs, json: bool) -> Result<()> {
    let (cluster, pool) = admin_cluster(args)?;
    let rows = admin::list(&cluster, &pool)?;
    // Mapped here: this host's own state (see `serve --state-dir`).
    let here = rbdvol::state::StateStore::open_existing(args.state_dir.join("volumes"));
    let mapped: Vec<bool> = rows.iter().map(|r| here.as_ref().is_some_and(|s| s.has(&r.name))).collect();
    let out: Vec<serde_json::Value> = rows
        .iter()
        .zip(&mapped)
        .map(|(r, &here)| {
            let mut v = serde_json::to_value(r).expect("serializes");
            v["mapped_here"] = here.into();
            v
        })
        .collect();
    let mut text = format!("{:<32} {:<12} {:>10} {:>10} {:<6} {:<20} mapped", "name", "pool", "size", "used", "fstype", "host");
    for (r, here) in rows.iter().zip(mapped) {
        let pool = if r.namespace.is_empty() { r.pool.clone() } else { format!("{}/{}", r.pool, r.namespace) };
        let mib = |b: u64| format!("{} MiB", b >> 20);
        text.push_str(&format!(
            "\n{:<32} {:<12} {:>10} {:>10} {:<6} {:<20} {}",
            r.name,
            pool,
            mib(r.size),
            mib(r.used),
            r.fstype,
            if r.host.is_empty() { "-" } else { &r.host },
            if here { "here" } else { "-" }
        ));
    }
    say(json, &out, &text)
}

/// Always JSON: the volume has more to it than a line of text.
pub fn inspect(volume: &str, args: &ClusterArgs) -> Result<()> {
    let (cluster, pool) = admin_cluster(args)?;
    let v = admin::inspect(&cluster, &pool, volume)?;
    say(true, &v, "")
}

pub fn unlock(volume: &str, force: bool, json: bool, args: &ClusterArgs) -> Result<()> {
    let (cluster, pool) = admin_cluster(args)?;
    match admin::unlock(&cluster, &pool, volume, force)? {
        admin::Unlocked::Broken { host } => {
            say(json, &serde_json::json!({ "volume": volume, "broken": host }), &format!("broke host '{host}'s lock on volume '{volume}'"))
        }
        admin::Unlocked::NotLocked => say(json, &serde_json::json!({ "volume": volume, "broken": null }), &format!("volume '{volume}' is not locked")),
    }
}

pub fn takeover(volume: &str, json: bool, args: &ClusterArgs, fence: &FenceArgs) -> Result<()> {
    let (cluster, pool) = admin_cluster(args)?;
    let me = args.host_id();
    let taken = admin::takeover(&cluster, &pool, volume, &me, fence.blocklist_expiry()?)?;
    let text = match &taken {
        Some(t) => format!(
            "volume '{volume}' taken over from host '{}' for host '{me}': blocklisted {} for {} s",
            t.from,
            t.fenced.join(", "),
            t.expiry_secs
        ),
        None => format!("volume '{volume}' was not held by another host; now held for host '{me}'"),
    };
    say(json, &serde_json::json!({ "volume": volume, "host": me, "taken_over": taken }), &text)
}

pub fn resize(volume: &str, size: &str, json: bool, args: &ClusterArgs) -> Result<()> {
    let bytes = rbdvol::engine::options::parse_size(size).map_err(|e| anyhow::anyhow!("invalid size '{size}': {e}"))?;
    let (cluster, pool) = admin_cluster(args)?;
    use std::io::IsTerminal;
    let tty = std::io::stderr().is_terminal() && !json;
    let progress = move |done: u64, total: u64| {
        if tty && total > 0 {
            eprint!("\rgrowing: {:3}%", done * 100 / total);
        }
    };
    let grown = admin::resize(&cluster, &pool, volume, bytes, &progress)?;
    if tty {
        eprintln!();
    }
    match grown {
        ceph::Grow::Grown { from, to } => say(
            json,
            &serde_json::json!({ "volume": volume, "grown": true, "from": from, "to": to }),
            &format!(
                "volume '{volume}' grown from {} to {} MiB; its filesystem grows online where it is mounted, else at its next mount",
                from >> 20,
                to >> 20
            ),
        ),
        ceph::Grow::AlreadyThatSize(s) => {
            say(json, &serde_json::json!({ "volume": volume, "grown": false, "to": s }), &format!("volume '{volume}' is already {} MiB", s >> 20))
        }
    }
}

pub fn snapshot_create(target: &str, json: bool, args: &ClusterArgs) -> Result<()> {
    let (vol, snap) = vol_at_snap(target)?;
    let (cluster, pool) = admin_cluster(args)?;
    let done = admin::snapshot_create(&cluster, &pool, vol, snap)?;
    let text = match done {
        ceph::Done::Changed => format!("created snapshot {target}"),
        ceph::Done::AlreadyDone => format!("snapshot {target} already exists"),
    };
    say(json, &serde_json::json!({ "snapshot": target, "created": done == ceph::Done::Changed }), &text)
}

pub fn snapshot_ls(volume: &str, json: bool, args: &ClusterArgs) -> Result<()> {
    let (cluster, pool) = admin_cluster(args)?;
    let snaps = admin::snapshot_list(&cluster, &pool, volume)?;
    let rows: Vec<_> = snaps.iter().map(|s| serde_json::json!({ "snapshot": format!("{volume}@{}", s.name), "size": s.size })).collect();
    let text = snaps.iter().map(|s| format!("{volume}@{}\t{} MiB", s.name, s.size >> 20)).collect::<Vec<_>>().join("\n");
    say(json, &rows, &text)
}

pub fn snapshot_rm(target: &str, json: bool, args: &ClusterArgs) -> Result<()> {
    let (vol, snap) = vol_at_snap(target)?;
    let (cluster, pool) = admin_cluster(args)?;
    let done = admin::snapshot_remove(&cluster, &pool, vol, snap)?;
    let text = match done {
        ceph::Done::Changed => format!("removed snapshot {target}"),
        ceph::Done::AlreadyDone => format!("snapshot {target} does not exist"),
    };
    say(json, &serde_json::json!({ "snapshot": target, "removed": done == ceph::Done::Changed }), &text)
}

pub fn trash_ls(json: bool, args: &ClusterArgs) -> Result<()> {
    let (cluster, pool) = admin_cluster(args)?;
    let records = rbdvol::engine::trash::records(&cluster.open_pool(&pool, "")?)?;
    let now = rbdvol::engine::trash::now_ms() / 1000;
    let mut text = if records.is_empty() { String::new() } else { format!("{:<32} {:<16} {:<14} {:>12} {:>12}", "name", "pool", "id", "removed", "purged in") };
    for r in &records {
        let pool = if r.namespace.is_empty() { r.pool.clone() } else { format!("{}/{}", r.pool, r.namespace) };
        let ago = format!("{} s ago", now.saturating_sub(r.removed_ms / 1000));
        let due = if r.purge_after_ms / 1000 > now { format!("{} s", r.purge_after_ms / 1000 - now) } else { "due".into() };
        text.push_str(&format!("\n{:<32} {:<16} {:<14} {:>12} {:>12}", r.name, pool, r.id, ago, due));
    }
    say(json, &records, text.trim_start_matches('\n'))
}

pub fn trash_restore(volume: &str, json: bool, args: &ClusterArgs) -> Result<()> {
    let (cluster, pool) = admin_cluster(args)?;
    let record = rbdvol::engine::trash::restore(&cluster, &pool, volume)?;
    let text = format!("restored volume '{volume}' (pool {}, image id {}): Docker sees it again", record.pool, record.id);
    say(json, &serde_json::json!({ "volume": volume, "pool": record.pool, "namespace": record.namespace, "id": record.id, "restored": true }), &text)
}

pub fn qos(volume: &str, limits: &[String], json: bool, args: &ClusterArgs) -> Result<()> {
    let mut changes = std::collections::BTreeMap::new();
    for limit in limits {
        let (option, value) = limit.split_once('=').with_context(|| format!("'{limit}' is not LIMIT=VALUE (e.g. qos_iops=500)"))?;
        let value = rbdvol::engine::qos::parse_limit(option, value).map_err(|reason| anyhow::anyhow!("invalid {option}='{value}': {reason}"))?;
        changes.insert(option.to_string(), value);
    }
    let (cluster, pool) = admin_cluster(args)?;
    let now = admin::qos(&cluster, &pool, volume, &changes)?;
    let text = if now.is_empty() { format!("volume '{volume}' has no QoS limits") } else { format!("volume '{volume}': {}", rbdvol::engine::qos::describe(&now)) };
    say(json, &serde_json::json!({ "volume": volume, "qos": now }), &text)
}

pub fn adopt(volume: &str, image: &str, opts: &[String], json: bool, args: &ClusterArgs) -> Result<()> {
    rbdvol::engine::options::validate_name(volume)?;
    let mut given = std::collections::BTreeMap::new();
    for opt in opts {
        let (key, value) = opt.split_once('=').with_context(|| format!("'{opt}' is not KEY=VALUE (e.g. mount_options=noatime)"))?;
        given.insert(key.to_string(), value.to_string());
    }
    if given.insert("image".into(), image.into()).is_some() {
        anyhow::bail!("give the image as the second argument, not as -o image=");
    }
    let eff = cli_effective(args)?;
    let pool = given.get("pool").cloned().unwrap_or_else(|| eff.defaults.pool.clone());
    let tools = rbdvol::host::tools::Tools::look_up();
    let parsed = rbdvol::engine::options::parse(&given, &eff.defaults.for_pool(&pool), |f| f.available(&tools))?;
    let (cluster, dir_pool) = admin_cluster(args)?;
    let scratch = tempfile_dir()?;
    let me = args.host_id();
    let dir = cluster.open_pool(&dir_pool, "")?;
    let adopter = rbdvol::engine::adopt::Adopter {
        cluster: &cluster,
        dir: &dir,
        tools: &tools,
        scratch: &scratch.0,
        cookie: &me,
        breaks_own_stale_lock: false,
        settle: None,
        unlock_failed: Default::default(),
    };
    let created = adopter.adopt(volume, &parsed)?;
    let existed = created == rbdvol::engine::Created::AlreadyExisted;
    let text = if existed {
        format!("volume '{volume}' already exists")
    } else {
        format!("volume '{volume}' adopted image {pool}/{image}: docker volume inspect {volume} shows it; docker volume rm (or rbdvol forget) leaves the image")
    };
    say(json, &serde_json::json!({ "volume": volume, "image": image, "pool": pool, "adopted": !existed }), &text)
}

pub fn forget(volume: &str, json: bool, args: &ClusterArgs) -> Result<()> {
    rbdvol::engine::options::validate_name(volume)?;
    let (cluster, pool) = admin_cluster(args)?;
    let image = rbdvol::engine::adopt::forget(&cluster, &pool, volume, &args.host_id())?;
    let text = format!("volume '{volume}' forgotten; its image {image} stays in the pool with its data");
    say(json, &serde_json::json!({ "volume": volume, "image": image.to_string(), "forgotten": true }), &text)
}

/// A private scratch directory (the probe's file), removed when dropped.
struct ScratchDir(std::path::PathBuf);

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tempfile_dir() -> Result<ScratchDir> {
    use std::os::unix::fs::DirBuilderExt;
    let path = std::env::temp_dir().join(format!("rbdvol-adopt-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&path);
    std::fs::DirBuilder::new().mode(0o700).create(&path).with_context(|| format!("cannot create {}", path.display()))?;
    Ok(ScratchDir(path))
}
