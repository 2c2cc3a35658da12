//! The spec's mounts inside the container's mount namespace, before pivot_root: binds,
//! filesystems, the runtime's procfs mount and the container's cgroupfs view.

use std::fs;
use std::os::fd::RawFd;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{mount, MsFlags};

use super::Container;
use crate::child::{etext, ioerr, R};
use crate::mountopt;

pub(super) fn do_mount(
    src: Option<&str>,
    target: &Path,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> std::result::Result<(), Errno> {
    mount(src, target, fstype, flags, data)
}

/// Joins `unsafe_path` onto `root`, resolving symlinks as if `root` were `/`, so the result
/// never points outside `root`.
pub(crate) fn secure_join(root: &Path, unsafe_path: &Path) -> PathBuf {
    let mut parts: Vec<std::ffi::OsString> = Vec::new();
    let mut todo: std::collections::VecDeque<std::ffi::OsString> = unsafe_path
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect();
    let mut links = 0;
    while let Some(c) = todo.pop_front() {
        if c == ".." {
            parts.pop();
            continue;
        }
        let mut cand = root.to_path_buf();
        cand.extend(&parts);
        cand.push(&c);
        match fs::symlink_metadata(&cand) {
            Ok(m) if m.file_type().is_symlink() && links < 255 => {
                links += 1;
                let Ok(target) = fs::read_link(&cand) else {
                    parts.push(c);
                    continue;
                };
                if target.is_absolute() {
                    parts.clear();
                }
                let mut new: std::collections::VecDeque<std::ffi::OsString> = target
                    .components()
                    .filter_map(|c| match c {
                        Component::Normal(n) => Some(n.to_os_string()),
                        Component::ParentDir => Some("..".into()),
                        _ => None,
                    })
                    .collect();
                new.extend(todo.drain(..));
                todo = new;
            }
            _ => parts.push(c),
        }
    }
    let mut out = root.to_path_buf();
    out.extend(&parts);
    out
}

pub(super) fn mkdir_all(p: &Path) -> std::io::Result<()> {
    fs::DirBuilder::new().recursive(true).mode(0o755).create(p)
}

pub(super) fn mount_point_of(p: &Path) -> Option<PathBuf> {
    let p = fs::canonicalize(p).ok()?;
    mountopt::mount_points()
        .into_iter()
        .map(PathBuf::from)
        .filter(|m| p.starts_with(m) && *m != p)
        .max_by_key(|m| m.as_os_str().len())
}

/// nosuid/nodev/noexec/... of the mount at `p`, which a bind remount must keep.
pub(super) fn locked_flags(p: &str) -> MsFlags {
    let mut f = MsFlags::empty();
    if let Ok(st) = nix::sys::statvfs::statvfs(p) {
        use nix::sys::statvfs::FsFlags;
        let fl = st.flags();
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
    }
    f
}

pub(super) fn mount_one(c: &impl Container, rootfs: &Path, m: &oci_spec::runtime::Mount) -> R {
    let dest = m.destination();
    if !dest.is_absolute() {
        return Err(format!(
            "mount destination {} is not an absolute path",
            dest.display()
        ));
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
    let bind = opts.is_bind();
    let target = secure_join(rootfs, dest);
    let what = format!("mount {src} to {}", dest.display());
    if typ == "cgroup" || typ == "cgroup2" {
        let self_cgroup = c.joined_cgroups()?;
        if let Err(e) = mount_cgroup(c, &target, &opts, &self_cgroup) {
            c.warn(format!("{what} skipped: {e}"));
        }
        return Ok(());
    }
    let src_is_file = bind && fs::metadata(&src).map(|m| !m.is_dir()).unwrap_or(false);
    if src_is_file {
        if let Some(parent) = target.parent() {
            mkdir_all(parent)
                .map_err(|e| format!("{what}: create {}: {}", parent.display(), ioerr(&e)))?;
        }
        if fs::symlink_metadata(&target).is_err() {
            fs::File::create(&target)
                .map_err(|e| format!("{what}: create {}: {}", target.display(), ioerr(&e)))?;
        }
    } else {
        mkdir_all(&target)
            .map_err(|e| format!("{what}: create {}: {}", target.display(), ioerr(&e)))?;
    }
    let data = (!opts.data.is_empty()).then_some(opts.data.as_str());
    if let Some(fd) = (typ == "proc").then(|| c.take_proc_mount()).flatten() {
        // Made (with these options) in our pid namespace by the spawner: our user namespace
        // may not mount that namespace's procfs itself.
        let r = move_mount(fd, &target);
        // SAFETY: closing the mount fd we own; the mount stays attached.
        unsafe { libc::close(fd) };
        r.map_err(|e| format!("{what}: attach the runtime's proc mount: {}", etext(e)))?;
    } else if bind {
        do_mount(
            Some(&src),
            &target,
            None,
            opts.flags & (MsFlags::MS_BIND | MsFlags::MS_REC),
            None,
        )
        .map_err(|e| format!("{what}: {}", etext(e)))?;
        let rf = opts.remount_flags();
        if !rf.is_empty() {
            let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | rf | locked_flags_path(&target);
            do_mount(None, &target, None, flags, None)
                .map_err(|e| format!("{what}: remount: {}", etext(e)))?;
        }
    } else {
        let r = do_mount(Some(&src), &target, Some(&typ), opts.flags, data);
        match r {
            Ok(()) => {}
            Err(Errno::EPERM) if typ == "sysfs" => {
                // No own network namespace: bind the host's /sys instead, as runc does.
                do_mount(
                    Some("/sys"),
                    &target,
                    None,
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    None,
                )
                .map_err(|e| format!("{what}: {}", etext(e)))?;
                let flags = MsFlags::MS_BIND
                    | MsFlags::MS_REMOUNT
                    | opts.remount_flags()
                    | locked_flags_path(&target);
                let _ = do_mount(None, &target, None, flags, None);
            }
            Err(e) => return Err(format!("{what}: {}", etext(e))),
        }
    }
    for p in &opts.propagation {
        do_mount(None, &target, None, *p, None)
            .map_err(|e| format!("{what}: set propagation: {}", etext(e)))?;
    }
    Ok(())
}

/// Attaches the detached mount `fd` at `target`.
fn move_mount(fd: RawFd, target: &Path) -> std::result::Result<(), Errno> {
    const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 4;
    let t =
        std::ffi::CString::new(target.as_os_str().as_encoded_bytes()).map_err(|_| Errno::EINVAL)?;
    // SAFETY: NUL-terminated strings that outlive the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            fd,
            c"".as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if r < 0 {
        return Err(Errno::last());
    }
    Ok(())
}

fn locked_flags_path(p: &Path) -> MsFlags {
    p.to_str().map(locked_flags).unwrap_or(MsFlags::empty())
}

fn cgroup2_host() -> bool {
    nix::sys::statfs::statfs("/sys/fs/cgroup")
        .map(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
        .unwrap_or(false)
}

/// The container's view of its cgroups at `target`: cgroup2 on a v2 host; on v1 a tmpfs with
/// the container's own directory of every hierarchy bound in.
fn mount_cgroup(
    c: &impl Container,
    target: &Path,
    opts: &mountopt::MountOptions,
    self_cgroup: &str,
) -> R {
    mkdir_all(target).map_err(|e| ioerr(&e))?;
    let flags = opts.flags & !(MsFlags::MS_BIND | MsFlags::MS_REC);
    if cgroup2_host() {
        return do_mount(Some("cgroup2"), target, Some("cgroup2"), flags, None).map_err(etext);
    }
    do_mount(
        Some("tmpfs"),
        target,
        Some("tmpfs"),
        flags & !MsFlags::MS_RDONLY,
        Some("mode=755"),
    )
    .map_err(etext)?;
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
        let dst = target.join(name);
        if mkdir_all(&dst).is_err() {
            continue;
        }
        if let Err(e) = do_mount(src.to_str(), &dst, None, MsFlags::MS_BIND, None) {
            c.warn(format!("bind cgroup {}: {}", src.display(), etext(e)));
            continue;
        }
        let rf = flags | MsFlags::MS_BIND | MsFlags::MS_REMOUNT;
        let _ = do_mount(None, &dst, None, rf, None);
        if name.contains(',') {
            for part in name.split(',') {
                let _ = std::os::unix::fs::symlink(name, target.join(part));
            }
        }
    }
    if flags.contains(MsFlags::MS_RDONLY) {
        let _ = do_mount(
            None,
            target,
            None,
            MsFlags::MS_REMOUNT | flags,
            Some("mode=755"),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secure_join_stays_inside() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        fs::create_dir_all(root.join("a/b")).unwrap();
        std::os::unix::fs::symlink("/etc", root.join("a/abs")).unwrap();
        std::os::unix::fs::symlink("../../../..", root.join("a/b/up")).unwrap();
        assert_eq!(secure_join(root, Path::new("/a/abs/x")), root.join("etc/x"));
        assert_eq!(secure_join(root, Path::new("/a/b/up/y")), root.join("y"));
        assert_eq!(secure_join(root, Path::new("/../../z")), root.join("z"));
        assert_eq!(secure_join(root, Path::new("/a/b")), root.join("a/b"));
    }
}
