//! The single-threaded spawner process and the client the shim holds.
//!
//! `fork_before_threads` forks a tiny helper before the caller creates any thread. The caller
//! keeps a SEQPACKET socket to it; each request carries a JSON-encoded message plus fds
//! (SCM_RIGHTS). The spawner clones the container process with `CLONE_PARENT` (so the caller
//! is the parent and reaps it) and answers with its pid. The container process then reports on
//! its own sync socket: `Ready` once it is set up (or `Failed(msg)`), and it waits there for
//! `Start` before running the workload.
//!
//! Over 600 lines on purpose: both ends of one protocol (the client's request and reply, the
//! spawner's loop, clone and cgroup join) are kept together so a change to one side is made
//! with the other in view.

use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use nix::errno::Errno;
use nix::sched::CloneFlags;
use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
use oci_spec::runtime::LinuxNamespaceType;
use serde::{Deserialize, Serialize};

use crate::fds::{close_fds_except, open_ro, same_file};
use crate::ns::ns_clone_flag;
use crate::request::{ChildFds, Request};
use crate::request::{ExecRequest, InitRequest};
use crate::sync::{self, ChildMsg, ParentMsg};
use crate::{Error, Result, WorkloadTable};

/// Handle on the spawner process, held by the (multi-threaded) caller. Requests are
/// serialised by an internal mutex; each call blocks for the few ms a clone + setup takes,
/// so async callers use `spawn_blocking`.
pub struct Spawner {
    sock: Mutex<OwnedFd>,
    pid: i32,
}

/// The three stdio fds a container process gets, already opened by the caller. With
/// `terminal: true` in the request, these are not given to the process: it gets a pty slave,
/// and the master comes back in [`PendingProcess::pty_master`].
#[derive(Debug, Default)]
pub struct Stdio {
    pub stdin: Option<OwnedFd>,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
    /// More fds handed to the container process and left open for a custom workload runner
    /// (e.g. an opened wasm artifact). The process finds them, in this order, at the numbers
    /// in [`crate::ProcessContext::extra_fds`] (3, 4, ...).
    pub extra_fds: Vec<OwnedFd>,
}

/// A process that has been cloned and set up, and is waiting for [`PendingProcess::start`].
#[derive(Debug)]
pub struct PendingProcess {
    /// Host pid of the container process (the caller is its parent).
    pub pid: i32,
    /// With `terminal: true`, the pty master; the caller copies between it and the stdio fifos
    /// and resizes it with `TIOCSWINSZ`.
    pub pty_master: Option<OwnedFd>,
    /// The process's pidfd from the clone (None on kernels without CLONE_PIDFD): signal it
    /// through this, never by pid, so a reused pid is never signalled (identity.rs).
    pub pidfd: Option<OwnedFd>,
    sync: OwnedFd,
}

/// Which fds travel with a request, in order: stdin, stdout, stderr (those present), extras,
/// an exec's init pidfd.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct StdioLayout {
    stdin: bool,
    stdout: bool,
    stderr: bool,
    extra: usize,
    init_pidfd: bool,
}

#[derive(Debug, Serialize, Deserialize)]
struct Envelope {
    req: Request,
    stdio: StdioLayout,
}

#[derive(Debug, Serialize, Deserialize)]
enum Reply {
    /// The sync socket to the new process travels with this message.
    Spawned {
        pid: i32,
    },
    Err(String),
}

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

/// How the new process gets into its cgroup.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Placement {
    /// No cgroup to join.
    None,
    /// cgroup v2: clone3(CLONE_INTO_CGROUP) into this directory (no migration at all).
    IntoCgroup(PathBuf),
    /// cgroup v1 (or clone3 refused): the spawner writes the pid into these `cgroup.procs`.
    Write(Vec<PathBuf>),
}

/// Decides the [`Placement`] for a request's `cgroup.procs` files; `is_v2` tells whether a
/// directory is on a cgroup2 filesystem (a parameter so tests can use a fake tree).
pub(crate) fn placement(procs: &[PathBuf], is_v2: impl Fn(&std::path::Path) -> bool) -> Placement {
    match procs {
        [] => Placement::None,
        [one] => match one.parent() {
            Some(dir) if is_v2(dir) => Placement::IntoCgroup(dir.to_path_buf()),
            _ => Placement::Write(procs.to_vec()),
        },
        _ => Placement::Write(procs.to_vec()),
    }
}

fn on_cgroup2(dir: &std::path::Path) -> bool {
    nix::sys::statfs::statfs(dir)
        .map(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
        .unwrap_or(false)
}

/// Moves `pid` into its cgroup by writing it into every `cgroup.procs`. Done here, by the
/// spawner, right after the clone rather than by the new process itself, so that the slow
/// part of a migration (the first writer of cgroup_threadgroup_rwsem waits for an RCU grace
/// period, several ms per container start on cgroup v1) overlaps the process's own namespace
/// and mount setup; the process waits for the outcome only where it needs its cgroup
/// (child.rs `ensure_joined`).
pub(crate) fn join_cgroup(pid: i32, procs: &[PathBuf]) -> std::result::Result<(), String> {
    let text = pid.to_string();
    for p in procs {
        std::fs::write(p, &text).map_err(|e| {
            let why = match e.raw_os_error() {
                Some(n) => crate::child::etext(Errno::from_raw(n)),
                None => e.to_string(),
            };
            format!("join cgroup {}: {why}", p.display())
        })?;
    }
    Ok(())
}

/// The cgroup join the spawner still owes a process it cloned: done after the reply to the
/// caller, so that neither the caller nor the process waits for it before they must.
struct JoinJob {
    pid: i32,
    placement: Placement,
    /// clone3(CLONE_INTO_CGROUP) already placed the process.
    done: bool,
    notify: OwnedFd,
}

impl JoinJob {
    fn run(self) {
        let outcome = match &self.placement {
            _ if self.done => Ok(()),
            Placement::Write(procs) => join_cgroup(self.pid, procs),
            Placement::IntoCgroup(dir) => join_cgroup(self.pid, &[dir.join("cgroup.procs")]),
            Placement::None => Ok(()),
        };
        let msg = match outcome {
            Ok(()) => b"J".to_vec(),
            Err(e) => [b"E".as_slice(), e.as_bytes()].concat(),
        };
        // The process reads it when it needs its cgroup; a dead process just never does.
        let _ = sync::send_raw(self.notify.as_raw_fd(), &msg, &[]);
    }
}

/// The cgroup.procs files a request asks the process to join.
fn cgroup_procs(req: &Request) -> &[PathBuf] {
    match req {
        Request::Init(r) => &r.cgroup_procs,
        Request::Exec(r) => &r.cgroup_procs,
    }
}

fn thread_count() -> Option<usize> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
}

/// Makes sure fds 0, 1 and 2 are open (on /dev/null if they were closed), so that sockets and
/// files never land on stdio numbers.
fn ensure_stdio_open() {
    for fd in 0..3 {
        // SAFETY: F_GETFD on a number only inspects it.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
            // SAFETY: plain open; the lowest free number is `fd`.
            let n = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR) };
            if n >= 0 && n != fd {
                // SAFETY: n is ours.
                unsafe { libc::close(n) };
            }
        }
    }
}

/// Namespaces the clone creates, and a pid namespace the spawner must enter first (an exec's
/// is its init's, entered through `exec_ns`).
fn clone_plan(req: &Request) -> std::result::Result<(libc::c_int, Option<String>), String> {
    match req {
        Request::Exec(_) => Ok((0, None)),
        Request::Init(r) => {
            let mut flags = 0;
            let mut pidns = None;
            for ns in crate::spec::namespaces(&r.spec) {
                let typ = ns.typ();
                match (typ, ns.path()) {
                    (LinuxNamespaceType::Pid, Some(p)) => {
                        pidns = Some(p.to_string_lossy().into_owned())
                    }
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

struct SpawnerState {
    /// The spawner's `pid_for_children` (not its own `pid`, though they are the same unless
    /// something unshared CLONE_NEWPID): what joining a container's pid namespace changes,
    /// and what it is set back to.
    own_pidns: OwnedFd,
    workloads: WorkloadTable,
}

fn spawner_main(sock: OwnedFd, workloads: WorkloadTable) -> ! {
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
            Err(e) => {
                let _ = sync::send(&sock, &Reply::Err(e), &[]);
                continue;
            }
            Ok(Some((env, fds))) => {
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    handle(&st, env, fds)
                }));
                match r {
                    Ok(r) => r,
                    Err(_) => Err("spawner panicked handling the request".to_string()),
                }
            }
        };
        let (sent, job) = match reply {
            Ok((pid, sync_sock, pidfd, job)) => {
                let mut fds = vec![sync_sock.as_raw_fd()];
                fds.extend(pidfd.as_ref().map(|f| f.as_raw_fd()));
                (sync::send(&sock, &Reply::Spawned { pid }, &fds), job)
            }
            Err(e) => (sync::send(&sock, &Reply::Err(e), &[]), None),
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

fn handle(
    st: &SpawnerState,
    env: Envelope,
    fds: Vec<OwnedFd>,
) -> std::result::Result<(i32, OwnedFd, Option<OwnedFd>, Option<JoinJob>), String> {
    let l = env.stdio;
    let want =
        l.stdin as usize + l.stdout as usize + l.stderr as usize + l.extra + l.init_pidfd as usize;
    if fds.len() != want {
        return Err(format!(
            "request carried {} fds, expected {want}",
            fds.len()
        ));
    }
    let mut fds = fds;
    let init_pidfd = if l.init_pidfd { fds.pop() } else { None };
    let mut it = fds.into_iter();
    let mut take = |present: bool| if present { it.next() } else { None };
    let child_fds = ChildFds {
        stdin: take(l.stdin),
        stdout: take(l.stdout),
        stderr: take(l.stderr),
        extra: it.collect(),
        init_pidfd,
        join: None,
        proc_mnt: None,
    };
    let mut child_fds = child_fds;
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
        Some(crate::userns_join::report_pair()?)
    } else {
        None
    };
    // The container process's parent is the shim: by CLONE_PARENT, or, for an intermediate
    // (which the spawner reaps), by reparenting to the subreaper once the intermediate exits.
    let parent_flag = if joins_userns { 0 } else { libc::CLONE_PARENT };
    let mut placement = placement(cgroup_procs(&env.req), on_cgroup2);
    // cgroup v2: the directory fd for CLONE_INTO_CGROUP (else fall back to writing the pid).
    let cgroup_dir = match &placement {
        Placement::IntoCgroup(dir) => match nix::fcntl::open(
            dir,
            nix::fcntl::OFlag::O_RDONLY
                | nix::fcntl::OFlag::O_DIRECTORY
                | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        ) {
            Ok(fd) => Some(fd),
            Err(_) => {
                placement = Placement::Write(cgroup_procs(&env.req).to_vec());
                None
            }
        },
        _ => None,
    };
    // The socket on which the process learns that it is in its cgroup (or why not). A
    // socket, not a pipe: the process may read it after its seccomp filter is loaded, and
    // recvmsg is what it already needs for the sync protocol there.
    let join_w = if placement == Placement::None {
        None
    } else {
        let (w, r) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(|e| format!("socketpair: {e}"))?;
        child_fds.join = Some(r);
        Some(w)
    };
    let (parent_sock, child_sock) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| format!("socketpair: {e}"))?;

    let mut entered = false;
    if let Request::Exec(r) = &env.req {
        // Through the init's pidfd where there is one: never a stranger's pid namespace.
        let init = crate::exec_ns::Init {
            pid: r.init_pid,
            pidfd: child_fds.init_pidfd.as_ref(),
        };
        entered = crate::exec_ns::enter_pid_ns(&init, &st.own_pidns)?;
    } else if let Some(p) = &pidns_path {
        let f = open_ro(Path::new(p)).map_err(|e| format!("open pid namespace {p}: {e}"))?;
        if !same_file(&f, &st.own_pidns) {
            nix::sched::setns(&f, CloneFlags::CLONE_NEWPID)
                .map_err(|e| format!("join pid namespace {p}: {e}"))?;
            entered = true;
        }
    }
    // With a new user namespace, the namespaces given by path are entered here (userns.rs).
    let joined = match crate::userns::join_for_clone(&env.req) {
        Ok(j) => j,
        Err(e) => {
            if entered {
                // As below: never stay in a container's pid namespace.
                if nix::sched::setns(&st.own_pidns, CloneFlags::CLONE_NEWPID).is_err() {
                    unsafe { libc::_exit(1) };
                }
            }
            return Err(e);
        }
    };
    // In the container's pid namespace, before the clone: its /proc, made as host root when a
    // new user namespace could not (userns.rs).
    match crate::userns::proc_mount_fd(&env.req) {
        Ok(f) => child_fds.proc_mnt = f,
        Err(e) => {
            if entered && nix::sched::setns(&st.own_pidns, CloneFlags::CLONE_NEWPID).is_err() {
                unsafe { libc::_exit(1) };
            }
            if let Some(j) = joined {
                if let Err(e) = j.restore() {
                    eprintln!("amphi spawner: {e}");
                    unsafe { libc::_exit(1) };
                }
            }
            return Err(e);
        }
    }
    let clone_flags =
        flags as libc::c_ulong | parent_flag as libc::c_ulong | libc::SIGCHLD as libc::c_ulong;
    let mut into_cgroup = false;
    let mut pid: libc::c_long = -1;
    // A pidfd from the clone itself names this process for the caller's signals even after
    // its pid is reused (identity.rs); -1 where the kernel gives none.
    let mut pidfd: libc::c_int = -1;
    if let Some(dir) = &cgroup_dir {
        let mut args = clone3_args(flags as u64, Some(dir.as_raw_fd()));
        if joins_userns {
            // The spawner's own child, reaped by it with its SIGCHLD.
            args.flags &= !(libc::CLONE_PARENT as u64);
            args.exit_signal = libc::SIGCHLD as u64;
        }
        args.flags |= libc::CLONE_PIDFD as u64;
        args.pidfd = &mut pidfd as *mut libc::c_int as u64;
        // SAFETY: as for clone below; clone3 without CLONE_VM and with stack 0 is fork-like.
        pid = unsafe {
            libc::syscall(
                libc::SYS_clone3,
                &args as *const CloneArgs,
                std::mem::size_of::<CloneArgs>(),
            )
        };
        into_cgroup = pid >= 0;
    }
    if pid < 0 {
        // SAFETY: a fork-like clone (no new stack, no shared memory) of a single-threaded
        // process; the child continues on a copy of this stack and never returns from
        // `child::main`.
        // With CLONE_PIDFD the pidfd lands where the parent tid would (x86_64 argument
        // order: flags, stack, parent_tid, child_tid, tls); kernels before 5.2 refuse the
        // flag, and then the clone goes without it.
        for with_pidfd in [true, false] {
            let f = if with_pidfd {
                clone_flags | libc::CLONE_PIDFD as libc::c_ulong
            } else {
                clone_flags
            };
            pid = unsafe {
                libc::syscall(
                    libc::SYS_clone,
                    f,
                    std::ptr::null_mut::<libc::c_void>(),
                    &mut pidfd as *mut libc::c_int,
                    std::ptr::null_mut::<libc::c_void>(),
                    0usize,
                )
            };
            if pid >= 0 || Errno::last() != Errno::EINVAL {
                break;
            }
            pidfd = -1;
        }
    }
    if pid == 0 {
        let parent_raw = parent_sock.into_raw_fd();
        // SAFETY: closing the caller's end in the child.
        unsafe { libc::close(parent_raw) };
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
    let err = Errno::last();
    if entered {
        if let Err(e) = nix::sched::setns(&st.own_pidns, CloneFlags::CLONE_NEWPID) {
            // Every later child would land in the wrong pid namespace: better to die loudly.
            eprintln!("amphi spawner: cannot return to own pid namespace: {e}");
            unsafe { libc::_exit(1) };
        }
    }
    if let Some(j) = joined {
        if let Err(e) = j.restore() {
            eprintln!("amphi spawner: {e}");
            unsafe { libc::_exit(1) };
        }
    }
    if pid < 0 {
        return Err(format!("clone container process: {}", err.desc()));
    }
    // SAFETY: the clone gave us this new fd (or none: -1).
    let mut pidfd = (pidfd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(pidfd) });
    if let Some((ours, theirs)) = report {
        drop(theirs);
        // The intermediate's pidfd is of no use: what the caller gets is the container's.
        let (p, fd) = crate::userns_join::await_container(ours, pid as i32)?;
        (pid, pidfd) = (p as libc::c_long, fd);
    }
    if let Err(e) = crate::userns::after_clone(&env.req, pid as i32, &parent_sock) {
        match &pidfd {
            Some(fd) => {
                let _ = crate::identity::pidfd_signal(fd, libc::SIGKILL);
            }
            // SAFETY: our child (the caller, its parent by CLONE_PARENT, reaps it).
            None => unsafe {
                libc::kill(pid as i32, libc::SIGKILL);
            },
        }
        return Err(format!("user namespace of the container process: {e}"));
    }
    drop(child_sock);
    drop(child_fds);
    let job = join_w.map(|notify| JoinJob {
        pid: pid as i32,
        placement,
        done: into_cgroup,
        notify,
    });
    Ok((pid as i32, parent_sock, pidfd, job))
}

/// Container processes inherit ignored signals and the signal mask across `execve`: give them
/// the defaults rather than the caller's (every Rust binary ignores SIGPIPE before `main`, so
/// without this `yes | head` in a container never ends by SIGPIPE).
fn default_signals() {
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

impl Spawner {
    /// Forks the spawner. Must be called while the process has exactly one thread (first
    /// thing in `main`). `workloads` are the custom runners the container processes may use.
    pub fn fork_before_threads(workloads: WorkloadTable) -> Result<Spawner> {
        if let Some(n) = thread_count() {
            if n > 1 {
                return Err(Error::Spawner(format!(
                    "fork_before_threads called with {n} threads running; call it first in main"
                )));
            }
        }
        ensure_stdio_open();
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(|e| Error::Sys {
            syscall: "socketpair".into(),
            source: e,
        })?;
        let parent = std::process::id() as i32;
        // SAFETY: the process is single-threaded (checked above).
        match unsafe { nix::unistd::fork() } {
            Err(e) => Err(Error::Sys {
                syscall: "fork spawner".into(),
                source: e,
            }),
            Ok(nix::unistd::ForkResult::Child) => {
                // SAFETY: plain prctl calls.
                unsafe {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
                    if libc::getppid() != parent {
                        libc::_exit(0);
                    }
                    libc::prctl(libc::PR_SET_NAME, c"amphi-spawner".as_ptr(), 0, 0, 0);
                }
                default_signals();
                let theirs_raw = theirs.as_raw_fd();
                let ours_raw = ours.into_raw_fd();
                // SAFETY: closing the caller's end.
                unsafe { libc::close(ours_raw) };
                close_fds_except(&[theirs_raw]);
                let _ = std::env::set_current_dir("/");
                spawner_main(theirs, workloads)
            }
            Ok(nix::unistd::ForkResult::Parent { child }) => {
                drop(theirs);
                Ok(Spawner {
                    sock: Mutex::new(ours),
                    pid: child.as_raw(),
                })
            }
        }
    }

    /// Pid of the spawner process (a child of the caller: its reaper will see it exit).
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Clones and sets up a container init; returns once it reported `Ready` (or the error it
    /// reported, after it has exited and been reaped... by the caller's reaper).
    pub fn spawn_init(&self, req: InitRequest, stdio: Stdio) -> Result<PendingProcess> {
        // Namespace combinations that cannot work are refused before anything is created.
        if let Err(reason) = crate::userns::validate_namespaces(&req.spec)
            .and_then(|()| crate::userns::validate(&req.spec))
        {
            return Err(Error::InvalidSpec {
                path: req.bundle.join("config.json"),
                reason,
            });
        }
        self.request(Request::Init(Box::new(req)), stdio)
    }

    /// Clones a process into a running container's namespaces and cgroup.
    pub fn spawn_exec(&self, req: ExecRequest, stdio: Stdio) -> Result<PendingProcess> {
        self.request(Request::Exec(Box::new(req)), stdio)
    }

    fn request(&self, req: Request, stdio: Stdio) -> Result<PendingProcess> {
        let layout = StdioLayout {
            stdin: stdio.stdin.is_some(),
            stdout: stdio.stdout.is_some(),
            stderr: stdio.stderr.is_some(),
            extra: stdio.extra_fds.len(),
            init_pidfd: false,
        };
        let mut layout = layout;
        let mut fds: Vec<RawFd> = Vec::new();
        for f in [&stdio.stdin, &stdio.stdout, &stdio.stderr]
            .into_iter()
            .flatten()
        {
            fds.push(f.as_raw_fd());
        }
        fds.extend(stdio.extra_fds.iter().map(|f| f.as_raw_fd()));
        if let Request::Exec(r) = &req {
            if let Some(f) = &r.init_pidfd {
                fds.push(f.as_raw_fd());
                layout.init_pidfd = true;
            }
        }
        let runtime_hooks = crate::hooks::RuntimeHooks::for_request(&req);
        let env = Envelope { req, stdio: layout };
        let (reply, mut rfds) = {
            let sock = self.sock.lock().unwrap_or_else(|e| e.into_inner());
            sync::send(&*sock, &env, &fds).map_err(Error::Spawner)?;
            sync::recv::<Reply>(&*sock)
                .map_err(Error::Spawner)?
                .ok_or_else(|| Error::Spawner("spawner process exited".into()))?
        };
        drop(stdio);
        let pid = match reply {
            Reply::Err(e) => return Err(Error::Spawner(e)),
            Reply::Spawned { pid } => pid,
        };
        if rfds.is_empty() || rfds.len() > 2 {
            return Err(Error::Spawner("reply without sync socket".into()));
        }
        let sync_sock = rfds.remove(0);
        let pidfd = rfds.pop();
        let mut pty_master = None;
        loop {
            match sync::recv::<ChildMsg>(&sync_sock).map_err(Error::Container)? {
                None => {
                    return Err(Error::Container(format!(
                        "container process {pid} exited during setup"
                    )))
                }
                Some((ChildMsg::Log(m), _)) => log::warn!("container process {pid}: {m}"),
                Some((ChildMsg::PtyMaster, mut f)) => {
                    if !f.is_empty() {
                        pty_master = Some(f.remove(0));
                    }
                }
                Some((ChildMsg::Ready, _)) => break,
                Some((ChildMsg::Failed(m), _)) => return Err(Error::Container(m)),
                Some((ChildMsg::RuntimeHooks, _)) => {
                    crate::hooks::answer_runtime_hooks(&sync_sock, runtime_hooks.as_ref(), pid)?
                }
            }
        }
        Ok(PendingProcess {
            pid,
            pty_master,
            pidfd,
            sync: sync_sock,
        })
    }
}

impl PendingProcess {
    /// Lets the process run its workload. Returns once the workload has begun (execve
    /// succeeded, or the custom runner took over), or the error that stopped it
    /// (e.g. execve failed: "exec /app: no such file or directory").
    pub fn start(self) -> Result<()> {
        sync::send(&self.sync, &ParentMsg::Start, &[])
            .map_err(|e| Error::Container(format!("start container process {}: {e}", self.pid)))?;
        loop {
            match sync::recv::<ChildMsg>(&self.sync).map_err(Error::Container)? {
                None => return Ok(()),
                Some((ChildMsg::Failed(m), _)) => return Err(Error::Container(m)),
                Some((ChildMsg::Log(m), _)) => log::warn!("container process {}: {m}", self.pid),
                Some(_) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

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

    #[test]
    fn placement_v1_v2_none() {
        let v2_root = Path::new("/fake/cg2");
        let is_v2 = |d: &Path| d.starts_with(v2_root);
        assert_eq!(placement(&[], is_v2), Placement::None);
        let one = vec![v2_root.join("default/c1/cgroup.procs")];
        assert_eq!(
            placement(&one, is_v2),
            Placement::IntoCgroup(v2_root.join("default/c1"))
        );
        let v1 = vec![
            PathBuf::from("/fake/cg1/memory/default/c1/cgroup.procs"),
            PathBuf::from("/fake/cg1/pids/default/c1/cgroup.procs"),
        ];
        assert_eq!(placement(&v1, is_v2), Placement::Write(v1.clone()));
        // A single v1 hierarchy is still a write.
        assert_eq!(
            placement(&v1[..1], is_v2),
            Placement::Write(v1[..1].to_vec())
        );
    }

    #[test]
    fn join_cgroup_writes_the_pid_and_names_the_file_on_error() {
        let d = tempfile::tempdir().unwrap();
        let a = d.path().join("a.procs");
        let b = d.path().join("b.procs");
        join_cgroup(4242, &[a.clone(), b.clone()]).unwrap();
        assert_eq!(std::fs::read_to_string(&a).unwrap(), "4242");
        assert_eq!(std::fs::read_to_string(&b).unwrap(), "4242");
        let missing = d.path().join("gone/cgroup.procs");
        let e = join_cgroup(1, std::slice::from_ref(&missing)).unwrap_err();
        assert_eq!(
            e,
            format!(
                "join cgroup {}: no such file or directory",
                missing.display()
            )
        );
    }
}
