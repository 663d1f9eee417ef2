//! The cephx key a Swarm secret carries (`docker volume create --secret
//! key=<secret id>`): Swarm hands it to the CSI plugin in the `secrets` of
//! its calls. It ranks as the files do: used when no flag, variable or
//! Consul entry gives a key (a keyring file for the user still wins).
//! Watchers of the settings subscribe and resolve again when it changes.

use tokio::sync::watch;

use super::Secret;

/// Shared: every clone sees the same key.
#[derive(Clone)]
pub struct SwarmKey(std::sync::Arc<watch::Sender<Option<Secret>>>);

impl Default for SwarmKey {
    fn default() -> Self {
        SwarmKey(std::sync::Arc::new(watch::channel(None).0))
    }
}

impl SwarmKey {
    /// The key, if a Swarm secret gave one.
    pub fn get(&self) -> Option<Secret> {
        self.0.borrow().clone()
    }

    /// Puts `key` in force; true if it differs from the one before.
    pub fn set(&self, key: Secret) -> bool {
        self.0.send_if_modified(|current| {
            if current.as_ref() == Some(&key) {
                return false;
            }
            *current = Some(key);
            true
        })
    }

    /// Puts back `previous` if `tried` is still the key in force (a key
    /// the cluster refused, or whose caller went away before it was tried;
    /// a later call may have put in another since).
    pub fn restore_if(&self, tried: &Secret, previous: Option<Secret>) {
        self.0.send_if_modified(|current| {
            if current.as_ref() != Some(tried) || *current == previous {
                return false;
            }
            *current = previous;
            true
        });
    }

    /// Told of every change from now on.
    pub fn subscribe(&self) -> watch::Receiver<Option<Secret>> {
        self.0.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_new_key_wakes_subscribers_and_the_same_key_again_does_not() {
        let key = SwarmKey::default();
        let mut rx = key.subscribe();
        assert!(key.get().is_none());
        assert!(key.set(Secret::new("AQB1")));
        rx.changed().await.unwrap();
        assert_eq!(key.clone().get().unwrap().expose(), "AQB1");
        assert!(!key.set(Secret::new("AQB1")));
        assert!(!rx.has_changed().unwrap());
        assert!(key.set(Secret::new("AQB2")));
        assert!(rx.has_changed().unwrap());
    }

    #[test]
    fn a_tried_key_is_put_back_only_while_it_is_still_in_force() {
        let key = SwarmKey::default();
        key.set(Secret::new("good"));
        key.set(Secret::new("bad"));
        key.restore_if(&Secret::new("bad"), Some(Secret::new("good")));
        assert_eq!(key.get().unwrap().expose(), "good");
        key.set(Secret::new("newer"));
        key.restore_if(&Secret::new("bad"), None);
        assert_eq!(key.get().unwrap().expose(), "newer", "another call's key stays");
    }
}
