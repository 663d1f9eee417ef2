//! The one path from a librados/librbd return code to a typed error.

use std::fmt;
use std::os::raw::c_int;

/// The object an operation was about, named the way an operator names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Cluster { mon_host: String },
    Pool { pool: String, namespace: String },
    Image { pool: String, namespace: String, image: String },
    /// A client address (blocklisting).
    Client { addr: String },
}

impl Target {
    pub(crate) fn pool(pool: &str, namespace: &str) -> Self {
        Target::Pool { pool: pool.to_string(), namespace: namespace.to_string() }
    }
    pub(crate) fn image(pool: &str, namespace: &str, image: &str) -> Self {
        Target::Image { pool: pool.to_string(), namespace: namespace.to_string(), image: image.to_string() }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Cluster { mon_host } => write!(f, "ceph cluster at '{mon_host}'"),
            Target::Pool { pool, namespace } if namespace.is_empty() => write!(f, "pool '{pool}'"),
            Target::Pool { pool, namespace } => write!(f, "pool '{pool}' namespace '{namespace}'"),
            Target::Image { pool, namespace, image } if namespace.is_empty() => write!(f, "image '{pool}/{image}'"),
            Target::Image { pool, namespace, image } => write!(f, "image '{pool}/{namespace}/{image}'"),
            Target::Client { addr } => write!(f, "client '{addr}'"),
        }
    }
}

/// Errors of the Ceph layer. Every variant that comes from a return code
/// keeps the operation, the target and the errno.
#[derive(Debug, thiserror::Error)]
pub enum CephError {
    #[error("{what} {value:?} is invalid: {reason}")]
    InvalidArgument { what: &'static str, value: String, reason: &'static str },

    #[error("pool '{pool}' does not exist: create it (ceph osd pool create {pool}; rbd pool init {pool}) or use another pool")]
    PoolNotFound { op: &'static str, pool: String, errno: c_int },

    #[error("ceph option '{option}' is unknown or its value is invalid (errno {errno})")]
    BadOption { option: String, errno: c_int },

    #[error("{target} has snapshots: remove them first")]
    HasSnapshots { op: &'static str, target: Target, errno: c_int },

    #[error("{target} does not exist")]
    NotFound { op: &'static str, target: Target, errno: c_int },

    #[error("{target} already exists")]
    AlreadyExists { op: &'static str, target: Target, errno: c_int },

    #[error("{target} has {watchers} watcher{s}: it is in use; unmount it where it is mapped first", s = if *.watchers == 1 { "" } else { "s" })]
    InUse { op: &'static str, target: Target, watchers: usize, errno: c_int },

    #[error("{op} {target}: the lock is held by another client")]
    LockBusy { op: &'static str, target: Target, errno: c_int },

    #[error("cannot shrink {target} from {current} to {requested} bytes: images only grow")]
    Shrink { target: Target, current: u64, requested: u64 },

    #[error("authentication as 'client.{user}' to {target} failed: check the user and its key (errno {errno})")]
    Auth { op: &'static str, target: Target, user: String, errno: c_int },

    #[error("{op} {target} timed out: check that the monitors and OSDs are reachable (errno {errno})")]
    TimedOut { op: &'static str, target: Target, errno: c_int },

    #[error("{op} {target}: this client is blocklisted by the cluster (fenced); reconnect to get a new identity")]
    Blocklisted { op: &'static str, target: Target, errno: c_int },

    #[error("{op} {target}: permission denied: the cephx user lacks the caps for this (errno {errno})")]
    PermissionDenied { op: &'static str, target: Target, errno: c_int },

    #[error("{op} {target} failed: {description} (errno {errno})")]
    Other { op: &'static str, target: Target, errno: c_int, description: String },
}

impl CephError {
    /// The errno behind this error, when it came from Ceph.
    pub fn errno(&self) -> Option<c_int> {
        match self {
            CephError::InvalidArgument { .. } => Some(libc::EINVAL),
            CephError::Shrink { .. } => Some(libc::EINVAL),
            CephError::PoolNotFound { errno, .. }
            | CephError::NotFound { errno, .. }
            | CephError::BadOption { errno, .. }
            | CephError::HasSnapshots { errno, .. }
            | CephError::AlreadyExists { errno, .. }
            | CephError::InUse { errno, .. }
            | CephError::LockBusy { errno, .. }
            | CephError::Auth { errno, .. }
            | CephError::TimedOut { errno, .. }
            | CephError::Blocklisted { errno, .. }
            | CephError::PermissionDenied { errno, .. }
            | CephError::Other { errno, .. } => Some(*errno),
        }
    }

    /// Builds the error for `errno` (positive) returned by `op` on `target`.
    pub(crate) fn from_errno(op: &'static str, target: Target, errno: c_int) -> Self {
        match (errno, &target) {
            (libc::ENOENT, Target::Pool { pool, .. }) => CephError::PoolNotFound { op, pool: pool.clone(), errno },
            (libc::ENOENT, _) => CephError::NotFound { op, target, errno },
            (libc::EEXIST, _) => CephError::AlreadyExists { op, target, errno },
            (libc::EBUSY, _) => CephError::LockBusy { op, target, errno },
            (libc::ETIMEDOUT, _) => CephError::TimedOut { op, target, errno },
            (libc::ESHUTDOWN, _) => CephError::Blocklisted { op, target, errno },
            (libc::EACCES | libc::EPERM, _) => CephError::PermissionDenied { op, target, errno },
            _ => CephError::Other { op, target, errno, description: describe(errno) },
        }
    }
}

/// The one helper every FFI return code goes through: a negative value is
/// `-errno`, anything else is passed back.
pub(crate) fn check(ret: c_int, op: &'static str, target: impl FnOnce() -> Target) -> Result<c_int, CephError> {
    if ret < 0 {
        Err(CephError::from_errno(op, target(), -ret))
    } else {
        Ok(ret)
    }
}

/// Same for calls that return `ssize_t`.
pub(crate) fn check_ssize(ret: isize, op: &'static str, target: impl FnOnce() -> Target) -> Result<usize, CephError> {
    if ret < 0 {
        Err(CephError::from_errno(op, target(), (-ret) as c_int))
    } else {
        Ok(ret as usize)
    }
}

fn describe(errno: c_int) -> String {
    std::io::Error::from_raw_os_error(errno)
        .to_string()
        .split(" (os error")
        .next()
        .unwrap_or_default()
        .to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_pool_names_the_pool() {
        let e = check(-libc::ENOENT, "open pool", || Target::pool("ssd", "")).unwrap_err();
        assert!(matches!(e, CephError::PoolNotFound { .. }));
        assert!(e.to_string().starts_with("pool 'ssd' does not exist"), "{e}");
        assert_eq!(e.errno(), Some(libc::ENOENT));
    }

    #[test]
    fn codes_map_to_kinds() {
        let img = || Target::image("rbd", "", "db");
        assert!(matches!(check(-libc::EEXIST, "create", img), Err(CephError::AlreadyExists { .. })));
        assert!(matches!(check(-libc::EBUSY, "lock", img), Err(CephError::LockBusy { .. })));
        assert!(matches!(check(-libc::ESHUTDOWN, "write", img), Err(CephError::Blocklisted { .. })));
        assert!(matches!(check(-libc::ETIMEDOUT, "open", img), Err(CephError::TimedOut { .. })));
        assert_eq!(check(3, "list", img).unwrap(), 3);
        let e = check(-libc::EIO, "read", img).unwrap_err();
        assert_eq!(e.to_string(), "read image 'rbd/db' failed: input/output error (errno 5)");
    }

    #[test]
    fn in_use_message() {
        let e = CephError::InUse { op: "remove", target: Target::image("rbd", "", "db"), watchers: 2, errno: libc::EBUSY };
        assert!(e.to_string().starts_with("image 'rbd/db' has 2 watchers: it is in use"), "{e}");
        let t = Target::image("rbd", "ns", "db");
        assert_eq!(t.to_string(), "image 'rbd/ns/db'");
    }
}
