//! An image's header object used directly through RADOS, without opening
//! the image: rbdvol's host lock and its own metadata keys.
//!
//! Opening an image costs about ten OSD round trips plus a watch, and a
//! metadata write through an open handle first takes the image's managed
//! (exclusive-lock) lock — away from the mapper that is writing to it. The
//! host lock and the `rbdvol.*` keys need none of that: each is one call of
//! the `lock` or `rbd` object class on `rbd_header.<id>`. librbd caches no
//! metadata except `conf_*` keys, so open handles are not made stale by it.

use std::ffi::CString;
use std::ptr;

use rbdvol_sys as sys;

use super::blocking::assert_off_executor;
use super::cluster::cstring;
use super::error::{check, CephError, Target};
use super::image::{collect_lockers, Done, Lockers};
use super::pool::Pool;

/// The name of rbdvol's host lock on image headers.
const HOST_LOCK: &std::ffi::CStr = c"rbdvol";

/// The header object of one image. Keeps its pool (and cluster) alive.
#[derive(Debug)]
pub struct Header {
    pool: Pool,
    image: String,
    id: String,
    oid: CString,
}

/// Ceph's encoding of a string (and of a bufferlist): u32 length, bytes.
fn encode_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

fn decode_string(buf: &[u8]) -> Option<String> {
    let len = u32::from_le_bytes(buf.get(..4)?.try_into().ok()?) as usize;
    Some(String::from_utf8_lossy(buf.get(4..4 + len)?).into_owned())
}

impl Pool {
    /// The id of image `name` (what `rbd_header.<id>` and `rbd_data.<id>`
    /// are named after), read from its `rbd_id.<name>` object.
    pub fn image_id(&self, name: &str) -> Result<String, CephError> {
        assert_off_executor("read image id");
        let oid = cstring("image id object", &format!("rbd_id.{name}"))?;
        let mut buf = vec![0u8; 256];
        // SAFETY: the io context is open; buf is writable for its length.
        let ret = unsafe { sys::rados_read(self.handle.raw, oid.as_ptr(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        let n = check(ret, "read id of", || self.image_target(name))? as usize;
        decode_string(&buf[..n]).filter(|id| !id.is_empty()).ok_or_else(|| CephError::Other {
            op: "read id of",
            target: self.image_target(name),
            errno: libc::EINVAL,
            description: "malformed rbd_id object".into(),
        })
    }

    /// The header of image `name`, whose id is `id` when known (else it is
    /// looked up: one more read).
    pub fn header_of(&self, name: &str, id: Option<&str>) -> Result<Header, CephError> {
        match id {
            Some(id) => self.header(name, id),
            None => self.header(name, &self.image_id(name)?),
        }
    }

    /// The header of image `name` whose id is `id` (see [`Pool::image_id`]).
    pub fn header(&self, name: &str, id: &str) -> Result<Header, CephError> {
        Ok(Header { pool: self.clone(), image: name.to_string(), id: id.to_string(), oid: cstring("header object", &format!("rbd_header.{id}"))? })
    }
}

impl Header {
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    fn target(&self) -> Target {
        self.pool.image_target(&self.image)
    }

    fn io(&self) -> sys::rados_ioctx_t {
        self.pool.handle.raw
    }

    /// Calls method `method` of object class `rbd` on the header.
    fn exec(&self, method: &'static str, op: &'static str, input: &[u8]) -> Result<(), CephError> {
        let c_method = cstring("class method", method)?;
        // SAFETY: the io context is open; oid, the class and method names
        // and input outlive the call; no output buffer is passed.
        let ret = unsafe {
            sys::rados_exec(self.io(), self.oid.as_ptr(), c"rbd".as_ptr(), c_method.as_ptr(), input.as_ptr().cast(), input.len(), ptr::null_mut(), 0)
        };
        check(ret, op, || self.target()).map(drop)
    }

    /// The image's size (of its head, not a snapshot), as the header says
    /// now: one call, and fresh, unlike an open handle's cached size.
    pub fn size(&self) -> Result<u64, CephError> {
        assert_off_executor("get image size");
        const CEPH_NOSNAP: u64 = u64::MAX - 1;
        let input = CEPH_NOSNAP.to_le_bytes();
        let mut out = [0u8; 64];
        // SAFETY: the io context is open; oid, the class and method names
        // and input outlive the call; out is writable for its length.
        let ret = unsafe {
            sys::rados_exec(
                self.io(),
                self.oid.as_ptr(),
                c"rbd".as_ptr(),
                c"get_size".as_ptr(),
                input.as_ptr().cast(),
                input.len(),
                out.as_mut_ptr().cast(),
                out.len(),
            )
        };
        let n = check(ret, "get size of", || self.target())? as usize;
        // u8 order, then u64 size.
        out.get(1..9).filter(|_| n >= 9).map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes"))).ok_or_else(|| CephError::Other {
            op: "get size of",
            target: self.target(),
            errno: libc::EINVAL,
            description: format!("malformed answer of {n} bytes"),
        })
    }

    /// Image metadata `key`; `None` when it is not set.
    pub fn metadata_get(&self, key: &str) -> Result<Option<String>, CephError> {
        assert_off_executor("get image metadata");
        let c_method = cstring("class method", "metadata_get")?;
        let mut input = Vec::new();
        encode_bytes(&mut input, key.as_bytes());
        let mut out = vec![0u8; 4096];
        loop {
            // SAFETY: the io context is open; oid, the class and method
            // names and input outlive the call; out is writable for its length.
            let ret = unsafe {
                sys::rados_exec(
                    self.io(),
                    self.oid.as_ptr(),
                    c"rbd".as_ptr(),
                    c_method.as_ptr(),
                    input.as_ptr().cast(),
                    input.len(),
                    out.as_mut_ptr().cast(),
                    out.len(),
                )
            };
            if ret == -libc::ERANGE && out.len() < 1 << 24 {
                out = vec![0u8; out.len() * 8];
                continue;
            }
            if ret == -libc::ENOENT {
                return Ok(None);
            }
            let n = check(ret, "get metadata of", || self.target())? as usize;
            return Ok(decode_string(&out[..n.min(out.len())]));
        }
    }

    /// Sets image metadata `key` (as `rbd image-meta set` would).
    pub fn metadata_set(&self, key: &str, value: &str) -> Result<(), CephError> {
        assert_off_executor("set image metadata");
        let mut input = 1u32.to_le_bytes().to_vec();
        encode_bytes(&mut input, key.as_bytes());
        encode_bytes(&mut input, value.as_bytes());
        self.exec("metadata_set", "set metadata on", &input)
    }

    /// Removes image metadata `key`; removing a key not set is not an error.
    pub fn metadata_remove(&self, key: &str) -> Result<(), CephError> {
        assert_off_executor("remove image metadata");
        let mut input = Vec::new();
        encode_bytes(&mut input, key.as_bytes());
        match self.exec("metadata_remove", "remove metadata from", &input) {
            Err(CephError::NotFound { .. }) => Ok(()),
            other => other,
        }
    }

    /// Takes rbdvol's host lock: a RADOS exclusive lock named `rbdvol` on
    /// the image header, with `cookie` naming the host. It is separate from
    /// librbd's `rbd_lock`, which the exclusive-lock feature uses for its
    /// managed lock: holding an `rbd_lock` advisory lock would stop every
    /// writer of such an image, our own mapper included. Taking a lock this
    /// client already holds is `AlreadyDone`; anyone else's is `LockBusy`.
    pub fn host_lock(&self, cookie: &str, description: &str) -> Result<Done, CephError> {
        assert_off_executor("take host lock");
        let c_cookie = cstring("lock cookie", cookie)?;
        let c_desc = cstring("lock description", description)?;
        // SAFETY: the io context is open; all strings outlive the call; a
        // null duration means the lock does not expire.
        let ret = unsafe {
            sys::rados_lock_exclusive(self.io(), self.oid.as_ptr(), HOST_LOCK.as_ptr(), c_cookie.as_ptr(), c_desc.as_ptr(), ptr::null_mut(), 0)
        };
        if ret == -libc::EEXIST {
            return Ok(Done::AlreadyDone);
        }
        check(ret, "take host lock on", || self.target())?;
        Ok(Done::Changed)
    }

    /// Takes rbdvol's host lock shared, with `tag`: any number of clients
    /// hold it together (read-only mounts), none while anyone holds it
    /// exclusively, and the exclusive `host_lock` none while anyone holds
    /// it shared (`LockBusy` both ways). Already held by this client under
    /// `cookie` is `AlreadyDone`.
    pub fn host_lock_shared(&self, cookie: &str, tag: &str, description: &str) -> Result<Done, CephError> {
        assert_off_executor("take shared host lock");
        let c_cookie = cstring("lock cookie", cookie)?;
        let c_tag = cstring("lock tag", tag)?;
        let c_desc = cstring("lock description", description)?;
        // SAFETY: the io context is open; all strings outlive the call; a
        // null duration means the lock does not expire.
        let ret = unsafe {
            sys::rados_lock_shared(self.io(), self.oid.as_ptr(), HOST_LOCK.as_ptr(), c_cookie.as_ptr(), c_tag.as_ptr(), c_desc.as_ptr(), ptr::null_mut(), 0)
        };
        if ret == -libc::EEXIST {
            return Ok(Done::AlreadyDone);
        }
        check(ret, "take shared host lock on", || self.target())?;
        Ok(Done::Changed)
    }

    /// Releases this client's host lock; not holding it is `AlreadyDone`.
    pub fn host_unlock(&self, cookie: &str) -> Result<Done, CephError> {
        assert_off_executor("release host lock");
        let c_cookie = cstring("lock cookie", cookie)?;
        // SAFETY: the io context is open; all strings outlive the call.
        let ret = unsafe { sys::rados_unlock(self.io(), self.oid.as_ptr(), HOST_LOCK.as_ptr(), c_cookie.as_ptr()) };
        if ret == -libc::ENOENT {
            return Ok(Done::AlreadyDone);
        }
        check(ret, "release host lock on", || self.target())?;
        Ok(Done::Changed)
    }

    /// Removes metadata `key` and releases this client's host lock in one
    /// atomic operation on the header, which first asserts that this very
    /// client holds the lock under `cookie`: one round trip where checking
    /// the lock, removing the key and unlocking take three, and nothing can
    /// come between them. A `key` not set is no error (as with
    /// `metadata_remove`). `AlreadyDone` when the lock is not this
    /// client's: then nothing changed.
    pub fn remove_and_unlock(&self, key: &str, cookie: &str) -> Result<Done, CephError> {
        assert_off_executor("release host lock");
        let op = WriteOp::new(|| self.target())?;
        let assert = assert_locked_input(cookie);
        let mut remove = Vec::new();
        encode_bytes(&mut remove, key.as_bytes());
        let unlock = unlock_input(cookie);
        // SAFETY: op is a live write op; the class and method names are
        // static C strings; each input lives until the operation has run
        // below (librados copies them when the op is sent); a null prval
        // asks for no per-step result.
        let ret = unsafe {
            sys::rados_write_op_exec(op.0, c"lock".as_ptr(), c"assert_locked".as_ptr(), assert.as_ptr().cast(), assert.len(), ptr::null_mut());
            sys::rados_write_op_exec(op.0, c"rbd".as_ptr(), c"metadata_remove".as_ptr(), remove.as_ptr().cast(), remove.len(), ptr::null_mut());
            sys::rados_write_op_exec(op.0, c"lock".as_ptr(), c"unlock".as_ptr(), unlock.as_ptr().cast(), unlock.len(), ptr::null_mut());
            sys::rados_write_op_operate(op.0, self.io(), self.oid.as_ptr(), ptr::null_mut(), 0)
        };
        // Not locked by this client: EBUSY (ENOENT from the unlock, had the
        // lock gone between the steps, which one operation rules out).
        if ret == -libc::EBUSY || ret == -libc::ENOENT {
            return Ok(Done::AlreadyDone);
        }
        check(ret, "release host lock on", || self.target())?;
        Ok(Done::Changed)
    }

    /// Who holds the host lock.
    pub fn host_lockers(&self) -> Result<Lockers, CephError> {
        assert_off_executor("list host lockers");
        collect_lockers(|excl, tag, tl, cl, cll, co, col, ad, adl| {
            // SAFETY: each buffer is writable for the length passed with it;
            // the lengths are in/out; oid and the lock name outlive the call.
            unsafe { sys::rados_list_lockers(self.io(), self.oid.as_ptr(), HOST_LOCK.as_ptr(), excl, tag, tl, cl, cll, co, col, ad, adl) }
        })
        .map_err(|ret| CephError::from_errno("list host lockers of", self.target(), ret))
    }

    /// Breaks a host lock held by another client (a dead host, or this
    /// host's previous incarnation). Already gone is `AlreadyDone`.
    pub fn host_break_lock(&self, client: &str, cookie: &str) -> Result<Done, CephError> {
        assert_off_executor("break host lock");
        let c_client = cstring("lock holder", client)?;
        let c_cookie = cstring("lock cookie", cookie)?;
        // SAFETY: the io context is open; all strings outlive the call.
        let ret = unsafe { sys::rados_break_lock(self.io(), self.oid.as_ptr(), HOST_LOCK.as_ptr(), c_client.as_ptr(), c_cookie.as_ptr()) };
        if ret == -libc::ENOENT {
            return Ok(Done::AlreadyDone);
        }
        check(ret, "break host lock on", || self.target())?;
        Ok(Done::Changed)
    }
}

/// A RADOS write operation (several steps applied atomically), released
/// when dropped.
struct WriteOp(sys::rados_write_op_t);

impl WriteOp {
    fn new(target: impl FnOnce() -> Target) -> Result<WriteOp, CephError> {
        // SAFETY: no arguments; a null return means no memory.
        let op = unsafe { sys::rados_create_write_op() };
        if op.is_null() {
            return Err(CephError::from_errno("prepare an operation on", target(), libc::ENOMEM));
        }
        Ok(WriteOp(op))
    }
}

impl Drop for WriteOp {
    fn drop(&mut self) {
        // SAFETY: created by rados_create_write_op and released once, here.
        unsafe { sys::rados_release_write_op(self.0) }
    }
}

/// Ceph's versioned-struct framing (ENCODE_START(1, 1) ... ENCODE_FINISH)
/// around `body`.
fn versioned(body: &[u8]) -> Vec<u8> {
    let mut out = vec![1u8, 1u8];
    encode_bytes(&mut out, body);
    out
}

/// `cls_lock_assert_op`: rbdvol's exclusive lock, held under `cookie` with
/// an empty tag (as `rados_lock_exclusive` takes it).
fn assert_locked_input(cookie: &str) -> Vec<u8> {
    const LOCK_EXCLUSIVE: u8 = 1;
    let mut body = Vec::new();
    encode_bytes(&mut body, HOST_LOCK.to_bytes());
    body.push(LOCK_EXCLUSIVE);
    encode_bytes(&mut body, cookie.as_bytes());
    encode_bytes(&mut body, b"");
    versioned(&body)
}

/// `cls_lock_unlock_op`: rbdvol's lock held under `cookie`.
fn unlock_input(cookie: &str) -> Vec<u8> {
    let mut body = Vec::new();
    encode_bytes(&mut body, HOST_LOCK.to_bytes());
    encode_bytes(&mut body, cookie.as_bytes());
    versioned(&body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_class_inputs_are_ceph_versioned_structs() {
        // struct_v 1, compat 1, u32 length, then the fields.
        let unlock = unlock_input("h1");
        assert_eq!(unlock, [&[1u8, 1, 16, 0, 0, 0][..], &[6, 0, 0, 0], b"rbdvol", &[2, 0, 0, 0], b"h1"].concat());
        let assert = assert_locked_input("h1");
        assert_eq!(assert, [&[1u8, 1, 21, 0, 0, 0][..], &[6, 0, 0, 0], b"rbdvol", &[1], &[2, 0, 0, 0], b"h1", &[0, 0, 0, 0]].concat());
    }

    #[test]
    fn strings_round_trip_through_ceph_encoding() {
        let mut buf = Vec::new();
        encode_bytes(&mut buf, b"10a2b3c4d5e6");
        assert_eq!(&buf[..4], &[12, 0, 0, 0]);
        assert_eq!(decode_string(&buf).as_deref(), Some("10a2b3c4d5e6"));
    }

    #[test]
    fn truncated_encodings_are_rejected() {
        assert_eq!(decode_string(&[5, 0, 0, 0, b'a']), None);
        assert_eq!(decode_string(&[1, 0]), None);
    }
}
