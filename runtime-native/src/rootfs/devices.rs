//! Device nodes in the container's /dev: the default set on a tmpfs /dev, the spec's
//! `linux.devices`, and the standard links (fd, stdin..., ptmx). Every node is made with
//! `mknodat` in a directory fd from [`Root`] and then handled through its own fd, never by a
//! path a symlink could redirect.

use std::ffi::OsStr;
use std::fs;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

use super::error::DeviceError;
use super::inroot::{self, Root};
use super::mounts::bind_fd;
use super::{StepError, R};

const DEFAULT_DEVICES: [(&str, u64, u64); 6] = [
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

/// Opens `name` in `dir` without following it (O_PATH).
fn open_entry(dir: &OwnedFd, name: &OsStr) -> Result<OwnedFd, Errno> {
    nix::fcntl::openat(
        dir,
        name,
        OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

/// Makes the device node `name` in `dir` (`shown` is its path in the container, for errors),
/// or binds the host's node where mknod is not permitted. A node that is already there is
/// kept, as runc keeps it: a privileged spec lists every host device, `/dev/pts/ptmx` among
/// them, and that one is devpts's own (and cannot be removed). Returns the node's fd.
fn mknod_or_bind(
    dir: &OwnedFd,
    name: &OsStr,
    shown: &str,
    kind: libc::mode_t,
    mode: u32,
    major: u64,
    minor: u64,
) -> Result<OwnedFd, DeviceError> {
    let dev = nix::sys::stat::makedev(major, minor);
    let r = nix::sys::stat::mknodat(
        dir,
        name,
        nix::sys::stat::SFlag::from_bits_truncate(kind),
        Mode::from_bits_truncate(mode),
        dev,
    );
    match r {
        Ok(()) => {
            // What is there now must be the node just made (a racer could swap it).
            let fd = open_entry(dir, name).map_err(DeviceError::on("open new device", shown))?;
            let st =
                nix::sys::stat::fstat(&fd).map_err(DeviceError::on("stat new device", shown))?;
            if st.st_mode & libc::S_IFMT != kind || (kind != libc::S_IFIFO && st.st_rdev != dev) {
                return Err(DeviceError::NotTheNodeMade {
                    path: shown.into(),
                    kind: st.st_mode & libc::S_IFMT,
                    major: nix::sys::stat::major(st.st_rdev),
                    minor: nix::sys::stat::minor(st.st_rdev),
                });
            }
            Ok(fd)
        }
        Err(Errno::EEXIST) => open_entry(dir, name).map_err(DeviceError::on("open", shown)),
        Err(Errno::EPERM) if kind == libc::S_IFCHR || kind == libc::S_IFBLK => {
            // E.g. in a user namespace: bind the host's node instead, onto a new empty file.
            let host = find_host_device(kind, major, minor)
                .ok_or_else(|| DeviceError::NoHostNode { path: shown.into() })?;
            let target = nix::fcntl::openat(dir, name, inroot::NEW_FILE, Mode::empty())
                .map_err(DeviceError::on("create", shown))?;
            let src = nix::fcntl::open(&host, OFlag::O_PATH | OFlag::O_CLOEXEC, Mode::empty())
                .map_err(DeviceError::on("open", &host.to_string_lossy()))?;
            bind_fd(&src, &target, false).map_err(|source| DeviceError::BindHost {
                host: host.clone(),
                path: shown.into(),
                source,
            })?;
            Ok(target)
        }
        Err(e) => Err(DeviceError::on("mknod", shown)(e)),
    }
}

fn find_host_device(kind: libc::mode_t, major: u64, minor: u64) -> Option<PathBuf> {
    let rdev = nix::sys::stat::makedev(major, minor);
    for e in fs::read_dir("/dev").ok()?.flatten() {
        // Not through symlinks: /dev/stderr leads via /proc/self/fd/2 to whatever fd 2 is (a
        // /dev/null opened in the runtime's mount namespace, which a bind from this mount
        // namespace refuses with EINVAL).
        if let Ok(m) = fs::symlink_metadata(e.path()) {
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

fn open_dev(root: &Root) -> R<OwnedFd> {
    root.mkdir_all(Path::new("/dev"), 0o755)
        .map_err(StepError::OpenDev)
}

pub(super) fn default_devices(root: &Root) -> R {
    let dev = open_dev(root)?;
    for (name, major, minor) in DEFAULT_DEVICES {
        let shown = format!("/dev/{name}");
        mknod_or_bind(
            &dev,
            OsStr::new(name),
            &shown,
            libc::S_IFCHR,
            0o666,
            major,
            minor,
        )
        .map_err(|source| StepError::Device {
            path: shown,
            source,
        })?;
    }
    Ok(())
}

pub(super) fn dev_symlinks(root: &Root, devpts: bool) -> R {
    let dev = open_dev(root)?;
    let mut links = vec![
        ("/proc/self/fd", "fd"),
        ("/proc/self/fd/0", "stdin"),
        ("/proc/self/fd/1", "stdout"),
        ("/proc/self/fd/2", "stderr"),
    ];
    // As runc: /dev/core -> /proc/kcore wherever the kernel has one (the Debian kernel of the
    // cgroup v2 guest does; masked in an unprivileged container's /proc).
    if Path::new("/proc/kcore").exists() {
        links.push(("/proc/kcore", "core"));
    }
    if devpts {
        links.push(("pts/ptmx", "ptmx"));
    }
    for (src, name) in links {
        if devpts && name == "ptmx" {
            let _ = nix::unistd::unlinkat(&dev, name, nix::unistd::UnlinkatFlags::NoRemoveDir);
        }
        match nix::unistd::symlinkat(src, &dev, name) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(source) => return Err(StepError::DevSymlink { name, source }),
        }
    }
    Ok(())
}

pub(super) fn create_device(root: &Root, d: &oci_spec::runtime::LinuxDevice) -> R {
    use oci_spec::runtime::LinuxDeviceType as T;
    let path = d.path();
    if !path.starts_with("/dev") {
        return Err(StepError::DeviceNotUnderDev { path: path.clone() });
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
        T::A => return Err(StepError::DeviceTypeA { path: path.clone() }),
    };
    let parts = inroot::clean(path);
    let Some((name, parents)) = parts.split_last() else {
        return Err(StepError::DeviceNoName { path: path.clone() });
    };
    let parent: PathBuf = parents.iter().collect();
    let dir = root
        .mkdir_all(&parent, 0o755)
        .map_err(|source| StepError::DeviceDir {
            dir: parent.clone(),
            source,
        })?;
    let shown = path.display().to_string();
    let mode = d.file_mode().unwrap_or(0o666) & 0o7777;
    let node = mknod_or_bind(
        &dir,
        name,
        &shown,
        kind,
        mode,
        d.major() as u64,
        d.minor() as u64,
    )
    .map_err(|source| StepError::Device {
        path: shown.clone(),
        source,
    })?;
    let uid = d.uid().map(nix::unistd::Uid::from_raw);
    let gid = d.gid().map(nix::unistd::Gid::from_raw);
    if uid.is_some() || gid.is_some() {
        // Through the node's own fd, opened without following a link: an entry the image
        // already had is kept (mknod_or_bind), and a link would resolve against the host.
        nix::unistd::fchownat(
            &node,
            "",
            uid,
            gid,
            nix::fcntl::AtFlags::AT_EMPTY_PATH | nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(|source| StepError::DeviceChown {
            path: shown,
            source,
        })?;
    }
    Ok(())
}
