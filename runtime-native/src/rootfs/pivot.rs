//! pivot_root into the container's rootfs and detaching the old root.

use std::path::Path;

use nix::errno::Errno;
use nix::mount::{umount2, MntFlags, MsFlags};

use super::mounts::change_mount_at;
use super::{StepError, R};
use crate::fds::open_ro;

/// `map_err` for a pivot step: `step("chdir to old root")`.
fn step(step: &'static str) -> impl FnOnce(Errno) -> StepError {
    move |source| StepError::Pivot { step, source }
}

pub(super) fn pivot_root(rootfs: &Path) -> R {
    let oldroot = open_ro(Path::new("/")).map_err(step("open /"))?;
    let newroot = open_ro(rootfs).map_err(|e| StepError::OpenRootfs {
        rootfs: rootfs.to_path_buf(),
        source: e.into(),
    })?;
    nix::unistd::fchdir(&newroot).map_err(step("chdir to rootfs"))?;
    // SAFETY: pivot_root(".", ".") with valid C strings.
    let r = unsafe { libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) };
    if r != 0 {
        return Err(StepError::PivotRoot {
            rootfs: rootfs.to_path_buf(),
            source: Errno::last(),
        });
    }
    nix::unistd::fchdir(&oldroot).map_err(step("chdir to old root"))?;
    change_mount_at(Path::new("."), MsFlags::MS_SLAVE | MsFlags::MS_REC)
        .map_err(step("make old root rslave"))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(step("unmount old root"))?;
    nix::unistd::chdir("/").map_err(step("chdir /"))?;
    Ok(())
}
