//! Other hosts' liveness for automatic takeover, from their keys in Consul.

use std::time::Duration;

use crate::config::consul::{self, Consul};
use crate::engine::takeover::{HostLiveness, Liveness};

use super::session::HOSTS;

/// Whether a host is alive, from its key under `<prefix>hosts/`: held by a
/// session (alive), left without one (its session lapsed: dead), absent
/// (it does not use Consul: unknown).
pub struct ConsulLiveness {
    client: Consul,
    runtime: tokio::runtime::Handle,
}

impl ConsulLiveness {
    /// Asks `client`, on `runtime` (the one serving, entered from the
    /// engine's blocking threads).
    pub fn new(client: Consul, runtime: tokio::runtime::Handle) -> ConsulLiveness {
        ConsulLiveness { client, runtime }
    }
}

/// A host's liveness from what Consul knows of its key.
pub fn liveness_of(key: &consul::LockKey) -> Liveness {
    match key {
        consul::LockKey::Absent => Liveness::Unknown,
        consul::LockKey::Present { session: Some(_), .. } => Liveness::Alive,
        consul::LockKey::Present { session: None, .. } => Liveness::Dead,
    }
}

impl HostLiveness for ConsulLiveness {
    fn liveness(&self, host: &str) -> Result<Liveness, String> {
        // Called from the engine's blocking threads, never the executor; a
        // Mount never waits long on Consul (unknown, then: no takeover).
        let key = format!("{HOSTS}{host}");
        // The timer is made inside block_on, where the runtime is entered.
        let ask = async { tokio::time::timeout(Duration::from_secs(5), self.client.lock_key(&key)).await };
        match self.runtime.block_on(ask) {
            Ok(Ok(key)) => Ok(liveness_of(&key)),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("consul at {} did not answer within 5 s", self.client.settings.addr)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_key_held_by_a_session_is_alive_one_without_is_dead_none_is_unknown() {
        let held = consul::LockKey::Present { value: "{}".into(), session: Some("s-1".into()) };
        let lapsed = consul::LockKey::Present { value: "{}".into(), session: None };
        assert!(matches!(liveness_of(&held), Liveness::Alive));
        assert!(matches!(liveness_of(&lapsed), Liveness::Dead));
        assert!(matches!(liveness_of(&consul::LockKey::Absent), Liveness::Unknown));
    }
}
