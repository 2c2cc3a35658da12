//! The fds a container process keeps: everything else is closed before it runs anything of
//! the container's, so no fd of the runtime reaches it.

use std::os::fd::RawFd;

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
