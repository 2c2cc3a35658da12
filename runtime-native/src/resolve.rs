//! Opening paths under a directory with the kernel enforcing how they may resolve (openat2).
//! Used wherever a path comes from a place we do not trust: an image's rootfs, a container's
//! /proc.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

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
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: openat2 returned a new fd nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}
