//! SIGTERM/SIGINT in the container process.
//!
//! The signals are blocked in the calling thread before any other thread exists (so
//! every later thread inherits the mask, and a blocked signal is never "ignored" even
//! when the process is its PID namespace's init), and a helper thread takes them with
//! `sigwait`, and interrupts the guest through an [`Interrupter`].

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{pthread_sigmask, SigSet, SigmaskHow, Signal};
use wasmtime::Engine;

/// A backstop: how long a command gets after SIGTERM/SIGINT before the process exits with
/// `128 + signal` anyway. A guest waiting in an async host call (sleep, socket, stdin) ends at
/// once (its future is dropped) and a computing guest at its next epoch check; only a call
/// that blocks its thread (a read of a fifo in the rootfs) is left to this.
pub const SIGNAL_GRACE: Duration = Duration::from_secs(2);

/// State shared between the runner and whoever interrupts it.
pub(crate) struct Shared {
    pub(crate) engine: Engine,
    /// First SIGTERM/SIGINT received, 0 if none.
    pub(crate) signal: AtomicI32,
    /// Set to true on the first signal: an HTTP proxy drains, a command's guest future is
    /// dropped.
    pub(crate) drain: tokio::sync::watch::Sender<bool>,
    /// An HTTP proxy drains (in-flight requests finish); anything else is interrupted.
    pub(crate) http: bool,
}

/// Interrupts a running [`Loaded`] as SIGTERM/SIGINT would: a command's guest traps at
/// its next epoch check and `run` returns `128 + sig`; an HTTP proxy drains and
/// returns 0. Clone and send it anywhere.
#[derive(Clone)]
pub struct Interrupter(pub(crate) Arc<Shared>);

impl Interrupter {
    pub fn interrupt(&self, sig: i32) {
        let _ = self
            .0
            .signal
            .compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst);
        if !self.0.http {
            // A guest computing in wasm code traps at its next epoch check.
            self.0.engine.increment_epoch();
        }
        self.0.drain.send_replace(true);
    }
}

fn termination_set() -> SigSet {
    let mut set = SigSet::empty();
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGINT);
    set
}

/// Block SIGTERM and SIGINT in the calling thread; threads created afterwards inherit
/// the mask. [`crate::Loaded::run`] does this itself, but a process that creates threads
/// before it (e.g. compiling in-process, which uses a thread pool) must call this first,
/// or the kernel may deliver the signal to a thread that doesn't block it (default
/// action: terminate).
pub fn block_termination_signals() -> nix::Result<()> {
    pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&termination_set()), None)
}

pub(crate) fn install(interrupter: Interrupter, drain: bool) {
    let set = termination_set();
    if let Err(e) = block_termination_signals() {
        log::warn!("wasm: cannot block SIGTERM/SIGINT: {e}");
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("amphi-signals".into())
        .spawn(move || {
            let mut first = true;
            loop {
                let sig = match set.wait() {
                    Ok(s) => s as i32,
                    Err(_) => continue,
                };
                if !first {
                    // Second signal: stop waiting for the guest.
                    hard_exit(128 + sig);
                }
                first = false;
                interrupter.interrupt(sig);
                if !drain {
                    // Backstop for a host call that blocks its thread (see SIGNAL_GRACE).
                    std::thread::spawn(move || {
                        std::thread::sleep(SIGNAL_GRACE);
                        hard_exit(128 + sig);
                    });
                }
            }
        });
    if let Err(e) = spawned {
        log::warn!("wasm: cannot start the signal thread: {e}");
    }
}

fn hard_exit(code: i32) -> ! {
    // SAFETY: _exit is async-signal-safe and ends the process without running
    // destructors that other threads may be using.
    unsafe { libc::_exit(code) }
}
