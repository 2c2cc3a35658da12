//! The spawner process: its request loop, and one request's way from the received envelope
//! to a cloned process (fds, namespaces entered for the clone, the clone, the user
//! namespace's maps, the cgroup join owed after the reply).

use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd};
use std::path::Path;

use nix::errno::Errno;

use super::cgroup_join::{self, JoinJob, Placement};
use super::clone::{clone_child, clone_plan};
use super::enter::{enter, EnterError};
use super::wire::{Envelope, Reply};
use crate::fds::open_ro;
use crate::request::Request;
use crate::sync;
use crate::WorkloadTable;

/// Why the spawner could not clone a process. It reaches the caller as text in
/// [`Reply::Err`] (another process), formatted right before it is sent.
#[derive(Debug, thiserror::Error)]
pub(super) enum Error {
    #[error(transparent)]
    Receive(sync::Error),
    #[error("spawner panicked handling the request")]
    Panicked,
    #[error("request carried {got} fds, expected {want}")]
    FdCount { got: usize, want: usize },
    #[error("socketpair: {0}")]
    Socketpair(#[source] Errno),
    #[error("clone container process: {}", .0.desc())]
    Clone(#[source] Errno),
    /// The spec's user namespace maps (checked in the clone plan).
    #[error(transparent)]
    UserNs(#[from] crate::userns::Error),
    #[error("user namespace of the container process: {0}")]
    UserNsMaps(#[source] crate::userns::Error),
    /// The namespaces the clone is born in.
    #[error(transparent)]
    Enter(#[from] EnterError),
    /// The procfs of a joined pid namespace, made for a new user namespace.
    #[error(transparent)]
    ProcMount(#[from] crate::proc_mount::Error),
    /// The intermediate for a joined user namespace.
    #[error(transparent)]
    UserNsJoin(#[from] crate::userns_join::Error),
}

fn seqpacket_pair() -> Result<(OwnedFd, OwnedFd), Error> {
    use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
    socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(Error::Socketpair)
}

struct SpawnerState {
    /// The spawner's `pid_for_children` (not its own `pid`, though they are the same unless
    /// something unshared CLONE_NEWPID): what joining a container's pid namespace changes,
    /// and what it is set back to.
    own_pidns: OwnedFd,
    workloads: WorkloadTable,
}

/// A cloned process, for the reply: its pid, the caller's end of its sync socket, its pidfd,
/// and the cgroup join still owed.
struct Spawned {
    pid: i32,
    sync: OwnedFd,
    pidfd: Option<OwnedFd>,
    join: Option<JoinJob>,
}

/// The spawner's loop, until the caller closes its socket.
pub(super) fn main(sock: OwnedFd, workloads: WorkloadTable) -> ! {
    let own_pidns = match open_ro(Path::new("/proc/self/ns/pid_for_children")) {
        Ok(f) => f,
        Err(_) => unsafe { libc::_exit(1) },
    };
    let st = SpawnerState {
        own_pidns,
        workloads,
    };
    loop {
        // Idle until the next request: give back the code pages the last one touched.
        crate::memory::trim_text();
        let reply = match sync::recv::<Envelope>(&sock) {
            Ok(None) => unsafe { libc::_exit(0) },
            Err(e) => Err(Error::Receive(e)),
            Ok(Some((env, fds))) => {
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    handle(&st, env, fds)
                }));
                r.unwrap_or(Err(Error::Panicked))
            }
        };
        let (sent, job) = match reply {
            Ok(s) => {
                let mut fds = vec![s.sync.as_raw_fd()];
                fds.extend(s.pidfd.as_ref().map(|f| f.as_raw_fd()));
                (
                    sync::send(&sock, &Reply::Spawned { pid: s.pid }, &fds),
                    s.join,
                )
            }
            Err(e) => (sync::send(&sock, &Reply::Err(e.to_string()), &[]), None),
        };
        // After the reply: the migration's slow part overlaps the caller's work and the
        // process's own setup.
        if let Some(job) = job {
            job.run();
        }
        if sent.is_err() {
            // The caller is gone.
            unsafe { libc::_exit(0) };
        }
    }
}

fn handle(st: &SpawnerState, env: Envelope, fds: Vec<OwnedFd>) -> Result<Spawned, Error> {
    let mut child_fds = env
        .stdio
        .split(fds)
        .map_err(|(got, want)| Error::FdCount { got, want })?;
    let (flags, mut pidns_path) = clone_plan(&env.req)?;
    // A spec that joins a user namespace: the spawner clones an intermediate that joins it and
    // clones the container process with the new namespaces (userns_join.rs); it also joins
    // a pid namespace given by path, from the host's pid namespace.
    let joins_userns =
        matches!(&env.req, Request::Init(r) if crate::userns_join::joins_userns(&r.spec));
    let (flags, later_flags) = match &env.req {
        Request::Init(r) => crate::userns_join::split_flags(&r.spec, flags),
        Request::Exec(_) => (flags, 0),
    };
    let report = if joins_userns {
        pidns_path = None;
        Some(seqpacket_pair()?)
    } else {
        None
    };
    let (placement, cgroup_dir) = cgroup_join::plan(&env.req);
    // The socket on which the process learns that it is in its cgroup (or why not). A
    // socket, not a pipe: the process may read it after its seccomp filter is loaded, and
    // recvmsg is what it already needs for the sync protocol there.
    let join_w = if placement == Placement::None {
        None
    } else {
        let (w, r) = seqpacket_pair()?;
        child_fds.join = Some(r);
        Some(w)
    };
    let (parent_sock, child_sock) = seqpacket_pair()?;

    let entered = enter(&st.own_pidns, &env.req, &child_fds, pidns_path.as_deref())?;
    // In the container's pid namespace, before the clone: its /proc, made as host root when a
    // new user namespace could not (proc_mount.rs).
    match crate::proc_mount::proc_mount_fd(&env.req) {
        Ok(f) => child_fds.proc_mnt = f,
        Err(e) => {
            entered.leave();
            return Err(e.into());
        }
    }
    // The container process's parent is the shim: by CLONE_PARENT, or, for an intermediate
    // (which the spawner reaps), by reparenting to the subreaper once the intermediate exits.
    // SAFETY: the spawner is single-threaded; the child below never returns into this loop.
    let cloned = unsafe {
        clone_child(
            flags,
            cgroup_dir.as_ref().map(|d| d.as_raw_fd()),
            joins_userns,
        )
    };
    if let Ok(c) = &cloned {
        if c.pid == 0 {
            // SAFETY: closing the caller's end in the child.
            unsafe { libc::close(parent_sock.into_raw_fd()) };
            if let Some(w) = join_w {
                // SAFETY: the spawner's end of the join socket.
                unsafe { libc::close(w.into_raw_fd()) };
            }
            if let (Some((ours, theirs)), Request::Init(r)) = (report, &env.req) {
                drop(ours);
                // Returns only in the container process.
                crate::userns_join::intermediate(&r.spec, later_flags, theirs);
            }
            crate::child::main(env.req, child_fds, child_sock, st.workloads);
        }
    }
    entered.leave();
    let cloned = cloned.map_err(Error::Clone)?;
    let (mut pid, mut pidfd) = (cloned.pid, cloned.pidfd);
    if let Some((ours, theirs)) = report {
        drop(theirs);
        // The intermediate's pidfd is of no use: what the caller gets is the container's.
        (pid, pidfd) = crate::userns_join::await_container(ours, pid)?;
    }
    if let Err(e) = crate::userns::after_clone(&env.req, pid, &parent_sock) {
        match &pidfd {
            Some(fd) => {
                let _ = crate::identity::pidfd_signal(fd, libc::SIGKILL);
            }
            // SAFETY: our child (the caller, its parent by CLONE_PARENT, reaps it).
            None => unsafe {
                libc::kill(pid, libc::SIGKILL);
            },
        }
        return Err(Error::UserNsMaps(e));
    }
    drop(child_sock);
    drop(child_fds);
    let join = join_w.map(|notify| JoinJob {
        pid,
        placement,
        done: cloned.into_cgroup,
        notify,
    });
    Ok(Spawned {
        pid,
        sync: parent_sock,
        pidfd,
        join,
    })
}

/// Container processes inherit ignored signals and the signal mask across `execve`: give them
/// the defaults rather than the caller's (every Rust binary ignores SIGPIPE before `main`, so
/// without this `yes | head` in a container never ends by SIGPIPE).
pub(super) fn default_signals() {
    for sig in 1..libc::SIGRTMIN() {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: querying and setting dispositions in this single-threaded process.
        unsafe {
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(sig, std::ptr::null(), &mut old) == 0
                && old.sa_sigaction == libc::SIG_IGN
            {
                let mut sa: libc::sigaction = std::mem::zeroed();
                sa.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(sig, &sa, std::ptr::null_mut());
            }
        }
    }
    // SAFETY: an empty set, then SIG_SETMASK with it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    }
}
