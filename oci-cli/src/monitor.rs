//! The monitor: a small detached process per container created with `create` (or `run -d`).
//!
//! The created container process waits on its sync socket, held by the [`PendingProcess`], for
//! `start`; the `create` invocation must exit before that. So `create` forks the monitor,
//! which keeps the CLI's stdio long enough to hand it to the container, forks its own
//! spawner (so the container is its child through `CLONE_PARENT`), creates the cgroup and
//! the container process, and reports the pid (or the error) back to `create`. Then it lets
//! go of the CLI's stdio, listens on `<state dir>/monitor.sock` for `start`, and reaps the
//! container's exit into `state.json`. It is a child subreaper, so orphans of a container
//! without its own pid namespace are reaped too. It holds an exclusive lock on
//! `monitor.lock` for its whole life: `delete` waits on that lock before removing the
//! directory.
//!
//! One exception: when the process that ran `create` adopted the monitor once `create` exited
//! (it is a child subreaper: containerd's runc shim, which reaps the init itself as it does
//! with runc), the monitor exits right after `start`, so the container is reparented to it. `state` then
//! tells "stopped" from the pid alone, as runc does.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
use runtime_native::container::{self, BuildSteps, ContainerSpec, InitIo, Made};
use runtime_native::{PendingProcess, Spawner, Workload};
use serde::{Deserialize, Serialize};

use crate::state::{State, MONITOR_LOCK, MONITOR_SOCK};
use crate::{term, Error};

/// What `create` asks the monitor to do.
pub struct Launch {
    pub dir: PathBuf,
    pub id: String,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    pub spec: oci_spec::runtime::Spec,
    pub console_socket: Option<PathBuf>,
    /// `run -d`: start right away, before reporting.
    pub autostart: bool,
    /// `--preserve-fds`: fds 3 .. 3+N go to the container.
    pub preserve_fds: usize,
}

#[derive(Debug, Serialize, Deserialize)]
enum Report {
    Created { pid: i32 },
    Failed(String),
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Request {
    pub op: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Reply {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A path for a unix socket in `dir`, short enough for `sun_path` even when `dir` is long
/// (through `/proc/self/fd/N` of an O_PATH fd, which the caller keeps open).
fn sock_path(dir: &Path) -> Result<(PathBuf, Option<OwnedFd>), Error> {
    let p = dir.join(MONITOR_SOCK);
    if p.as_os_str().len() < 100 {
        return Ok((p, None));
    }
    let fd = nix::fcntl::open(
        dir,
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| Error::io("open", dir, e.into()))?;
    let short = PathBuf::from(format!("/proc/self/fd/{}/{MONITOR_SOCK}", fd.as_raw_fd()));
    Ok((short, Some(fd)))
}

/// Forks the monitor and returns the container's pid once it is created (and, with
/// `autostart`, started).
pub fn launch(l: Launch) -> Result<i32, Error> {
    let (ours, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| Error::Other(format!("socketpair: {e}")))?;
    // SAFETY: getppid never fails.
    let caller = unsafe { libc::getppid() };
    // SAFETY: this process is single-threaded.
    match unsafe { nix::unistd::fork() } {
        Err(e) => Err(Error::Other(format!("fork monitor: {e}"))),
        Ok(nix::unistd::ForkResult::Child) => {
            drop(ours);
            let code = monitor_main(l, theirs, caller);
            // SAFETY: leave without running the CLI's destructors or atexit handlers.
            unsafe { libc::_exit(code) }
        }
        Ok(nix::unistd::ForkResult::Parent { child }) => {
            drop(theirs);
            let mut buf = vec![0u8; 1 << 16];
            let n = loop {
                // SAFETY: read into our buffer.
                let n = unsafe { libc::read(ours.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
                if n < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                break n;
            };
            if n <= 0 {
                let mut st = 0;
                // SAFETY: reaping our own child.
                unsafe { libc::waitpid(child.as_raw(), &mut st, 0) };
                return Err(Error::Other(format!(
                    "container monitor exited during create (status {st:#x})"
                )));
            }
            match serde_json::from_slice::<Report>(&buf[..n as usize]) {
                Ok(Report::Created { pid }) => Ok(pid),
                Ok(Report::Failed(m)) => {
                    // SAFETY: reaping our own child, which exits right after reporting.
                    unsafe { libc::waitpid(child.as_raw(), std::ptr::null_mut(), 0) };
                    Err(Error::Other(m))
                }
                Err(e) => Err(Error::Other(format!("bad report from the monitor: {e}"))),
            }
        }
    }
}

fn send_report(fd: &OwnedFd, r: &Report) {
    let data = serde_json::to_vec(r).unwrap_or_default();
    // SAFETY: write from a valid buffer; SEQPACKET keeps it one message.
    unsafe { libc::write(fd.as_raw_fd(), data.as_ptr().cast(), data.len()) };
}

fn close_fds_except(keep: &[RawFd]) {
    let fds: Vec<RawFd> = match std::fs::read_dir("/proc/self/fd") {
        Ok(d) => d
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect(),
        Err(_) => return,
    };
    for fd in fds {
        if fd > 2 && !keep.contains(&fd) {
            // SAFETY: closing fds inherited from the CLI's caller that nothing here uses.
            unsafe { libc::close(fd) };
        }
    }
}

struct Created {
    pending: Option<PendingProcess>,
    pid: i32,
    listener: UnixListener,
    _sock_dir: Option<OwnedFd>,
}

fn kill_and_reap(pid: i32) {
    // SAFETY: plain kill/waitpid of our own child.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        libc::waitpid(pid, std::ptr::null_mut(), 0);
    }
}

/// The monitor's steps of the container build: the CLI's stdio, then the console, the state
/// and the `start` socket once the init exists.
struct MonitorSteps<'a> {
    l: &'a Launch,
    st: State,
    listening: Option<(UnixListener, Option<OwnedFd>)>,
}

impl BuildSteps for MonitorSteps<'_> {
    type Error = Error;

    fn init_io(&mut self, _: &Made) -> Result<InitIo, Error> {
        let terminal = self
            .l
            .spec
            .process()
            .as_ref()
            .and_then(|p| p.terminal())
            .unwrap_or(false);
        Ok(InitIo {
            stdio: term::container_stdio(terminal, self.l.preserve_fds)?,
            workload: Workload::Exec,
        })
    }

    fn spawned(&mut self, made: &Made, init: &mut PendingProcess) -> Result<(), Error> {
        let pid = init.pid;
        let rest = (|| -> Result<(), Error> {
            if let Some(master) = init.pty_master.take() {
                if let Some(cs) = &self.l.console_socket {
                    term::send_console(cs, &master)?;
                }
            }
            self.st.cgroup = Some(made.cgroup.clone());
            self.st.set_pid(pid);
            let (path, sock_dir) = sock_path(&self.l.dir)?;
            let _ = std::fs::remove_file(&path);
            let listener =
                UnixListener::bind(&path).map_err(|e| Error::io("listen on", &path, e))?;
            self.st.save(&self.l.dir)?;
            self.listening = Some((listener, sock_dir));
            Ok(())
        })();
        if rest.is_err() {
            // Ours to reap: the spawner cloned it with CLONE_PARENT.
            kill_and_reap(pid);
        }
        rest
    }
}

fn create(l: &Launch, spawner: &Spawner) -> Result<Created, Error> {
    let mut st = State::new(&l.id, &l.bundle, &l.rootfs, l.spec.clone());
    st.monitor_pid = std::process::id() as i32;
    let mut steps = MonitorSteps {
        l,
        st,
        listening: None,
    };
    let target = ContainerSpec::in_place(&l.id, &l.bundle, &l.spec, &l.rootfs);
    let built = container::build(spawner, target, &mut steps)?;
    let (listener, sock_dir) = steps.listening.take().expect("set by spawned");
    let pid = built.init.pid;
    let mut c = Created {
        pending: Some(built.init),
        pid,
        listener,
        _sock_dir: sock_dir,
    };
    if l.autostart {
        let p = c.pending.take().expect("pending process");
        let started = p
            .start()
            .map_err(Error::from)
            .and_then(|()| State::update(&l.dir, |s| s.started = true))
            .and_then(|st| st.poststart());
        if let Err(e) = started {
            kill_and_reap(pid);
            built.made.undo();
            return Err(e);
        }
    }
    Ok(c)
}

fn monitor_main(l: Launch, report: OwnedFd, caller: i32) -> i32 {
    // SAFETY: plain syscalls with integer arguments.
    unsafe {
        libc::setsid();
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
        libc::prctl(libc::PR_SET_NAME, c"amphi-oci-mon".as_ptr(), 0, 0, 0);
    }
    let mut keep = vec![report.as_raw_fd()];
    keep.extend(crate::logger::file_fd());
    keep.extend(3..3 + l.preserve_fds as RawFd);
    close_fds_except(&keep);
    let lock = match std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(l.dir.join(MONITOR_LOCK))
    {
        Ok(f) => f,
        Err(e) => {
            send_report(
                &report,
                &Report::Failed(format!("create monitor lock: {e}")),
            );
            return 1;
        }
    };
    // SAFETY: flock on our own fd.
    unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) };
    let spawner = match Spawner::fork_before_threads(&[]) {
        Ok(s) => s,
        Err(e) => {
            send_report(&report, &Report::Failed(format!("fork the spawner: {e}")));
            return 1;
        }
    };
    let created = create(&l, &spawner);
    // The spawner is not needed any more: it exits when its socket closes (reaped below).
    drop(spawner);
    let mut c = match created {
        Ok(c) => c,
        Err(e) => {
            send_report(&report, &Report::Failed(e.to_string()));
            return 1;
        }
    };
    send_report(&report, &Report::Created { pid: c.pid });
    drop(report);
    // The container has its own copies of the CLI's stdio; do not hold the caller's pipes.
    term::stdio_to_devnull();
    let handoff = (!l.autostart && caller > 1).then_some(caller);
    match serve(&l.dir, &mut c, handoff) {
        Some(code) => log::debug!("container {} exited with {code}", l.id),
        None => log::debug!("container {} handed over to its subreaper", l.id),
    }
    let _ = std::fs::remove_file(l.dir.join(MONITOR_SOCK));
    drop(lock);
    0
}

/// Serves `start` and reaps children until the container's init exits; returns its code.
///
/// With `handoff: Some(caller)`, returns `None` right after a successful `start` if `caller`
/// (the process that ran `create`) adopted this monitor when `create` exited, i.e. it is a
/// child subreaper: that is containerd's runc shim, which expects to be the one that reaps
/// the container's init (as it is with runc). The monitor's exit reparents the container to
/// it. Any other adopter (init, an unrelated subreaper) leaves the monitor in charge.
fn serve(dir: &Path, c: &mut Created, handoff: Option<i32>) -> Option<i32> {
    // Block SIGCHLD (after the spawner was forked: container processes inherit its mask) and
    // read it from a signalfd.
    let mut mask = nix::sys::signal::SigSet::empty();
    mask.add(nix::sys::signal::Signal::SIGCHLD);
    let _ = mask.thread_block();
    let sfd = match nix::sys::signalfd::SignalFd::with_flags(
        &mask,
        nix::sys::signalfd::SfdFlags::SFD_CLOEXEC | nix::sys::signalfd::SfdFlags::SFD_NONBLOCK,
    ) {
        Ok(s) => s,
        Err(e) => {
            log::error!("signalfd: {e}");
            let mut st = 0;
            // SAFETY: blocking wait for our own child.
            unsafe { libc::waitpid(c.pid, &mut st, 0) };
            return Some(record_exit(dir, term::exit_code(st)));
        }
    };
    loop {
        // Reap first: SIGCHLD may have arrived before it was blocked.
        loop {
            let mut st = 0;
            // SAFETY: non-blocking waitpid with a valid out pointer.
            let r = unsafe { libc::waitpid(-1, &mut st, libc::WNOHANG) };
            if r <= 0 {
                break;
            }
            if r == c.pid {
                return Some(record_exit(dir, term::exit_code(st)));
            }
        }
        let mut fds = [
            libc::pollfd {
                fd: c.listener.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: sfd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: poll on a valid array.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if r < 0 {
            continue;
        }
        if fds[1].revents != 0 {
            while let Ok(Some(_)) = sfd.read_signal() {}
        }
        if fds[0].revents != 0 {
            if let Ok((conn, _)) = c.listener.accept() {
                // SAFETY: getppid never fails.
                if handle(dir, c, conn) && handoff == Some(unsafe { libc::getppid() }) {
                    return None;
                }
            }
        }
    }
}

fn record_exit(dir: &Path, code: i32) -> i32 {
    if let Err(e) = State::update(dir, |s| s.exit_code = Some(code)) {
        log::debug!("record exit: {e}");
    }
    code
}

/// Answers one request; true if it started the container.
fn handle(dir: &Path, c: &mut Created, conn: UnixStream) -> bool {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let mut line = String::new();
    let mut r = BufReader::new(&conn);
    if r.read_line(&mut line).is_err() {
        return false;
    }
    let mut started = false;
    let reply = match serde_json::from_str::<Request>(&line) {
        Ok(req) if req.op == "start" => match c.pending.take() {
            Some(p) => match p.start() {
                Ok(()) => {
                    match State::update(dir, |s| s.started = true).and_then(|st| st.poststart()) {
                        Ok(()) => {
                            started = true;
                            Reply { error: None }
                        }
                        Err(e) => Reply {
                            error: Some(e.to_string()),
                        },
                    }
                }
                Err(e) => Reply {
                    error: Some(e.to_string()),
                },
            },
            None => Reply {
                error: Some("cannot start an already running container".into()),
            },
        },
        Ok(req) => Reply {
            error: Some(format!("unknown monitor request {:?}", req.op)),
        },
        Err(e) => Reply {
            error: Some(format!("bad monitor request: {e}")),
        },
    };
    let mut w = &conn;
    let mut data = serde_json::to_vec(&reply).unwrap_or_default();
    data.push(b'\n');
    let _ = w.write_all(&data);
    started
}

/// `start`: asks the monitor of the container in `dir` to release it.
pub fn request_start(dir: &Path) -> Result<(), Error> {
    let (path, _keep) = sock_path(dir)?;
    let conn = UnixStream::connect(&path).map_err(|e| Error::io("connect to", &path, e))?;
    let mut w = &conn;
    let mut data = serde_json::to_vec(&Request { op: "start".into() }).unwrap_or_default();
    data.push(b'\n');
    w.write_all(&data)
        .map_err(|e| Error::io("write to", &path, e))?;
    let mut line = String::new();
    BufReader::new(&conn)
        .read_line(&mut line)
        .map_err(|e| Error::io("read from", &path, e))?;
    if line.is_empty() {
        return Err(Error::Other(
            "container monitor closed the connection".into(),
        ));
    }
    let reply: Reply = serde_json::from_str(&line)
        .map_err(|e| Error::Other(format!("bad reply from the container monitor: {e}")))?;
    match reply.error {
        Some(e) => Err(Error::Other(e)),
        None => Ok(()),
    }
}

/// Waits (up to `timeout`) until no monitor holds the lock in `dir`.
pub fn wait_gone(dir: &Path, timeout: Duration) -> bool {
    let Ok(f) = std::fs::File::open(dir.join(MONITOR_LOCK)) else {
        return true;
    };
    let start = std::time::Instant::now();
    loop {
        // SAFETY: flock on our own fd.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return true;
        }
        if start.elapsed() > timeout {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}
