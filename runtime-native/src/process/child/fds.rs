//! The container process's fds: the ones it keeps moved above the ones the spec names, stdio
//! set, everything else of the runtime closed before anything of the container runs.

use super::*;

pub(super) fn dup_high(fd: RawFd, min: RawFd) -> Result<RawFd, Error> {
    // SAFETY: duplicating an fd we own.
    let n = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, min) };
    if n < 0 {
        return Err(last(format!("dup fd {fd}")));
    }
    Ok(n)
}

pub(super) fn dup2(from: RawFd, to: RawFd) -> Result<(), Error> {
    // SAFETY: plain dup2 onto a number we manage.
    if unsafe { libc::dup2(from, to) } < 0 {
        return Err(last(format!("dup2 {from} to {to}")));
    }
    Ok(())
}

/// Puts stdio on 0..2, the extra fds on 3.., the sync socket above them, closes the rest.
pub(super) fn setup_fds(c: &mut Child, fds: ChildFds) -> Result<(), Error> {
    let n = fds.extra.len() as RawFd;
    let min = 3 + n + 8;
    let sync = dup_high(c.sync, min)?;
    c.sync = sync;
    let devnull = nix::fcntl::open(
        "/dev/null",
        nix::fcntl::OFlag::O_RDWR | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(sys("open /dev/null"))?
    .into_raw_fd();
    let mut stdio = Vec::new();
    for f in [fds.stdin, fds.stdout, fds.stderr] {
        let raw = f.map(|f| f.into_raw_fd()).unwrap_or(devnull);
        stdio.push(dup_high(raw, min)?);
    }
    let mut extra = Vec::new();
    for f in fds.extra {
        extra.push(dup_high(f.into_raw_fd(), min)?);
    }
    for (i, f) in stdio.iter().enumerate() {
        dup2(*f, i as RawFd)?;
    }
    for (i, f) in extra.iter().enumerate() {
        dup2(*f, 3 + i as RawFd)?;
    }
    if let Some(j) = fds.join {
        c.join.set(Some(dup_high(j.into_raw_fd(), min)?));
    }
    if let Some(m) = fds.proc_mnt {
        c.proc_mnt.set(Some(dup_high(m.into_raw_fd(), min)?));
    }
    if let Some(p) = fds.init_pidfd {
        // SAFETY: dup_high returns a new fd that only this process owns.
        c.init_pidfd = Some(unsafe { OwnedFd::from_raw_fd(dup_high(p.into_raw_fd(), min)?) });
    }
    c.extra = (0..n).map(|i| 3 + i).collect();
    close_all(c);
    Ok(())
}

pub(super) fn close_all(c: &Child) {
    close_all_but(c, &[]);
}

/// Closes every fd but the ones `c` needs and `also`.
pub(super) fn close_all_but(c: &Child, also: &[RawFd]) {
    let mut keep = c.extra.clone();
    keep.extend_from_slice(also);
    keep.push(c.sync);
    keep.extend(c.join.get());
    keep.extend(c.proc_mnt.get());
    keep.extend(c.init_pidfd.as_ref().map(|f| f.as_raw_fd()));
    close_fds_except(&keep);
}
