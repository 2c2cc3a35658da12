//! The procfs of a pid namespace joined by path, for a container that creates its own user
//! namespace: that namespace's root cannot mount it (procfs asks for CAP_SYS_ADMIN over the
//! pid namespace's owner, the host's user namespace), so the spawner, in that pid namespace
//! for the clone, has a short-lived helper forked there as host root make a detached procfs
//! mount (`fsopen`/`fsmount`) that the process attaches with `move_mount` (see userns.rs).

use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use oci_spec::runtime::LinuxNamespaceType;

use crate::sync;

/// Why the detached procfs mount could not be made.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    /// The helper forked in the container's pid namespace.
    #[error("proc mount helper: {step}: {source}")]
    Helper {
        step: &'static str,
        #[source]
        source: Errno,
    },
    #[error("proc mount helper: exited without an answer")]
    HelperSilent,
    /// The helper's own failure (an [`FsCall`](Error::FsCall)), as text: it comes from the
    /// helper's process, which formats it right before it sends it.
    #[error("mount proc of the container's pid namespace: {0}")]
    Mount(String),
    #[error("{call} proc: {}", .source.desc())]
    FsCall {
        call: &'static str,
        #[source]
        source: Errno,
    },
}

type R<T = ()> = std::result::Result<T, Error>;

/// A spec that creates a user namespace and joins a pid namespace by path, and mounts a proc:
/// the spawner — after entering that pid namespace for the clone — has a helper forked there
/// (as host root, in the host's user namespace) make a detached procfs mount of it, with the
/// mount's nosuid/nodev/noexec/ro options. The process attaches it where the spec mounts proc
/// (child.rs), since its own mount of procfs fails with EPERM. `None` when not needed.
pub(crate) fn proc_mount_fd(req: &crate::request::Request) -> R<Option<OwnedFd>> {
    let crate::request::Request::Init(r) = req else {
        return Ok(None);
    };
    if !crate::userns::creates_userns(&r.spec) {
        return Ok(None);
    }
    let joins_pid = crate::spec::namespaces(&r.spec)
        .iter()
        .any(|n| n.typ() == LinuxNamespaceType::Pid && n.path().is_some());
    let Some(m) = r
        .spec
        .mounts()
        .iter()
        .flatten()
        .find(|m| m.typ().as_deref() == Some("proc"))
    else {
        return Ok(None);
    };
    if !joins_pid {
        return Ok(None);
    }
    let opts = crate::mountopt::parse(&m.options().clone().unwrap_or_default());
    use nix::mount::MsFlags;
    let mut attrs: u64 = 0;
    for (ms, attr) in [
        (MsFlags::MS_RDONLY, 0x1u64), // MOUNT_ATTR_RDONLY
        (MsFlags::MS_NOSUID, 0x2),    // MOUNT_ATTR_NOSUID
        (MsFlags::MS_NODEV, 0x4),     // MOUNT_ATTR_NODEV
        (MsFlags::MS_NOEXEC, 0x8),    // MOUNT_ATTR_NOEXEC
    ] {
        if opts.flags.contains(ms) {
            attrs |= attr;
        }
    }
    let (ours, theirs) = nix::sys::socket::socketpair(
        nix::sys::socket::AddressFamily::Unix,
        nix::sys::socket::SockType::SeqPacket,
        None,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|source| Error::Helper {
        step: "socketpair",
        source,
    })?;
    // SAFETY: the spawner is single-threaded; the helper only makes syscalls and exits.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(Error::Helper {
            step: "fork in the container's pid namespace",
            source: Errno::last(),
        });
    }
    if pid == 0 {
        // The helper's failure goes to the spawner as text: another process.
        let (data, fds) = match detached_proc(attrs) {
            Ok(fd) => (Vec::new(), vec![fd]),
            Err(e) => (e.to_string().into_bytes(), vec![]),
        };
        let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
        let _ = sync::send_raw(theirs.as_raw_fd(), &data, &raw);
        // SAFETY: leaving the helper without running the spawner's destructors.
        unsafe { libc::_exit(0) };
    }
    drop(theirs);
    let got = sync::recv_raw(ours.as_raw_fd());
    let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
    match got {
        Ok(Some((data, mut fds))) if data.is_empty() && fds.len() == 1 => Ok(fds.pop()),
        Ok(Some((data, _))) => Err(Error::Mount(String::from_utf8_lossy(&data).into_owned())),
        Ok(None) => Err(Error::HelperSilent),
        Err(source) => Err(Error::Helper {
            step: "receive",
            source,
        }),
    }
}

/// fsopen("proc") + fsmount in the caller's active pid namespace: a mount not yet attached.
fn detached_proc(attrs: u64) -> R<OwnedFd> {
    use std::os::fd::FromRawFd;
    const FSOPEN_CLOEXEC: libc::c_uint = 1;
    const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
    const FSMOUNT_CLOEXEC: libc::c_uint = 1;
    // Right after the call that failed: its errno.
    let failed = |call| Error::FsCall {
        call,
        source: Errno::last(),
    };
    // SAFETY: plain syscalls on a NUL-terminated name and fds we own.
    unsafe {
        let fs = libc::syscall(libc::SYS_fsopen, c"proc".as_ptr(), FSOPEN_CLOEXEC);
        if fs < 0 {
            return Err(failed("fsopen"));
        }
        let fs = OwnedFd::from_raw_fd(fs as RawFd);
        let no: *const libc::c_char = std::ptr::null();
        if libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            FSCONFIG_CMD_CREATE,
            no,
            no,
            0,
        ) < 0
        {
            return Err(failed("fsconfig"));
        }
        let mnt = libc::syscall(
            libc::SYS_fsmount,
            fs.as_raw_fd(),
            FSMOUNT_CLOEXEC,
            attrs as libc::c_uint,
        );
        if mnt < 0 {
            return Err(failed("fsmount"));
        }
        Ok(OwnedFd::from_raw_fd(mnt as RawFd))
    }
}
