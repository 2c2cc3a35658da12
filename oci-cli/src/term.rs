//! Terminals, stdio and waiting: the console socket (runc's protocol), the stdio fds a
//! container inherits, signal forwarding and the wait of a foreground process.

use std::io::IoSlice;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicI32, Ordering};

use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};

use crate::Error;

/// `/dev/pts/N` of a pty master.
pub fn pts_name(master: &OwnedFd) -> String {
    let mut n: libc::c_uint = 0;
    // SAFETY: TIOCGPTN writes one unsigned int.
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTN, &mut n) } == 0 {
        format!("/dev/pts/{n}")
    } else {
        "/dev/ptmx".to_string()
    }
}

/// Sends the pty master over the unix socket at `path` (SCM_RIGHTS, payload: the
/// terminal's name), as runc does with `--console-socket`.
pub fn send_console(path: &Path, master: &OwnedFd) -> Result<(), Error> {
    let s =
        UnixStream::connect(path).map_err(|e| Error::io("connect to console socket", path, e))?;
    let name = pts_name(master);
    let iov = [IoSlice::new(name.as_bytes())];
    let fds = [master.as_raw_fd()];
    sendmsg::<()>(
        s.as_raw_fd(),
        &iov,
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::MSG_NOSIGNAL,
        None,
    )
    .map_err(|e| Error::Other(format!("send pty master to {}: {e}", path.display())))?;
    Ok(())
}

/// Copies of this process's fds 0, 1, 2 for the container process (absent ones stay None),
/// and of fds 3 .. 3+`preserve` (`--preserve-fds`), which it gets at the same numbers.
pub fn inherit_stdio(preserve: usize) -> Result<runtime_native::Stdio, Error> {
    let dup = |fd: i32| -> Option<OwnedFd> {
        // SAFETY: F_GETFD only inspects the number.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
            return None;
        }
        // SAFETY: fd is open (checked above) for the duration of the call.
        unsafe { BorrowedFd::borrow_raw(fd) }
            .try_clone_to_owned()
            .ok()
    };
    let mut extra_fds = Vec::new();
    for fd in 3..3 + preserve as i32 {
        extra_fds.push(
            dup(fd).ok_or_else(|| Error::Other(format!("--preserve-fds: fd {fd} is not open")))?,
        );
    }
    Ok(runtime_native::Stdio {
        stdin: dup(0),
        stdout: dup(1),
        stderr: dup(2),
        extra_fds,
    })
}

/// The stdio of a container process: ours, or (with a terminal) none, since it gets the pty;
/// plus the preserved fds either way.
pub fn container_stdio(terminal: bool, preserve: usize) -> Result<runtime_native::Stdio, Error> {
    let stdio = inherit_stdio(preserve)?;
    if terminal {
        return Ok(runtime_native::Stdio {
            extra_fds: stdio.extra_fds,
            ..Default::default()
        });
    }
    Ok(stdio)
}

/// Points fds 0, 1, 2 at /dev/null (the monitor, once the container has its own copies).
pub fn stdio_to_devnull() {
    // SAFETY: plain open/dup2/close on numbers this process manages.
    unsafe {
        let n = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC);
        if n >= 0 {
            for fd in 0..3 {
                libc::dup2(n, fd);
            }
            if n > 2 {
                libc::close(n);
            }
        }
    }
}

static FORWARD_TO: AtomicI32 = AtomicI32::new(0);

extern "C" fn forward(sig: libc::c_int) {
    let pid = FORWARD_TO.load(Ordering::Relaxed);
    if pid > 0 {
        // SAFETY: kill is async-signal-safe.
        unsafe { libc::kill(pid, sig) };
    }
}

/// Forwards the signals a user or supervisor sends us to `pid` (as runc does in the
/// foreground), except SIGCHLD, SIGWINCH, SIGURG and the uncatchable ones.
pub fn forward_signals(pid: i32) {
    FORWARD_TO.store(pid, Ordering::Relaxed);
    for sig in [
        libc::SIGHUP,
        libc::SIGINT,
        libc::SIGQUIT,
        libc::SIGTERM,
        libc::SIGUSR1,
        libc::SIGUSR2,
        libc::SIGALRM,
        libc::SIGCONT,
        libc::SIGPWR,
        libc::SIGPIPE,
    ] {
        // SAFETY: installing an async-signal-safe handler.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = forward as extern "C" fn(libc::c_int) as *const () as usize;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

/// Exit code of a wait status: the code, or 128 + the signal.
pub fn exit_code(status: libc::c_int) -> i32 {
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        255
    }
}

/// Reaps children until `pid` exits (others — the spawner, orphans we are subreaper of —
/// are reaped on the way); returns its exit code.
pub fn wait_for(pid: i32) -> i32 {
    loop {
        let mut status = 0;
        // SAFETY: waitpid with a valid out pointer.
        let r = unsafe { libc::waitpid(-1, &mut status, 0) };
        if r == pid {
            return exit_code(status);
        }
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            // ECHILD: it was reaped elsewhere; nothing more to learn.
            return 255;
        }
    }
}

/// Foreground `run`/`exec` with a terminal and no console socket: copies between our stdio
/// and the pty master until `pid` exits, with our terminal in raw mode if it is one.
pub fn pty_copy_and_wait(master: OwnedFd, pid: i32) -> i32 {
    use nix::sys::termios;
    let stdin = unsafe { BorrowedFd::borrow_raw(0) };
    let saved = termios::tcgetattr(stdin).ok();
    if let Some(t) = &saved {
        let mut raw = t.clone();
        termios::cfmakeraw(&mut raw);
        let _ = termios::tcsetattr(stdin, termios::SetArg::TCSANOW, &raw);
        // Give the container our window size.
        let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
        // SAFETY: TIOCGWINSZ/TIOCSWINSZ with a valid winsize.
        unsafe {
            if libc::ioctl(0, libc::TIOCGWINSZ, &mut ws) == 0 {
                libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws);
            }
        }
    }
    let m = master.as_raw_fd();
    let mut stdin_open = true;
    let mut buf = [0u8; 8192];
    loop {
        let mut fds = [
            libc::pollfd {
                fd: m,
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: if stdin_open { 0 } else { -1 },
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: poll on a valid array.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if r < 0 {
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            break;
        }
        if fds[0].revents != 0 {
            // SAFETY: read into our buffer.
            let n = unsafe { libc::read(m, buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                break;
            }
            write_all(1, &buf[..n as usize]);
        }
        if fds[1].revents != 0 {
            // SAFETY: read into our buffer.
            let n = unsafe { libc::read(0, buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                stdin_open = false;
            } else {
                write_all(m, &buf[..n as usize]);
            }
        }
    }
    if let Some(t) = &saved {
        let _ = termios::tcsetattr(stdin, termios::SetArg::TCSANOW, t);
    }
    drop(master);
    wait_for(pid)
}

fn write_all(fd: i32, mut data: &[u8]) {
    while !data.is_empty() {
        // SAFETY: writing from a valid slice.
        let n = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
        if n < 0 {
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return;
        }
        data = &data[n as usize..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes() {
        assert_eq!(exit_code(3 << 8), 3);
        assert_eq!(exit_code(9), 137);
    }
}
