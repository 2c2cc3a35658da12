//! Specs that join an existing user namespace (`linux.namespaces` has `user` with a `path`):
//! what containerd 2.1's CRI hands a shim for a user-namespaced pod (`hostUsers: false`). It
//! pins a user namespace with the pod's mappings, and the sandbox and every container of the
//! pod join it by path.
//!
//! A namespace belongs to the user namespace its creator was in when it was made, and most
//! operations inside it (mounting, setting the hostname, mounting the pid namespace's /proc)
//! ask for capabilities over that owner. The spawner runs in the host's user namespace and
//! cannot leave it for one clone (a process can never return to an ancestor user namespace),
//! so a container process it cloned with `CLONE_NEWNS` would own a mount namespace of the host's
//! user namespace, where its root — root only in the pod's — gets EPERM on its first mount.
//! runc's nsexec has the same problem and solves it with an intermediate stage; so does this:
//! 1. the spawner clones an intermediate process **without** `CLONE_PARENT` and without new
//!    namespaces (in the host's pid namespace, so what it forks is reparented to the shim);
//! 2. the intermediate, still host root, applies `oomScoreAdj` (lowering it needs
//!    CAP_SYS_RESOURCE over the host's user namespace, and `/proc/self/oom_score_adj` of a
//!    non-dumpable process belongs to host root), then joins the namespaces the spec
//!    gives by path in runc's order: first every one but the user namespace (it may belong to
//!    the host's user namespace, which the pod's root could not join), then the user
//!    namespace — becoming its root (`setresgid`/`setresuid` 0) — then, again, any that
//!    failed with EPERM before;
//! 3. it clones the container process with the spec's new namespaces, which therefore belong
//!    to the pod's user namespace (a new pid namespace included, so the container's root can
//!    mount its /proc), sends its pid and pidfd to the spawner and exits. The spawner reaps
//!    it; the container process is reparented to the shim (a child subreaper), which reaps it
//!    like every other container process. The spawner then goes on as after its own clone:
//!    the cgroup join is for the container process's pid (on cgroup v2 the intermediate was
//!    born in the cgroup and the container process inherits it).
//!
//! Only the rootfs mount (idmapped layers) and the idmapped volumes need host root, and the
//! shim makes both before the spawn (`rootfs::prepared`, `idmap::StagedVolumes`); the
//! container's mount namespace gets copies of them.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use oci_spec::runtime::{LinuxNamespaceType, Spec};

use crate::child::etext;
use crate::fds::{open_ro, same_file};
use crate::ns::{ns_clone_flag, ns_file_name};

/// What failed on the way into a joined user namespace. The intermediate reports its own
/// failure to the spawner as text (another process), formatted right before it is sent;
/// the spawner's reply carries it on to the caller as text too.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    #[error(transparent)]
    Namespace(#[from] crate::ns::PathError),
    #[error("clear supplementary groups: {}", .0.desc())]
    ClearGroups(#[source] Errno),
    /// Becoming root of the joined user namespace.
    #[error(transparent)]
    UserNs(#[from] crate::userns::Error),
    #[error(transparent)]
    OomScoreAdj(#[from] crate::child::limits::OomScoreAdjError),
    #[error("clone container process in the joined user namespace: {}", etext(*source))]
    Clone {
        #[source]
        source: Errno,
    },
    #[error("user namespace intermediate exited without reporting the container process")]
    IntermediateSilent,
    #[error("user namespace intermediate: {}", etext(*source))]
    IntermediateReceive {
        #[source]
        source: Errno,
    },
    #[error("user namespace intermediate: malformed report")]
    IntermediateMalformed,
    /// The intermediate's own error, as it reported it.
    #[error("{0}")]
    Intermediate(String),
}

type R<T = ()> = std::result::Result<T, Error>;

/// The spec joins a user namespace by path.
pub(crate) fn joins_userns(spec: &Spec) -> bool {
    crate::spec::namespaces(spec)
        .iter()
        .any(|n| n.typ() == LinuxNamespaceType::User && n.path().is_some())
}

/// A namespace the spec gives by path, opened while the paths still resolve (joining the mount
/// or user namespace can make them unreachable).
struct ByPath {
    typ: LinuxNamespaceType,
    path: PathBuf,
    fd: OwnedFd,
}

/// The spec's namespaces given by path that this process is not already in.
fn open_by_path(spec: &Spec) -> R<Vec<ByPath>> {
    let mut out = Vec::new();
    for ns in crate::spec::namespaces(spec) {
        let Some(path) = ns.path() else { continue };
        let typ = ns.typ();
        let fd = crate::ns::open_path(typ, path)?;
        // Already in it (a user namespace: joining one's own is EINVAL).
        let own = format!("/proc/self/ns/{}", ns_file_name(typ));
        if let Ok(own) = open_ro(Path::new(&own)) {
            if same_file(&fd, &own) {
                continue;
            }
        }
        out.push(ByPath {
            typ,
            path: path.clone(),
            fd,
        });
    }
    Ok(out)
}

/// Which namespaces a pass of [`join_all`] joins.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Pass {
    AllButUser,
    User,
}

/// One pass: joins the namespaces of `pass` still in `left`; the ones refused with EPERM
/// stay for a later pass, any other error ends the setup.
fn join_pass(left: &mut Vec<ByPath>, pass: Pass) -> R {
    let mut i = 0;
    while i < left.len() {
        let ns = &left[i];
        if (ns.typ == LinuxNamespaceType::User) != (pass == Pass::User) {
            i += 1;
            continue;
        }
        match nix::sched::setns(&ns.fd, ns_clone_flag(ns.typ)) {
            Ok(()) => {
                if ns.typ == LinuxNamespaceType::User {
                    become_root()?;
                }
                left.remove(i);
            }
            Err(Errno::EPERM) => i += 1,
            Err(source) => return Err(crate::ns::join_error(ns.typ, &ns.path, source).into()),
        }
    }
    Ok(())
}

/// Joins every namespace the spec gives by path, the user namespace in the middle (see the
/// module doc); a pid namespace becomes the one of the children.
fn join_all(spec: &Spec) -> R {
    let mut left = open_by_path(spec)?;
    join_pass(&mut left, Pass::AllButUser)?;
    join_pass(&mut left, Pass::User)?;
    join_pass(&mut left, Pass::AllButUser)?;
    match left.first() {
        None => Ok(()),
        Some(ns) => Err(crate::ns::join_error(ns.typ, &ns.path, Errno::EPERM).into()),
    }
}

/// Root of the user namespace just joined: the host's uid 0 is not mapped in a pod's user
/// namespace, and files made with an unmapped owner fail (EOVERFLOW).
fn become_root() -> R {
    // Host root's supplementary groups mean nothing in the pod; a namespace whose setgroups is
    // "deny" refuses this, and then the process keeps them until its own identity is set.
    match nix::unistd::setgroups(&[]) {
        Ok(()) | Err(Errno::EPERM) => {}
        Err(e) => return Err(Error::ClearGroups(e)),
    }
    Ok(crate::userns::become_root()?)
}

/// The intermediate's clone of the container process: a fork-like clone3 (legacy clone where
/// the kernel has none) with the new namespaces `ns_flags` and a pidfd, exit signal SIGCHLD
/// (what the shim's reaper waits for once the process is its child). `Ok(None)` in the child.
fn clone_container(ns_flags: u64) -> R<Option<(i32, Option<OwnedFd>)>> {
    let mut pidfd: libc::c_int = -1;
    let args = crate::spawner::CloneArgs {
        flags: ns_flags | libc::CLONE_PIDFD as u64,
        pidfd: &mut pidfd as *mut libc::c_int as u64,
        exit_signal: libc::SIGCHLD as u64,
        ..Default::default()
    };
    // SAFETY: clone3 without CLONE_VM and without a stack is fork-like; this process is a
    // single-threaded copy of the spawner.
    let mut res = unsafe { crate::spawner::clone3(&args) };
    if res == Err(Errno::ENOSYS) && ns_flags & libc::CLONE_NEWTIME as u64 == 0 {
        pidfd = -1;
        let flags = (ns_flags | libc::SIGCHLD as u64) as libc::c_ulong;
        // SAFETY: as above; the legacy clone with the same flags and no pidfd.
        res = unsafe { crate::spawner::clone_legacy(flags, None) };
    }
    match res.map_err(|source| Error::Clone { source })? {
        0 => Ok(None),
        // SAFETY: the clone gave us this new fd (or none: -1).
        p => Ok(Some((
            p,
            (pidfd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(pidfd) }),
        ))),
    }
}

/// The intermediate process (cloned by the spawner for a request that joins a user namespace):
/// joins, clones the container process with `ns_flags` (the spec's new namespaces), reports
/// it on `report` and exits. Returns only in the container process, which goes on with the
/// container's setup (child.rs).
pub(crate) fn intermediate(spec: &Spec, ns_flags: u64, report: OwnedFd) {
    // SAFETY: prctl with integer arguments; it holds the container's fds like the process.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    let res = (|| {
        // As host root: in the pod's user namespace the container process may neither lower
        // it nor write the file, which belongs to host root (it finds it set: child.rs).
        if let Some(adj) = spec.process().as_ref().and_then(|p| p.oom_score_adj()) {
            crate::child::limits::set_oom_score_adj(adj)?;
        }
        join_all(spec)?;
        clone_container(ns_flags)
    })();
    let (data, fds): (Vec<u8>, Vec<RawFd>) = match &res {
        Ok(None) => {
            drop(report); // the container process: the spawner waits for the intermediate's EOF
            return;
        }
        Ok(Some((pid, pidfd))) => (
            [b"P".as_slice(), &pid.to_le_bytes()].concat(),
            pidfd.iter().map(|f| f.as_raw_fd()).collect(),
        ),
        // Text from here on: the spawner is another process.
        Err(e) => (
            [b"E".as_slice(), e.to_string().as_bytes()].concat(),
            Vec::new(),
        ),
    };
    let sent = crate::sync::send_raw(report.as_raw_fd(), &data, &fds);
    if sent.is_err() {
        if let Ok(Some((_, Some(fd)))) = &res {
            let _ = crate::identity::pidfd_signal(fd, libc::SIGKILL);
        }
    }
    // SAFETY: leaving the intermediate without running the spawner's destructors.
    unsafe { libc::_exit(if res.is_ok() { 0 } else { 1 }) }
}

/// The spawner's part once it cloned the intermediate `pid`: the container process's pid and
/// pidfd (or why there is none), after the intermediate has been reaped.
pub(crate) fn await_container(report: OwnedFd, pid: i32) -> R<(i32, Option<OwnedFd>)> {
    let got = crate::sync::recv_raw(report.as_raw_fd());
    loop {
        // __WALL: whatever its exit signal, the intermediate is ours to reap.
        // SAFETY: waitpid on our own child, no status wanted.
        let r = unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::__WALL) };
        if r >= 0 || Errno::last() != Errno::EINTR {
            break;
        }
    }
    let (data, mut fds) = match got {
        Ok(Some(m)) => m,
        Ok(None) => return Err(Error::IntermediateSilent),
        Err(source) => return Err(Error::IntermediateReceive { source }),
    };
    match data.split_first() {
        Some((b'P', n)) if n.len() == 4 => {
            let pid = i32::from_le_bytes([n[0], n[1], n[2], n[3]]);
            Ok((pid, fds.pop()))
        }
        Some((b'E', why)) => Err(Error::Intermediate(
            String::from_utf8_lossy(why).into_owned(),
        )),
        _ => Err(Error::IntermediateMalformed),
    }
}

/// The clone flags of a spec's new namespaces, moved from the spawner's clone to the
/// intermediate's: `(spawner's, intermediate's)`.
pub(crate) fn split_flags(spec: &Spec, ns_flags: libc::c_int) -> (libc::c_int, u64) {
    if joins_userns(spec) {
        (0, ns_flags as u32 as u64)
    } else {
        (ns_flags, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sched::CloneFlags;
    use oci_spec::runtime::LinuxNamespaceBuilder;

    fn spec_with(nss: Vec<oci_spec::runtime::LinuxNamespace>) -> Spec {
        let mut spec = Spec::default();
        let mut l = spec.linux().clone().unwrap();
        l.set_namespaces(Some(nss));
        spec.set_linux(Some(l));
        spec
    }

    fn ns(t: LinuxNamespaceType, path: Option<&str>) -> oci_spec::runtime::LinuxNamespace {
        let mut b = LinuxNamespaceBuilder::default().typ(t);
        if let Some(p) = path {
            b = b.path(p);
        }
        b.build().unwrap()
    }

    #[test]
    fn joins_only_a_user_namespace_by_path() {
        let new_user = spec_with(vec![ns(LinuxNamespaceType::User, None)]);
        assert!(!joins_userns(&new_user));
        assert!(!joins_userns(&Spec::default()));
        let joined = spec_with(vec![
            ns(LinuxNamespaceType::User, Some("/proc/1/ns/user")),
            ns(LinuxNamespaceType::Mount, None),
        ]);
        assert!(joins_userns(&joined));
        let f = (libc::CLONE_NEWNS | libc::CLONE_NEWPID) as libc::c_int;
        assert_eq!(split_flags(&joined, f), (0, f as u64));
        assert_eq!(split_flags(&new_user, f), (f, 0));
    }

    /// A namespace path that does not open is the setup's error, naming type and path.
    #[test]
    fn a_missing_namespace_path_is_named() {
        let spec = spec_with(vec![
            ns(LinuxNamespaceType::Network, Some("/nonexistent/netns")),
            ns(LinuxNamespaceType::User, Some("/nonexistent/user")),
        ]);
        let e = join_all(&spec).unwrap_err().to_string();
        assert_eq!(
            e,
            "open net namespace /nonexistent/netns: no such file or directory"
        );
    }

    /// As root: the intermediate's joins end in the user namespace, as its root, with the
    /// mount namespace made afterwards owned by it (what the sandbox's first mount needs).
    #[test]
    fn joined_user_namespace_owns_what_is_made_after() {
        if !nix::unistd::Uid::effective().is_root() {
            return;
        }
        let r = crate::idmap::parse_ranges("0:200000:65536").unwrap();
        let userns = crate::idmap::userns_fd(&r, &r).unwrap();
        let path = crate::procfs::fd_path(&userns).unwrap();
        let spec = spec_with(vec![
            ns(LinuxNamespaceType::User, Some(path.to_str().unwrap())),
            ns(LinuxNamespaceType::Mount, None),
        ]);
        // In a forked child: the test process itself must stay where it is.
        // SAFETY: the child only makes syscalls and exits.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let ok = join_all(&spec).is_ok()
                && nix::unistd::getuid().is_root()
                && std::fs::read_to_string("/proc/self/uid_map")
                    .map(|m| m.split_whitespace().collect::<Vec<_>>() == ["0", "200000", "65536"])
                    .unwrap_or(false)
                && nix::sched::unshare(CloneFlags::CLONE_NEWNS).is_ok()
                && nix::mount::mount(
                    None::<&str>,
                    "/",
                    None::<&str>,
                    nix::mount::MsFlags::MS_SLAVE | nix::mount::MsFlags::MS_REC,
                    None::<&str>,
                )
                .is_ok();
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
    }
}
