//! This host's Consul session: renewed while rbdvol serves, holding
//! `<prefix>hosts/<host>` so other hosts can tell this one is alive.

use std::time::Duration;

use crate::config::consul::{self, Consul, ConsulSettings};

use super::Reported;

/// Where each host's liveness key lives, under the prefix: held by its
/// Consul session while its rbdvol renews it.
pub const HOSTS: &str = "hosts/";

/// Keeps this host's Consul session alive and `<prefix>hosts/<host>` held
/// by it, so other hosts can tell this one is alive. If this host dies (or
/// its rbdvol stops for longer than the TTL), the session lapses and the
/// key is left without one: the host is dead for automatic takeover. The
/// session is never destroyed on a clean stop: volumes stay mounted then.
pub async fn keep_session(settings: ConsulSettings, host_id: String, ttl: Duration) {
    let Ok(client) = Consul::new(settings) else { return };
    let key = format!("{HOSTS}{host_id}");
    let value = serde_json::json!({ "host": host_id, "pid": std::process::id() }).to_string();
    let (mut session, mut held) = (None::<String>, false);
    let mut reported = Reported::default();
    let mut every = tokio::time::interval(ttl / 3);
    loop {
        every.tick().await;
        let step: Result<(), consul::ConsulError> = async {
            if let Some(id) = &session {
                if client.session_renew(id).await? {
                    if held {
                        return Ok(());
                    }
                } else {
                    tracing::warn!("this host's consul session lapsed (unrenewed for over {} s): registering again", ttl.as_secs());
                    (session, held) = (None, false);
                }
            }
            let id = match &session {
                Some(id) => id.clone(),
                None => client.session_create(&format!("rbdvol {host_id}"), ttl).await?,
            };
            session = Some(id.clone());
            held = client.acquire(&key, &value, &id).await?;
            if held {
                tracing::info!("registered in consul as host '{host_id}' (session ttl {} s)", ttl.as_secs());
            } else {
                reported.error(format!("another rbdvol holds consul key {key}: host ids must be unique (RBDVOL_HOST_ID)"));
            }
            Ok(())
        }
        .await;
        if let Err(e) = step {
            reported.error(format!("cannot renew this host's consul session: {e}"));
        }
    }
}
