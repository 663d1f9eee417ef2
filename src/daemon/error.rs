//! The daemon's one error type.
//!
//! Each variant that wraps an I/O error keeps it as its source (not in its
//! message), so the binary prints the failing step and then its cause, as
//! it always has.

use std::path::PathBuf;

use crate::engine::EngineError;
use crate::host::HostError;
use crate::metrics::MetricsError;
use crate::state::StateError;

/// Errors of `rbdvol serve`, each naming the setting, path or step.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// A flag or environment variable with a value it cannot take.
    #[error("invalid {name} '{value}': {expected}")]
    InvalidSetting { name: String, value: String, expected: String },

    #[error("locating the rbdvol binary")]
    CurrentExe(#[source] std::io::Error),

    #[error("creating {path}")]
    CreateDir { path: PathBuf, source: std::io::Error },

    #[error("removing stale socket {path}")]
    RemoveStaleSocket { path: PathBuf, source: std::io::Error },

    #[error("installing the SIGTERM handler")]
    SignalHandler(#[source] std::io::Error),

    #[error("listening on {path}")]
    Listen { path: PathBuf, source: std::io::Error },

    #[error("listening for metrics on {addr} (RBDVOL_METRICS_ADDR)")]
    MetricsListen { addr: String, source: std::io::Error },

    #[error(transparent)]
    Metrics(#[from] MetricsError),

    /// Setting the plugin socket's mode (0660).
    #[error(transparent)]
    SocketMode(std::io::Error),

    /// Building the async runtime.
    #[error(transparent)]
    Runtime(std::io::Error),

    /// The plugin's HTTP server stopped on an error.
    #[error(transparent)]
    Serve(std::io::Error),

    #[error(transparent)]
    State(#[from] StateError),

    #[error(transparent)]
    Host(#[from] HostError),

    /// Boxed: the engine's error is as large as the rest together.
    #[error(transparent)]
    Engine(Box<EngineError>),
}

impl From<EngineError> for DaemonError {
    fn from(e: EngineError) -> Self {
        DaemonError::Engine(Box::new(e))
    }
}
