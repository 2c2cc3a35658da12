//! The messages between the caller and the spawner: a request with the layout of the fds that
//! travel with it, and the reply (the new process's pid, its sync socket and pidfd as fds, or
//! why there is none).

use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use serde::{Deserialize, Serialize};

use super::Stdio;
use crate::request::{ChildFds, Request};

/// Which fds travel with a request, in order: stdin, stdout, stderr (those present), extras,
/// an exec's init pidfd.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(super) struct StdioLayout {
    stdin: bool,
    stdout: bool,
    stderr: bool,
    extra: usize,
    init_pidfd: bool,
}

impl StdioLayout {
    /// The layout of `stdio` (and of the request's init pidfd), with the fds in that order.
    pub(super) fn of(stdio: &Stdio, req: &Request) -> (StdioLayout, Vec<RawFd>) {
        let mut fds: Vec<RawFd> = [&stdio.stdin, &stdio.stdout, &stdio.stderr]
            .into_iter()
            .flatten()
            .map(|f| f.as_raw_fd())
            .collect();
        fds.extend(stdio.extra_fds.iter().map(|f| f.as_raw_fd()));
        let init_pidfd = match req {
            Request::Exec(r) => r.init_pidfd.as_ref(),
            Request::Init(_) => None,
        };
        fds.extend(init_pidfd.map(|f| f.as_raw_fd()));
        let layout = StdioLayout {
            stdin: stdio.stdin.is_some(),
            stdout: stdio.stdout.is_some(),
            stderr: stdio.stderr.is_some(),
            extra: stdio.extra_fds.len(),
            init_pidfd: init_pidfd.is_some(),
        };
        (layout, fds)
    }

    /// The spawner's side: the received fds as the container process's, or `(got, expected)`
    /// when their number does not match the layout.
    pub(super) fn split(self, mut fds: Vec<OwnedFd>) -> Result<ChildFds, (usize, usize)> {
        let want = self.stdin as usize
            + self.stdout as usize
            + self.stderr as usize
            + self.extra
            + self.init_pidfd as usize;
        if fds.len() != want {
            return Err((fds.len(), want));
        }
        let init_pidfd = if self.init_pidfd { fds.pop() } else { None };
        let mut it = fds.into_iter();
        let mut take = |present: bool| if present { it.next() } else { None };
        Ok(ChildFds {
            stdin: take(self.stdin),
            stdout: take(self.stdout),
            stderr: take(self.stderr),
            extra: it.collect(),
            init_pidfd,
            join: None,
            proc_mnt: None,
        })
    }
}

/// A request as it travels to the spawner (its fds by SCM_RIGHTS beside it).
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Envelope {
    pub req: Request,
    pub stdio: StdioLayout,
}

/// The spawner's answer.
#[derive(Debug, Serialize, Deserialize)]
pub(super) enum Reply {
    /// The sync socket to the new process (and its pidfd, where the kernel gave one) travels
    /// with this message.
    Spawned { pid: i32 },
    /// Why the spawner could not clone the process: text, because it crosses from the
    /// spawner's process to the caller's (the spawner's error is formatted right before it is
    /// sent, `serve.rs`).
    Err(String),
}
