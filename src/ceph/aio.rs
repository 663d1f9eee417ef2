//! Asynchronous image I/O: librbd completes each request on one of its own
//! threads and calls back. Used by the user-space mapper, which answers the
//! kernel from that callback instead of blocking a thread per request.

use std::ffi::c_void;
use std::sync::Arc;

use rbdvol_sys as sys;

use super::error::{CephError, Target};
use super::image::Image;

/// The caller's continuation: the bytes done and the buffer back, or the error.
type Done = Box<dyn FnOnce(Result<(usize, Vec<u8>), CephError>) + Send>;

/// What a request owns until librbd completes it: the image (so it cannot be
/// closed under the request), the buffer librbd reads from or writes into,
/// and the caller's continuation.
struct Pending {
    image: Arc<Image>,
    op: &'static str,
    buf: Vec<u8>,
    done: Done,
}

unsafe extern "C" fn on_complete(completion: sys::rbd_completion_t, arg: *mut c_void) {
    // SAFETY: arg is the Box<Pending> leaked by `submit` for this completion;
    // librbd calls back exactly once, so we take ownership back exactly once.
    let pending = unsafe { Box::from_raw(arg as *mut Pending) };
    // SAFETY: the completion is complete (we are in its callback) and is
    // released once, here, after reading its value.
    let ret = unsafe {
        let ret = sys::rbd_aio_get_return_value(completion);
        sys::rbd_aio_release(completion);
        ret
    };
    let Pending { image, op, buf, done } = *pending;
    let result = if ret < 0 {
        Err(CephError::from_errno(op, image_target(&image), (-ret) as i32))
    } else {
        Ok((ret as usize, buf))
    };
    drop(image);
    // A panic must not unwind into librbd's C++ frames.
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || done(result)));
}

fn image_target(image: &Image) -> Target {
    image.target()
}

/// The request kinds librbd takes with a completion.
enum Request {
    Read { offset: u64 },
    Write { offset: u64 },
    Discard { offset: u64, len: u64 },
    Flush,
}

fn submit(
    image: &Arc<Image>,
    request: Request,
    op: &'static str,
    buf: Vec<u8>,
    done: Done,
) -> Result<(), CephError> {
    let pending = Box::new(Pending { image: Arc::clone(image), op, buf, done });
    // The Vec's heap buffer does not move when the Box is leaked, so the
    // pointer handed to librbd stays valid until the callback frees it.
    let (buf_ptr, buf_len) = (pending.buf.as_ptr() as *mut u8, pending.buf.len());
    let arg = Box::into_raw(pending);
    let mut completion: sys::rbd_completion_t = std::ptr::null_mut();
    // SAFETY: arg is a valid pointer that on_complete takes back; completion
    // is a valid out-pointer.
    let ret = unsafe { sys::rbd_aio_create_completion(arg.cast(), Some(on_complete), &mut completion) };
    if ret < 0 {
        // SAFETY: librbd did not take arg: reclaim it so nothing leaks.
        drop(unsafe { Box::from_raw(arg) });
        return Err(CephError::from_errno(op, image.target(), -ret));
    }
    let raw = image.raw();
    // SAFETY: the image is open and kept open by the Arc in Pending; the
    // buffer is owned by Pending and outlives the request; the completion
    // was just created and is released in on_complete.
    let ret = unsafe {
        match request {
            Request::Read { offset } => sys::rbd_aio_read(raw, offset, buf_len, buf_ptr.cast(), completion),
            Request::Write { offset } => sys::rbd_aio_write(raw, offset, buf_len, buf_ptr as *const _, completion),
            Request::Discard { offset, len } => sys::rbd_aio_discard(raw, offset, len, completion),
            Request::Flush => sys::rbd_aio_flush(raw, completion),
        }
    };
    if ret < 0 {
        // librbd refused the request and will not call back: free both.
        // SAFETY: the completion and arg were not handed over.
        unsafe {
            sys::rbd_aio_release(completion);
            drop(Box::from_raw(arg));
        }
        return Err(CephError::from_errno(op, image.target(), -ret));
    }
    Ok(())
}

/// Reads `buf.len()` bytes at `offset` into `buf`, a buffer the caller
/// reuses (its old contents are overwritten); `done` gets it back with the
/// number of bytes read.
pub fn read_into(
    image: &Arc<Image>,
    offset: u64,
    buf: Vec<u8>,
    done: impl FnOnce(Result<(usize, Vec<u8>), CephError>) + Send + 'static,
) -> Result<(), CephError> {
    submit(image, Request::Read { offset }, "read", buf, Box::new(done))
}

/// Writes `data` at `offset`; `done` gets the number of bytes written and
/// the buffer back, for the caller to reuse.
pub fn write(
    image: &Arc<Image>,
    offset: u64,
    data: Vec<u8>,
    done: impl FnOnce(Result<(usize, Vec<u8>), CephError>) + Send + 'static,
) -> Result<(), CephError> {
    let len = data.len();
    submit(image, Request::Write { offset }, "write", data, Box::new(move |r| done(r.map(|(_, buf)| (len, buf)))))
}

/// Discards (deallocates) a range: reads of it then return zeros.
pub fn discard(
    image: &Arc<Image>,
    offset: u64,
    len: u64,
    done: impl FnOnce(Result<(), CephError>) + Send + 'static,
) -> Result<(), CephError> {
    submit(image, Request::Discard { offset, len }, "discard", Vec::new(), Box::new(move |r| done(r.map(drop))))
}

/// Completes once every write submitted before it is durable in the cluster.
pub fn flush(image: &Arc<Image>, done: impl FnOnce(Result<(), CephError>) + Send + 'static) -> Result<(), CephError> {
    submit(image, Request::Flush, "flush", Vec::new(), Box::new(move |r| done(r.map(drop))))
}

/// Writes many buffers with a bounded number in flight (a bulk copy into an
/// image), then flushes. The first error wins; later writes are not sent.
pub struct BulkWriter {
    image: Arc<Image>,
    window: usize,
    state: Arc<(std::sync::Mutex<Bulk>, std::sync::Condvar)>,
}

#[derive(Default)]
struct Bulk {
    in_flight: usize,
    error: Option<CephError>,
}

impl BulkWriter {
    pub fn new(image: &Arc<Image>, window: usize) -> BulkWriter {
        BulkWriter { image: Arc::clone(image), window: window.max(1), state: Default::default() }
    }

    /// Waits until fewer than `limit` writes are in flight; the first error
    /// seen so far, if any.
    fn wait_below(&self, limit: usize) -> Result<(), CephError> {
        let (lock, cond) = &*self.state;
        let mut s = cond.wait_while(lock.lock().unwrap(), |s| s.in_flight >= limit && s.error.is_none()).unwrap();
        match s.error.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    pub fn write(&self, offset: u64, data: Vec<u8>) -> Result<(), CephError> {
        super::blocking::assert_off_executor("bulk write");
        self.wait_below(self.window)?;
        self.state.0.lock().unwrap().in_flight += 1;
        let state = Arc::clone(&self.state);
        let sent = write(&self.image, offset, data, move |r| {
            let (lock, cond) = &*state;
            let mut s = lock.lock().unwrap();
            s.in_flight -= 1;
            if let Err(e) = r {
                s.error.get_or_insert(e);
            }
            cond.notify_all();
        });
        if let Err(e) = sent {
            self.state.0.lock().unwrap().in_flight -= 1;
            return Err(e);
        }
        Ok(())
    }

    /// Waits for every write, then flushes the image.
    pub fn finish(self) -> Result<(), CephError> {
        self.wait_below(1)?;
        self.image.flush()
    }
}
