//! Connecting a container process to the stdio containerd asked for.
//!
//! Without a terminal the process gets the fifos themselves: no copy loop, no buffers in the
//! shim. The shim keeps its own end of each fifo open (`StdioHolders`): a writer on stdin so the
//! process does not read EOF before containerd opened its side (released by CloseIO), and a
//! reader-writer on stdout/stderr so the pipes survive a containerd restart (writes block
//! instead of raising SIGPIPE while nobody reads). When the process exits the holders are
//! released (`StdioHolders::release`), so the reader sees EOF once the last container process
//! closed its copy — but an output is let go only once its reader has connected: a reader that
//! opens the fifo after every writer is gone would block in open(2) forever (containerd opens
//! its ends asynchronously, and a fast exec can finish first).
//!
//! With a terminal the process gets a pty slave; the shim copies between the master and the
//! fifos (`spawn_pty_copy`).
//!
//! Addresses: a plain path or `fifo://` is a fifo, `file://` appends to a file, `binary://`
//! starts a log driver process (see `logger`); an empty string is /dev/null. Other schemes are
//! rejected with an error naming them.

use std::fs::{File, OpenOptions};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use runtime_native::Stdio;
use tokio::io::unix::AsyncFd;
use tokio::sync::oneshot;

use super::error::{ServiceError, ServiceResult};
use super::logger;

/// The stdio addresses of one process, as containerd gave them.
#[derive(Debug, Clone, Default)]
pub struct StdioPaths {
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
}

/// The shim's own ends of a process's fifos.
#[derive(Default)]
pub struct StdioHolders {
    pub stdin_writer: Option<File>,
    outputs: Vec<OutputHolder>,
}

/// The shim's read-write end of an output fifo, and where it is.
pub struct OutputHolder {
    path: String,
    end: File,
}

/// How long a released output waits for its reader before giving up.
const READER_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

impl StdioHolders {
    /// Lets go of the pipes after the process exited (see module docs): stdin at once; each
    /// output once a reader is connected, on a helper thread, so nothing here blocks.
    pub fn release(self) {
        drop(self.stdin_writer);
        let pending: Vec<File> = self
            .outputs
            .into_iter()
            .filter_map(OutputHolder::into_writer)
            .collect();
        if pending.is_empty() {
            return;
        }
        std::thread::spawn(move || {
            let start = std::time::Instant::now();
            let mut pending = pending;
            while !pending.is_empty() && start.elapsed() < READER_WAIT {
                pending.retain(|w| !has_reader(w));
                if !pending.is_empty() {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
            }
        });
    }
}

impl OutputHolder {
    /// Trades the read-write end for a write-only one (our read side must not count as the
    /// reader we wait for). `None` when a reader is already there: nothing to wait for.
    fn into_writer(self) -> Option<File> {
        let writer = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&self.path)
            .ok()?;
        drop(self.end);
        (!has_reader(&writer)).then_some(writer)
    }
}

/// Whether anyone has the read side of the pipe open (a pipe's write end polls POLLERR
/// while it has no reader).
fn has_reader(writer: &File) -> bool {
    let mut pfd = libc::pollfd {
        fd: writer.as_raw_fd(),
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: one pollfd for an fd that stays open for the call; zero timeout.
    let n = unsafe { libc::poll(&mut pfd, 1, 0) };
    n >= 0 && pfd.revents & libc::POLLERR == 0
}

/// A stdio address, parsed once: a plain target, or a log driver (which only the callers know
/// how to place: it takes stdout and stderr together, never stdin).
enum Address<'a> {
    Plain(Target<'a>),
    /// `binary://...`, the whole URL.
    Driver(&'a str),
}

enum Target<'a> {
    Null,
    Fifo(&'a str),
    File(&'a str),
}

fn parse(address: &str) -> ServiceResult<Address<'_>> {
    let plain = |t| Ok(Address::Plain(t));
    if address.is_empty() {
        return plain(Target::Null);
    }
    if let Some(path) = address.strip_prefix("fifo://") {
        return plain(Target::Fifo(path));
    }
    if let Some(path) = address.strip_prefix("file://") {
        return plain(Target::File(path));
    }
    if address.starts_with("binary://") {
        return Ok(Address::Driver(address));
    }
    if address.starts_with('/') {
        return plain(Target::Fifo(address));
    }
    let scheme = address.split("://").next().unwrap_or(address);
    Err(ServiceError::InvalidArgument(format!(
        "stdio address {address:?}: unsupported scheme {scheme:?} (use a fifo path, file:// or binary://)"
    )))
}

/// The plain target of `stream`'s `address`; a log driver there is refused, saying `why`.
fn plain<'a>(stream: &str, address: &'a str, why: &str) -> ServiceResult<Target<'a>> {
    match parse(address)? {
        Address::Plain(t) => Ok(t),
        Address::Driver(_) => Err(ServiceError::InvalidArgument(format!(
            "{stream} {address:?}: {why}"
        ))),
    }
}

fn io_err(what: &str, path: &str, source: std::io::Error) -> ServiceError {
    ServiceError::OpenStdio {
        what: what.to_string(),
        path: path.to_string(),
        source,
    }
}

fn clear_nonblock(file: &File) {
    // The process expects blocking stdio; O_NONBLOCK was only needed to open without a peer.
    let _ = nix::fcntl::fcntl(
        file.as_fd(),
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::empty()),
    );
}

fn dev_null(write: bool) -> ServiceResult<OwnedFd> {
    OpenOptions::new()
        .read(!write)
        .write(write)
        .open("/dev/null")
        .map(OwnedFd::from)
        .map_err(|e| io_err("stdio", "/dev/null", e))
}

enum Side {
    Read,
    Write,
    /// Read-write: never blocks to open and never sees EOF or EPIPE while it is held.
    Both,
}

/// Opens one end of a fifo without waiting for a peer, then makes it blocking again (the
/// process expects blocking stdio). A one-sided open succeeds because the shim opens the
/// other side (or both) itself.
fn open_fifo(path: &str, side: Side, what: &str) -> ServiceResult<File> {
    let (read, write) = match side {
        Side::Read => (true, false),
        Side::Write => (false, true),
        Side::Both => (true, true),
    };
    let file = OpenOptions::new()
        .read(read)
        .write(write)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| io_err(&format!("{what} fifo"), path, e))?;
    clear_nonblock(&file);
    Ok(file)
}

/// Opens the stdin source: (fd for the process, writer the shim holds).
fn open_input(target: Target) -> ServiceResult<(OwnedFd, Option<File>)> {
    match target {
        Target::Null => Ok((dev_null(false)?, None)),
        Target::File(path) => {
            let f = File::open(path).map_err(|e| io_err("stdin", path, e))?;
            Ok((f.into(), None))
        }
        Target::Fifo(path) => {
            let reader = open_fifo(path, Side::Read, "stdin")?;
            let writer = open_fifo(path, Side::Write, "stdin")?;
            Ok((reader.into(), Some(writer)))
        }
    }
}

/// Opens an output sink: (fd for the process, reader-writer the shim holds).
fn open_output(target: Target) -> ServiceResult<(OwnedFd, Option<OutputHolder>)> {
    match target {
        Target::Null => Ok((dev_null(true)?, None)),
        Target::File(path) => {
            if let Some(dir) = Path::new(path).parent() {
                std::fs::create_dir_all(dir).map_err(|e| io_err("log dir", path, e))?;
            }
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| io_err("log file", path, e))?;
            Ok((f.into(), None))
        }
        Target::Fifo(path) => {
            let end = open_fifo(path, Side::Both, "output")?;
            let writer = open_fifo(path, Side::Write, "output")?;
            let holder = OutputHolder {
                path: path.to_string(),
                end,
            };
            Ok((writer.into(), Some(holder)))
        }
    }
}

/// Why a log driver cannot be where it was named.
const STDIN_DRIVER: &str = "a binary:// log driver can only take output";
const STDERR_DRIVER: &str =
    "a binary:// log driver takes stdout and stderr together, not stderr alone";
const TERMINAL_DRIVER: &str = "a binary:// log driver is not supported with a terminal";

/// Where a process's stdout and stderr go: one log driver for both, or a target each.
enum Outputs<'a> {
    Driver(&'a str),
    Plain(Target<'a>, Target<'a>),
}

/// Opens what a process without a terminal gets as fds 0, 1, 2. `owner` names the container
/// to a `binary://` log driver.
pub fn open_direct(
    paths: &StdioPaths,
    owner: &logger::Owner,
) -> ServiceResult<(Stdio, StdioHolders)> {
    // Every address is checked before anything is opened.
    let stdin = plain("stdin", &paths.stdin, STDIN_DRIVER)?;
    // containerd names a log driver as stdout and stderr both: it takes the two together.
    let outputs = match parse(&paths.stdout)? {
        Address::Driver(url) => Outputs::Driver(url),
        Address::Plain(out) => Outputs::Plain(out, plain("stderr", &paths.stderr, STDERR_DRIVER)?),
    };
    let (stdin, stdin_writer) = open_input(stdin)?;
    let (stdout, out_holder, stderr, err_holder) = match outputs {
        Outputs::Driver(url) => {
            let (out, err) = logger::start(url, owner)?;
            (out, None, err, None)
        }
        Outputs::Plain(out, err) => {
            let (stdout, out_holder) = open_output(out)?;
            let (stderr, err_holder) = open_output(err)?;
            (stdout, out_holder, stderr, err_holder)
        }
    };
    let holders = StdioHolders {
        stdin_writer,
        outputs: out_holder.into_iter().chain(err_holder).collect(),
    };
    let stdio = Stdio {
        stdin: Some(stdin),
        stdout: Some(stdout),
        stderr: Some(stderr),
        ..Default::default()
    };
    Ok((stdio, holders))
}

/// Sets the pty's window size (ResizePty).
pub fn resize(master: &impl AsRawFd, width: u32, height: u32) -> ServiceResult<()> {
    let size = libc::winsize {
        ws_row: height as u16,
        ws_col: width as u16,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize struct that lives for the call.
    let rc = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &size) };
    if rc < 0 {
        return Err(ServiceError::Pty {
            op: "resize pty",
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

fn set_nonblocking(fd: &impl AsFd) -> std::io::Result<()> {
    nix::fcntl::fcntl(
        fd.as_fd(),
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    )?;
    Ok(())
}

/// Copies between a pty master and the fifos. Returns a receiver that fires once the output
/// side has drained (the slave side closed: every process holding it exited), so the exit
/// event can be published after the last byte.
pub fn spawn_pty_copy(
    master: OwnedFd,
    paths: &StdioPaths,
) -> ServiceResult<(oneshot::Receiver<()>, StdioHolders)> {
    // Both addresses are checked before anything is opened.
    let out = plain("stdout", &paths.stdout, TERMINAL_DRIVER)?;
    let input = plain("stdin", &paths.stdin, STDIN_DRIVER)?;
    let (out_fd, out_holder) = open_output(out)?;
    let input = match input {
        // Read-write keeps the fifo from reporting EOF before containerd writes.
        Target::Fifo(path) => Some(open_fifo(path, Side::Both, "stdin")?),
        _ => None,
    };
    let master_in = master.try_clone().map_err(|source| ServiceError::Pty {
        op: "dup pty master",
        source,
    })?;
    set_nonblocking(&master).map_err(|source| ServiceError::Pty { op: "pty", source })?;
    let (done_tx, done_rx) = oneshot::channel();
    let out_file = File::from(out_fd);
    tokio::spawn(async move {
        copy_fd_to_file(master, out_file).await;
        let _ = done_tx.send(());
    });
    if let Some(stdin) = input {
        tokio::spawn(async move {
            copy_file_to_fd(stdin, master_in).await;
        });
    }
    let holders = StdioHolders {
        stdin_writer: None,
        outputs: out_holder.into_iter().collect(),
    };
    Ok((done_rx, holders))
}

async fn copy_fd_to_file(master: OwnedFd, mut out: File) {
    use std::io::Read;
    let Some(afd) = register(master) else {
        return;
    };
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let Ok(mut guard) = afd.readable().await else {
            return;
        };
        let res = guard.try_io(|fd| {
            let mut f = unsafe_file_ref(fd.get_ref());
            f.read(&mut buf)
        });
        if !forward(res, &buf, &mut out) {
            return;
        }
    }
}

/// Writes what one readiness round of a copy loop read to `out`; false when the copy is over
/// (EOF, a read error such as EIO once the pty's slave side is closed, or `out` refusing). A
/// fifo write may block briefly if the reader is slow: that is back-pressure.
fn forward(
    res: Result<std::io::Result<usize>, tokio::io::unix::TryIoError>,
    buf: &[u8],
    out: &mut impl std::io::Write,
) -> bool {
    match res {
        Ok(Ok(0)) => false,
        Ok(Ok(n)) => out.write_all(&buf[..n]).is_ok(),
        Ok(Err(e)) => e.kind() == std::io::ErrorKind::Interrupted,
        Err(_would_block) => true,
    }
}

async fn copy_file_to_fd(input: File, master: OwnedFd) {
    use std::io::Read;
    let _ = set_nonblocking(&input);
    let Some(ain) = register(input) else { return };
    let mut out = File::from(master);
    let mut buf = vec![0u8; 4096];
    loop {
        let Ok(mut guard) = ain.readable().await else {
            return;
        };
        let res = guard.try_io(|f| f.get_ref().read(&mut buf));
        if !forward(res, &buf, &mut out) {
            return;
        }
    }
}

/// Registers an owned fd with the tokio reactor.
pub(super) fn register<T: AsRawFd>(owned: T) -> Option<AsyncFd<T>> {
    // SAFETY: `T` owns its fd (OwnedFd or File): it stays open and the same for as long as
    // the AsyncFd holds it, which is what `register` requires.
    unsafe { AsyncFd::register(owned) }.ok()
}

/// A `File` view of a borrowed fd that never closes it.
fn unsafe_file_ref(fd: &OwnedFd) -> std::mem::ManuallyDrop<File> {
    use std::os::fd::FromRawFd;
    // SAFETY: the ManuallyDrop wrapper never closes the fd, which stays owned by `fd`.
    std::mem::ManuallyDrop::new(unsafe { File::from_raw_fd(fd.as_raw_fd()) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// A fifo `name` in a fresh directory (dropped with the guard).
    fn fifo(name: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        (dir, path)
    }

    /// Everything `reader` yields up to EOF.
    fn read_all(mut reader: File) -> String {
        let mut s = String::new();
        reader.read_to_string(&mut s).unwrap();
        s
    }

    #[test]
    fn addresses_are_parsed_by_scheme() {
        assert!(matches!(parse("").unwrap(), Address::Plain(Target::Null)));
        assert!(matches!(
            parse("/run/x/stdout").unwrap(),
            Address::Plain(Target::Fifo("/run/x/stdout"))
        ));
        assert!(matches!(
            parse("fifo:///a").unwrap(),
            Address::Plain(Target::Fifo("/a"))
        ));
        assert!(matches!(
            parse("file:///var/log/a").unwrap(),
            Address::Plain(Target::File("/var/log/a"))
        ));
        assert!(matches!(
            parse("binary:///bin/d?x").unwrap(),
            Address::Driver("binary:///bin/d?x")
        ));
        let err = parse("http://x").err().unwrap().to_string();
        assert!(err.contains("unsupported scheme \"http\""), "{err}");
    }

    #[test]
    fn fifo_output_reaches_the_reader_and_eof_follows_the_holders() {
        use std::io::Write;
        let (_dir, path) = fifo("out");
        let reader = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&path)
            .unwrap();
        let (fd, holder) = open_output(Target::Fifo(path.to_str().unwrap())).unwrap();
        let mut w = File::from(fd);
        w.write_all(b"hello").unwrap();
        drop(w);
        drop(holder);
        clear_nonblock(&reader);
        assert_eq!(read_all(reader), "hello");
    }

    #[test]
    fn a_reader_that_opens_after_the_process_exited_still_gets_data_and_eof() {
        use std::io::Write;
        let (_dir, path) = fifo("late");
        let (fd, holder) = open_output(Target::Fifo(path.to_str().unwrap())).unwrap();
        File::from(fd).write_all(b"early bird").unwrap(); // the process writes and exits
        let holders = StdioHolders {
            stdin_writer: None,
            outputs: holder.into_iter().collect(),
        };
        holders.release();
        std::thread::sleep(std::time::Duration::from_millis(100));
        // containerd opens its (blocking) read end only now.
        let reader = File::open(&path).unwrap();
        assert_eq!(read_all(reader), "early bird");
    }

    #[test]
    fn file_output_appends() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logs/a.log");
        for line in ["one\n", "two\n"] {
            let (fd, _) = open_output(Target::File(path.to_str().unwrap())).unwrap();
            File::from(fd).write_all(line.as_bytes()).unwrap();
        }
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "one\ntwo\n");
    }

    /// A log driver takes stdout and stderr together: as stdin, as stderr alone or behind a
    /// terminal it is refused, naming the stream and why, before anything is opened.
    #[test]
    fn a_log_driver_is_refused_where_it_cannot_go() {
        let paths = |stdin: &str, stdout: &str, stderr: &str| StdioPaths {
            stdin: stdin.into(),
            stdout: stdout.into(),
            stderr: stderr.into(),
            terminal: false,
        };
        let d = "binary:///bin/driver";
        let owner = logger::Owner::default();
        let direct = |p: StdioPaths| open_direct(&p, &owner).err().unwrap().to_string();
        assert_eq!(
            direct(paths(d, "", "")),
            format!("stdin {d:?}: a binary:// log driver can only take output")
        );
        assert_eq!(
            direct(paths("", "", d)),
            format!(
                "stderr {d:?}: a binary:// log driver takes stdout and stderr together, not stderr alone"
            )
        );
        let terminal = |p: StdioPaths| {
            let master = OwnedFd::from(File::open("/dev/null").unwrap());
            spawn_pty_copy(master, &p).err().unwrap().to_string()
        };
        assert_eq!(
            terminal(paths("", d, "")),
            format!("stdout {d:?}: a binary:// log driver is not supported with a terminal")
        );
        assert_eq!(
            terminal(paths(d, "", "")),
            format!("stdin {d:?}: a binary:// log driver can only take output")
        );
    }
}
