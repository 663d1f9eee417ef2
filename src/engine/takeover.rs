//! Taking a volume over from a host that is dead (or must be treated so),
//! without ever letting two hosts write to it.
//!
//! The holder is named by rbdvol's host lock (cookie = host id); the
//! clients that can write for it are recorded at mount in `rbdvol.mounted`
//! (`MountedBy::clients`: every watcher of the image once mapped — the
//! mapper's librbd or kernel client and the plugin's own). Takeover
//! blocklists each of them with an expiry, breaks the host lock, and waits
//! until none of them still watches the image (the OSDs drop the watches of
//! blocklisted clients). Only then may another host map the image: any
//! write the old holder still sends is refused by the OSDs.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use super::records::{lock_host, now_rfc3339, Fenced, MountedBy, FENCED_KEY, MOUNTED_KEY};
use super::EngineError;
use crate::ceph::{CephError, Header, Image};
use crate::host::crash;

/// How long a takeover waits for the fenced clients' watches to go. The
/// OSDs drop a blocklisted client's watch at their next map; a dead
/// client's watch times out after `osd_client_watch_timeout` (30 s).
pub const WATCHES_GONE: Duration = Duration::from_secs(45);

/// What a takeover did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TakenOver {
    /// The host that held the volume.
    pub from: String,
    /// The client addresses blocklisted.
    pub fenced: Vec<String>,
    /// How long the blocklist entries last.
    pub expiry_secs: u64,
}

/// Why a holder was found dead, or why not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// Its session in Consul lapsed (or it never renewed it).
    Dead,
    /// It renews its session: alive.
    Alive,
    /// It does not register with Consul: only an admin can tell.
    Unknown,
}

/// Tells whether a host is alive (Consul sessions, see `main`).
pub trait HostLiveness: Send + Sync {
    fn liveness(&self, host: &str) -> Result<Liveness, String>;
}

/// A nonce of 0 would make a blocklist entry cover every client of the
/// address's IP — other volumes, other plugins. Never fence a whole host.
fn is_single_client(addr: &str) -> bool {
    addr.rsplit_once('/').is_some_and(|(_, nonce)| nonce.parse::<u64>().is_ok_and(|n| n != 0))
}

/// The clients that may write for the holder of `header`'s host lock.
fn holder_clients(header: &Header, image: &Image, holder_addr: &str, holder: &str, own_addr: &str) -> Result<BTreeSet<String>, EngineError> {
    let record = header.metadata_get(MOUNTED_KEY)?.and_then(|m| MountedBy::parse(&m)).filter(|by| by.host == holder);
    let watchers = if record.is_some() { Vec::new() } else { image.watchers()?.into_iter().map(|w| w.addr).collect() };
    if record.is_none() && !watchers.is_empty() {
        tracing::warn!(
            "volume '{}': host '{holder}' left no record of its clients (a crash while mounting): fencing every client watching the image ({})",
            image.name(),
            watchers.join(", ")
        );
    }
    Ok(clients_to_fence(record, holder_addr, watchers, own_addr))
}

/// Whom to fence for a holder: exactly the clients it recorded at its
/// mount (its mapper's and its plugin's) and its lock's client — never
/// another watcher of the image (a mgr, rbd-mirror, a backup job). Only
/// when it left no record (a crash between taking the lock and recording
/// its mount) is every current watcher fenced: one of them may be its
/// mapper. Never the caller (`own`), never a whole host (nonce 0).
fn clients_to_fence(record: Option<MountedBy>, holder_addr: &str, watchers: Vec<String>, own: &str) -> BTreeSet<String> {
    let mut addrs: BTreeSet<String> = record.map(MountedBy::all_clients).unwrap_or_default();
    addrs.insert(holder_addr.to_string());
    addrs.extend(watchers);
    let own = plain_addr(own);
    addrs.iter().map(|a| plain_addr(a)).filter(|a| *a != own && is_single_client(a)).collect()
}

/// An address without its messenger type (`v1:`, `v2:`, `any:`): librados
/// writes it both ways, the blocklist without.
fn plain_addr(addr: &str) -> String {
    ["v1:", "v2:", "any:"].iter().find_map(|p| addr.strip_prefix(p)).unwrap_or(addr).to_string()
}

/// Watchers of `image` among `addrs`.
pub fn watching(image: &Image, addrs: &BTreeSet<String>) -> Result<Vec<String>, CephError> {
    Ok(watching_among(image.watchers()?.into_iter().map(|w| w.addr), addrs))
}

/// The `watchers` (addresses) that are among `addrs`, whatever their
/// messenger type.
pub fn watching_among(watchers: impl IntoIterator<Item = String>, addrs: &BTreeSet<String>) -> Vec<String> {
    let addrs: BTreeSet<String> = addrs.iter().map(|a| plain_addr(a)).collect();
    watchers.into_iter().map(|w| plain_addr(&w)).filter(|a| addrs.contains(a)).collect()
}

/// Fences the host holding the volume's host lock (any host but `me`) and
/// breaks its lock. `image` is an open handle of the volume (read-only is
/// enough); `own_addr` is the caller's client address, never fenced.
/// Idempotent: with no other holder it does nothing and returns `None`.
pub fn fence_holder(
    header: &Header,
    image: &Image,
    me: &str,
    own_addr: &str,
    expiry: Duration,
) -> Result<Option<TakenOver>, EngineError> {
    let lockers = header.host_lockers()?;
    let Some(holder) = lockers.lockers.into_iter().find(|l| lock_host(&l.cookie) != me) else { return Ok(None) };
    let holder_host = lock_host(&holder.cookie).to_string();
    let addrs = holder_clients(header, image, &holder.addr, &holder_host, own_addr)?;
    // Recorded first: whatever happens from here (a crash of this very
    // takeover included), whoever holds the volume next keeps these
    // clients blocklisted until that host lets go.
    let mut fenced = Fenced::parse_list(header.metadata_get(FENCED_KEY)?.as_deref());
    fenced.retain(|f| f.host != holder_host);
    fenced.push(Fenced { host: holder_host.clone(), clients: addrs.iter().cloned().collect(), since: now_rfc3339() });
    header.metadata_set(FENCED_KEY, &Fenced::list_json(&fenced))?;
    let cluster = header.pool().cluster();
    for addr in &addrs {
        cluster.blocklist_add(addr, expiry)?;
    }
    crate::metrics::global().fenced(addrs.len());
    tracing::warn!(
        "volume '{}': fenced host '{}' (blocklisted {} for {} s)",
        image.name(),
        holder_host,
        addrs.iter().cloned().collect::<Vec<_>>().join(", "),
        expiry.as_secs()
    );
    crash::point("takeover.blocklisted", image.name());
    match header.host_break_lock(&holder.client, &holder.cookie) {
        Ok(_) | Err(CephError::NotFound { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    crash::point("takeover.broken", image.name());
    let start = Instant::now();
    loop {
        let left = watching(image, &addrs)?;
        if left.is_empty() {
            break;
        }
        if start.elapsed() > WATCHES_GONE {
            return Err(EngineError::StillWatched {
                name: image.name().to_string(),
                host: holder_host.clone(),
                since: "before its fencing".into(),
                watchers: left.join(", "),
            });
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    header.metadata_remove(MOUNTED_KEY)?;
    crate::metrics::global().took_over();
    Ok(Some(TakenOver { from: holder_host, fenced: addrs.into_iter().collect(), expiry_secs: expiry.as_secs() }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_whole_host_is_never_fenced() {
        assert!(is_single_client("127.0.0.1:0/3141592653"));
        assert!(is_single_client("v1:10.0.0.5:0/42"));
        assert!(!is_single_client("10.0.0.5:0/0"));
        assert!(!is_single_client("10.0.0.5"));
        assert!(!is_single_client("10.0.0.5:0/x"));
    }

    #[test]
    fn only_the_clients_a_holder_recorded_are_fenced_never_other_watchers() {
        let record = MountedBy {
            host: "a".into(),
            addr: "10.0.0.1:0/11".into(),
            since: "t".into(),
            clients: vec!["v1:10.0.0.1:0/22".into()],
        };
        let fenced = clients_to_fence(Some(record), "10.0.0.1:0/11", vec![], "10.0.0.2:0/99");
        assert_eq!(fenced.into_iter().collect::<Vec<_>>(), vec!["10.0.0.1:0/11", "10.0.0.1:0/22"]);
        // Without a record (a crash while mounting): every watcher but the caller.
        let fenced = clients_to_fence(None, "10.0.0.1:0/11", vec!["10.0.0.3:0/33".into(), "10.0.0.2:0/99".into(), "10.0.0.4:0/0".into()], "10.0.0.2:0/99");
        assert_eq!(fenced.into_iter().collect::<Vec<_>>(), vec!["10.0.0.1:0/11", "10.0.0.3:0/33"]);
    }

    #[test]
    fn addresses_compare_without_their_messenger_type() {
        assert_eq!(plain_addr("v1:127.0.0.1:0/761309133"), "127.0.0.1:0/761309133");
        assert_eq!(plain_addr("127.0.0.1:0/761309133"), "127.0.0.1:0/761309133");
    }
}
