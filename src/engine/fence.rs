//! Fencing that holds for as long as it matters. A takeover blocklists the
//! old holder's clients with an expiry and records the host in the image
//! (`records::FENCED_KEY`). Whoever holds the volume then renews those
//! entries (every third of the expiry, at each check) until the fenced host
//! says it let go — it removes its entry once it has released the volume —
//! and, when it unmounts the volume with a host still unacknowledged,
//! renews them for 30 days, so no gap between holders lets a fenced host's
//! writes through. The mappers' own I/O bound (`mapper::IO_TIMEOUT`) ends
//! every request a fenced host had in flight long before any entry could.

use std::time::{Duration, Instant};

use super::records::{Fenced, FENCED_KEY};
use super::store::{Store, Volume};
use super::{EngineError, Inner};

/// How long fenced clients stay blocklisted when the volume is unmounted
/// before they acknowledged (nobody renews them meanwhile).
const FENCE_HELD_UNMOUNTED: Duration = Duration::from_secs(30 * 24 * 3600);

/// When to renew: `None` at each check (every third of the expiry), or at
/// once for the given expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Renew {
    WhenDue,
    Unmounting,
}

impl Inner {
    /// The hosts other than this one fenced off `vol`. An entry naming this
    /// host, which holds the volume, is left by a takeover that never
    /// finished: never fence oneself.
    pub(super) fn fenced_others(&self, vol: &dyn Volume) -> Result<Vec<Fenced>, EngineError> {
        Ok(Fenced::parse_list(vol.metadata_get(FENCED_KEY)?.as_deref()).into_iter().filter(|f| f.host != self.cfg.host_id).collect())
    }

    /// Renews the blocklist entries of the hosts fenced off `vol`, a volume
    /// this host holds.
    pub(super) fn keep_fenced(&self, store: &dyn Store, vol: &dyn Volume, name: &str, renew: Renew) -> Result<(), EngineError> {
        let fenced = self.fenced_others(vol)?;
        let mut renewed = self.fence_renewed.lock().unwrap();
        if fenced.is_empty() {
            renewed.remove(name);
            return Ok(());
        }
        let expiry = match renew {
            Renew::Unmounting => FENCE_HELD_UNMOUNTED,
            Renew::WhenDue if renewed.get(name).is_some_and(|at| at.elapsed() < self.cfg.blocklist_expiry / 3) => return Ok(()),
            Renew::WhenDue => self.cfg.blocklist_expiry,
        };
        for f in &fenced {
            for client in &f.clients {
                store.blocklist(client, expiry)?;
            }
        }
        renewed.insert(name.to_string(), Instant::now());
        let hosts: Vec<&str> = fenced.iter().map(|f| f.host.as_str()).collect();
        tracing::debug!("volume '{name}': fenced host(s) {} kept blocklisted for {} s", hosts.join(", "), expiry.as_secs());
        Ok(())
    }

    /// Says this host let go of `vol`, which another host fenced it off:
    /// lifts the blocklisting of its old clients (nothing of them is left
    /// here) and removes its entry, so the holder stops renewing it.
    pub(super) fn acknowledge_fence(&self, store: &dyn Store, vol: &dyn Volume) -> Result<(), EngineError> {
        let mut fenced = Fenced::parse_list(vol.metadata_get(FENCED_KEY)?.as_deref());
        let before = fenced.len();
        for f in fenced.iter().filter(|f| f.host == self.cfg.host_id) {
            for client in &f.clients {
                if let Err(e) = store.unblocklist(client) {
                    tracing::warn!("volume '{}': cannot lift the blocklisting of this host's old client {client} (it expires by itself): {e}", vol.name());
                }
            }
        }
        fenced.retain(|f| f.host != self.cfg.host_id);
        if fenced.len() == before {
            return Ok(());
        }
        if fenced.is_empty() {
            vol.metadata_remove(FENCED_KEY)?;
        } else {
            vol.metadata_set(FENCED_KEY, &Fenced::list_json(&fenced))?;
        }
        tracing::info!("volume '{}': this host, fenced off it, has let go of it (its holder stops renewing the fencing)", vol.name());
        Ok(())
    }
}
