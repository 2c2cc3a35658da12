//! The clone of a container process: which namespaces it creates, and the fork-like
//! `clone3` (born into its cgroup v2, with a pidfd) or legacy `clone` that makes it.

use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use oci_spec::runtime::LinuxNamespaceType;

use crate::ns::ns_clone_flag;
use crate::request::Request;

/// `CLONE_INTO_CGROUP` (Linux 5.7, cgroup v2 only): clone3 places the child in the cgroup
/// whose directory fd is in `clone_args.cgroup`.
pub(crate) const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// `struct clone_args` of clone3(2), up to `cgroup` (CLONE_ARGS_SIZE_VER2, 88 bytes).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CloneArgs {
    pub flags: u64,
    pub pidfd: u64,
    pub child_tid: u64,
    pub parent_tid: u64,
    pub exit_signal: u64,
    pub stack: u64,
    pub stack_size: u64,
    pub tls: u64,
    pub set_tid: u64,
    pub set_tid_size: u64,
    pub cgroup: u64,
}

/// The clone3 arguments for a container process: a fork-like clone (no new stack) with
/// `CLONE_PARENT`, the namespaces in `ns_flags`, and, given a cgroup v2 directory fd, born
/// straight into that cgroup.
pub(crate) fn clone3_args(ns_flags: u64, cgroup_dir: Option<RawFd>) -> CloneArgs {
    let mut a = CloneArgs {
        // clone3 takes the exit signal in its own field; CSIGNAL bits in flags are EINVAL,
        // except CLONE_NEWTIME (0x80), which clone3 takes as a flag (clone cannot).
        flags: (ns_flags & !((libc::CSIGNAL & !libc::CLONE_NEWTIME) as u64))
            | libc::CLONE_PARENT as u64,
        // With CLONE_PARENT the kernel refuses any exit_signal (EINVAL): the child inherits
        // the spawner's own, SIGCHLD, which is what the shim (its parent now) waits for. A
        // signal here made every clone3 fail and fall back to clone + a cgroup.procs write
        // (found by the cgroup v2 guest, tests/vm).
        exit_signal: 0,
        ..Default::default()
    };
    if let Some(fd) = cgroup_dir {
        a.flags |= CLONE_INTO_CGROUP;
        a.cgroup = fd as u64;
    }
    a
}

/// Namespaces the clone creates, and a pid namespace the spawner must enter first (an exec's
/// is its init's, entered through `exec_ns`).
pub(super) fn clone_plan(
    req: &Request,
) -> Result<(libc::c_int, Option<std::path::PathBuf>), crate::userns::Error> {
    match req {
        Request::Exec(_) => Ok((0, None)),
        Request::Init(r) => {
            let mut flags = 0;
            let mut pidns = None;
            for ns in crate::spec::namespaces(&r.spec) {
                let typ = ns.typ();
                match (typ, ns.path()) {
                    (LinuxNamespaceType::Pid, Some(p)) => pidns = Some(p.clone()),
                    (_, Some(_)) => {}
                    // Unshared by the child once it is in its cgroup.
                    (LinuxNamespaceType::Cgroup, None) => {}
                    // The spawner writes its id maps right after the clone (userns.rs).
                    (LinuxNamespaceType::User, None) => {
                        crate::userns::check(&r.spec)?;
                        flags |= libc::CLONE_NEWUSER;
                    }
                    (t, None) => flags |= ns_clone_flag(t).bits(),
                }
            }
            Ok((flags, pidns))
        }
    }
}

/// `clone3(args)`: the child's pid, 0 in the child, or the errno.
///
/// # Safety
/// `args` must describe a fork-like clone (no `CLONE_VM`, no stack) of a single-threaded
/// process; the child continues on a copy of the caller's stack.
pub(crate) unsafe fn clone3(args: &CloneArgs) -> Result<i32, Errno> {
    // SAFETY: as the caller promises.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    Errno::result(pid).map(|p| p as i32)
}

/// The legacy `clone(flags)`, fork-like; with `pidfd`, `CLONE_PIDFD` must be in `flags` and
/// the new pidfd lands there (x86_64 argument order: flags, stack, parent_tid, child_tid,
/// tls; with CLONE_PIDFD it takes parent_tid's place).
///
/// # Safety
/// As [`clone3`].
pub(crate) unsafe fn clone_legacy(
    flags: libc::c_ulong,
    pidfd: Option<&mut libc::c_int>,
) -> Result<i32, Errno> {
    let pidfd = pidfd.map_or(std::ptr::null_mut(), |p| p as *mut libc::c_int);
    // SAFETY: as the caller promises.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            flags,
            std::ptr::null_mut::<libc::c_void>(),
            pidfd,
            std::ptr::null_mut::<libc::c_void>(),
            0usize,
        )
    };
    Errno::result(pid).map(|p| p as i32)
}

/// A cloned process as its parent sees it.
pub(super) struct Cloned {
    /// 0 in the child.
    pub pid: i32,
    /// From the clone itself (None on kernels without CLONE_PIDFD): it names this process for
    /// the caller's signals even after its pid is reused (identity.rs).
    pub pidfd: Option<OwnedFd>,
    /// clone3(CLONE_INTO_CGROUP) placed it in its cgroup.
    pub into_cgroup: bool,
}

/// Clones the container process (or, for a joined user namespace, the intermediate) with the
/// namespaces in `ns_flags`: given a cgroup v2 directory, by clone3 into that cgroup, falling
/// back to the legacy clone; with `CLONE_PARENT` unless `own_child` (the intermediate, which
/// the spawner reaps by its SIGCHLD).
///
/// # Safety
/// The caller is the single-threaded spawner; the child continues on a copy of its stack and
/// must never return into the spawner's loop.
pub(super) unsafe fn clone_child(
    ns_flags: libc::c_int,
    cgroup_dir: Option<RawFd>,
    own_child: bool,
) -> Result<Cloned, Errno> {
    let mut pidfd: libc::c_int = -1;
    let mut res = Err(Errno::ENOSYS);
    let mut into_cgroup = false;
    if let Some(dir) = cgroup_dir {
        let mut args = clone3_args(ns_flags as u64, Some(dir));
        if own_child {
            args.flags &= !(libc::CLONE_PARENT as u64);
            args.exit_signal = libc::SIGCHLD as u64;
        }
        args.flags |= libc::CLONE_PIDFD as u64;
        args.pidfd = &mut pidfd as *mut libc::c_int as u64;
        // SAFETY: a fork-like clone3 (stack 0, no CLONE_VM), as the caller promises.
        res = unsafe { clone3(&args) };
        into_cgroup = res.is_ok();
    }
    if res.is_err() {
        let parent_flag = if own_child { 0 } else { libc::CLONE_PARENT };
        let flags = ns_flags as libc::c_ulong
            | parent_flag as libc::c_ulong
            | libc::SIGCHLD as libc::c_ulong;
        // Kernels before 5.2 refuse CLONE_PIDFD (EINVAL), and then the clone goes without it.
        pidfd = -1;
        // SAFETY: fork-like clones, as the caller promises.
        res = unsafe { clone_legacy(flags | libc::CLONE_PIDFD as libc::c_ulong, Some(&mut pidfd)) };
        if res == Err(Errno::EINVAL) {
            pidfd = -1;
            // SAFETY: as above.
            res = unsafe { clone_legacy(flags, None) };
        }
    }
    let pid = res?;
    Ok(Cloned {
        pid,
        // SAFETY: the clone gave us this new fd (or none: -1); the child has no pidfd.
        pidfd: (pid > 0 && pidfd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(pidfd) }),
        into_cgroup,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clone3_args_into_cgroup() {
        let ns = (libc::CLONE_NEWNS | libc::CLONE_NEWPID | libc::CLONE_NEWNET) as u64;
        let a = clone3_args(ns, Some(7));
        assert_eq!(std::mem::size_of::<CloneArgs>(), 88); // CLONE_ARGS_SIZE_VER2
        assert_eq!(a.flags & ns, ns);
        assert_ne!(a.flags & libc::CLONE_PARENT as u64, 0);
        assert_ne!(a.flags & CLONE_INTO_CGROUP, 0);
        assert_eq!(a.cgroup, 7);
        // CLONE_PARENT: no exit signal of its own (the kernel rejects one), the spawner's.
        assert_eq!(a.exit_signal, 0);
        // No signal bits in flags (clone3 rejects them), no stack: a fork-like clone.
        assert_eq!(a.flags & libc::CSIGNAL as u64, 0);
        assert_eq!((a.stack, a.stack_size, a.tls, a.pidfd), (0, 0, 0, 0));

        let t = clone3_args(ns | libc::CLONE_NEWTIME as u64, None);
        assert_ne!(
            t.flags & libc::CLONE_NEWTIME as u64,
            0,
            "a new time namespace"
        );

        let b = clone3_args(ns | libc::SIGCHLD as u64, None);
        assert_eq!(b.flags & CLONE_INTO_CGROUP, 0);
        assert_eq!(b.cgroup, 0);
        assert_eq!(b.flags & libc::CSIGNAL as u64, 0);
    }
}
