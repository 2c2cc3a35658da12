//! The access log: one line per request on the container's stdout,
//! `METHOD PATH STATUS DURATIONms`.
//!
//! stdout is a fifo that containerd drains at its own pace (or a pty): a write may block. The
//! lines go through a bounded queue to one writer thread, so a slow reader never stalls an
//! async worker; when the queue is full, lines are dropped and the count is logged with the
//! next line that gets through.

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Duration;

use crate::context::{RunContext, Stdio};

/// Lines queued before new ones are dropped.
const QUEUE: usize = 4096;

pub(crate) struct AccessLog {
    tx: SyncSender<String>,
    dropped: Arc<AtomicU64>,
}

impl AccessLog {
    pub(crate) fn start(ctx: &RunContext) -> std::io::Result<AccessLog> {
        let out: OwnedFd = match &ctx.stdio {
            Stdio::Inherit => std::io::stdout().as_fd().try_clone_to_owned()?,
            Stdio::Files { stdout, .. } => stdout.as_fd().try_clone_to_owned()?,
        };
        let mut out = File::from(out);
        let (tx, rx) = sync_channel::<String>(QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        let lost = dropped.clone();
        std::thread::Builder::new()
            .name("amphi-accesslog".into())
            .spawn(move || {
                for line in rx {
                    let n = lost.swap(0, Ordering::Relaxed);
                    if n > 0 {
                        let _ = writeln!(out, "amphi: access log: {n} lines dropped");
                    }
                    let _ = out.write_all(line.as_bytes());
                }
            })?;
        Ok(AccessLog { tx, dropped })
    }

    pub(crate) fn record(&self, method: &str, path: &str, status: u16, took: Duration) {
        let line = format!(
            "{method} {path} {status} {:.3}ms\n",
            took.as_secs_f64() * 1000.0
        );
        if let Err(TrySendError::Full(_)) = self.tx.try_send(line) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}
