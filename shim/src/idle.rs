//! Giving memory back when the shim goes idle.
//!
//! A shim spends almost all its life waiting: for its container to exit, for the next
//! State/Stats poll. Every RPC maps code pages it will not need while waiting, so shortly after
//! the last request (debounced, so a burst of RPCs pays once) the server drops its text
//! mappings and trims the heap (`runtime_native::memory::trim_idle`). An idle shim then holds little more than
//! its heap and stacks.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Quiet time after the last request before trimming.
const QUIET: Duration = Duration::from_millis(200);

static GENERATION: AtomicU64 = AtomicU64::new(0);

/// Call at the end of every request; must run inside the tokio runtime.
pub fn after_request() {
    let generation = GENERATION.fetch_add(1, Ordering::SeqCst) + 1;
    tokio::spawn(async move {
        tokio::time::sleep(QUIET).await;
        if GENERATION.load(Ordering::SeqCst) == generation {
            runtime_native::memory::trim_idle();
        }
    });
}
