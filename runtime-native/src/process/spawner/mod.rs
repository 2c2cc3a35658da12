//! The single-threaded spawner process and the client the shim holds.
//!
//! `fork_before_threads` forks a tiny helper before the caller creates any thread. The caller
//! keeps a SEQPACKET socket to it; each request carries a JSON-encoded message plus fds
//! (SCM_RIGHTS). The spawner clones the container process with `CLONE_PARENT` (so the caller
//! is the parent and reaps it) and answers with its pid. The container process then reports on
//! its own sync socket: `Ready` once it is set up (or `Failed(msg)`), and it waits there for
//! `Start` before running the workload.
//!
//! Its parts, by job: `wire` (the request and reply), `serve` (the spawner's loop and one
//! request's way to a clone), `enter` (the namespaces the spawner enters for a clone and its
//! way back), `clone` (the clone itself), `cgroup_join` (how the new process gets into its
//! cgroup). This file is the caller's side: forking the spawner, sending a request, and the
//! sync protocol with the new process until it is ready and started.

mod cgroup_join;
mod clone;
mod enter;
mod serve;
mod wire;

pub(crate) use clone::{clone3, clone_legacy, CloneArgs};

use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd};
use std::sync::Mutex;

use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};

use crate::fds::close_fds_except;
use crate::request::Request;
use crate::request::{ExecRequest, InitRequest};
use crate::sync::{self, ChildMsg, ParentMsg};
use crate::{Error, Result, WorkloadTable};
use wire::{Envelope, Reply, StdioLayout};

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

impl Spawner {
    /// Forks the spawner. Must be called while the process has exactly one thread (first
    /// thing in `main`). `workloads` are the custom runners the container processes may use.
    pub fn fork_before_threads(workloads: WorkloadTable) -> Result<Spawner> {
        if let Some(n) = thread_count() {
            if n > 1 {
                return Err(Error::ThreadsRunning { threads: n });
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
                serve::default_signals();
                let theirs_raw = theirs.as_raw_fd();
                let ours_raw = ours.into_raw_fd();
                // SAFETY: closing the caller's end.
                unsafe { libc::close(ours_raw) };
                close_fds_except(&[theirs_raw]);
                let _ = std::env::set_current_dir("/");
                serve::main(theirs, workloads)
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
        if let Err(source) = crate::userns::validate_namespaces(&req.spec)
            .and_then(|()| crate::userns::validate(&req.spec))
        {
            return Err(Error::InvalidSpec {
                path: req.bundle.join("config.json"),
                source: source.into(),
            });
        }
        self.request(Request::Init(Box::new(req)), stdio)
    }

    /// Clones a process into a running container's namespaces and cgroup.
    pub fn spawn_exec(&self, req: ExecRequest, stdio: Stdio) -> Result<PendingProcess> {
        self.request(Request::Exec(Box::new(req)), stdio)
    }

    fn request(&self, req: Request, stdio: Stdio) -> Result<PendingProcess> {
        let (layout, fds) = StdioLayout::of(&stdio, &req);
        let runtime_hooks = crate::hooks::RuntimeHooks::for_request(&req);
        let env = Envelope { req, stdio: layout };
        let (reply, mut rfds) = {
            let sock = self.sock.lock().unwrap_or_else(|e| e.into_inner());
            sync::send(&*sock, &env, &fds).map_err(Error::SpawnerChannel)?;
            sync::recv::<Reply>(&*sock)
                .map_err(Error::SpawnerChannel)?
                .ok_or(Error::SpawnerExited)?
        };
        drop(stdio);
        let pid = match reply {
            Reply::Err(e) => return Err(Error::Spawner(e)),
            Reply::Spawned { pid } => pid,
        };
        if rfds.is_empty() || rfds.len() > 2 {
            return Err(Error::SpawnerReply);
        }
        let sync_sock = rfds.remove(0);
        let pidfd = rfds.pop();
        let mut pty_master = None;
        let setup = |source| Error::ContainerSync {
            step: "set up",
            pid,
            source,
        };
        loop {
            match sync::recv::<ChildMsg>(&sync_sock).map_err(setup)? {
                None => return Err(Error::ContainerExited { pid }),
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
        let pid = self.pid;
        let start = |source| Error::ContainerSync {
            step: "start",
            pid,
            source,
        };
        sync::send(&self.sync, &ParentMsg::Start, &[]).map_err(start)?;
        loop {
            match sync::recv::<ChildMsg>(&self.sync).map_err(start)? {
                None => return Ok(()),
                Some((ChildMsg::Failed(m), _)) => return Err(Error::Container(m)),
                Some((ChildMsg::Log(m), _)) => log::warn!("container process {pid}: {m}"),
                Some(_) => {}
            }
        }
    }
}
