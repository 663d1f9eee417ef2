//! An io context on one pool and namespace, and the image operations that
//! work on names (create, list, remove, trash).

use std::ffi::CStr;
use std::ptr;
use std::sync::Arc;
use std::time::Duration;

use rbdvol_sys as sys;

use super::blocking::assert_off_executor;
use super::cluster::{cstring, Cluster};
use super::error::{check, CephError, Target};
use super::image::Image;

pub(crate) struct PoolHandle {
    pub(crate) raw: sys::rados_ioctx_t,
    pub(crate) cluster: Cluster,
    pub(crate) name: String,
    pub(crate) namespace: String,
}

// SAFETY: a rados_ioctx_t may be used from several threads at once, except
// for changing its namespace or snapshot context; we set the namespace once,
// in Pool::open before the handle is shared, and never change either after.
unsafe impl Send for PoolHandle {}
// SAFETY: as above.
unsafe impl Sync for PoolHandle {}

impl Drop for PoolHandle {
    fn drop(&mut self) {
        // SAFETY: raw came from a successful rados_ioctx_create; every Image
        // keeps an Arc to this handle, so no image outlives it, and the
        // cluster (held in self.cluster) is shut down only after this runs.
        unsafe { sys::rados_ioctx_destroy(self.raw) };
    }
}

/// One pool and namespace. Cheap to clone; keeps its cluster connection alive.
#[derive(Clone)]
pub struct Pool {
    pub(crate) handle: Arc<PoolHandle>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").field("pool", &self.handle.name).field("namespace", &self.handle.namespace).finish()
    }
}

/// How to lay out a new image. `None` leaves the choice to the cluster's
/// settings (`rbd_default_features`, `rbd_default_order`, ...).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CreateOptions {
    /// Feature bits (`RBD_FEATURE_*`); see [`features_from_str`].
    pub features: Option<u64>,
    /// Object size as a power of two (22 = 4 MiB); see [`order_from_object_size`].
    pub order: Option<u8>,
    /// A separate pool for the image's data objects (e.g. an EC pool).
    pub data_pool: Option<String>,
    pub stripe_unit: Option<u64>,
    pub stripe_count: Option<u64>,
}

/// One image of a pool listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSpec {
    pub id: String,
    pub name: String,
}

/// An owned rbd_image_options_t.
struct ImageOptionsHandle(sys::rbd_image_options_t);

impl Drop for ImageOptionsHandle {
    fn drop(&mut self) {
        // SAFETY: created by rbd_image_options_create, destroyed once.
        unsafe { sys::rbd_image_options_destroy(self.0) };
    }
}

/// Parses librbd's feature list syntax (`layering,exclusive-lock`).
pub fn features_from_str(features: &str) -> Result<u64, CephError> {
    let c = cstring("feature list", features)?;
    let mut bits = 0u64;
    // SAFETY: c is a valid C string; bits is a valid out-pointer.
    let ret = unsafe { sys::rbd_features_from_string(c.as_ptr(), &mut bits) };
    if ret < 0 {
        return Err(CephError::InvalidArgument {
            what: "image features",
            value: features.to_string(),
            reason: "use a comma-separated list of layering, exclusive-lock, object-map, fast-diff, deep-flatten, journaling, data-pool",
        });
    }
    Ok(bits)
}

/// Formats feature bits the way librbd names them.
pub fn features_to_string(features: u64) -> String {
    let mut buf = vec![0u8; 512];
    let mut len = buf.len();
    // SAFETY: buf is writable for len bytes; len is a valid in/out pointer.
    let ret = unsafe { sys::rbd_features_to_string(features, buf.as_mut_ptr().cast(), &mut len) };
    if ret < 0 {
        return format!("{features:#x}");
    }
    super::cluster::string_from_buf(&buf)
}

/// Object size in bytes → order; RBD takes powers of two from 4 KiB to 32 MiB.
pub fn order_from_object_size(bytes: u64) -> Result<u8, CephError> {
    if bytes.is_power_of_two() && (4096..=32 << 20).contains(&bytes) {
        Ok(bytes.trailing_zeros() as u8)
    } else {
        Err(CephError::InvalidArgument {
            what: "object size",
            value: bytes.to_string(),
            reason: "it must be a power of two from 4096 (4K) to 33554432 (32M)",
        })
    }
}

impl Pool {
    pub(crate) fn open(cluster: Cluster, pool: &str, namespace: &str) -> Result<Pool, CephError> {
        assert_off_executor("open pool");
        let target = || Target::pool(pool, namespace);
        let c_pool = cstring("pool name", pool)?;
        let c_ns = cstring("namespace", namespace)?;
        let mut raw: sys::rados_ioctx_t = ptr::null_mut();
        // SAFETY: the cluster handle is connected; raw is a valid out-pointer.
        let ret = unsafe { sys::rados_ioctx_create(cluster.handle.raw, c_pool.as_ptr(), &mut raw) };
        check(ret, "open", target)?;
        // SAFETY: raw is a fresh io context not yet shared with any thread,
        // so setting its namespace here is race-free.
        unsafe { sys::rados_ioctx_set_namespace(raw, c_ns.as_ptr()) };
        Ok(Pool {
            handle: Arc::new(PoolHandle { raw, cluster, name: pool.to_string(), namespace: namespace.to_string() }),
        })
    }

    pub fn name(&self) -> &str {
        &self.handle.name
    }

    pub fn namespace(&self) -> &str {
        &self.handle.namespace
    }

    pub fn cluster(&self) -> &Cluster {
        &self.handle.cluster
    }

    pub(crate) fn target(&self) -> Target {
        Target::pool(&self.handle.name, &self.handle.namespace)
    }

    pub(crate) fn image_target(&self, image: &str) -> Target {
        Target::image(&self.handle.name, &self.handle.namespace, image)
    }

    /// librbd's create options for `options`.
    fn image_options(&self, options: &CreateOptions, target: &dyn Fn() -> Target) -> Result<ImageOptionsHandle, CephError> {
        let mut opts = ImageOptionsHandle(ptr::null_mut());
        // SAFETY: opts.0 is a valid out-pointer; the handle is destroyed by Drop.
        unsafe { sys::rbd_image_options_create(&mut opts.0) };
        let set_u64 = |key: u32, value: u64| {
            // SAFETY: opts.0 is a live options handle; key is one of librbd's
            // RBD_IMAGE_OPTION_* constants taking a uint64.
            check(unsafe { sys::rbd_image_options_set_uint64(opts.0, key as i32, value) }, "set create option for", target)
        };
        set_u64(sys::RBD_IMAGE_OPTION_FORMAT, 2)?;
        if let Some(features) = options.features {
            set_u64(sys::RBD_IMAGE_OPTION_FEATURES, features)?;
        }
        if let Some(order) = options.order {
            set_u64(sys::RBD_IMAGE_OPTION_ORDER, order.into())?;
        }
        if let Some(unit) = options.stripe_unit {
            set_u64(sys::RBD_IMAGE_OPTION_STRIPE_UNIT, unit)?;
        }
        if let Some(count) = options.stripe_count {
            set_u64(sys::RBD_IMAGE_OPTION_STRIPE_COUNT, count)?;
        }
        if let Some(data_pool) = &options.data_pool {
            let c_data_pool = cstring("data pool", data_pool)?;
            // SAFETY: as above; DATA_POOL takes a string that librbd copies.
            let ret = unsafe {
                sys::rbd_image_options_set_string(opts.0, sys::RBD_IMAGE_OPTION_DATA_POOL as i32, c_data_pool.as_ptr())
            };
            check(ret, "set data pool for", target)?;
        }
        Ok(opts)
    }

    /// A missing data pool shows up as ENOENT on the image: name the pool.
    fn create_error(&self, ret: i32, op: &'static str, name: &str, options: &CreateOptions) -> Result<(), CephError> {
        check(ret, op, || match (&options.data_pool, -ret) {
            (Some(data_pool), libc::ENOENT) => Target::pool(data_pool, ""),
            _ => self.image_target(name),
        })
        .map(drop)
        .map_err(|e| match e {
            CephError::NotFound { op, target: Target::Pool { pool, .. }, errno } => CephError::PoolNotFound { op, pool, errno },
            e => e,
        })
    }

    /// Creates an image. Fails with `AlreadyExists` when the name is taken.
    pub fn create_image(&self, name: &str, size: u64, options: &CreateOptions) -> Result<(), CephError> {
        assert_off_executor("create image");
        let c_name = cstring("image name", name)?;
        let opts = self.image_options(options, &|| self.image_target(name))?;
        // SAFETY: the io context is open, c_name outlives the call, opts is live.
        let ret = unsafe { sys::rbd_create4(self.handle.raw, c_name.as_ptr(), size, opts.0) };
        self.create_error(ret, "create", name, options)
    }

    /// Creates image `name` here as a copy-on-write clone of snapshot
    /// `snap` of image `parent` in pool `parent_pool`. Clone format 2: the
    /// snapshot needs no protection, and removing it while clones exist
    /// moves it to the image's trash namespace. Fails with `AlreadyExists`
    /// when the name is taken.
    pub fn clone_image(&self, parent_pool: &Pool, parent: &str, snap: &str, name: &str, options: &CreateOptions) -> Result<(), CephError> {
        assert_off_executor("clone image");
        let (c_parent, c_snap, c_name) = (cstring("image name", parent)?, cstring("snapshot name", snap)?, cstring("image name", name)?);
        let opts = self.image_options(options, &|| self.image_target(name))?;
        // SAFETY: opts.0 is a live options handle; CLONE_FORMAT takes a uint64.
        let ret = unsafe { sys::rbd_image_options_set_uint64(opts.0, sys::RBD_IMAGE_OPTION_CLONE_FORMAT as i32, 2) };
        check(ret, "set clone format for", || self.image_target(name))?;
        // SAFETY: both io contexts are open; the strings outlive the call;
        // opts is live.
        let ret = unsafe {
            sys::rbd_clone3(parent_pool.handle.raw, c_parent.as_ptr(), c_snap.as_ptr(), self.handle.raw, c_name.as_ptr(), opts.0)
        };
        if ret == -libc::ENOENT {
            // The parent image or its snapshot is missing, not the clone.
            return check(ret, "clone", || parent_pool.image_target(&format!("{parent}@{snap}"))).map(drop);
        }
        self.create_error(ret, "clone", name, options)
    }

    /// Opens an image read-write. This registers a watch on it: the handle
    /// counts as a watcher (and so as "in use") until it is dropped.
    pub fn open_image(&self, name: &str) -> Result<Image, CephError> {
        Image::open(self.clone(), name, false)
    }

    /// Opens an image read-only, without a watch: for status checks.
    pub fn open_image_read_only(&self, name: &str) -> Result<Image, CephError> {
        Image::open(self.clone(), name, true)
    }

    /// All images in this pool and namespace.
    pub fn list_images(&self) -> Result<Vec<ImageSpec>, CephError> {
        assert_off_executor("list images");
        let mut max = 16usize;
        loop {
            let mut specs: Vec<sys::rbd_image_spec_t> =
                vec![sys::rbd_image_spec_t { id: ptr::null_mut(), name: ptr::null_mut() }; max];
            // SAFETY: specs has room for max entries; max is a valid in/out pointer.
            let ret = unsafe { sys::rbd_list2(self.handle.raw, specs.as_mut_ptr(), &mut max) };
            if ret == -libc::ERANGE {
                continue; // librbd told us, in max, how many entries it needs
            }
            check(ret, "list images in", || self.target())?;
            let images = specs[..max]
                .iter()
                .map(|s| {
                    // SAFETY: librbd filled the first max entries with valid C strings.
                    unsafe {
                        ImageSpec {
                            id: CStr::from_ptr(s.id).to_string_lossy().into_owned(),
                            name: CStr::from_ptr(s.name).to_string_lossy().into_owned(),
                        }
                    }
                })
                .collect();
            // SAFETY: releases the strings librbd allocated for those max entries.
            unsafe { sys::rbd_image_spec_list_cleanup(specs.as_mut_ptr(), max) };
            return Ok(images);
        }
    }

    /// Removes an image and its data. Refused with `InUse` (and the watcher
    /// count) while any client has it open read-write or mapped.
    pub fn remove_image(&self, name: &str) -> Result<(), CephError> {
        assert_off_executor("remove image");
        let c_name = cstring("image name", name)?;
        // SAFETY: the io context is open and c_name outlives the call.
        let ret = unsafe { sys::rbd_remove(self.handle.raw, c_name.as_ptr()) };
        self.check_removal(ret, "remove", name)
    }

    /// Moves an image to the pool's trash (kept for at least `delay`), and
    /// returns its id for [`Pool::trash_remove`]. Refused with `InUse` while
    /// the image has watchers (checked just before the move).
    pub fn trash_move(&self, name: &str, delay: Duration) -> Result<String, CephError> {
        assert_off_executor("move image to trash");
        // librbd moves an image that is still mapped or open: refuse that
        // ourselves, as rbd_remove does.
        let image = self.open_image_read_only(name)?;
        let watchers = image.watchers()?.len();
        if watchers > 0 {
            return Err(CephError::InUse { op: "move to trash", target: self.image_target(name), watchers, errno: libc::EBUSY });
        }
        let id = image.id()?;
        drop(image);
        let c_name = cstring("image name", name)?;
        // SAFETY: the io context is open and c_name outlives the call.
        let ret = unsafe { sys::rbd_trash_move(self.handle.raw, c_name.as_ptr(), delay.as_secs()) };
        self.check_removal(ret, "move to trash", name)?;
        Ok(id)
    }

    /// Deletes an image from the trash for good. `force` ignores the delay.
    pub fn trash_remove(&self, id: &str, force: bool) -> Result<(), CephError> {
        assert_off_executor("remove image from trash");
        let c_id = cstring("image id", id)?;
        // SAFETY: the io context is open and c_id outlives the call.
        let ret = unsafe { sys::rbd_trash_remove(self.handle.raw, c_id.as_ptr(), force) };
        check(ret, "remove from trash", || self.image_target(&format!("trash/{id}")))?;
        Ok(())
    }

    /// Brings image `id` back from the trash as `name`. `AlreadyExists`
    /// when an image of that name exists; `NotFound` when `id` is not in
    /// the trash (purged, or restored already).
    pub fn trash_restore(&self, id: &str, name: &str) -> Result<(), CephError> {
        assert_off_executor("restore image from trash");
        let c_id = cstring("image id", id)?;
        let c_name = cstring("image name", name)?;
        // SAFETY: the io context is open; both strings outlive the call.
        let ret = unsafe { sys::rbd_trash_restore(self.handle.raw, c_id.as_ptr(), c_name.as_ptr()) };
        check(ret, "restore from trash", || self.image_target(name))?;
        Ok(())
    }

    /// Ids of the images in this pool's trash.
    pub fn trash_list(&self) -> Result<Vec<ImageSpec>, CephError> {
        assert_off_executor("list trash");
        let mut max = 32usize;
        loop {
            // SAFETY: rbd_trash_image_info_t is plain data; zeroed is a valid
            // "empty" value that librbd overwrites.
            let mut entries: Vec<sys::rbd_trash_image_info_t> = (0..max).map(|_| unsafe { std::mem::zeroed() }).collect();
            // SAFETY: entries has room for max entries; max is in/out.
            let ret = unsafe { sys::rbd_trash_list(self.handle.raw, entries.as_mut_ptr(), &mut max) };
            if ret == -libc::ERANGE {
                continue;
            }
            check(ret, "list trash of", || self.target())?;
            let count = max;
            let specs = entries[..count]
                .iter()
                .map(|e| {
                    // SAFETY: librbd filled the first `count` entries.
                    unsafe {
                        ImageSpec {
                            id: CStr::from_ptr(e.id).to_string_lossy().into_owned(),
                            name: CStr::from_ptr(e.name).to_string_lossy().into_owned(),
                        }
                    }
                })
                .collect();
            // SAFETY: releases what librbd allocated for those entries.
            unsafe { sys::rbd_trash_list_cleanup(entries.as_mut_ptr(), count) };
            return Ok(specs);
        }
    }

    /// Pool-level key/value metadata (librbd's `rbd_info` omap): rbdvol's
    /// volume directory. `None` when the key is not set.
    pub fn metadata_get(&self, key: &str) -> Result<Option<String>, CephError> {
        assert_off_executor("get pool metadata");
        let c_key = cstring("metadata key", key)?;
        let (ret, buf) = super::cluster::with_growing_buffer(256, |buf, len| {
            // SAFETY: buf is writable for *len bytes; len is in/out.
            unsafe { sys::rbd_pool_metadata_get(self.handle.raw, c_key.as_ptr(), buf.as_mut_ptr().cast(), len) }
        });
        if ret == -libc::ENOENT {
            return Ok(None);
        }
        check(ret, "get metadata of", || self.target())?;
        Ok(Some(super::cluster::string_from_buf(&buf)))
    }

    pub fn metadata_set(&self, key: &str, value: &str) -> Result<(), CephError> {
        assert_off_executor("set pool metadata");
        let c_key = cstring("metadata key", key)?;
        let c_value = cstring("metadata value", value)?;
        // SAFETY: both strings outlive the call.
        let ret = unsafe { sys::rbd_pool_metadata_set(self.handle.raw, c_key.as_ptr(), c_value.as_ptr()) };
        check(ret, "set metadata on", || self.target()).map(drop)
    }

    /// Removing a key that is not set is not an error.
    pub fn metadata_remove(&self, key: &str) -> Result<(), CephError> {
        assert_off_executor("remove pool metadata");
        let c_key = cstring("metadata key", key)?;
        // SAFETY: c_key outlives the call.
        let ret = unsafe { sys::rbd_pool_metadata_remove(self.handle.raw, c_key.as_ptr()) };
        if ret == -libc::ENOENT {
            return Ok(());
        }
        check(ret, "remove metadata from", || self.target()).map(drop)
    }

    /// Every pool metadata key starting with `prefix`, with its value.
    pub fn metadata_list(&self, prefix: &str) -> Result<Vec<(String, String)>, CephError> {
        assert_off_executor("list pool metadata");
        let mut out = Vec::new();
        let mut start = prefix.to_string();
        let page = 512u64;
        loop {
            let c_start = cstring("metadata key", &start)?;
            let (mut keys_len, mut vals_len) = (64 * 1024usize, 256 * 1024usize);
            let (keys, vals) = loop {
                let mut keys = vec![0u8; keys_len];
                let mut vals = vec![0u8; vals_len];
                let (mut kl, mut vl) = (keys_len, vals_len);
                // SAFETY: both buffers are writable for the lengths passed;
                // the lengths are in/out.
                let ret = unsafe {
                    sys::rbd_pool_metadata_list(
                        self.handle.raw,
                        c_start.as_ptr(),
                        page,
                        keys.as_mut_ptr().cast(),
                        &mut kl,
                        vals.as_mut_ptr().cast(),
                        &mut vl,
                    )
                };
                if ret == -libc::ERANGE {
                    keys_len = kl.max(keys_len * 2);
                    vals_len = vl.max(vals_len * 2);
                    continue;
                }
                if ret == -libc::ENOENT {
                    return Ok(out); // no rbd_info object yet: nothing listed
                }
                check(ret, "list metadata of", || self.target())?;
                keys.truncate(kl.min(keys_len));
                vals.truncate(vl.min(vals_len));
                break (keys, vals);
            };
            let keys = super::cluster::strings_from_list_buf(&keys);
            let mut values = vals.split(|&b| b == 0).map(|v| String::from_utf8_lossy(v).into_owned());
            let n = keys.len();
            let mut past_prefix = false;
            for k in keys {
                let v = values.next().unwrap_or_default();
                // `start` is exclusive after the first page; keys are sorted.
                if k == start && !out.is_empty() {
                    continue;
                }
                if !k.starts_with(prefix) {
                    past_prefix = true;
                    break;
                }
                start = k.clone();
                out.push((k, v));
            }
            if past_prefix || (n as u64) < page {
                return Ok(out);
            }
        }
    }

    fn check_removal(&self, ret: i32, op: &'static str, name: &str) -> Result<(), CephError> {
        match -ret {
            libc::EBUSY => {
                let watchers = self.open_image_read_only(name).and_then(|i| i.watchers()).map(|w| w.len()).unwrap_or(0);
                Err(CephError::InUse { op, target: self.image_target(name), watchers, errno: libc::EBUSY })
            }
            libc::ENOTEMPTY => Err(CephError::HasSnapshots { op, target: self.image_target(name), errno: libc::ENOTEMPTY }),
            _ => check(ret, op, || self.image_target(name)).map(drop),
        }
    }
}
