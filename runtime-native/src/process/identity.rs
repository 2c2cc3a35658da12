//! Processes by identity, not by number: a pid can be reused as soon as its process is
//! reaped, so a signal sent by pid alone can reach a stranger. A live process is signalled
//! through its pidfd (from `clone(CLONE_PIDFD)` in the spawner, or `pidfd_open`), which keeps
//! naming that one process; a process known only from a record on disk (the crash-time
//! `delete`) is signalled only if its start time (field 22 of `/proc/<pid>/stat`) is still
//! the one recorded when it was started.

use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

/// `pidfd_open(2)`: a pidfd for `pid` as it is now.
pub fn pidfd_open(pid: i32) -> std::io::Result<OwnedFd> {
    // SAFETY: plain syscall with integer arguments.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a new fd nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// `pidfd_send_signal(2)`: `ESRCH` once the process has exited, whatever has its pid now.
pub fn pidfd_signal(pidfd: &impl AsFd, signal: i32) -> std::io::Result<()> {
    // SAFETY: plain syscall; a null siginfo means "as kill(2)".
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_fd().as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The start time of `pid` (clock ticks after boot, `/proc/<pid>/stat` field 22).
pub fn start_time(pid: i32) -> std::io::Result<u64> {
    if pid <= 0 {
        return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
    }
    let mut buf = Vec::with_capacity(512);
    std::fs::File::open(format!("/proc/{pid}/stat"))?
        .take(4096)
        .read_to_end(&mut buf)?;
    parse_start_time(&String::from_utf8_lossy(&buf)).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("/proc/{pid}/stat has no start time"),
        )
    })
}

/// Field 22 of a `/proc/<pid>/stat` line. The command (field 2) is in parentheses and may hold
/// spaces and parentheses itself, so fields are counted after its last `)`.
pub fn parse_start_time(stat: &str) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 1..];
    // Fields 3.. follow the command: field 22 is the 20th of them.
    after.split_whitespace().nth(19)?.parse().ok()
}

/// What [`signal_recorded`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signalled {
    /// The recorded process got the signal.
    Sent,
    /// No process has that pid any more.
    Gone,
    /// Another process has that pid now (or the record has no start time): left alone.
    NotTheSame,
}

/// Sends `signal` to the process recorded as (`pid`, `start`), only if it is still that
/// process. The pidfd is opened first and the start time read after it: a process that still
/// has the recorded start time then had the pid all along, so the pidfd names it, and the
/// signal cannot reach a process that took the pid later.
pub fn signal_recorded(pid: i32, start: u64, signal: i32) -> std::io::Result<Signalled> {
    if pid <= 0 || start == 0 {
        return Ok(Signalled::NotTheSame);
    }
    let pidfd = match pidfd_open(pid) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return Ok(Signalled::Gone),
        Err(e) => return Err(e),
    };
    match start_time(pid) {
        Ok(now) if now == start => {}
        Ok(_) => return Ok(Signalled::NotTheSame),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Signalled::Gone),
        Err(e) => return Err(e),
    }
    match pidfd_signal(&pidfd, signal) {
        Ok(()) => Ok(Signalled::Sent),
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(Signalled::Gone),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_field_after_the_command() {
        let line = "1234 (a) b (c)) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 \
                    987654 1000 10 18446744073709551615";
        assert_eq!(parse_start_time(line), Some(987654));
        assert_eq!(parse_start_time("1 (x) S 0"), None);
        assert_eq!(parse_start_time("garbage"), None);
        let me = start_time(std::process::id() as i32).unwrap();
        assert!(me > 0);
        assert_eq!(me, start_time(std::process::id() as i32).unwrap());
    }

    #[test]
    fn a_reused_pid_is_not_signalled() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let start = start_time(pid).unwrap();
        // The pid as a different process would have it (another start time): left alone.
        assert_eq!(
            signal_recorded(pid, start + 1, libc::SIGKILL).unwrap(),
            Signalled::NotTheSame
        );
        assert_eq!(
            signal_recorded(pid, 0, libc::SIGKILL).unwrap(),
            Signalled::NotTheSame
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the stranger must still run"
        );
        // The recorded process itself is signalled.
        assert_eq!(
            signal_recorded(pid, start, libc::SIGKILL).unwrap(),
            Signalled::Sent
        );
        let status = child.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(libc::SIGKILL)
        );
        // Reaped: the pid names nothing (or someone else) now.
        assert_ne!(
            signal_recorded(pid, start, libc::SIGKILL).unwrap(),
            Signalled::Sent
        );
    }

    #[test]
    fn a_pidfd_outlives_its_pid() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pidfd = pidfd_open(child.id() as i32).unwrap();
        child.wait().unwrap();
        // Exited and reaped: the pidfd refuses rather than reaching a new owner of the pid.
        let e = pidfd_signal(&pidfd, libc::SIGKILL).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ESRCH));
    }
}
