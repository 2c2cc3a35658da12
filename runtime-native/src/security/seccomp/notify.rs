//! `SCMP_ACT_NOTIFY`: who the container process is, and the state message (runc's
//! `ContainerProcessState`) a seccomp agent receives with the notify fd.

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

use oci_spec::runtime::{LinuxSeccomp, Spec};

use super::{SeccompError, R};

/// Syscalls the container process itself uses between loading a notify filter and handing
/// the notify fd to the agent: notifying on them would deadlock.
pub(super) const NO_NOTIFY: &[&str] = &["sendmsg"];

/// Who the container process is, for the state a seccomp agent receives.
pub(crate) struct Who<'a> {
    pub id: &'a str,
    pub bundle: &'a Path,
    /// The process's pid as the runtime (host) sees it.
    pub pid: i32,
    /// "creating" for a container's init, "running" for an exec.
    pub status: &'a str,
}

/// The process's pid in the runtime's pid namespace: `/proc` is still the runtime's here.
pub(crate) fn host_pid() -> i32 {
    std::fs::read_link("/proc/self")
        .ok()
        .and_then(|p| p.to_str().and_then(|s| s.parse().ok()))
        .unwrap_or_else(|| std::process::id() as i32)
}

/// The JSON runc sends to a seccomp agent with the notify fd.
pub(crate) fn agent_message(spec: &Spec, s: &LinuxSeccomp, who: &Who) -> Vec<u8> {
    let state = serde_json::json!({
        "ociVersion": spec.version(),
        "id": who.id,
        "status": who.status,
        "pid": who.pid,
        "bundle": who.bundle,
        "annotations": spec.annotations().clone().unwrap_or_default(),
    });
    serde_json::to_vec(&serde_json::json!({
        "ociVersion": spec.version(),
        "fds": ["seccompFd"],
        "pid": who.pid,
        "metadata": s.listener_metadata().clone().unwrap_or_default(),
        "state": state,
    }))
    .unwrap_or_default()
}

/// Hands the notify fd to the agent, with `msg` ([`agent_message`]), right after the filter
/// was loaded: this `sendmsg` already runs under it (hence [`NO_NOTIFY`]).
pub(super) fn send_notify_fd(sock: &UnixStream, msg: &[u8], fd: &OwnedFd) -> R {
    let iov = [std::io::IoSlice::new(msg)];
    let fds = [fd.as_raw_fd()];
    let cmsg = [nix::sys::socket::ControlMessage::ScmRights(&fds)];
    nix::sys::socket::sendmsg::<()>(
        sock.as_raw_fd(),
        &iov,
        &cmsg,
        nix::sys::socket::MsgFlags::MSG_NOSIGNAL,
        None,
    )
    .map_err(SeccompError::SendNotifyFd)?;
    Ok(())
}
