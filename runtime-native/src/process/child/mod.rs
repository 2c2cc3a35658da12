//! The container process, from the clone in the spawner to execve (or the custom runner):
//! `main` and `run` here walk the phases in order; `fds`, `namespaces`, `pty`, `limits` and
//! `exe` hold each phase's steps.
//!
//! Runs in a fork-like clone of the single-threaded spawner, so it may allocate freely. Every
//! failure becomes a `Failed(message)` on the sync socket, naming the step and the object in
//! user terms, followed by `_exit(1)`: typed ([`Error`]) up to `main`, which formats it once,
//! because the caller that shows it to the user is another process.

use std::ffi::CString;
use std::fs;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sched::CloneFlags;
use oci_spec::runtime::{LinuxNamespaceType, Process, Spec};

use crate::fds::close_fds_except;
use crate::request::{ChildFds, Request};
use crate::sync::{self, ChildMsg, ParentMsg};
use crate::workload::{ProcessContext, Workload, WorkloadTable};

mod error;
pub(crate) use error::{etext, ioerr, Error};
use error::{last, sys};

struct Child {
    sync: RawFd,
    extra: Vec<i32>,
    workloads: WorkloadTable,
    cap_last: u32,
    /// /proc/self/cgroup as read after joining the cgroups (before a cgroup namespace).
    self_cgroup: std::cell::RefCell<String>,
    /// The spawner's report on moving us into our cgroup (spawner/cgroup_join.rs `join_cgroup`), read by
    /// `ensure_joined`; `None` once read, or with no cgroup to join.
    join: std::cell::Cell<Option<RawFd>>,
    /// The spec asks for a new cgroup namespace, created (by `ensure_joined`) once we are in
    /// our cgroup: its root is the cgroup we are in when it is created.
    unshare_cgroup: std::cell::Cell<bool>,
    /// The spec's seccomp filter, compiled up front and loaded in `finish` (seccomp.rs).
    seccomp: std::cell::Cell<Option<crate::seccomp::Seccomp>>,
    /// The spec's hooks that involve this process (hooks.rs); `None` when there are none.
    hooks: Option<crate::hooks::ChildHooks>,
    /// A detached procfs mount of our pid namespace made by the spawner (proc_mount.rs
    /// `proc_mount_fd`), attached where the spec mounts proc; closed once the rootfs is set.
    proc_mnt: std::cell::Cell<Option<RawFd>>,
    /// The host's LSMs, read before the container's root or mount namespace is entered.
    lsm: crate::lsm::Host,
    /// An exec's: the container init's pidfd, closed once its namespaces are joined.
    init_pidfd: Option<OwnedFd>,
}

impl Child {
    fn warn(&self, msg: String) {
        let _ = sync::send(&self.sync, &ChildMsg::Log(msg), &[]);
    }
}

impl crate::rootfs::Container for Child {
    type Error = Error;

    fn warn(&self, msg: String) {
        Child::warn(self, msg)
    }

    fn joined_cgroups(&self) -> Result<String, Error> {
        ensure_joined(self)?;
        read_self_cgroup(self);
        Ok(self.self_cgroup.borrow().clone())
    }

    fn take_proc_mount(&self) -> Option<RawFd> {
        self.proc_mnt.take()
    }

    fn before_pivot(&self) -> Result<(), Error> {
        if let Some(h) = &self.hooks {
            // Hooks see the container in its cgroup.
            ensure_joined(self)?;
            // createRuntime (by the caller), createContainer.
            h.before_pivot(self.sync)?;
        }
        Ok(())
    }
}

pub(crate) fn main(req: Request, fds: ChildFds, sync_sock: OwnedFd, workloads: WorkloadTable) -> ! {
    let sync_fd = sync_sock.into_raw_fd();
    let mut child = Child {
        sync: sync_fd,
        extra: Vec::new(),
        workloads,
        cap_last: 40,
        self_cgroup: Default::default(),
        join: Default::default(),
        unshare_cgroup: Default::default(),
        seccomp: Default::default(),
        hooks: None,
        proc_mnt: Default::default(),
        lsm: crate::lsm::Host::detect(Path::new("/")),
        init_pidfd: None,
    };
    let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(&mut child, req, fds)));
    let err = match res {
        Ok(Ok(())) => unsafe { libc::_exit(0) },
        Ok(Err(e)) => e,
        Err(_) => Error::Panicked,
    };
    // Text from here on: the caller is another process.
    let _ = sync::send(&child.sync, &ChildMsg::Failed(err.to_string()), &[]);
    unsafe { libc::_exit(1) }
}

mod exe;
mod fds;
pub(crate) mod limits;
mod namespaces;
mod pty;
pub(crate) use exe::resolve_exe;
use fds::{close_all_but, dup2, setup_fds};
pub(crate) use limits::CAP_NAMES;
use limits::{identity_and_caps, oom_score_adj, rlimits};
use namespaces::{
    ensure_joined, hostname, init_namespaces, loopback_up, namespaces, read_self_cgroup, sysctls,
};
use pty::setup_pty;

fn run(c: &mut Child, req: Request, fds: ChildFds) -> Result<(), Error> {
    // SAFETY: prctl with plain integer arguments.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    setup_fds(c, fds)?;
    c.cap_last = fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40);
    c.seccomp.set(crate::seccomp::prepare_for(&req)?);
    c.hooks = crate::hooks::ChildHooks::for_request(&req);
    match req {
        Request::Init(r) => {
            let process = r.spec.process().clone().ok_or(Error::NoProcess)?;
            crate::userns::wait_mapped(c.sync, &r.spec)?;
            init_namespaces(c, &r.spec)?;
            if namespaces(&r.spec)
                .iter()
                .any(|(t, p)| *t == LinuxNamespaceType::Network && p.is_none())
            {
                loopback_up()?;
            }
            // SAFETY: plain syscall.
            unsafe { libc::setsid() };
            oom_score_adj(c, &process)?;
            let nss = namespaces(&r.spec);
            let new_mnt = nss
                .iter()
                .any(|(t, p)| *t == LinuxNamespaceType::Mount && p.is_none());
            if new_mnt {
                crate::rootfs::setup(c, &r.spec, &r.rootfs)?;
            } else {
                c.warn("no new mount namespace: only chroot into the rootfs".into());
                ensure_joined(c)?;
                if let Some(h) = &c.hooks {
                    h.before_pivot(c.sync)?;
                }
                nix::unistd::chroot(&r.rootfs).map_err(|source| Error::Chroot {
                    path: r.rootfs.clone(),
                    source,
                })?;
                std::env::set_current_dir("/")
                    .map_err(|source| Error::Chdir { what: "/", source })?;
            }
            let new_uts = nss
                .iter()
                .any(|(t, p)| *t == LinuxNamespaceType::Uts && p.is_none());
            hostname(c, &r.spec, new_uts)?;
            sysctls(&r.spec, &nss)?;
            if new_mnt {
                crate::rootfs::finalize(&r.spec)?;
            }
            if let Some(fd) = c.proc_mnt.take() {
                // SAFETY: the spec mounts no proc: close the unused mount fd we own.
                unsafe { libc::close(fd) };
            }
            if c.unshare_cgroup.get() {
                ensure_joined(c)?; // while we still have CAP_SYS_ADMIN
            }
            finish(c, &r.spec, &process, &r.workload)
        }
        Request::Exec(r) => {
            let pidfd = c.init_pidfd.take();
            let init = crate::exec_ns::Init {
                pid: r.init_pid,
                pidfd: pidfd.as_ref(),
            };
            crate::exec_ns::join(&init, &r.spec)?;
            drop(pidfd);
            std::env::set_current_dir("/").map_err(|source| Error::Chdir {
                what: "to container root",
                source,
            })?;
            oom_score_adj(c, &r.process)?;
            finish(c, &r.spec, &r.process, &r.workload)
        }
    }
}

/// The runner registered as `name`.
fn runner(c: &Child, name: &str) -> Result<&'static dyn crate::workload::WorkloadRunner, Error> {
    c.workloads
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, r)| *r)
        .ok_or_else(|| Error::UnknownRunner(name.to_string()))
}

fn finish(c: &Child, spec: &Spec, process: &Process, workload: &Workload) -> Result<(), Error> {
    // A runner's setup runs while we still have every privilege we will drop below.
    let setup = match workload {
        Workload::Custom { runner: name, .. } => {
            runner(c, name)?.setup(spec).map_err(Error::Runner)?
        }
        Workload::Exec => Vec::new(),
    };
    let setup_fds: Vec<RawFd> = setup.iter().map(|(_, fd)| fd.as_raw_fd()).collect();
    crate::personality::apply(spec)?;
    // AppArmor profile and SELinux label for the exec, as runc: before no_new_privs, the
    // identity change and seccomp (lsm.rs).
    crate::lsm::apply(process, &c.lsm, crate::procfs::write)?;
    let terminal = process.terminal().unwrap_or(false);
    if terminal {
        // The init is already a session leader.
        let is_leader = nix::unistd::getsid(None).ok() == Some(nix::unistd::getpid());
        setup_pty(c, process, !is_leader)?;
    }
    rlimits(process)?;
    // seccomp as runc orders it: without no_new_privs loading needs CAP_SYS_ADMIN, so before
    // the identity and capabilities change; with it, as late as possible (below).
    if !process.no_new_privileges().unwrap_or(false) {
        if let Some(s) = c.seccomp.take() {
            s.load()?;
        }
    }
    identity_and_caps(c, process)?;
    let umask = process.user().umask().unwrap_or(0o022);
    // SAFETY: umask never fails.
    unsafe { libc::umask(umask as libc::mode_t) };
    let cwd = process.cwd().to_string_lossy().into_owned();
    let cwd = if cwd.is_empty() { "/".to_string() } else { cwd };
    if let Err(source) = std::env::set_current_dir(&cwd) {
        return Err(Error::Cwd { cwd, source });
    }
    let args = process.args().clone().unwrap_or_default();
    if args.is_empty() {
        return Err(Error::NoArgs);
    }
    let env = process.env().clone().unwrap_or_default();
    let memory_limit = spec
        .linux()
        .as_ref()
        .and_then(|l| l.resources().as_ref())
        .and_then(|r| r.memory().as_ref())
        .and_then(|m| m.limit())
        .filter(|l| *l > 0)
        .map(|l| l as u64);
    let ctx = ProcessContext {
        args: args.clone(),
        env: env.clone(),
        cwd: cwd.clone(),
        terminal,
        memory_limit,
        extra_fds: c.extra.clone(),
    };
    if let Some(s) = c.seccomp.take() {
        s.load()?;
    }
    close_all_but(c, &setup_fds);
    match workload {
        Workload::Exec => {
            let exe = resolve_exe(&args[0], &env)?;
            let cexe = CString::new(exe.as_os_str().as_encoded_bytes())
                .map_err(|_| Error::NulInPath { path: exe.clone() })?;
            let cargs = to_cstrings(&args, "argument")?;
            let cenv = to_cstrings(&env, "environment variable")?;
            ready_and_wait(c)?;
            if let Some(h) = &c.hooks {
                h.start_container()?;
            }
            let source = nix::unistd::execve(&cexe, &cargs, &cenv).unwrap_err();
            let e = Error::Exec { path: exe, source };
            let _ = sync::send(&c.sync, &ChildMsg::Failed(e.to_string()), &[]);
            // SAFETY: leaving the child without running destructors.
            unsafe { libc::_exit(127) }
        }
        Workload::Custom {
            runner: name,
            payload,
        } => {
            let prepared = runner(c, name)?
                .prepare(&ctx, payload, setup)
                .map_err(Error::Runner)?;
            ready_and_wait(c)?;
            if let Some(h) = &c.hooks {
                h.start_container()?;
            }
            // SAFETY: closing our end of the sync socket: EOF tells the caller we started.
            unsafe { libc::close(c.sync) };
            let code = prepared.run(&ctx);
            // SAFETY: leaving without running the spawner's destructors.
            unsafe { libc::_exit(code & 0xff) }
        }
    }
}

fn to_cstrings(v: &[String], what: &'static str) -> Result<Vec<CString>, Error> {
    v.iter()
        .map(|s| {
            CString::new(s.as_bytes()).map_err(|_| Error::Nul {
                what,
                value: s.clone(),
            })
        })
        .collect()
}

fn ready_and_wait(c: &Child) -> Result<(), Error> {
    sync::send(&c.sync, &ChildMsg::Ready, &[])?;
    match sync::recv::<ParentMsg>(&c.sync) {
        Ok(Some((ParentMsg::Start, _))) => {}
        // The caller gave up on this process.
        _ => unsafe { libc::_exit(1) },
    }
    // Usually the join finished long ago: Ready, the reply to Create and containerd's Start
    // came in between. Nothing of the workload runs before it.
    ensure_joined(c)
}

#[cfg(test)]
mod tests {
    use super::exe::resolve_exe;
    use super::limits::{cap_number, cap_set};
    use super::namespaces::sysctl_namespace;
    use super::*;

    #[test]
    fn caps_by_name() {
        assert_eq!(cap_number("CAP_CHOWN"), Some(0));
        assert_eq!(cap_number("CAP_NET_BIND_SERVICE"), Some(10));
        assert_eq!(cap_number("CAP_CHECKPOINT_RESTORE"), Some(40));
        assert_eq!(cap_number("CAP_NOPE"), None);
        // Every capability oci-spec knows maps to a number.
        let caps = oci_spec::runtime::LinuxCapabilities::default();
        assert_ne!(cap_set(caps.bounding()).unwrap(), 0);
    }

    #[test]
    fn resolves_through_container_path() {
        let d = tempfile::tempdir().unwrap();
        let bin = d.path().join("bin");
        fs::create_dir(&bin).unwrap();
        let exe = bin.join("tool");
        fs::write(&exe, "#!/bin/sh\n").unwrap();
        fs::set_permissions(&exe, fs::Permissions::from_mode(0o755)).unwrap();
        let env = vec![format!("PATH=/nonexistent:{}", bin.display())];
        assert_eq!(resolve_exe("tool", &env).unwrap(), exe);
        assert_eq!(
            resolve_exe("nosuchcmd", &env).unwrap_err().to_string(),
            "exec: \"nosuchcmd\": executable file not found in $PATH"
        );
        assert!(resolve_exe("/nope/x", &env)
            .unwrap_err()
            .to_string()
            .contains("no such file or directory"));
    }

    #[test]
    fn sysctl_namespaces() {
        assert_eq!(
            sysctl_namespace("net.ipv4.ip_forward"),
            Some(LinuxNamespaceType::Network)
        );
        assert_eq!(
            sysctl_namespace("kernel.shmmax"),
            Some(LinuxNamespaceType::Ipc)
        );
        assert_eq!(
            sysctl_namespace("fs.mqueue.msg_max"),
            Some(LinuxNamespaceType::Ipc)
        );
        assert_eq!(sysctl_namespace("vm.swappiness"), None);
    }
}
