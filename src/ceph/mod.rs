//! The safe layer over librados and librbd: the only module that touches
//! `rbdvol_sys`. Handles own what they open and close it on drop; a child
//! handle (pool, image) keeps its parent alive. Every call here blocks: from
//! async code, run it through [`offload`].

pub mod aio;
mod blocking;
mod cluster;
mod error;
mod header;
mod image;
mod pool;

pub use blocking::offload;
pub use cluster::{option_accepted, Cluster};
pub use error::{CephError, Target};
pub use header::Header;
pub use image::{Done, Grow, Image, ImageInfo, LockMode, Locker, Lockers, Snapshot, Watcher};
pub use pool::{features_from_str, features_to_string, order_from_object_size, CreateOptions, ImageSpec, Pool};

/// Image feature bits, as librbd numbers them.
pub mod features {
    use rbdvol_sys as sys;
    pub const LAYERING: u64 = sys::RBD_FEATURE_LAYERING as u64;
    pub const EXCLUSIVE_LOCK: u64 = sys::RBD_FEATURE_EXCLUSIVE_LOCK as u64;
    pub const OBJECT_MAP: u64 = sys::RBD_FEATURE_OBJECT_MAP as u64;
    pub const FAST_DIFF: u64 = sys::RBD_FEATURE_FAST_DIFF as u64;
    pub const DEEP_FLATTEN: u64 = sys::RBD_FEATURE_DEEP_FLATTEN as u64;
    pub const DATA_POOL: u64 = sys::RBD_FEATURE_DATA_POOL as u64;
    pub const STRIPINGV2: u64 = sys::RBD_FEATURE_STRIPINGV2 as u64;
}

/// librbd's version (major, minor, extra).
pub fn librbd_version() -> (i32, i32, i32) {
    let (mut major, mut minor, mut extra) = (0, 0, 0);
    // SAFETY: three valid out-pointers; the call only writes them.
    unsafe { rbdvol_sys::rbd_version(&mut major, &mut minor, &mut extra) };
    (major, minor, extra)
}
