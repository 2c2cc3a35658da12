//! Helper processes the runtime runs as its own children (OCI hooks, the shim's compile
//! helper): waiting for their exit with a deadline when a reaper may collect it first, and
//! capturing their output in a memfd.
//!
//! The shim is a child subreaper whose reaper calls `waitpid(-1)`, so a helper's exit status
//! may be gone before `Child::try_wait` asks for it; the caller registers where such a status
//! is found ([`set_reaped_exit_lookup`]).

use std::io::{Read, Seek, SeekFrom};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// Why a helper's exit or output could not be had.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("wait: the exit status was collected by another waiter")]
    CollectedElsewhere,
    #[error("wait: the exit status was reaped elsewhere and not reported")]
    NotReported,
    #[error("wait: {0}")]
    Wait(#[source] std::io::Error),
    #[error("memfd_create: {0}")]
    Memfd(#[source] std::io::Error),
}

/// How a helper ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildExit {
    /// It exited with this code.
    Code(i32),
    /// A signal (this number) ended it.
    Signal(i32),
}

impl ChildExit {
    pub fn success(self) -> bool {
        self == ChildExit::Code(0)
    }

    /// From the exit book's form: 0..=255, or 128+signal.
    fn from_book(code: i32) -> ChildExit {
        if code > 128 {
            ChildExit::Signal(code - 128)
        } else {
            ChildExit::Code(code)
        }
    }

    fn from_status(st: std::process::ExitStatus) -> ChildExit {
        use std::os::unix::process::ExitStatusExt;
        match (st.code(), st.signal()) {
            (Some(c), _) => ChildExit::Code(c),
            (None, Some(s)) => ChildExit::Signal(s),
            (None, None) => ChildExit::Code(-1),
        }
    }
}

impl std::fmt::Display for ChildExit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            ChildExit::Code(c) => write!(f, "exit status: {c}"),
            ChildExit::Signal(s) => match nix::sys::signal::Signal::try_from(s) {
                Ok(sig) => write!(f, "signal: {s} ({})", sig.as_str()),
                Err(_) => write!(f, "signal: {s}"),
            },
        }
    }
}

/// Looks up the exit status (0..=255, or 128+signal) of a child that somebody else reaped.
type ReapedLookup = Box<dyn Fn(i32) -> Option<i32> + Send + Sync>;
static REAPED: std::sync::OnceLock<ReapedLookup> = std::sync::OnceLock::new();

/// For a caller that reaps every child itself (the shim is a child subreaper whose reaper
/// calls `waitpid(-1)`): the helpers it runs are its children too, so their exit status may be
/// collected by that reaper before [`wait_child`] asks for it. `lookup` returns such a
/// reaped status by pid (once the reaper has recorded it). Set once, at startup.
pub fn set_reaped_exit_lookup(lookup: impl Fn(i32) -> Option<i32> + Send + Sync + 'static) {
    let _ = REAPED.set(Box::new(lookup));
}

/// How long a status reaped elsewhere may take to be recorded.
const REAPED_GRACE: Duration = Duration::from_secs(10);

/// Waits for `child` for at most `timeout`: `Ok(Some(exit))` once it exited, `Ok(None)` when
/// the timeout expired first. Blocks the calling thread (never call it on an async worker).
pub fn wait_child(
    child: &mut std::process::Child,
    timeout: Option<Duration>,
) -> Result<Option<ChildExit>, Error> {
    let deadline = timeout.map(|t| Instant::now() + t);
    let pid = child.id() as i32;
    // A pidfd tells when the child exits without polling; fall back to short sleeps.
    // SAFETY: pidfd_open with a pid we are the parent of (not yet reaped).
    let pfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    // SAFETY: a new fd we own.
    let pidfd = (pfd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(pfd as i32) });
    let mut lost_since: Option<Instant> = None;
    loop {
        match child.try_wait() {
            Ok(Some(st)) => return Ok(Some(ChildExit::from_status(st))),
            Ok(None) => {}
            Err(e) if e.raw_os_error() == Some(libc::ECHILD) => {
                // Reaped by the caller's reaper: its status comes through the lookup.
                let Some(lookup) = REAPED.get() else {
                    return Err(Error::CollectedElsewhere);
                };
                if let Some(code) = lookup(pid) {
                    return Ok(Some(ChildExit::from_book(code)));
                }
                let since = *lost_since.get_or_insert_with(Instant::now);
                if since.elapsed() > REAPED_GRACE {
                    return Err(Error::NotReported);
                }
                std::thread::sleep(Duration::from_millis(2));
                continue;
            }
            Err(e) => return Err(Error::Wait(e)),
        }
        let left = match deadline {
            Some(d) => {
                let now = Instant::now();
                if now >= d {
                    return Ok(None);
                }
                Some(d - now)
            }
            None => None,
        };
        match &pidfd {
            Some(fd) => {
                let ms = left
                    .map(|l| (l.as_millis().min(i32::MAX as u128) as i32).max(1))
                    .unwrap_or(-1);
                let mut p = [libc::pollfd {
                    fd: fd.as_fd().as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                }];
                // SAFETY: one valid pollfd.
                unsafe { libc::poll(p.as_mut_ptr(), 1, ms) };
            }
            None => std::thread::sleep(
                left.unwrap_or(Duration::from_millis(5))
                    .min(Duration::from_millis(5)),
            ),
        }
    }
}

/// A memfd (close-on-exec) to hand a helper as its output.
pub fn output_file(name: &std::ffi::CStr) -> Result<std::fs::File, Error> {
    // SAFETY: memfd_create with a valid C string.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(Error::Memfd(std::io::Error::last_os_error()));
    }
    // SAFETY: a new fd we own.
    Ok(std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// The last `max` bytes of what a helper wrote to `out`, trimmed (`...` when cut).
pub fn output_tail(out: &mut std::fs::File, max: usize) -> String {
    let len = out.seek(SeekFrom::End(0)).unwrap_or(0);
    let start = len.saturating_sub(max as u64);
    let _ = out.seek(SeekFrom::Start(start));
    let mut buf = Vec::new();
    let _ = out.take(max as u64).read_to_end(&mut buf);
    let s = String::from_utf8_lossy(&buf).trim().to_string();
    if start > 0 {
        format!("...{s}")
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exits_read_as_codes_and_signals() {
        let mut ok = std::process::Command::new("true").spawn().unwrap();
        assert_eq!(wait_child(&mut ok, None).unwrap(), Some(ChildExit::Code(0)));
        let mut killed = std::process::Command::new("sleep")
            .arg("100")
            .spawn()
            .unwrap();
        assert_eq!(
            wait_child(&mut killed, Some(Duration::from_millis(20))).unwrap(),
            None
        );
        killed.kill().unwrap();
        let exit = wait_child(&mut killed, None).unwrap().unwrap();
        assert_eq!(exit, ChildExit::Signal(9));
        assert_eq!(exit.to_string(), "signal: 9 (SIGKILL)");
        assert_eq!(ChildExit::from_book(137), ChildExit::Signal(9));
        assert_eq!(ChildExit::from_book(3), ChildExit::Code(3));
    }
}
