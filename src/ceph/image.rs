//! An open image: info, grow, metadata, watchers and locks.

use std::collections::BTreeMap;
use std::ffi::{c_int, c_void, CStr};
use std::ptr;

use rbdvol_sys as sys;

use super::blocking::assert_off_executor;
use super::cluster::{cstring, string_from_buf, strings_from_list_buf, with_growing_buffer};
use super::error::{check, check_ssize, CephError, Target};
use super::header::Header;
use super::pool::Pool;

/// An open image. Closed on drop; keeps its pool (and so its cluster
/// connection) alive for as long as it is open.
pub struct Image {
    raw: sys::rbd_image_t,
    pool: Pool,
    name: String,
    read_only: bool,
}

// SAFETY: an rbd_image_t (librbd::ImageCtx) guards its state with its own
// locks and its C API may be called from several threads at once (qemu and
// rbd-nbd issue I/O on one handle from many threads); nothing here relies on
// thread-local state of librbd.
unsafe impl Send for Image {}
// SAFETY: as above; every method takes &self and librbd serializes internally.
unsafe impl Sync for Image {}

impl Drop for Image {
    fn drop(&mut self) {
        // SAFETY: raw came from a successful rbd_open*; it is closed once,
        // here, before self.pool (and with it the io context) is released.
        unsafe { sys::rbd_close(self.raw) };
    }
}

impl std::fmt::Debug for Image {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Image")
            .field("pool", &self.pool.name())
            .field("namespace", &self.pool.namespace())
            .field("name", &self.name)
            .field("read_only", &self.read_only)
            .finish()
    }
}

/// One snapshot of an image.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Snapshot {
    pub id: u64,
    pub name: String,
    pub size: u64,
}

/// What `rbd_stat` tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    pub size: u64,
    pub object_size: u64,
    pub num_objects: u64,
    pub order: u8,
}

/// A client watching the image header (a read-write open, a krbd mapping, an
/// rbd-nbd process).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watcher {
    pub addr: String,
    /// The N of `client.N`.
    pub id: i64,
    pub cookie: u64,
}

/// One holder of an advisory lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Locker {
    /// The holder's entity, `client.N` (what `break_lock` takes).
    pub client: String,
    pub cookie: String,
    pub addr: String,
}

/// The advisory locks on an image.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lockers {
    pub exclusive: bool,
    pub tag: String,
    pub lockers: Vec<Locker>,
}

/// Mode of the managed lock (`exclusive-lock` feature).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    Exclusive,
    Shared,
}

impl LockMode {
    fn raw(self) -> sys::rbd_lock_mode_t {
        match self {
            LockMode::Exclusive => sys::rbd_lock_mode_t_RBD_LOCK_MODE_EXCLUSIVE,
            LockMode::Shared => sys::rbd_lock_mode_t_RBD_LOCK_MODE_SHARED,
        }
    }
}

/// What a grow did. Growing to the current size is not an error, so the
/// operation can be retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grow {
    Grown { from: u64, to: u64 },
    AlreadyThatSize(u64),
}

/// What an idempotent lock or removal call found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Done {
    /// This call made the change.
    Changed,
    /// The state was already what was asked for.
    AlreadyDone,
}

/// The -ERANGE loop shared by librbd's and librados's list_lockers, which
/// take the same buffers. Returns the positive errno on failure.
pub(crate) fn collect_lockers(mut list: impl FnMut(
    *mut c_int,
    *mut std::ffi::c_char,
    *mut usize,
    *mut std::ffi::c_char,
    *mut usize,
    *mut std::ffi::c_char,
    *mut usize,
    *mut std::ffi::c_char,
    *mut usize,
) -> isize) -> Result<Lockers, c_int> {
    let mut lens = [256usize; 4];
    loop {
        let mut bufs: [Vec<u8>; 4] = std::array::from_fn(|i| vec![0u8; lens[i]]);
        let mut want = lens;
        let mut exclusive: c_int = 0;
        let [tag, clients, cookies, addrs] = &mut bufs;
        let [tag_len, clients_len, cookies_len, addrs_len] = &mut want;
        let ret = list(
            &mut exclusive,
            tag.as_mut_ptr().cast(),
            tag_len,
            clients.as_mut_ptr().cast(),
            clients_len,
            cookies.as_mut_ptr().cast(),
            cookies_len,
            addrs.as_mut_ptr().cast(),
            addrs_len,
        );
        if ret == -(libc::ERANGE as isize) {
            for i in 0..4 {
                lens[i] = want[i].max(lens[i] * 2);
            }
            continue;
        }
        if ret == -(libc::ENOENT as isize) {
            // librados: the object has no such lock at all.
            return Ok(Lockers::default());
        }
        if ret < 0 {
            return Err((-ret) as c_int);
        }
        let count = ret as usize;
        let clients = strings_from_list_buf(&bufs[1]);
        let cookies = strings_from_list_buf(&bufs[2]);
        let addrs = strings_from_list_buf(&bufs[3]);
        let lockers = (0..count)
            .map(|i| Locker {
                client: clients.get(i).cloned().unwrap_or_default(),
                cookie: cookies.get(i).cloned().unwrap_or_default(),
                addr: addrs.get(i).cloned().unwrap_or_default(),
            })
            .collect();
        return Ok(Lockers { exclusive: exclusive != 0, tag: string_from_buf(&bufs[0]), lockers });
    }
}

type Progress<'a> = &'a (dyn Fn(u64, u64) + Sync);

unsafe extern "C" fn progress_trampoline(offset: u64, total: u64, data: *mut c_void) -> c_int {
    // SAFETY: data is the `&Progress` that Image::grow passed to
    // rbd_resize2, which outlives that synchronous call and so every
    // callback librbd makes during it.
    let callback = unsafe { &*(data as *const Progress<'_>) };
    // A panic must not unwind into librbd's C++ frames.
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| callback(offset, total)));
    0
}

impl Image {
    pub(crate) fn open(pool: Pool, name: &str, read_only: bool) -> Result<Image, CephError> {
        assert_off_executor("open image");
        let c_name = cstring("image name", name)?;
        let mut raw: sys::rbd_image_t = ptr::null_mut();
        // SAFETY: the io context is open; raw is a valid out-pointer; c_name
        // outlives the call; a null snapshot name opens the image head.
        let ret = unsafe {
            if read_only {
                sys::rbd_open_read_only(pool.handle.raw, c_name.as_ptr(), &mut raw, ptr::null())
            } else {
                sys::rbd_open(pool.handle.raw, c_name.as_ptr(), &mut raw, ptr::null())
            }
        };
        check(ret, if read_only { "open read-only" } else { "open" }, || pool.image_target(name))?;
        Ok(Image { raw, pool, name: name.to_string(), read_only })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    pub(crate) fn target(&self) -> Target {
        self.pool.image_target(&self.name)
    }

    /// The raw handle, for the data path in this layer.
    pub(crate) fn raw(&self) -> sys::rbd_image_t {
        self.raw
    }

    pub fn stat(&self) -> Result<ImageInfo, CephError> {
        assert_off_executor("stat image");
        // SAFETY: rbd_image_info_t is plain data; zeroed is a valid value.
        let mut info: sys::rbd_image_info_t = unsafe { std::mem::zeroed() };
        // SAFETY: info is writable and its size is passed as librbd expects.
        let ret = unsafe { sys::rbd_stat(self.raw, &mut info, std::mem::size_of::<sys::rbd_image_info_t>()) };
        check(ret, "stat", || self.target())?;
        Ok(ImageInfo { size: info.size, object_size: info.obj_size, num_objects: info.num_objs, order: info.order as u8 })
    }

    pub fn size(&self) -> Result<u64, CephError> {
        assert_off_executor("get image size");
        let mut size = 0u64;
        // SAFETY: size is a valid out-pointer.
        check(unsafe { sys::rbd_get_size(self.raw, &mut size) }, "get size of", || self.target())?;
        Ok(size)
    }

    pub fn features(&self) -> Result<u64, CephError> {
        assert_off_executor("get image features");
        let mut features = 0u64;
        // SAFETY: features is a valid out-pointer.
        check(unsafe { sys::rbd_get_features(self.raw, &mut features) }, "get features of", || self.target())?;
        Ok(features)
    }

    /// The image's id (stable across renames; what the trash and the
    /// `rbd_data.<id>.*` object names use).
    pub fn id(&self) -> Result<String, CephError> {
        assert_off_executor("get image id");
        let (ret, buf) = with_growing_buffer(32, |buf, _| {
            // SAFETY: buf is writable for buf.len() bytes.
            unsafe { sys::rbd_get_id(self.raw, buf.as_mut_ptr().cast(), buf.len()) }
        });
        check(ret, "get id of", || self.target())?;
        Ok(string_from_buf(&buf))
    }

    /// Grows the image to `new_size` bytes, calling `progress(done, total)`
    /// as librbd works. Refuses to shrink; growing to the current size is a
    /// no-op.
    pub fn grow(&self, new_size: u64, progress: Progress<'_>) -> Result<Grow, CephError> {
        assert_off_executor("grow image");
        let current = self.size()?;
        if new_size < current {
            return Err(CephError::Shrink { target: self.target(), current, requested: new_size });
        }
        if new_size == current {
            return Ok(Grow::AlreadyThatSize(current));
        }
        let data = &progress as *const Progress<'_> as *mut c_void;
        // SAFETY: the image is open; allow_shrink is false so librbd itself
        // refuses a shrink even if the size changed since we read it; data
        // points at `progress`, alive until this synchronous call returns.
        let ret = unsafe { sys::rbd_resize2(self.raw, new_size, false, Some(progress_trampoline), data) };
        check(ret, "grow", || self.target())?;
        Ok(Grow::Grown { from: current, to: new_size })
    }

    /// The image's snapshots, oldest first.
    pub fn snapshots(&self) -> Result<Vec<Snapshot>, CephError> {
        assert_off_executor("list snapshots");
        let mut max: c_int = 8;
        loop {
            let mut list: Vec<sys::rbd_snap_info_t> = vec![sys::rbd_snap_info_t { id: 0, size: 0, name: ptr::null() }; max as usize];
            // SAFETY: list has room for max entries; max is in/out (librbd
            // asks for one more than the count, for its terminator).
            let ret = unsafe { sys::rbd_snap_list(self.raw, list.as_mut_ptr(), &mut max) };
            if ret == -libc::ERANGE {
                continue;
            }
            let count = check(ret, "list snapshots of", || self.target())? as usize;
            let snaps = list[..count]
                .iter()
                // SAFETY: librbd filled the first count entries with C strings.
                .map(|s| Snapshot { id: s.id, size: s.size, name: unsafe { CStr::from_ptr(s.name) }.to_string_lossy().into_owned() })
                .collect();
            // SAFETY: frees the names librbd allocated in this list.
            unsafe { sys::rbd_snap_list_end(list.as_mut_ptr()) };
            return Ok(snaps);
        }
    }

    /// The clones of this image's snapshots (of every snapshot when the
    /// image is open at its head), as `pool/[namespace/]image`; clones in
    /// the trash are left out.
    pub fn children(&self) -> Result<Vec<String>, CephError> {
        assert_off_executor("list children");
        let mut max: usize = 8;
        loop {
            let empty = sys::rbd_linked_image_spec_t {
                pool_id: 0,
                pool_name: ptr::null_mut(),
                pool_namespace: ptr::null_mut(),
                image_id: ptr::null_mut(),
                image_name: ptr::null_mut(),
                trash: false,
            };
            let mut list = vec![empty; max];
            // SAFETY: list has room for max entries; max is in/out.
            let ret = unsafe { sys::rbd_list_children3(self.raw, list.as_mut_ptr(), &mut max) };
            if ret == -libc::ERANGE {
                continue;
            }
            check(ret, "list clones of", || self.target())?;
            let text = |p: *mut std::ffi::c_char| {
                // SAFETY: librbd filled the entry with C strings (or null).
                if p.is_null() {
                    String::new()
                } else {
                    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
                }
            };
            let children = list[..max]
                .iter()
                .filter(|c| !c.trash)
                .map(|c| {
                    let ns = text(c.pool_namespace);
                    let ns = if ns.is_empty() { String::new() } else { format!("{ns}/") };
                    format!("{}/{ns}{}", text(c.pool_name), text(c.image_name))
                })
                .collect();
            // SAFETY: frees the strings librbd allocated in the first max entries.
            unsafe { sys::rbd_linked_image_spec_list_cleanup(list.as_mut_ptr(), max) };
            return Ok(children);
        }
    }

    /// Takes a snapshot; one of that name already there is `AlreadyDone`.
    pub fn snapshot_create(&self, name: &str) -> Result<Done, CephError> {
        assert_off_executor("create snapshot");
        let c_name = cstring("snapshot name", name)?;
        // SAFETY: the image is open; c_name outlives the call.
        let ret = unsafe { sys::rbd_snap_create(self.raw, c_name.as_ptr()) };
        if ret == -libc::EEXIST {
            return Ok(Done::AlreadyDone);
        }
        check(ret, "snapshot", || self.target())?;
        Ok(Done::Changed)
    }

    /// Removes a snapshot; one that is not there is `AlreadyDone`.
    pub fn snapshot_remove(&self, name: &str) -> Result<Done, CephError> {
        assert_off_executor("remove snapshot");
        let c_name = cstring("snapshot name", name)?;
        // SAFETY: the image is open; c_name outlives the call.
        let ret = unsafe { sys::rbd_snap_remove(self.raw, c_name.as_ptr()) };
        if ret == -libc::ENOENT {
            return Ok(Done::AlreadyDone);
        }
        check(ret, "remove a snapshot of", || self.target())?;
        Ok(Done::Changed)
    }

    /// One metadata value, `None` when the key is not set.
    pub fn metadata_get(&self, key: &str) -> Result<Option<String>, CephError> {
        assert_off_executor("get image metadata");
        let c_key = cstring("metadata key", key)?;
        let (ret, buf) = with_growing_buffer(256, |buf, len| {
            // SAFETY: buf is writable for *len bytes; len is in/out.
            unsafe { sys::rbd_metadata_get(self.raw, c_key.as_ptr(), buf.as_mut_ptr().cast(), len) }
        });
        if ret == -libc::ENOENT {
            return Ok(None);
        }
        check(ret, "get metadata of", || self.target())?;
        Ok(Some(string_from_buf(&buf)))
    }

    /// Sets a metadata key (overwriting). Idempotent.
    pub fn metadata_set(&self, key: &str, value: &str) -> Result<(), CephError> {
        assert_off_executor("set image metadata");
        let c_key = cstring("metadata key", key)?;
        let c_value = cstring("metadata value", value)?;
        // SAFETY: both strings outlive the call.
        let ret = unsafe { sys::rbd_metadata_set(self.raw, c_key.as_ptr(), c_value.as_ptr()) };
        check(ret, "set metadata on", || self.target()).map(drop)
    }

    /// Removes a metadata key; removing a key that is not set is not an error.
    pub fn metadata_remove(&self, key: &str) -> Result<Done, CephError> {
        assert_off_executor("remove image metadata");
        let c_key = cstring("metadata key", key)?;
        // SAFETY: c_key outlives the call.
        let ret = unsafe { sys::rbd_metadata_remove(self.raw, c_key.as_ptr()) };
        if ret == -libc::ENOENT {
            return Ok(Done::AlreadyDone);
        }
        check(ret, "remove metadata from", || self.target())?;
        Ok(Done::Changed)
    }

    /// Every metadata key and value of the image.
    pub fn metadata_list(&self) -> Result<BTreeMap<String, String>, CephError> {
        assert_off_executor("list image metadata");
        let mut keys_len = 1024usize;
        let mut vals_len = 4096usize;
        loop {
            let mut keys = vec![0u8; keys_len];
            let mut vals = vec![0u8; vals_len];
            let (mut want_keys, mut want_vals) = (keys_len, vals_len);
            // SAFETY: both buffers are writable for the lengths passed in;
            // start "" and max 0 ask for every key.
            let ret = unsafe {
                sys::rbd_metadata_list(
                    self.raw,
                    c"".as_ptr(),
                    0,
                    keys.as_mut_ptr().cast(),
                    &mut want_keys,
                    vals.as_mut_ptr().cast(),
                    &mut want_vals,
                )
            };
            if ret == -libc::ERANGE {
                keys_len = want_keys.max(keys_len * 2);
                vals_len = want_vals.max(vals_len * 2);
                continue;
            }
            check(ret, "list metadata of", || self.target())?;
            keys.truncate(want_keys.min(keys_len));
            vals.truncate(want_vals.min(vals_len));
            // Values may be empty strings, so split values by position, not
            // by filtering empty pieces.
            let keys = strings_from_list_buf(&keys);
            let mut values = vals.split(|&b| b == 0).map(|v| String::from_utf8_lossy(v).into_owned());
            return Ok(keys.into_iter().map(|k| (k, values.next().unwrap_or_default())).collect());
        }
    }

    /// Bytes allocated in the cluster (whole objects that hold data), as
    /// `rbd du` counts them; quick with the fast-diff feature.
    pub fn used_bytes(&self) -> Result<u64, CephError> {
        assert_off_executor("measure image usage");
        unsafe extern "C" fn add(_offset: u64, len: usize, exists: c_int, total: *mut c_void) -> c_int {
            if exists != 0 {
                // SAFETY: total is the &mut u64 used_bytes passed, alive for
                // the whole synchronous rbd_diff_iterate2 call.
                unsafe { *(total as *mut u64) += len as u64 };
            }
            0
        }
        let size = self.size()?;
        let mut total = 0u64;
        // SAFETY: the image is open; the callback only adds to total, which
        // outlives the synchronous call; a null snapshot means "since creation".
        let ret = unsafe { sys::rbd_diff_iterate2(self.raw, ptr::null(), 0, size, 1, 1, Some(add), (&mut total as *mut u64).cast()) };
        check(ret, "measure usage of", || self.target())?;
        Ok(total)
    }

    /// Clients watching the image (each read-write open and each mapping).
    pub fn watchers(&self) -> Result<Vec<Watcher>, CephError> {
        assert_off_executor("list watchers");
        let mut max = 8usize;
        loop {
            let mut list: Vec<sys::rbd_image_watcher_t> =
                vec![sys::rbd_image_watcher_t { addr: ptr::null_mut(), id: 0, cookie: 0 }; max];
            // SAFETY: list has room for max entries; max is in/out.
            let ret = unsafe { sys::rbd_watchers_list(self.raw, list.as_mut_ptr(), &mut max) };
            if ret == -libc::ERANGE {
                continue;
            }
            check(ret, "list watchers of", || self.target())?;
            let watchers = list[..max]
                .iter()
                .map(|w| Watcher {
                    // SAFETY: librbd filled the first max entries.
                    addr: unsafe { CStr::from_ptr(w.addr) }.to_string_lossy().into_owned(),
                    id: w.id,
                    cookie: w.cookie,
                })
                .collect();
            // SAFETY: releases the addresses librbd allocated for those entries.
            unsafe { sys::rbd_watchers_list_cleanup(list.as_mut_ptr(), max) };
            return Ok(watchers);
        }
    }

    /// Takes the advisory exclusive lock with `cookie`. Taking a lock this
    /// client already holds with the same cookie is `AlreadyDone`; a lock
    /// held by anyone else is `LockBusy`.
    pub fn lock_exclusive(&self, cookie: &str) -> Result<Done, CephError> {
        assert_off_executor("lock image");
        let c_cookie = cstring("lock cookie", cookie)?;
        // SAFETY: c_cookie outlives the call.
        let ret = unsafe { sys::rbd_lock_exclusive(self.raw, c_cookie.as_ptr()) };
        self.lock_result(ret, "lock exclusively")
    }

    /// Takes a shared advisory lock (all holders must use the same `tag`).
    pub fn lock_shared(&self, cookie: &str, tag: &str) -> Result<Done, CephError> {
        assert_off_executor("lock image shared");
        let c_cookie = cstring("lock cookie", cookie)?;
        let c_tag = cstring("lock tag", tag)?;
        // SAFETY: both strings outlive the call.
        let ret = unsafe { sys::rbd_lock_shared(self.raw, c_cookie.as_ptr(), c_tag.as_ptr()) };
        self.lock_result(ret, "lock shared")
    }

    fn lock_result(&self, ret: c_int, op: &'static str) -> Result<Done, CephError> {
        if ret == -libc::EEXIST {
            return Ok(Done::AlreadyDone);
        }
        check(ret, op, || self.target())?;
        Ok(Done::Changed)
    }

    /// Releases this client's advisory lock with `cookie`; not holding it is
    /// `AlreadyDone`.
    pub fn unlock(&self, cookie: &str) -> Result<Done, CephError> {
        assert_off_executor("unlock image");
        let c_cookie = cstring("lock cookie", cookie)?;
        // SAFETY: c_cookie outlives the call.
        let ret = unsafe { sys::rbd_unlock(self.raw, c_cookie.as_ptr()) };
        if ret == -libc::ENOENT {
            return Ok(Done::AlreadyDone);
        }
        check(ret, "unlock", || self.target())?;
        Ok(Done::Changed)
    }

    /// Who holds advisory locks on the image.
    pub fn lockers(&self) -> Result<Lockers, CephError> {
        assert_off_executor("list lockers");
        collect_lockers(|excl, tag, tl, cl, cll, co, col, ad, adl| {
            // SAFETY: each buffer is writable for the length passed with it;
            // the lengths are in/out.
            unsafe { sys::rbd_list_lockers(self.raw, excl, tag, tl, cl, cll, co, col, ad, adl) }
        })
        .map_err(|ret| CephError::from_errno("list lockers of", self.target(), ret))
    }

    /// Breaks another client's advisory lock (after fencing it). A lock
    /// that is already gone is `AlreadyDone`.
    pub fn break_lock(&self, client: &str, cookie: &str) -> Result<Done, CephError> {
        assert_off_executor("break lock");
        let c_client = cstring("lock holder", client)?;
        let c_cookie = cstring("lock cookie", cookie)?;
        // SAFETY: both strings outlive the call.
        let ret = unsafe { sys::rbd_break_lock(self.raw, c_client.as_ptr(), c_cookie.as_ptr()) };
        if ret == -libc::ENOENT {
            return Ok(Done::AlreadyDone);
        }
        check(ret, "break lock on", || self.target())?;
        Ok(Done::Changed)
    }

    /// Takes the managed lock (`exclusive-lock` feature) through this handle.
    /// Never do this on an image the kernel has mapped: krbd then cannot
    /// write.
    pub fn managed_lock_acquire(&self, mode: LockMode) -> Result<(), CephError> {
        assert_off_executor("acquire managed lock");
        // SAFETY: the image is open.
        let ret = unsafe { sys::rbd_lock_acquire(self.raw, mode.raw()) };
        check(ret, "acquire managed lock on", || self.target()).map(drop)
    }

    pub fn managed_lock_release(&self) -> Result<(), CephError> {
        assert_off_executor("release managed lock");
        // SAFETY: the image is open.
        let ret = unsafe { sys::rbd_lock_release(self.raw) };
        check(ret, "release managed lock on", || self.target()).map(drop)
    }

    /// The clients holding the managed lock; empty when nobody does.
    pub fn managed_lock_owners(&self) -> Result<(Option<LockMode>, Vec<String>), CephError> {
        assert_off_executor("get managed lock owners");
        let mut max = 4usize;
        loop {
            let mut owners: Vec<*mut std::ffi::c_char> = vec![ptr::null_mut(); max];
            let mut mode: sys::rbd_lock_mode_t = 0;
            // SAFETY: owners has room for max pointers; max is in/out.
            let ret = unsafe { sys::rbd_lock_get_owners(self.raw, &mut mode, owners.as_mut_ptr(), &mut max) };
            if ret == -libc::ERANGE {
                continue;
            }
            if ret == -libc::ENOENT {
                return Ok((None, Vec::new()));
            }
            check(ret, "get managed lock owners of", || self.target())?;
            let list = owners[..max]
                .iter()
                // SAFETY: librbd filled the first max pointers with C strings.
                .map(|&o| unsafe { CStr::from_ptr(o) }.to_string_lossy().into_owned())
                .collect::<Vec<_>>();
            // SAFETY: releases the strings librbd allocated for those entries.
            unsafe { sys::rbd_lock_get_owners_cleanup(owners.as_mut_ptr(), max) };
            let mode = if mode == sys::rbd_lock_mode_t_RBD_LOCK_MODE_SHARED { LockMode::Shared } else { LockMode::Exclusive };
            return Ok((if list.is_empty() { None } else { Some(mode) }, list));
        }
    }

    /// Breaks the managed lock held by `owner` (librbd blocklists the owner).
    pub fn managed_lock_break(&self, mode: LockMode, owner: &str) -> Result<(), CephError> {
        assert_off_executor("break managed lock");
        let c_owner = cstring("lock owner", owner)?;
        // SAFETY: c_owner outlives the call.
        let ret = unsafe { sys::rbd_lock_break(self.raw, mode.raw(), c_owner.as_ptr()) };
        check(ret, "break managed lock on", || self.target()).map(drop)
    }

    /// The image's header object, for rbdvol's host lock and metadata
    /// keys without librbd (see [`Header`]).
    pub fn header(&self) -> Result<Header, CephError> {
        self.pool.header(&self.name, &self.id()?)
    }

    /// Flushes cached writes to the cluster.
    pub fn flush(&self) -> Result<(), CephError> {
        assert_off_executor("flush image");
        // SAFETY: the image is open.
        check(unsafe { sys::rbd_flush(self.raw) }, "flush", || self.target()).map(drop)
    }

    /// Writes `data` at `offset` (synchronous; the mappers use async I/O).
    pub fn write_at(&self, offset: u64, data: &[u8]) -> Result<(), CephError> {
        assert_off_executor("write image");
        // SAFETY: data is readable for data.len() bytes for the whole call.
        let ret = unsafe { sys::rbd_write(self.raw, offset, data.len(), data.as_ptr().cast()) };
        let written = check_ssize(ret, "write", || self.target())?;
        if written != data.len() {
            return Err(CephError::Other {
                op: "write",
                target: self.target(),
                errno: libc::EIO,
                description: format!("short write: {written} of {} bytes", data.len()),
            });
        }
        Ok(())
    }

    /// Reads up to `buf.len()` bytes at `offset`; returns how many were read.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize, CephError> {
        assert_off_executor("read image");
        // SAFETY: buf is writable for buf.len() bytes for the whole call.
        let ret = unsafe { sys::rbd_read(self.raw, offset, buf.len(), buf.as_mut_ptr().cast()) };
        check_ssize(ret, "read", || self.target())
    }
}
