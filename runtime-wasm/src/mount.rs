//! Detached mounts: `open_tree(OPEN_TREE_CLONE)` and `mount_setattr(2)`.
//!
//! A detached mount is a copy of one mount (without its submounts, unless asked) that has no
//! place in any mount namespace: only its file descriptor reaches it, and what is opened through
//! it carries the copy's own flags. Both uses in this crate rest on that:
//! * the node cache hands artifacts to containers opened through a read-only copy of the cache
//!   directory, so no reopen of such a file (`/proc/<pid>/fd/N`) can be for writing
//!   (`cache::dir`);
//! * a guest's directories are copies of the container's root and data mounts, so procfs,
//!   sysfs, devpts and the other kernel filesystems mounted below them are not there
//!   (`crate::view`).
//!
//! Needs Linux 5.12 (`mount_setattr`) and CAP_SYS_ADMIN over the caller's mount namespace.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

const OPEN_TREE_CLONE: libc::c_uint = 1;
pub(crate) const MOUNT_ATTR_RDONLY: u64 = 0x1;
pub(crate) const MOUNT_ATTR_NOSUID: u64 = 0x2;
pub(crate) const MOUNT_ATTR_NODEV: u64 = 0x4;

/// `struct mount_attr` of `<linux/mount.h>` (MOUNT_ATTR_SIZE_VER0).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// A detached copy of the mount (or, for a directory inside a mount, a bind of that directory)
/// at `dir`, without any of its submounts.
pub(crate) fn clone_mount(dir: BorrowedFd) -> io::Result<OwnedFd> {
    // SAFETY: a valid fd, an empty NUL-terminated path, plain flags.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            dir.as_raw_fd(),
            c"".as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint | libc::AT_EMPTY_PATH as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: open_tree returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Sets `attrs` (`MOUNT_ATTR_*`) on the detached mount `mnt`.
pub(crate) fn set_attrs(mnt: BorrowedFd, attrs: u64) -> io::Result<()> {
    let attr = MountAttr {
        attr_set: attrs,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: a valid fd, an empty NUL-terminated path and a sized mount_attr.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            mnt.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH as libc::c_uint,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `fstatfs(2)` of `fd`: the filesystem type (`f_type`).
pub(crate) fn fs_type(fd: BorrowedFd) -> io::Result<i64> {
    // SAFETY: statfs is plain data; zero is a valid value.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid fd and a properly sized out buffer.
    if unsafe { libc::fstatfs(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st.f_type as i64)
}
