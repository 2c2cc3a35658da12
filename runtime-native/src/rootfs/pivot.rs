//! pivot_root into the container's rootfs and detaching the old root.

use std::path::Path;

use nix::errno::Errno;
use nix::mount::{umount2, MntFlags, MsFlags};

use super::mounts::change_mount_at;
use crate::child::{etext, ioerr, R};
use crate::fds::open_ro;

pub(super) fn pivot_root(rootfs: &Path) -> R {
    let oldroot = open_ro(Path::new("/")).map_err(|e| format!("open /: {}", etext(e)))?;
    let newroot =
        open_ro(rootfs).map_err(|e| format!("open rootfs {}: {}", rootfs.display(), etext(e)))?;
    nix::unistd::fchdir(&newroot).map_err(|e| format!("chdir to rootfs: {}", etext(e)))?;
    // SAFETY: pivot_root(".", ".") with valid C strings.
    let r = unsafe { libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) };
    if r != 0 {
        return Err(format!(
            "pivot_root to {}: {}",
            rootfs.display(),
            etext(Errno::last())
        ));
    }
    nix::unistd::fchdir(&oldroot).map_err(|e| format!("chdir to old root: {}", etext(e)))?;
    change_mount_at(Path::new("."), MsFlags::MS_SLAVE | MsFlags::MS_REC)
        .map_err(|e| format!("make old root rslave: {}", etext(e)))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(|e| format!("unmount old root: {}", etext(e)))?;
    std::env::set_current_dir("/").map_err(|e| format!("chdir /: {}", ioerr(&e)))?;
    Ok(())
}
