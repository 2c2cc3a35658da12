//! Device nodes in the container's /dev: the default set on a tmpfs /dev, the spec's
//! `linux.devices`, and the standard links (fd, stdin..., ptmx).

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::MsFlags;

use super::mounts::{do_mount, mkdir_all, secure_join};
use crate::child::{etext, ioerr, R};

const DEFAULT_DEVICES: [(&str, u64, u64); 6] = [
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

/// Creates the device node `target`, or binds the host's node where mknod is not permitted.
/// A node that is already there is kept, as runc keeps it: a privileged spec lists every host
/// device, `/dev/pts/ptmx` among them, and that one is devpts's own (and cannot be removed).
fn mknod_or_bind(target: &Path, kind: libc::mode_t, mode: u32, major: u64, minor: u64) -> R {
    let r = nix::sys::stat::mknod(
        target,
        nix::sys::stat::SFlag::from_bits_truncate(kind),
        nix::sys::stat::Mode::from_bits_truncate(mode),
        nix::sys::stat::makedev(major, minor),
    );
    match r {
        Ok(()) | Err(Errno::EEXIST) => Ok(()),
        Err(Errno::EPERM) if kind == libc::S_IFCHR || kind == libc::S_IFBLK => {
            // E.g. in a user namespace: bind the host's node instead.
            let host = find_host_device(kind, major, minor)
                .ok_or_else(|| format!("mknod {}: operation not permitted", target.display()))?;
            fs::File::create(target)
                .map_err(|e| format!("create {}: {}", target.display(), ioerr(&e)))?;
            do_mount(host.to_str(), target, None, MsFlags::MS_BIND, None).map_err(|e| {
                format!(
                    "bind {} to {}: {}",
                    host.display(),
                    target.display(),
                    etext(e)
                )
            })
        }
        Err(e) => Err(format!("mknod {}: {}", target.display(), etext(e))),
    }
}

fn find_host_device(kind: libc::mode_t, major: u64, minor: u64) -> Option<PathBuf> {
    let rdev = nix::sys::stat::makedev(major, minor);
    for e in fs::read_dir("/dev").ok()?.flatten() {
        if let Ok(m) = fs::metadata(e.path()) {
            let ft = m.file_type();
            let ok = if kind == libc::S_IFCHR {
                ft.is_char_device()
            } else {
                ft.is_block_device()
            };
            if ok && m.rdev() == rdev {
                return Some(e.path());
            }
        }
    }
    None
}

pub(super) fn default_devices(rootfs: &Path) -> R {
    let dev = secure_join(rootfs, Path::new("/dev"));
    for (name, major, minor) in DEFAULT_DEVICES {
        mknod_or_bind(&dev.join(name), libc::S_IFCHR, 0o666, major, minor)
            .map_err(|e| format!("create device /dev/{name}: {e}"))?;
    }
    Ok(())
}

pub(super) fn dev_symlinks(rootfs: &Path, devpts: bool) -> R {
    let dev = secure_join(rootfs, Path::new("/dev"));
    let mut links = vec![
        ("/proc/self/fd", "fd"),
        ("/proc/self/fd/0", "stdin"),
        ("/proc/self/fd/1", "stdout"),
        ("/proc/self/fd/2", "stderr"),
    ];
    if devpts {
        links.push(("pts/ptmx", "ptmx"));
    }
    for (src, name) in links {
        let dst = dev.join(name);
        if devpts && name == "ptmx" {
            let _ = fs::remove_file(&dst);
        }
        match std::os::unix::fs::symlink(src, &dst) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(format!("symlink /dev/{name}: {}", ioerr(&e))),
        }
    }
    Ok(())
}

pub(super) fn create_device(rootfs: &Path, d: &oci_spec::runtime::LinuxDevice) -> R {
    use oci_spec::runtime::LinuxDeviceType as T;
    let path = d.path();
    if !path.starts_with("/dev") {
        return Err(format!("device {} is not under /dev", path.display()));
    }
    if path == Path::new("/dev/ptmx") {
        // The container's /dev/ptmx is the link to its own devpts instance (dev_symlinks). A
        // node 5:2 here would allocate terminals in the host's devpts, so it is never made.
        return Ok(());
    }
    let kind = match d.typ() {
        T::C | T::U => libc::S_IFCHR,
        T::B => libc::S_IFBLK,
        T::P => libc::S_IFIFO,
        T::A => {
            return Err(format!(
                "device {}: type \"a\" is not a device",
                path.display()
            ))
        }
    };
    let target = secure_join(rootfs, path);
    if let Some(parent) = target.parent() {
        mkdir_all(parent).map_err(|e| format!("create {}: {}", parent.display(), ioerr(&e)))?;
    }
    let mode = d.file_mode().unwrap_or(0o666) & 0o7777;
    mknod_or_bind(&target, kind, mode, d.major() as u64, d.minor() as u64)
        .map_err(|e| format!("create device {}: {e}", path.display()))?;
    let uid = d.uid().map(nix::unistd::Uid::from_raw);
    let gid = d.gid().map(nix::unistd::Gid::from_raw);
    if uid.is_some() || gid.is_some() {
        // Never through a link: an entry the image already had is kept (mknod_or_bind), and
        // this runs before pivot_root, where a link would resolve against the host's root.
        nix::unistd::fchownat(
            nix::fcntl::AT_FDCWD,
            &target,
            uid,
            gid,
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(|e| format!("chown device {}: {}", path.display(), etext(e)))?;
    }
    Ok(())
}
