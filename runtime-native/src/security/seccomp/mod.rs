//! seccomp: the spec's `linux.seccomp` compiled into a BPF filter with libseccomp (as runc and
//! crun do) and loaded in the container process.
//!
//! Compilation follows runc: the default action (with `defaultErrnoRet`, EPERM when absent),
//! extra architectures, filter flags, then one rule per syscall name. A rule whose action is
//! the default action is skipped (libseccomp refuses it); a syscall name libseccomp does not
//! know is skipped (a profile written for a newer kernel still loads); several conditions on
//! the same argument become separate rules (libseccomp cannot AND them); an unknown action,
//! operator or flag is an error.
//!
//! Syscalls newer than the profile get ENOSYS, not the default action (as runc does): with a
//! default that denies (ERRNO other than ENOSYS, KILL, TRAP), a small BPF stub in front of
//! libseccomp's program answers every syscall number above the largest one the profile names
//! (per architecture) with ERRNO(ENOSYS), so libc falls back from clone3, faccessat2, openat2
//! and the like; see [`enosys_stub`].
//!
//! Where it is loaded (see `child::finish`): without `noNewPrivileges` loading needs
//! CAP_SYS_ADMIN, so the filter goes in before the user and capabilities change; with it, as
//! late as possible (after the identity change, right before the process hands over to its
//! workload). Everything the container process does after that — the `Ready`/`Start`
//! handshake (sendmsg/recvmsg), `execve`, or for a custom workload the runner's `prepare`
//! and `run` (wasmtime: mmap, mprotect, futex, signals, clone for threads) — runs under the
//! filter, exactly as runc's init does after `InitSeccomp`.
//!
//! `SCMP_ACT_NOTIFY`: the spec must name a `listenerPath`. The process connects to it before it
//! leaves the runtime's mount namespace, and right after loading sends the notify fd by
//! SCM_RIGHTS with runc's `ContainerProcessState` JSON (`ociVersion`, `fds: ["seccompFd"]`,
//! `pid`, `metadata`, `state`), so existing seccomp agents work unchanged. Since that send is
//! a `sendmsg` under the new filter, a profile that notifies on `sendmsg` is refused (runc
//! refuses `write` for the same reason).
//!
//! The jobs, one module each: `compile` (the profile into a libseccomp filter), `enosys` (the
//! stub for syscalls newer than the profile), `arch` (an architecture's names, which both of
//! them need), `load` (into the calling process, with libseccomp or seccomp(2)), `notify` (the
//! agent's state message and the notify fd's hand-over). This module ties them together for a
//! container process.

mod arch;
mod compile;
mod enosys;
mod features;
mod load;
mod notify;
#[cfg(test)]
mod tests;

use std::os::unix::net::UnixStream;
use std::path::Path;

use oci_spec::runtime::Spec;

pub(crate) use compile::{compile, Filter};
pub(crate) use features::{supported_flags, ACTIONS, ARCHS, FLAGS, OPERATORS};
pub(crate) use notify::{agent_message, host_pid, Who};

type R<T = (), E = SeccompError> = std::result::Result<T, E>;

/// Why a seccomp profile could not be compiled, loaded or handed to its agent.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SeccompError {
    /// The profile asks for what seccomp cannot do.
    #[error("seccomp: {0}")]
    Profile(String),
    /// libseccomp refused a step of building the filter.
    #[error("seccomp: {what}: {source}")]
    Libseccomp {
        what: String,
        #[source]
        source: libseccomp::error::SeccompError,
    },
    /// The ENOSYS stub could not be laid out in front of libseccomp's program.
    #[error("seccomp: {0}")]
    Stub(String),
    /// libseccomp's program could not be read back.
    #[error("seccomp: export: {0}")]
    Export(String),
    /// The kernel (or libseccomp) refused the filter.
    #[error("load seccomp filter: {0}")]
    Load(String),
    #[error("seccomp: get the notify fd: {0}")]
    NotifyFd(#[source] libseccomp::error::SeccompError),
    #[error("seccomp: connect to the agent at listenerPath {}: {source}", path.display())]
    Agent {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("seccomp: send the notify fd to the agent: {0}")]
    SendNotifyFd(#[source] nix::Error),
}

/// The container process's setup (child.rs) reports failures as text.
impl From<SeccompError> for String {
    fn from(e: SeccompError) -> String {
        e.to_string()
    }
}

/// The seccomp part of a container process: compiled before setup (so a bad profile fails
/// early and the listener is reached through the runtime's mount namespace), loaded at the
/// end of setup by [`Seccomp::load`].
pub(crate) struct Seccomp {
    filter: Filter,
    /// Connected to `listenerPath`, with the message to send along with the notify fd.
    listener: Option<(UnixStream, Vec<u8>)>,
}

/// Compiles the spec's profile (if any) and, for notify rules, connects to the agent.
/// `id`, `bundle` and `status` describe the container for the agent.
pub(crate) fn prepare(spec: &Spec, id: &str, bundle: &Path, status: &str) -> R<Option<Seccomp>> {
    let Some(s) = spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()) else {
        return Ok(None);
    };
    let filter = compile(s)?;
    let mut listener = None;
    if filter.notify {
        let path = s.listener_path().clone().unwrap_or_default();
        if path.as_os_str().is_empty() {
            return Err(SeccompError::Profile(
                "the profile uses SCMP_ACT_NOTIFY but linux.seccomp.listenerPath is not set".into(),
            ));
        }
        let sock = UnixStream::connect(&path).map_err(|source| SeccompError::Agent {
            path: path.clone(),
            source,
        })?;
        let w = Who {
            id,
            bundle,
            pid: host_pid(),
            status,
        };
        listener = Some((sock, agent_message(spec, s, &w)));
    }
    Ok(Some(Seccomp { filter, listener }))
}

/// [`prepare`] for a spawner request: the init is "creating", an exec joins a "running" one.
pub(crate) fn prepare_for(req: &crate::request::Request) -> R<Option<Seccomp>> {
    match req {
        crate::request::Request::Init(r) => prepare(&r.spec, &r.id, &r.bundle, "creating"),
        crate::request::Request::Exec(r) => {
            prepare(&r.spec, &r.container_id, Path::new(""), "running")
        }
    }
}

impl Seccomp {
    /// Loads the filter into this process and hands the notify fd to the agent.
    pub(crate) fn load(self) -> R {
        let fd = self.filter.load()?;
        if let (Some(fd), Some((sock, msg))) = (fd, self.listener) {
            notify::send_notify_fd(&sock, &msg, &fd)?;
        }
        Ok(())
    }
}
