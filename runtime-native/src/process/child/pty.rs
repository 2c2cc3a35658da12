//! The container's terminal: a pty from the container's own devpts, the master sent to the
//! caller, the slave as stdio and controlling terminal.

use super::*;

pub(super) fn setup_pty(c: &Child, process: &Process, need_setsid: bool) -> Result<(), Error> {
    let master = nix::fcntl::open(
        "/dev/ptmx",
        nix::fcntl::OFlag::O_RDWR | nix::fcntl::OFlag::O_NOCTTY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(sys("open /dev/ptmx"))?;
    let mfd = master.as_raw_fd();
    let unlock: libc::c_int = 0;
    // SAFETY: ioctls on our own pty master with valid arguments.
    unsafe {
        if libc::ioctl(mfd, libc::TIOCSPTLCK, &unlock) != 0 {
            return Err(last("unlock pty"));
        }
    }
    // SAFETY: TIOCGPTPEER returns a new fd for the slave.
    let slave = unsafe { libc::ioctl(mfd, libc::TIOCGPTPEER, libc::O_RDWR | libc::O_NOCTTY) };
    if slave < 0 {
        return Err(last("open pty slave"));
    }
    if let Some(sz) = process.console_size() {
        let ws = libc::winsize {
            ws_row: sz.height() as u16,
            ws_col: sz.width() as u16,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: valid winsize pointer.
        unsafe { libc::ioctl(mfd, libc::TIOCSWINSZ, &ws) };
    }
    if need_setsid {
        // SAFETY: plain syscall.
        unsafe { libc::setsid() };
    }
    // SAFETY: make the slave our controlling terminal.
    if unsafe { libc::ioctl(slave, libc::TIOCSCTTY, 0) } != 0 {
        return Err(last("set controlling terminal"));
    }
    for i in 0..3 {
        dup2(slave, i)?;
    }
    // SAFETY: closing the fd TIOCGPTPEER gave us.
    unsafe { libc::close(slave) };
    sync::send(&c.sync, &ChildMsg::PtyMaster, &[mfd])?;
    drop(master);
    Ok(())
}
