//! Opening paths under a directory with the kernel enforcing how they may resolve (openat2).
//! Used wherever a path comes from a place we do not trust: an image's rootfs, a container's
//! /proc.

use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

/// `openat2(2)`: opens `rel` relative to `dir` with `flags` (O_CLOEXEC is always added) under
/// the `resolve` restrictions (`libc::RESOLVE_*`).
pub fn openat2(
    dir: &impl AsRawFd,
    rel: &str,
    flags: i32,
    resolve: u64,
) -> std::io::Result<OwnedFd> {
    let path = std::ffi::CString::new(rel).map_err(std::io::Error::other)?;
    // SAFETY: open_how is plain data; all-zero is its documented default.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    how.resolve = resolve;
    // A scoped lookup (RESOLVE_IN_ROOT / RESOLVE_BENEATH) that walks `..` fails with EAGAIN
    // when any rename or mount anywhere on the host raced with it: the kernel cannot then
    // prove the `..` stayed inside, and openat2(2) tells the caller to retry. On a node that
    // starts containers in parallel mounts happen all the time (CI saw `/sbin/ip`, a
    // `../bin/busybox` link, fail so), so we retry a bounded number of times and then say why.
    for attempt in 0..OPENAT2_RETRIES {
        // SAFETY: a valid dirfd, a NUL-terminated path and a sized open_how.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dir.as_raw_fd(),
                path.as_ptr(),
                &how as *const libc::open_how,
                std::mem::size_of::<libc::open_how>(),
            )
        };
        if fd >= 0 {
            // SAFETY: openat2 returned a new fd nothing else owns.
            return Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) });
        }
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EAGAIN) || resolve & SCOPED == 0 {
            return Err(err);
        }
        if attempt % 8 == 7 {
            std::thread::yield_now();
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::WouldBlock,
        format!(
            "{rel}: the lookup raced with renames or mounts on the host {OPENAT2_RETRIES} times \
             in a row (openat2 EAGAIN)"
        ),
    ))
}

/// The resolve flags under which openat2 may fail with a retryable EAGAIN.
const SCOPED: u64 = libc::RESOLVE_IN_ROOT | libc::RESOLVE_BENEATH;
/// How many EAGAINs in a row we take before giving up: each retry is one cheap lookup, and a
/// real host settles in a few; only a tight rename loop could keep it failing.
const OPENAT2_RETRIES: u32 = 256;

/// Opens the inode an `O_PATH` fd holds for real I/O with `flags` (O_CLOEXEC is always
/// added), through `/proc/<self>/fd/<fd>` of the verified procfs (`crate::procfs`).
///
/// Why this way: an `O_PATH` fd cannot be read, and there is no "reopen this fd" syscall —
/// `openat2(fd, "", ...)` is ENOENT (openat2 has no AT_EMPTY_PATH). The procfs fd entry is a
/// magic link to the very inode the fd holds, not to a path, so following it cannot be
/// redirected by a rename or a symlink swapped in after the first lookup. The magic link must
/// be followed, so only the last step is a plain `openat`: `/proc` is checked to be procfs, the
/// `<pid>/fd` directory is opened beneath it with no symlinks and no mount crossings and checked
/// to be on procfs, and the opened file is checked to be the same inode as `fd` (so a mount
/// over `/proc/<pid>/fd` could not hand us another file).
pub fn reopen(fd: &impl AsFd, flags: i32) -> std::io::Result<std::fs::File> {
    let proc_dir = crate::procfs::proc_dir()?;
    // This procfs's name for us (not getpid(): see procfs::write).
    let me = nix::fcntl::readlinkat(&proc_dir, "self").map_err(std::io::Error::from)?;
    let fd_dir_name = format!("{}/fd", me.to_string_lossy());
    let resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_XDEV;
    let fd_dir = openat2(
        &proc_dir,
        &fd_dir_name,
        libc::O_PATH | libc::O_DIRECTORY,
        resolve,
    )?;
    if !crate::procfs::on_procfs(&fd_dir)? {
        return Err(crate::procfs::not_proc(&format!("/proc/{fd_dir_name}")));
    }
    let flags = nix::fcntl::OFlag::from_bits_truncate(flags | libc::O_CLOEXEC);
    let reopened = nix::fcntl::openat(
        &fd_dir,
        fd.as_fd().as_raw_fd().to_string().as_str(),
        flags,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(std::io::Error::from)?;
    if !crate::fds::same_file(fd, &reopened) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!(
                "/proc/{fd_dir_name}/{}: reopened another file",
                fd.as_fd().as_raw_fd()
            ),
        ));
    }
    Ok(std::fs::File::from(reopened))
}
