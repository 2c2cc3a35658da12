//! Reaping: the shim is a child subreaper and the parent of every container process (the
//! spawner clones them with CLONE_PARENT), so it collects every exit with `waitpid(-1)`.
//!
//! An exit may be reaped before the service has recorded the pid (a `true` that finishes while
//! Start is still returning, a process that failed setup). Such exits wait in `unclaimed` until
//! `claim` picks them up; orphans reparented to the subreaper are dropped after a while.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

/// How an exit status reads to containerd: the code, or 128+signal.
pub fn exit_code(status: WaitStatus) -> Option<(i32, u32)> {
    match status {
        WaitStatus::Exited(pid, code) => Some((pid.as_raw(), code as u32)),
        WaitStatus::Signaled(pid, sig, _) => Some((pid.as_raw(), 128 + sig as u32)),
        _ => None,
    }
}

const UNCLAIMED_TTL: Duration = Duration::from_secs(60);
const SWEEP_INTERVAL: Duration = Duration::from_secs(30);

#[derive(Default)]
struct Unclaimed {
    exits: HashMap<i32, (u32, Instant)>,
}

/// Shared record of reaped exits nobody has claimed yet.
#[derive(Clone, Default)]
pub struct ExitBook {
    inner: Arc<Mutex<Unclaimed>>,
}

impl ExitBook {
    /// Takes the exit status of `pid` if it was already reaped.
    pub fn claim(&self, pid: i32) -> Option<u32> {
        self.inner
            .lock()
            .unwrap()
            .exits
            .remove(&pid)
            .map(|(c, _)| c)
    }

    fn park(&self, pid: i32, code: u32) {
        let mut g = self.inner.lock().unwrap();
        let now = Instant::now();
        g.exits
            .retain(|_, (_, at)| now.duration_since(*at) < UNCLAIMED_TTL);
        g.exits.insert(pid, (code, now));
    }
}

/// Starts the reaper task; every reaped (pid, exit status) comes out of the returned channel.
pub fn spawn() -> mpsc::UnboundedReceiver<(i32, u32)> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut sigchld = match signal(SignalKind::child()) {
            Ok(s) => s,
            Err(e) => {
                log::error!("cannot watch SIGCHLD, exits will not be seen: {e}");
                return;
            }
        };
        loop {
            reap_all(&tx);
            // A slow periodic sweep guards against a missed SIGCHLD; it is slow so that an
            // idle shim stays asleep (and its code pages unmapped, see `idle`).
            let _ = tokio::time::timeout(SWEEP_INTERVAL, sigchld.recv()).await;
        }
    });
    rx
}

fn reap_all(tx: &mpsc::UnboundedSender<(i32, u32)>) {
    loop {
        match waitpid(
            Pid::from_raw(-1),
            Some(WaitPidFlag::WNOHANG | WaitPidFlag::__WALL),
        ) {
            Ok(WaitStatus::StillAlive) => return,
            Ok(status) => {
                if let Some(exit) = exit_code(status) {
                    let _ = tx.send(exit);
                }
            }
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return, // ECHILD: no children right now
        }
    }
}

impl ExitBook {
    /// Records an exit nobody claimed (see module docs).
    pub fn park_exit(&self, pid: i32, code: u32) {
        self.park(pid, code);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::signal::Signal;

    #[test]
    fn exit_codes_follow_containerd_convention() {
        let p = Pid::from_raw(7);
        assert_eq!(exit_code(WaitStatus::Exited(p, 3)), Some((7, 3)));
        assert_eq!(
            exit_code(WaitStatus::Signaled(p, Signal::SIGKILL, false)),
            Some((7, 137))
        );
        assert_eq!(
            exit_code(WaitStatus::Signaled(p, Signal::SIGTERM, true)),
            Some((7, 143))
        );
        assert_eq!(exit_code(WaitStatus::StillAlive), None);
    }

    #[test]
    fn parked_exits_are_claimed_once() {
        let book = ExitBook::default();
        book.park_exit(42, 1);
        assert_eq!(book.claim(42), Some(1));
        assert_eq!(book.claim(42), None);
    }
}
