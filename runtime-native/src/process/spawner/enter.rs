//! The namespaces the spawner itself enters for one clone, and its way back: an exec's pid
//! namespace (its init's, `exec_ns`), an init's pid namespace given by path, and, with a new
//! user namespace, the namespaces given by path that the host's user namespace owns
//! (`userns::join_for_clone`). `setns(CLONE_NEWPID)` changes only the spawner's
//! `pid_for_children`, so the clone is born there while the spawner stays itself.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sched::CloneFlags;

use crate::fds::{open_ro, same_file};
use crate::request::{ChildFds, Request};

/// Why the namespaces a clone is born in could not be entered.
#[derive(Debug, thiserror::Error)]
pub(super) enum EnterError {
    /// An exec's way into its init's pid namespace.
    #[error(transparent)]
    ExecInit(#[from] crate::exec_ns::Error),
    #[error("open pid namespace {}: {source}", path.display())]
    OpenPidNs {
        path: PathBuf,
        #[source]
        source: Errno,
    },
    #[error("join pid namespace {}: {source}", path.display())]
    JoinPidNs {
        path: PathBuf,
        #[source]
        source: Errno,
    },
    /// The namespaces given by path, entered for a new user namespace.
    #[error(transparent)]
    UserNsPaths(#[from] crate::userns::Error),
}

/// What the spawner entered for a clone; [`Entered::leave`] takes it back to its own.
#[must_use = "the spawner must leave the container's namespaces after the clone"]
pub(super) struct Entered<'a> {
    /// The spawner's own `pid_for_children`.
    own_pidns: &'a OwnedFd,
    pidns: bool,
    joined: Option<crate::userns::Joined>,
}

impl Entered<'_> {
    /// Back to the spawner's own namespaces. A spawner that cannot return would put every
    /// later container in this one's namespaces: it dies loudly instead.
    pub(super) fn leave(self) {
        if self.pidns {
            if let Err(e) = nix::sched::setns(self.own_pidns, CloneFlags::CLONE_NEWPID) {
                eprintln!("amphi spawner: cannot return to own pid namespace: {e}");
                // SAFETY: leaving the spawner without running destructors.
                unsafe { libc::_exit(1) };
            }
        }
        if let Some(j) = self.joined {
            if let Err(e) = j.restore() {
                eprintln!("amphi spawner: {e}");
                // SAFETY: as above.
                unsafe { libc::_exit(1) };
            }
        }
    }
}

/// Enters what the clone for `req` must be born in (see the module doc): `pidns_path` is an
/// init's pid namespace given by path, when the spawner (not an intermediate) joins it.
pub(super) fn enter<'a>(
    own_pidns: &'a OwnedFd,
    req: &Request,
    fds: &ChildFds,
    pidns_path: Option<&Path>,
) -> Result<Entered<'a>, EnterError> {
    let mut entered = Entered {
        own_pidns,
        pidns: false,
        joined: None,
    };
    if let Request::Exec(r) = req {
        // Through the init's pidfd where there is one: never a stranger's pid namespace.
        let init = crate::exec_ns::Init {
            pid: r.init_pid,
            pidfd: fds.init_pidfd.as_ref(),
        };
        entered.pidns = crate::exec_ns::enter_pid_ns(&init, own_pidns)?;
    } else if let Some(p) = pidns_path {
        let f = open_ro(p).map_err(|source| EnterError::OpenPidNs {
            path: p.to_path_buf(),
            source,
        })?;
        if !same_file(&f, own_pidns) {
            nix::sched::setns(&f, CloneFlags::CLONE_NEWPID).map_err(|source| {
                EnterError::JoinPidNs {
                    path: p.to_path_buf(),
                    source,
                }
            })?;
            entered.pidns = true;
        }
    }
    // With a new user namespace, the namespaces given by path are entered here (userns.rs).
    match crate::userns::join_for_clone(req) {
        Ok(j) => entered.joined = j,
        Err(e) => {
            entered.leave();
            return Err(e.into());
        }
    }
    Ok(entered)
}
