//! After pivot_root: the spec's masked paths (hidden behind /dev/null or an empty read-only
//! tmpfs) and read-only paths.

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use nix::mount::MsFlags;

use super::mounts::{do_mount, locked_flags};
use crate::child::{etext, ioerr, R};

pub(super) fn mask_path(p: &str) -> R {
    let meta = match fs::metadata(p) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("mask path {p}: {}", ioerr(&e))),
    };
    if meta.is_dir() {
        do_mount(
            Some("tmpfs"),
            Path::new(p),
            Some("tmpfs"),
            MsFlags::MS_RDONLY,
            None,
        )
        .map_err(|e| format!("mask path {p}: {}", etext(e)))
    } else {
        let null = fs::metadata("/dev/null")
            .map_err(|e| format!("mask path {p}: /dev/null: {}", ioerr(&e)))?;
        if !null.file_type().is_char_device() || null.rdev() != nix::sys::stat::makedev(1, 3) {
            return Err(format!(
                "mask path {p}: /dev/null in the container is not the null device"
            ));
        }
        do_mount(
            Some("/dev/null"),
            Path::new(p),
            None,
            MsFlags::MS_BIND,
            None,
        )
        .map_err(|e| format!("mask path {p}: {}", etext(e)))
    }
}

pub(super) fn readonly_path(p: &str) -> R {
    if fs::symlink_metadata(p).is_err() {
        return Ok(());
    }
    let path = Path::new(p);
    do_mount(
        Some(p),
        path,
        None,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None,
    )
    .map_err(|e| format!("make {p} read-only: {}", etext(e)))?;
    let flags = MsFlags::MS_BIND
        | MsFlags::MS_REMOUNT
        | MsFlags::MS_RDONLY
        | MsFlags::MS_REC
        | locked_flags(p);
    do_mount(None, path, None, flags, None).map_err(|e| format!("make {p} read-only: {}", etext(e)))
}
