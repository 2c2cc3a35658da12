//! How an exec enters its container's namespaces: through the init's pidfd.
//!
//! `/proc/<init pid>/ns/*` names whatever process has that pid when the path is opened; if the
//! init died and its pid was reused, an exec opened by pid would join a stranger's namespaces.
//! A pidfd names one process for good, and `setns(pidfd, flags)` (Linux 5.8) joins the
//! namespaces of that process, all at once: the kernel checks every one against the caller's
//! credentials (host root) before it commits any, so no join order is needed for namespaces
//! that belong to the host's user namespace, and a process that is gone is `ESRCH`.
//!
//! Fallback, only where the kernel lacks it: without a pidfd (no `CLONE_PIDFD`, Linux < 5.3)
//! or on a kernel older than 5.8 (`setns` refuses a pidfd with `EINVAL`) the paths are opened
//! as before; with a pidfd the init is then checked to be alive after the opens (an unreaped
//! process keeps its pid, so the paths were its own).

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sched::CloneFlags;
use oci_spec::runtime::{LinuxNamespaceType, Spec};

use crate::child::etext;
use crate::fds::{open_ro, same_file};
use crate::ns::ns_clone_flag;

/// Why an exec could not enter its container; the exec's process reports it to the caller as
/// text over its sync socket (child.rs), the spawner's half in its reply.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    #[error("container init (pid {pid}) is not running")]
    InitGone { pid: i32 },
    #[error("join {} of the container init (pid {pid}) through its pidfd: {}", what(kinds), etext(*source))]
    JoinThroughPidfd {
        pid: i32,
        kinds: Vec<LinuxNamespaceType>,
        #[source]
        source: Errno,
    },
    #[error("open {}: {}", path.display(), etext(*source))]
    Open {
        path: PathBuf,
        #[source]
        source: Errno,
    },
    #[error("join the container's {kind} namespace: {}", etext(*source))]
    Join {
        kind: LinuxNamespaceType,
        #[source]
        source: Errno,
    },
}

/// "the pid namespace", or "the namespaces ([Mount, Network])".
fn what(kinds: &[LinuxNamespaceType]) -> String {
    match kinds {
        [LinuxNamespaceType::Pid] => "the pid namespace".to_string(),
        _ => format!("the namespaces ({kinds:?})"),
    }
}

type R<T = ()> = std::result::Result<T, Error>;

/// The container's init, as the exec knows it.
pub(crate) struct Init<'a> {
    pub pid: i32,
    pub pidfd: Option<&'a OwnedFd>,
}

impl Init<'_> {
    fn gone(&self) -> Error {
        Error::InitGone { pid: self.pid }
    }

    /// With a pidfd: fails once the init has exited (whoever has its pid now).
    fn still_alive(&self) -> R {
        match self.pidfd {
            Some(fd) => crate::identity::pidfd_signal(fd, 0).map_err(|_| self.gone()),
            None => Ok(()),
        }
    }
}

/// Whether setns(2) takes a pidfd: Linux 5.8 and later.
fn kernel_has_pidfd_setns() -> bool {
    let Ok(u) = nix::sys::utsname::uname() else {
        return true;
    };
    let release = u.release().to_string_lossy();
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let minor: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    (major, minor) >= (5, 8)
}

/// `setns(pidfd, flags)`.
fn setns_pidfd(pidfd: &OwnedFd, flags: CloneFlags) -> Result<(), Errno> {
    // SAFETY: setns(2) with an fd we hold and namespace flags.
    let r = unsafe { libc::setns(pidfd.as_fd().as_raw_fd(), flags.bits()) };
    Errno::result(r).map(drop)
}

/// `setns(pidfd, kinds)` on the init: `Ok(true)` once joined, `Ok(false)` on a kernel whose
/// setns takes no pidfd (the caller falls back to the paths).
fn join_through_pidfd(init: &Init, fd: &OwnedFd, kinds: &[LinuxNamespaceType]) -> R<bool> {
    let flags = kinds
        .iter()
        .fold(CloneFlags::empty(), |f, t| f | ns_clone_flag(*t));
    match setns_pidfd(fd, flags) {
        Ok(()) => Ok(true),
        Err(Errno::ESRCH) => Err(init.gone()),
        Err(Errno::EINVAL) if !kernel_has_pidfd_setns() => Ok(false),
        Err(source) => Err(Error::JoinThroughPidfd {
            pid: init.pid,
            kinds: kinds.to_vec(),
            source,
        }),
    }
}

/// `/proc/<init pid>/ns/<kind>`, opened: a missing one means the init is gone.
fn open_of_init(init: &Init, kind: LinuxNamespaceType) -> R<OwnedFd> {
    let path = PathBuf::from(format!(
        "/proc/{}/ns/{}",
        init.pid,
        crate::ns::proc_name(kind)
    ));
    open_ro(&path).map_err(|source| match source {
        Errno::ENOENT | Errno::ESRCH => init.gone(),
        source => Error::Open { path, source },
    })
}

/// The spawner's half: its `pid_for_children` becomes the init's pid namespace, for the clone.
/// `own` is the spawner's own; returns whether it changed (the caller goes back after).
pub(crate) fn enter_pid_ns(init: &Init, own: &OwnedFd) -> R<bool> {
    if let Some(fd) = init.pidfd {
        if join_through_pidfd(init, fd, &[LinuxNamespaceType::Pid])? {
            return Ok(true);
        }
    }
    let f = open_of_init(init, LinuxNamespaceType::Pid)?;
    init.still_alive()?;
    if same_file(&f, own) {
        return Ok(false);
    }
    nix::sched::setns(&f, CloneFlags::CLONE_NEWPID).map_err(|source| Error::Join {
        kind: LinuxNamespaceType::Pid,
        source,
    })?;
    Ok(true)
}

/// The namespaces an exec joins: every kind the container's spec lists (new or by path) but
/// pid (the spawner entered it for the clone) — the init shares the runtime's for the others.
/// The user namespace only when it is not the caller's own (setns refuses that one).
fn kinds_to_join(spec: &Spec) -> Vec<LinuxNamespaceType> {
    crate::spec::namespaces(spec)
        .iter()
        .filter(|n| n.typ() != LinuxNamespaceType::Pid)
        .filter(|n| match (n.typ(), n.path()) {
            (LinuxNamespaceType::User, Some(p)) => !is_own_user_ns(p),
            _ => true,
        })
        .map(|n| n.typ())
        .collect()
}

fn is_own_user_ns(path: &Path) -> bool {
    match (open_ro(path), open_ro(Path::new("/proc/self/ns/user"))) {
        (Ok(a), Ok(b)) => same_file(&a, &b),
        _ => false,
    }
}

/// The exec's half, in the new process: joins the init's namespaces.
pub(crate) fn join(init: &Init, spec: &Spec) -> R {
    let kinds = kinds_to_join(spec);
    if kinds.is_empty() {
        return init.still_alive();
    }
    if let Some(fd) = init.pidfd {
        if join_through_pidfd(init, fd, &kinds)? {
            return Ok(());
        }
    }
    join_by_path(init, &kinds)
}

/// The fallback: `/proc/<pid>/ns/*`, checked against the pidfd (when there is one) after the
/// opens; as host root first everything but the user and mount namespaces (some may belong to
/// the host's user namespace: not joinable from inside the container's), then the user
/// namespace, the mount namespace last.
fn join_by_path(init: &Init, kinds: &[LinuxNamespaceType]) -> R {
    let mut join = Vec::new();
    for t in kinds {
        let f = open_of_init(init, *t)?;
        let own = format!("/proc/self/ns/{}", crate::ns::proc_name(*t));
        if let Ok(own) = open_ro(Path::new(&own)) {
            if same_file(&f, &own) {
                continue;
            }
        }
        join.push((*t, f));
    }
    init.still_alive()?;
    join.sort_by_key(|(t, _)| match t {
        LinuxNamespaceType::User => 1,
        LinuxNamespaceType::Mount => 2,
        _ => 0,
    });
    for (t, f) in &join {
        nix::sched::setns(f, ns_clone_flag(*t))
            .map_err(|source| Error::Join { kind: *t, source })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{LinuxBuilder, LinuxNamespaceBuilder, SpecBuilder};

    fn spec(nss: &[(LinuxNamespaceType, Option<&str>)]) -> Spec {
        let nss = nss
            .iter()
            .map(|(t, p)| {
                let mut b = LinuxNamespaceBuilder::default().typ(*t);
                if let Some(p) = p {
                    b = b.path(*p);
                }
                b.build().unwrap()
            })
            .collect::<Vec<_>>();
        SpecBuilder::default()
            .linux(LinuxBuilder::default().namespaces(nss).build().unwrap())
            .build()
            .unwrap()
    }

    #[test]
    fn an_exec_joins_what_the_spec_lists_but_pid() {
        use LinuxNamespaceType::*;
        let s = spec(&[
            (Pid, None),
            (Mount, None),
            (Network, Some("/var/run/netns/x")),
            (User, None),
        ]);
        assert_eq!(kinds_to_join(&s), vec![Mount, Network, User]);
        // A user namespace by path that is our own is not joined (setns refuses it).
        let s = spec(&[(Mount, None), (User, Some("/proc/self/ns/user"))]);
        assert_eq!(kinds_to_join(&s), vec![Mount]);
        assert_eq!(kinds_to_join(&spec(&[(Pid, None)])), vec![]);
    }

    #[test]
    fn this_kernel_takes_a_pidfd_in_setns() {
        // The VMs and CI run 5.8+ kernels: the fallback is not what they test.
        assert!(kernel_has_pidfd_setns());
    }

    #[test]
    fn a_gone_init_is_named() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id() as i32;
        let pidfd = crate::identity::pidfd_open(pid).unwrap();
        child.wait().unwrap();
        let init = Init {
            pid,
            pidfd: Some(&pidfd),
        };
        let s = spec(&[(LinuxNamespaceType::Network, None)]);
        // Through the pidfd: ESRCH, whatever has the pid now; never another's namespaces.
        assert_eq!(
            join(&init, &s).unwrap_err().to_string(),
            format!("container init (pid {pid}) is not running")
        );
    }
}
