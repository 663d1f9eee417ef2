//! A connection to one Ceph cluster as one cephx identity.

use std::ffi::{c_char, c_int, CStr, CString};
use std::ptr;
use std::sync::Arc;
use std::time::Duration;

use rbdvol_sys as sys;

use super::blocking::assert_off_executor;
use super::error::{check, CephError, Target};
use super::pool::Pool;
use crate::config::CephSettings;

/// Turns a Rust string into a C string, refusing interior NUL bytes (which
/// would silently cut a name short on the C side).
pub(crate) fn cstring(what: &'static str, value: &str) -> Result<CString, CephError> {
    CString::new(value).map_err(|_| CephError::InvalidArgument {
        what,
        value: value.replace('\0', "\\0"),
        reason: "it contains a NUL byte",
    })
}

/// Reads a NUL-terminated string out of a buffer librados filled.
pub(crate) fn string_from_buf(buf: &[u8]) -> String {
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// Splits a buffer of back-to-back NUL-terminated strings (librbd's list format).
pub(crate) fn strings_from_list_buf(buf: &[u8]) -> Vec<String> {
    buf.split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

/// Calls `fill(buf, len)` with a growing buffer until librbd stops answering
/// -ERANGE. `len` is in/out: librbd may say how much it needs.
pub(crate) fn with_growing_buffer(
    initial: usize,
    mut fill: impl FnMut(&mut [u8], &mut usize) -> c_int,
) -> (c_int, Vec<u8>) {
    let mut len = initial;
    loop {
        let mut buf = vec![0u8; len];
        let mut want = len;
        let ret = fill(&mut buf, &mut want);
        if ret == -libc::ERANGE && len < (64 << 20) {
            len = if want > len { want } else { len * 2 };
            continue;
        }
        buf.truncate(want.min(len));
        return (ret, buf);
    }
}

pub(crate) struct ClusterHandle {
    pub(crate) raw: sys::rados_t,
    mon_host: String,
    user: String,
}

// SAFETY: a rados_t (librados::RadosClient) is made for concurrent use: its
// state is guarded by its own locks and the C API may be called on one handle
// from many threads (ceph's own daemons and rbd-nbd do). We never call
// rados_conf_set after rados_connect, the one thing that is not thread-safe.
unsafe impl Send for ClusterHandle {}
// SAFETY: as above, shared references only reach thread-safe librados calls.
unsafe impl Sync for ClusterHandle {}

impl Drop for ClusterHandle {
    fn drop(&mut self) {
        // SAFETY: raw came from a successful rados_create2 and is shut down
        // exactly once; every Pool and Image holds an Arc to this handle, so
        // no io context or image outlives it.
        unsafe { sys::rados_shutdown(self.raw) };
    }
}

/// A connected cluster handle. Cheap to clone; the connection is shut down
/// when the last clone and the last pool and image opened from it are gone.
#[derive(Clone)]
pub struct Cluster {
    pub(crate) handle: Arc<ClusterHandle>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("mon_host", &self.handle.mon_host)
            .field("user", &self.handle.user)
            .finish()
    }
}

fn secs(d: Duration) -> String {
    // Ceph takes whole seconds for these; never round a bound down to 0
    // (which would mean "wait forever").
    d.as_secs().max(1).to_string()
}

impl Cluster {
    /// Connects with settings held in memory: no ceph.conf or keyring file is
    /// read or written. Bounded by `settings.timeouts.connect`.
    pub fn connect(settings: &CephSettings) -> Result<Cluster, CephError> {
        assert_off_executor("connect");
        let cluster_target = || Target::Cluster { mon_host: settings.mon_host.clone() };
        let name = cstring("cephx user", &format!("client.{}", settings.user))?;
        let mut raw: sys::rados_t = ptr::null_mut();
        // SAFETY: raw is a valid out-pointer, the cluster name is a static C
        // string, name outlives the call. rados_create2 reads no config file.
        let ret = unsafe { sys::rados_create2(&mut raw, c"ceph".as_ptr(), name.as_ptr(), 0) };
        check(ret, "create handle for", cluster_target)?;
        let handle = ClusterHandle { raw, mon_host: settings.mon_host.clone(), user: settings.user.clone() };

        let t = &settings.timeouts;
        let bounded = [
            ("client_mount_timeout", secs(t.connect)),
            ("rados_mon_op_timeout", secs(t.mon_op)),
            ("rados_osd_op_timeout", secs(t.osd_op)),
        ];
        // Our bounds first, then the operator's options (which may override
        // them), then the identity.
        for (option, value) in bounded.iter().map(|(k, v)| (*k, v.as_str())).chain(
            settings.options.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        ) {
            match set_option(&handle, option, value) {
                // From a ceph.conf: the Ceph tools skip an option they do
                // not know (a newer release's, a typo), and so do we.
                Err(CephError::BadOption { errno, .. }) if settings.lenient.contains(option) && (errno == libc::ENOENT || errno == libc::EINVAL) => {
                    let why = if errno == libc::ENOENT { "is not one this librados knows" } else { "has a value this librados refuses" };
                    tracing::warn!("ceph option '{option}' from the ceph.conf {why}: skipped, as the ceph tools skip it");
                }
                other => other?,
            }
        }
        set_option(&handle, "mon_host", &settings.mon_host)?;
        // No keyring file: the key is handed over in memory.
        set_option(&handle, "keyring", "")?;
        set_option(&handle, "key", settings.key.expose()).map_err(|_| CephError::InvalidArgument {
            what: "cephx key of",
            value: format!("client.{}", settings.user),
            reason: "librados refused it: it must be the base64 key `ceph auth get-key` prints",
        })?;

        // SAFETY: handle.raw is a created, not yet connected handle.
        let ret = unsafe { sys::rados_connect(handle.raw) };
        if ret < 0 {
            let errno = -ret;
            return Err(match errno {
                libc::EACCES | libc::EPERM | libc::EINVAL => CephError::Auth {
                    op: "connect to",
                    target: cluster_target(),
                    user: settings.user.clone(),
                    errno,
                },
                _ => CephError::from_errno("connect to", cluster_target(), errno),
            });
        }
        Ok(Cluster { handle: Arc::new(handle) })
    }

    pub fn mon_host(&self) -> &str {
        &self.handle.mon_host
    }

    pub fn user(&self) -> &str {
        &self.handle.user
    }

    pub(crate) fn target(&self) -> Target {
        Target::Cluster { mon_host: self.handle.mon_host.clone() }
    }

    /// Opens an io context on `pool`, scoped to `namespace` ("" for none).
    pub fn open_pool(&self, pool: &str, namespace: &str) -> Result<Pool, CephError> {
        Pool::open(self.clone(), pool, namespace)
    }

    /// This client's address as the cluster sees it (what to blocklist to
    /// fence this client, and what appears in watcher lists).
    pub fn own_address(&self) -> Result<String, CephError> {
        assert_off_executor("get own address");
        let mut addrs: *mut c_char = ptr::null_mut();
        // SAFETY: the handle is connected; addrs is a valid out-pointer.
        let ret = unsafe { sys::rados_getaddrs(self.handle.raw, &mut addrs) };
        check(ret, "get own address from", || self.target())?;
        // SAFETY: on success librados sets addrs to a strdup()ed C string
        // that we own and release with free().
        let addr = unsafe {
            let s = CStr::from_ptr(addrs).to_string_lossy().into_owned();
            libc::free(addrs.cast());
            s
        };
        Ok(addr)
    }

    /// The global id of this client (the N in `client.N` of lock and
    /// watcher lists).
    pub fn instance_id(&self) -> u64 {
        // SAFETY: the handle is connected; the call only reads client state.
        unsafe { sys::rados_get_instance_id(self.handle.raw) }
    }

    pub fn fsid(&self) -> Result<String, CephError> {
        assert_off_executor("get fsid");
        let mut buf = [0u8; 64];
        // SAFETY: buf is writable for buf.len() bytes.
        let ret = unsafe { sys::rados_cluster_fsid(self.handle.raw, buf.as_mut_ptr().cast(), buf.len()) };
        check(ret, "get fsid of", || self.target())?;
        Ok(string_from_buf(&buf))
    }

    /// Runs one monitor command (JSON) and returns its output buffer.
    pub fn mon_command(&self, command: &serde_json::Value, target: Target) -> Result<Vec<u8>, CephError> {
        assert_off_executor("mon command");
        let op: &'static str = "run monitor command on";
        let cmd = cstring("monitor command", &command.to_string())?;
        let cmds = [cmd.as_ptr()];
        let mut outbuf: *mut c_char = ptr::null_mut();
        let mut outbuf_len = 0usize;
        let mut outs: *mut c_char = ptr::null_mut();
        let mut outs_len = 0usize;
        // SAFETY: cmds is an array of one valid C string; the out-pointers are
        // valid; no input buffer is passed (null, length 0).
        let ret = unsafe {
            sys::rados_mon_command(
                self.handle.raw,
                cmds.as_ptr() as *mut *const c_char,
                1,
                ptr::null(),
                0,
                &mut outbuf,
                &mut outbuf_len,
                &mut outs,
                &mut outs_len,
            )
        };
        // SAFETY: librados allocated both buffers (or left them null) with the
        // lengths it reported; we copy them and free them with rados_buffer_free.
        let (out, status) = unsafe {
            let out = if outbuf.is_null() {
                Vec::new()
            } else {
                std::slice::from_raw_parts(outbuf as *const u8, outbuf_len).to_vec()
            };
            let status = if outs.is_null() {
                String::new()
            } else {
                String::from_utf8_lossy(std::slice::from_raw_parts(outs as *const u8, outs_len)).into_owned()
            };
            if !outbuf.is_null() {
                sys::rados_buffer_free(outbuf);
            }
            if !outs.is_null() {
                sys::rados_buffer_free(outs);
            }
            (out, status)
        };
        if ret < 0 {
            let errno = -ret;
            return Err(match CephError::from_errno(op, target.clone(), errno) {
                CephError::Other { .. } if !status.is_empty() => {
                    CephError::Other { op, target, errno, description: status.trim().to_string() }
                }
                e => e,
            });
        }
        Ok(out)
    }

    /// Fences a client: the OSDs refuse its I/O until `expire` has passed or
    /// the entry is removed. Idempotent.
    pub fn blocklist_add(&self, addr: &str, expire: Duration) -> Result<(), CephError> {
        let command = serde_json::json!({
            "prefix": "osd blocklist",
            "blocklistop": "add",
            "addr": addr,
            "expire": expire.as_secs_f64().max(1.0),
        });
        self.mon_command(&command, Target::Client { addr: addr.to_string() }).map(drop)
    }

    /// Lifts a fence. Idempotent: removing an address that is not listed is Ok.
    pub fn blocklist_remove(&self, addr: &str) -> Result<(), CephError> {
        let command = serde_json::json!({ "prefix": "osd blocklist", "blocklistop": "rm", "addr": addr });
        self.mon_command(&command, Target::Client { addr: addr.to_string() }).map(drop)
    }

    /// The addresses currently blocklisted.
    pub fn blocklist(&self) -> Result<Vec<String>, CephError> {
        let command = serde_json::json!({ "prefix": "osd blocklist ls", "format": "json" });
        let out = self.mon_command(&command, self.target())?;
        // Pacific prints two JSON arrays back to back (addresses, then ranges).
        let mut addrs = Vec::new();
        for list in serde_json::Deserializer::from_slice(&out).into_iter::<Vec<serde_json::Value>>() {
            let list = list.map_err(|e| CephError::Other {
                op: "parse blocklist of",
                target: self.target(),
                errno: libc::EINVAL,
                description: e.to_string(),
            })?;
            addrs.extend(list.iter().filter_map(|e| e.get("addr")?.as_str().map(str::to_string)));
        }
        Ok(addrs)
    }
}

/// Whether this librados takes `option = value` (known, and a value it
/// accepts), checked on a scratch handle that never connects: what to pass
/// on to another librados client (rbd-nbd) of the options a ceph.conf
/// gave, which the Ceph tools skip when unknown.
pub fn option_accepted(option: &str, value: &str) -> bool {
    let mut raw: sys::rados_t = ptr::null_mut();
    // SAFETY: raw is a valid out-pointer; the id is a static C string; no
    // config file is read (flags 0, no conf_read_file).
    if unsafe { sys::rados_create(&mut raw, c"rbdvol-check".as_ptr()) } < 0 {
        return true;
    }
    let handle = ClusterHandle { raw, mon_host: String::new(), user: String::new() };
    set_option(&handle, option, value).is_ok()
}

fn set_option(handle: &ClusterHandle, option: &str, value: &str) -> Result<(), CephError> {
    let c_option = cstring("ceph option name", option)?;
    let c_value = cstring("ceph option value", value)?;
    // SAFETY: the handle is created and not yet connected (rados_conf_set is
    // only valid before rados_connect); both strings outlive the call.
    let ret = unsafe { sys::rados_conf_set(handle.raw, c_option.as_ptr(), c_value.as_ptr()) };
    if ret < 0 {
        return Err(CephError::BadOption { option: option.to_string(), errno: -ret });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_librados_says_which_options_it_takes_without_connecting() {
        assert!(option_accepted("rbd_cache", "true"));
        assert!(option_accepted("mon_client_hunt_interval", "2"));
        assert!(!option_accepted("rbd_some_future_option", "1"));
        assert!(!option_accepted("rbd_cache", "maybe"));
    }
}
