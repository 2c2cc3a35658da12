//! The spec's mounts inside the container's mount namespace, before pivot_root: binds,
//! filesystems, the runtime's procfs mount and the container's cgroupfs view. Every
//! destination is a file descriptor from [`Root`]; paths are used only for what the runtime
//! itself chose (host paths, `/` of the new mount namespace).

use std::fs;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::mount::{mount, MsFlags};
use nix::sys::stat::Mode;

use super::error::{MountError, MountStep};
use super::inroot::{Make, Root};
use super::StepError;
use super::{inroot, Container};
use crate::child::ioerr;
use crate::{mountopt, procfs};

/// A remount or propagation change of the mount at `target`, a path the runtime chose itself
/// (never one inside the rootfs: those go through [`change_mount`] on a file descriptor).
pub(super) fn change_mount_at(target: &Path, flags: MsFlags) -> std::result::Result<(), Errno> {
    mount(None::<&Path>, target, None::<&str>, flags, None::<&str>)
}

pub(super) fn mount_point_of(p: &Path) -> Option<PathBuf> {
    let p = fs::canonicalize(p).ok()?;
    mountopt::mount_points()
        .into_iter()
        .map(PathBuf::from)
        .filter(|m| p.starts_with(m))
        .max_by_key(|m| m.as_os_str().len())
}

/// The mount flags a bind remount must keep, from statvfs flags.
fn ms_flags(fl: nix::sys::statvfs::FsFlags) -> MsFlags {
    use nix::sys::statvfs::FsFlags;
    let mut f = MsFlags::empty();
    for (a, b) in [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ] {
        if fl.contains(a) {
            f |= b;
        }
    }
    f
}

/// nosuid/nodev/noexec/... of the mount at `p`, which a bind remount must keep.
pub(super) fn locked_flags(p: &str) -> MsFlags {
    nix::sys::statvfs::statvfs(p)
        .map(|st| ms_flags(st.flags()))
        .unwrap_or(MsFlags::empty())
}

/// mount(2) onto the file `target` holds (from [`Root`]), never onto a path that could have been
/// swapped since it was resolved. `src` is a path (a filesystem's source name, or a host path
/// the runtime chose).
pub(super) fn mount_on(
    src: Option<&Path>,
    target: &OwnedFd,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> io::Result<()> {
    let at = procfs::fd_path(target)?;
    mount(src, &at, fstype, flags, data).map_err(io::Error::from)
}

/// Binds the file `src` holds onto the file `target` holds (`MS_REC` with `recursive`).
pub(super) fn bind_fd(src: &OwnedFd, target: &OwnedFd, recursive: bool) -> io::Result<()> {
    let from = procfs::fd_path(src)?;
    let mut flags = MsFlags::MS_BIND;
    if recursive {
        flags |= MsFlags::MS_REC;
    }
    mount_on(Some(&from), target, None, flags, None)
}

/// A remount or propagation change of the mount `fd` is the root of (from [`Root::reopen`]).
pub(super) fn change_mount(fd: &OwnedFd, flags: MsFlags, data: Option<&str>) -> io::Result<()> {
    mount_on(None, fd, None, flags, data)
}

/// nosuid/nodev/noexec/... of the mount `fd` is on, which a bind remount must keep.
pub(super) fn locked_flags_fd(fd: &OwnedFd) -> MsFlags {
    nix::sys::statvfs::fstatvfs(fd)
        .map(|st| ms_flags(st.flags()))
        .unwrap_or(MsFlags::empty())
}

/// The data string for a filesystem mount with the spec's `linux.mountLabel` (SELinux
/// `context=`), added as runc adds it: to every mount but proc, sysfs, mqueue and cgroupfs.
pub(super) fn labelled(data: &str, typ: &str, label: Option<&str>) -> String {
    match label {
        Some(l)
            if !l.is_empty()
                && !matches!(typ, "proc" | "sysfs" | "mqueue" | "cgroup" | "cgroup2") =>
        {
            if data.is_empty() {
                format!("context=\"{l}\"")
            } else {
                format!("{data},context=\"{l}\"")
            }
        }
        _ => data.to_string(),
    }
}

pub(super) fn mount_one<C: Container>(
    c: &C,
    root: &Root,
    m: &oci_spec::runtime::Mount,
    mount_label: Option<&str>,
) -> Result<(), C::Error> {
    let dest = m.destination();
    if !dest.is_absolute() {
        let dest = dest.clone();
        return Err(StepError::from(MountError::NotAbsolute { dest }).into());
    }
    let typ = m.typ().clone().unwrap_or_else(|| "none".into());
    let src = m
        .source()
        .as_ref()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| typ.clone());
    let mut opts = mountopt::parse(&m.options().clone().unwrap_or_default());
    if typ == "bind" {
        opts.flags |= MsFlags::MS_BIND;
    }
    let on = Target {
        src: &src,
        dest,
        root,
    };
    if inroot::clean(dest).is_empty() {
        return Err(StepError::from(on.on_top()).into());
    }
    if typ == "cgroup" || typ == "cgroup2" {
        let self_cgroup = c.joined_cgroups()?;
        if let Err(e) = mount_cgroup(c, root, dest, &opts, &self_cgroup) {
            c.warn(format!(
                "mount {src} to {} skipped: {}",
                dest.display(),
                ioerr(&e)
            ));
        }
        return Ok(());
    }
    let proc_mount = (typ == "proc").then(|| c.take_proc_mount()).flatten();
    mount_fs(&on, &typ, &opts, mount_label, proc_mount)
        .map_err(|e| C::Error::from(StepError::from(e)))
}

/// A spec mount's source (as the spec has it) and destination, for its errors.
struct Target<'a> {
    src: &'a str,
    dest: &'a Path,
    root: &'a Root,
}

impl Target<'_> {
    /// `map_err` for a failed `step` of this mount.
    fn fail<E: Into<io::Error>>(&self, step: MountStep) -> impl FnOnce(E) -> MountError + '_ {
        move |e| MountError::Failed {
            src: self.src.to_string(),
            dest: self.dest.to_path_buf(),
            step,
            source: e.into(),
        }
    }

    fn on_top(&self) -> MountError {
        MountError::OnTop {
            src: self.src.to_string(),
            dest: self.dest.to_path_buf(),
        }
    }
}

/// Everything of a spec mount but a cgroup view: a bind, a filesystem, or the spawner's proc
/// mount (`proc_mount`, ours from here on) where the spec mounts proc.
fn mount_fs(
    on: &Target,
    typ: &str,
    opts: &mountopt::MountOptions,
    mount_label: Option<&str>,
    proc_mount: Option<std::os::fd::RawFd>,
) -> Result<(), MountError> {
    let root = on.root;
    let bind = opts.is_bind();
    // A bind's source is opened once: what decides file-or-directory is what gets bound.
    let src_fd = if bind {
        let fd = nix::fcntl::open(
            Path::new(on.src),
            OFlag::O_PATH | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(on.fail(MountStep::Mount))?;
        Some(fd)
    } else {
        None
    };
    let src_is_file = match &src_fd {
        Some(fd) => nix::sys::stat::fstat(fd)
            .map(|st| st.st_mode & libc::S_IFMT != libc::S_IFDIR)
            .unwrap_or(false),
        None => false,
    };
    let make = if src_is_file { Make::File } else { Make::Dir };
    let target = root
        .open_or_make(on.dest, make)
        .map_err(on.fail(MountStep::CreateMountPoint))?;
    if root.is_root(&target) {
        // E.g. through a symlink to `/`: a mount there would cover the whole rootfs.
        return Err(on.on_top());
    }
    let data = labelled(&opts.data, typ, mount_label);
    let data = (!data.is_empty()).then_some(data.as_str());
    let mut fresh: Option<OwnedFd> = None;
    if let Some(fd) = proc_mount {
        // Made (with these options) in our pid namespace by the spawner: our user namespace
        // may not mount that namespace's procfs itself.
        // SAFETY: the mount fd is ours from here on.
        let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        move_mount(&fd, &target).map_err(on.fail(MountStep::AttachProc))?;
    } else if let Some(src_fd) = &src_fd {
        bind_fd(src_fd, &target, opts.flags.contains(MsFlags::MS_REC))
            .map_err(on.fail(MountStep::Mount))?;
        let rf = opts.remount_flags();
        if !rf.is_empty() {
            let new = new_mount(&mut fresh, on, &target)?;
            let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | rf | locked_flags_fd(new);
            change_mount(new, flags, None).map_err(on.fail(MountStep::Remount))?;
        }
    } else {
        let r = mount_on(
            Some(Path::new(on.src)),
            &target,
            Some(typ),
            opts.flags,
            data,
        );
        match r {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EPERM) && typ == "sysfs" => {
                // No own network namespace: bind the host's /sys instead, as runc does.
                mount_on(
                    Some(Path::new("/sys")),
                    &target,
                    None,
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    None,
                )
                .map_err(on.fail(MountStep::Mount))?;
                let new = new_mount(&mut fresh, on, &target)?;
                let flags = MsFlags::MS_BIND
                    | MsFlags::MS_REMOUNT
                    | opts.remount_flags()
                    | locked_flags_fd(new);
                let _ = change_mount(new, flags, None);
            }
            Err(e) => return Err(on.fail(MountStep::Mount)(e)),
        }
    }
    if !opts.recursive.is_empty() {
        let new = new_mount(&mut fresh, on, &target)?;
        opts.recursive
            .apply(new)
            .map_err(|source| MountError::Recursive {
                src: on.src.to_string(),
                dest: on.dest.to_path_buf(),
                source,
            })?;
    }
    for p in &opts.propagation {
        let new = new_mount(&mut fresh, on, &target)?;
        change_mount(new, *p, None).map_err(on.fail(MountStep::SetPropagation))?;
    }
    Ok(())
}

/// The mount just made on `covered`, opened once, for the steps that act on it rather than on
/// what it covers (remount flags, propagation).
fn new_mount<'a>(
    slot: &'a mut Option<OwnedFd>,
    on: &Target,
    covered: &OwnedFd,
) -> Result<&'a OwnedFd, MountError> {
    if slot.is_none() {
        let fd = on.root.reopen(covered).map_err(on.fail(MountStep::Mount))?;
        *slot = Some(fd);
    }
    Ok(slot.as_ref().expect("set above"))
}

/// Attaches the detached mount `fd` onto the file `target` holds.
fn move_mount(fd: &OwnedFd, target: &OwnedFd) -> io::Result<()> {
    const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 4;
    const MOVE_MOUNT_T_EMPTY_PATH: libc::c_uint = 0x40;
    // SAFETY: two fds that stay open for the call and NUL-terminated empty paths.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            fd.as_raw_fd(),
            c"".as_ptr(),
            target.as_raw_fd(),
            c"".as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn cgroup2_host() -> bool {
    nix::sys::statfs::statfs("/sys/fs/cgroup")
        .map(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
        .unwrap_or(false)
}

/// The container's view of its cgroups at `dest`: cgroup2 on a v2 host; on v1 a tmpfs with
/// the container's own directory of every hierarchy bound in. Inside that fresh tmpfs (ours
/// alone) names are used through its fd.
fn mount_cgroup(
    c: &impl Container,
    root: &Root,
    dest: &Path,
    opts: &mountopt::MountOptions,
    self_cgroup: &str,
) -> io::Result<()> {
    let target = root.mkdir_all(dest, 0o755)?;
    let flags = opts.flags & !(MsFlags::MS_BIND | MsFlags::MS_REC);
    if cgroup2_host() {
        return mount_on(
            Some(Path::new("cgroup2")),
            &target,
            Some("cgroup2"),
            flags,
            None,
        );
    }
    mount_on(
        Some(Path::new("tmpfs")),
        &target,
        Some("tmpfs"),
        flags & !MsFlags::MS_RDONLY,
        Some("mode=755"),
    )?;
    let tmpfs = root.reopen(&target)?;
    for line in self_cgroup.lines() {
        let mut it = line.splitn(3, ':');
        let (_, ctrls, path) = match (it.next(), it.next(), it.next()) {
            (Some(a), Some(b), Some(c)) => (a, b, c),
            _ => continue,
        };
        if ctrls.is_empty() {
            continue;
        }
        let name = ctrls.strip_prefix("name=").unwrap_or(ctrls);
        let host = Path::new("/sys/fs/cgroup").join(name);
        if !host.is_dir() {
            continue;
        }
        let src = host.join(path.trim_start_matches('/'));
        let in_tmpfs = |flags: OFlag| {
            nix::fcntl::openat(
                &tmpfs,
                name,
                flags | OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
        };
        let dst = match nix::sys::stat::mkdirat(&tmpfs, name, Mode::from_bits_truncate(0o755)) {
            Ok(()) | Err(Errno::EEXIST) => match in_tmpfs(OFlag::O_DIRECTORY) {
                Ok(fd) => fd,
                Err(_) => continue,
            },
            Err(_) => continue,
        };
        if let Err(e) = mount_on(Some(&src), &dst, None, MsFlags::MS_BIND, None) {
            c.warn(format!("bind cgroup {}: {}", src.display(), ioerr(&e)));
            continue;
        }
        // The bind mount now on `name` (the fresh tmpfs is ours alone: the name is stable).
        if let Ok(bound) = in_tmpfs(OFlag::O_DIRECTORY) {
            let rf = flags | MsFlags::MS_BIND | MsFlags::MS_REMOUNT;
            let _ = change_mount(&bound, rf, None);
        }
        if name.contains(',') {
            for part in name.split(',') {
                let _ = nix::unistd::symlinkat(name, &tmpfs, part);
            }
        }
    }
    if flags.contains(MsFlags::MS_RDONLY) {
        let _ = change_mount(&tmpfs, MsFlags::MS_REMOUNT | flags, Some("mode=755"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_label_as_runc_adds_it() {
        let l = Some("system_u:object_r:container_file_t:s0");
        assert_eq!(
            labelled("mode=755", "tmpfs", l),
            "mode=755,context=\"system_u:object_r:container_file_t:s0\""
        );
        assert_eq!(
            labelled("", "devpts", l),
            "context=\"system_u:object_r:container_file_t:s0\""
        );
        for typ in ["proc", "sysfs", "mqueue", "cgroup", "cgroup2"] {
            assert_eq!(labelled("x=1", typ, l), "x=1", "{typ}");
        }
        assert_eq!(labelled("mode=755", "tmpfs", None), "mode=755");
        assert_eq!(labelled("mode=755", "tmpfs", Some("")), "mode=755");
    }
}
