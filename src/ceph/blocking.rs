//! librados and librbd calls block (network round trips, up to the configured
//! timeouts). They must never run on an async executor thread: callers in
//! async code go through [`offload`], and every blocking entry point of this
//! layer checks that in debug builds, so a test catches a misplaced call.

use std::cell::Cell;

thread_local! {
    static OFFLOADED: Cell<bool> = const { Cell::new(false) };
}

/// Runs blocking Ceph work on tokio's blocking pool and waits for it.
pub async fn offload<F, T>(work: F) -> T
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let task = tokio::task::spawn_blocking(move || {
        OFFLOADED.with(|o| o.set(true));
        work()
    });
    match task.await {
        Ok(value) => value,
        // A panic in Ceph work is a bug: carry it to the caller unchanged.
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// Panics (debug builds) when a blocking Ceph call is made on an async
/// executor thread instead of through [`offload`]. Plain threads are fine.
#[inline]
pub(crate) fn assert_off_executor(op: &'static str) {
    if cfg!(debug_assertions)
        && tokio::runtime::Handle::try_current().is_ok()
        && !OFFLOADED.with(|o| o.get())
    {
        panic!("blocking ceph call '{op}' on an async executor thread: run it through ceph::offload");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn offloaded_work_passes_the_check() {
        let v = offload(|| {
            assert_off_executor("test");
            7
        })
        .await;
        assert_eq!(v, 7);
    }

    #[tokio::test]
    #[should_panic(expected = "on an async executor thread")]
    async fn blocking_call_on_executor_panics() {
        assert_off_executor("test");
    }

    #[test]
    fn plain_threads_pass_the_check() {
        assert_off_executor("test");
    }
}
