//! File descriptors: the ones a container process keeps (everything else is closed before it
//! runs anything of the container's, so no fd of the runtime reaches it), and the read-only
//! opens and identity checks the runtime makes on namespace files and directories.

use std::os::fd::{AsFd, OwnedFd, RawFd};
use std::path::Path;

use nix::errno::Errno;

/// Opens `path` read-only and close-on-exec (a namespace file, a directory to fchdir to).
pub(crate) fn open_ro(path: &Path) -> Result<OwnedFd, Errno> {
    nix::fcntl::open(
        path,
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
}

/// Both fds are the same file (device and inode): for namespace files, the same namespace.
pub(crate) fn same_file(a: impl AsFd, b: impl AsFd) -> bool {
    match (nix::sys::stat::fstat(a), nix::sys::stat::fstat(b)) {
        (Ok(x), Ok(y)) => x.st_dev == y.st_dev && x.st_ino == y.st_ino,
        _ => false,
    }
}

/// Closes every fd >= 3 except `keep`.
pub(crate) fn close_fds_except(keep: &[RawFd]) {
    let mut keep: Vec<u32> = keep
        .iter()
        .filter(|&&f| f >= 3)
        .map(|&f| f as u32)
        .collect();
    keep.sort_unstable();
    keep.dedup();
    let mut from: u32 = 3;
    for k in keep.iter().copied().chain(std::iter::once(u32::MAX)) {
        if k > from {
            let to = if k == u32::MAX { u32::MAX } else { k - 1 };
            // SAFETY: closing fds nobody else uses in this single-threaded process.
            let r = unsafe { libc::syscall(libc::SYS_close_range, from, to, 0) };
            if r != 0 {
                close_range_slow(from, to);
            }
        }
        from = k.saturating_add(1);
    }
}

fn close_range_slow(from: u32, to: u32) {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<u32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    for fd in fds {
        if fd >= from && fd <= to {
            // SAFETY: see close_fds_except.
            unsafe { libc::close(fd as i32) };
        }
    }
}
