//! The connection to the cluster: the settings in force, the shared RADOS
//! client made from them on first use, and forgetting it once the cluster
//! fenced it.

use std::sync::{Arc, Mutex, RwLock};

use super::store::{CephStore, Store};
use super::{EngineError, Inner};
use crate::ceph::{CephError, Cluster};
use crate::config::{CephSettings, ConfigError};

pub(super) struct Connection {
    settings: RwLock<Result<CephSettings, ConfigError>>,
    cluster: Mutex<Option<Cluster>>,
    /// Held by the one caller connecting (never the slot's lock).
    connecting: Mutex<()>,
    /// When the last connect failed, and how.
    failed: Mutex<Option<(std::time::Instant, String)>>,
    /// The last connect failure logged (logged once, not once per call).
    last_error: Mutex<Option<String>>,
    /// A store to use instead of the cluster's (unit tests).
    store: Option<Arc<dyn Store>>,
}

/// The settings to fix for a failed connect, named in the error.
pub(crate) fn settings_to_fix(e: &CephError) -> &'static str {
    match e {
        CephError::Auth { .. } => "RBD_CONF_KEYRING_USER, RBD_CONF_KEYRING_KEY",
        CephError::TimedOut { .. } => "RBD_CONF_GLOBAL_MON_HOST (and that the monitors are reachable from this host)",
        CephError::InvalidArgument { .. } | CephError::BadOption { .. } => "RBD_CONF_GLOBAL_MON_HOST, RBD_CONF_<SECTION>_<OPTION>",
        _ => "RBD_CONF_GLOBAL_MON_HOST, RBD_CONF_KEYRING_USER, RBD_CONF_KEYRING_KEY",
    }
}

impl Connection {
    pub fn new(settings: Result<CephSettings, ConfigError>) -> Connection {
        Connection { settings: RwLock::new(settings), cluster: Mutex::new(None), connecting: Mutex::new(()), failed: Mutex::new(None), last_error: Mutex::new(None), store: None }
    }

    /// A connection whose host path goes to `store` (unit tests).
    #[cfg(test)]
    pub fn with_store(store: Arc<dyn Store>) -> Connection {
        let settings = CephSettings {
            mon_host: "127.0.0.1:1".into(),
            user: "test".into(),
            key: crate::config::Secret::new("unit-test-key"),
            options: Default::default(),
            lenient: Default::default(),
            timeouts: Default::default(),
        };
        Connection { store: Some(store), ..Connection::new(Ok(settings)) }
    }

    pub fn settings(&self) -> Result<CephSettings, EngineError> {
        self.settings.read().unwrap().clone().map_err(EngineError::Config)
    }

    /// Puts `settings` in force; when they differ from the current ones,
    /// the next call connects anew, and they are returned.
    pub fn replace_settings(&self, settings: Result<CephSettings, ConfigError>) -> Option<Result<CephSettings, ConfigError>> {
        if *self.settings.read().unwrap() == settings {
            return None;
        }
        match &settings {
            Ok(s) => tracing::info!("new cluster settings in force (monitors {}, user client.{})", s.mon_host, s.user),
            Err(e) => tracing::error!("{e}"),
        }
        *self.settings.write().unwrap() = settings.clone();
        *self.cluster.lock().unwrap() = None;
        *self.last_error.lock().unwrap() = None;
        Some(settings)
    }

    /// The shared connection, made on first use (so the plugin starts even
    /// while the cluster is unreachable). The slot's lock is never held
    /// across the connect (up to `RBDVOL_CONNECT_TIMEOUT`): callers that
    /// need no connection, and a settings change, never wait behind it;
    /// concurrent callers share one connect attempt.
    pub fn cluster(&self) -> Result<Cluster, EngineError> {
        #[cfg(test)]
        if self.store.is_some() {
            return Err(EngineError::Config(ConfigError::Consul("unit tests have no cluster".into())));
        }
        if let Some(c) = self.cluster.lock().unwrap().as_ref() {
            return Ok(c.clone());
        }
        let waiting_since = std::time::Instant::now();
        let _one_connect = self.connecting.lock().unwrap();
        if let Some(c) = self.cluster.lock().unwrap().as_ref() {
            return Ok(c.clone());
        }
        // The connect this caller waited for failed: its answer, not a
        // connect of its own (callers queued behind a dead cluster would
        // each wait a whole connect timeout more).
        if let Some((at, text)) = self.failed.lock().unwrap().as_ref() {
            if *at >= waiting_since {
                return Err(EngineError::ClusterUnreachable { detail: format!("not connected ({text})") });
            }
        }
        let settings = self.settings()?;
        let c = Cluster::connect(&settings).map_err(|source| {
            let settings = settings_to_fix(&source);
            let e = EngineError::Connect { source: Box::new(source), settings };
            // Once per distinct failure, not once per Docker call.
            let text = e.to_string();
            // Shared only when the cluster did not answer: a refusal (a bad
            // key) is quick to get again, and each caller gets its own.
            if matches!(&e, EngineError::Connect { source, .. } if matches!(**source, CephError::TimedOut { .. })) {
                *self.failed.lock().unwrap() = Some((std::time::Instant::now(), text.clone()));
            }
            let mut last = self.last_error.lock().unwrap();
            if last.as_deref() != Some(text.as_str()) {
                tracing::error!("{text}");
                *last = Some(text);
            }
            e
        })?;
        *self.last_error.lock().unwrap() = None;
        // Settings replaced during the connect: this connection is for the
        // old ones; the next call connects with the new.
        if self.settings.read().unwrap().as_ref().ok() == Some(&settings) {
            *self.cluster.lock().unwrap() = Some(c.clone());
        }
        Ok(c)
    }

    /// Whether a connection is made (a call needs no connect first).
    pub fn is_connected(&self) -> bool {
        self.cluster.lock().unwrap().is_some()
    }

    /// Forgets a connection that the cluster has fenced, so the next call
    /// reconnects with a new identity.
    pub fn forget_if_fenced(&self, e: &EngineError) {
        if let EngineError::Ceph(CephError::Blocklisted { .. }) = e {
            *self.cluster.lock().unwrap() = None;
        }
    }
}

impl Inner {
    /// The store on the cluster: the directory in the default pool.
    pub(super) fn ceph_store(&self) -> Result<CephStore, EngineError> {
        let pool = self.defaults.read().unwrap().pool.clone();
        Ok(CephStore::new(self.connection.cluster()?, &pool))
    }

    /// The store the host path (Mount, Unmount, check, reconcile) uses.
    pub(super) fn store(&self) -> Result<Arc<dyn Store>, EngineError> {
        match &self.connection.store {
            Some(s) => Ok(Arc::clone(s)),
            None => Ok(Arc::new(self.ceph_store()?)),
        }
    }
}
