//! The host side: the only layer that makes syscalls (mount, loop devices,
//! keyrings, sysfs) and runs child processes. Mappers turn an image into a
//! block device; `fs` formats, grows and mounts it.

pub mod crash;
pub mod fs;
pub mod fusefs;
pub mod io_stats;
pub mod mapper;
pub mod mounts;
pub mod probe;
pub mod supervise;
pub mod sys;
pub mod tools;

use std::path::PathBuf;

use crate::ceph::CephError;

/// Errors of the host layer: each names the device, path or tool involved.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error(transparent)]
    Ceph(#[from] CephError),

    #[error(transparent)]
    State(#[from] crate::state::StateError),

    #[error("{tool} is not installed (looked for '{program}'): {hint}")]
    ToolMissing { tool: &'static str, program: &'static str, hint: &'static str },

    #[error("{tool} failed on {target} ({status}): {stderr}")]
    ToolFailed { tool: &'static str, target: String, status: String, stderr: String },

    #[error("{op} {path}: {source}")]
    Io { op: &'static str, path: PathBuf, source: std::io::Error },

    #[error("{op} {path}: {errno}")]
    Sys { op: &'static str, path: PathBuf, errno: nix::errno::Errno },

    #[error("mapper '{mapper}' cannot map {image}: {reason}")]
    Unsupported { mapper: &'static str, image: String, reason: String },

    #[error("mapping {image} with {mapper} failed: {reason}")]
    MapFailed { mapper: &'static str, image: String, reason: String },

    /// `found`: "a TYPE filesystem" or "no filesystem".
    #[error("{device} holds {found}, not {wanted}: refusing to format or mount it as {wanted}")]
    WrongFilesystem { device: PathBuf, found: String, wanted: String },

    #[error("invalid {what} '{value}': {reason}")]
    Invalid { what: &'static str, value: String, reason: String },
}

impl HostError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> HostError {
        let path = path.into();
        move |source| HostError::Io { op, path, source }
    }

    pub(crate) fn sys(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(nix::errno::Errno) -> HostError {
        let path = path.into();
        move |errno| HostError::Sys { op, path, errno }
    }
}

/// Which image a mapping is for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct ImageRef {
    pub pool: String,
    #[serde(default)]
    pub namespace: String,
    pub image: String,
}

impl std::fmt::Display for ImageRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{}/{}", self.pool, self.image)
        } else {
            write!(f, "{}/{}/{}", self.pool, self.namespace, self.image)
        }
    }
}
