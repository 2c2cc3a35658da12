//! Mounting the rootfs containerd prepared (`CreateTaskRequest.rootfs`, usually one overlay
//! mount from the snapshotter) on `bundle/rootfs`, in the caller's mount namespace, and
//! unmounting it again on delete. A user-namespaced pod's layers are idmapped (`uidmap=`,
//! `gidmap=`: see `idmap.rs`), so the image's files keep their owners inside the pod.

use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use serde::{Deserialize, Serialize};

use crate::idmap::{self, IdmapOptions, IdmappedLowers};
use crate::mountopt;
use crate::{Error, PathIoError, Result};

/// One mount as containerd describes it (`containerd.types.Mount`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MountSpec {
    pub kind: String,
    pub source: String,
    pub target: String,
    pub options: Vec<String>,
}

fn sys(syscall: String) -> impl FnOnce(Errno) -> Error {
    move |source| Error::Sys { syscall, source }
}

/// The mount point `target` inside `rootfs`, made if missing, as the kernel resolves it there
/// (symlinks of the image stay inside). No container runs on this rootfs yet, so nothing can
/// swap the path before the mount below uses it.
fn in_rootfs(rootfs: &Path, target: &str) -> Result<PathBuf> {
    let err = |source| {
        let path = rootfs.join(target.trim_start_matches('/'));
        Error::from(PathIoError::on("resolve mount point", path)(source))
    };
    let root = super::inroot::Root::open(rootfs).map_err(err)?;
    let fd = root.mkdir_all(Path::new(target), 0o755).map_err(err)?;
    let at = crate::procfs::fd_path(&fd).map_err(err)?;
    std::fs::read_link(at).map_err(err)
}

fn mount_one(m: &MountSpec, rootfs: &Path) -> Result<PathBuf> {
    let target = if m.target.is_empty() {
        rootfs.to_path_buf()
    } else {
        in_rootfs(rootfs, &m.target)?
    };
    // A user-namespaced pod's layers come with `uidmap=`/`gidmap=` (idmap.rs), which no
    // filesystem takes: an overlay gets idmapped lower layers, a bind is idmapped in place.
    let (idmap, options) = IdmapOptions::take(&m.options).map_err(|source| Error::Idmap {
        what: format!("mount {} {} on {}", m.kind, m.source, target.display()),
        source,
    })?;
    let staged = match &idmap {
        Some(map) if m.kind == "overlay" => {
            let staging = rootfs.with_extension("idmapped-layers");
            Some(
                IdmappedLowers::stage(map, &options, &staging).map_err(|source| Error::Idmap {
                    what: format!("mount overlay on {}", target.display()),
                    source,
                })?,
            )
        }
        _ => None,
    };
    let options = staged.as_ref().map_or(options, |s| s.options.clone());
    let mut opts = mountopt::parse(&options);
    if m.kind == "bind" || m.kind == "rbind" {
        opts.flags |= MsFlags::MS_BIND;
        if m.kind == "rbind" {
            opts.flags |= MsFlags::MS_REC;
        }
    }
    let what = format!(
        "mount {} {} on {} ({})",
        m.kind,
        m.source,
        target.display(),
        m.options.join(",")
    );
    std::fs::create_dir_all(&target).map_err(PathIoError::on("create mount point", &target))?;
    let data = (!opts.data.is_empty()).then_some(opts.data.as_str());
    if opts.is_bind() {
        mount(
            Some(m.source.as_str()),
            &target,
            None::<&str>,
            opts.flags & (MsFlags::MS_BIND | MsFlags::MS_REC),
            None::<&str>,
        )
        .map_err(sys(what.clone()))?;
        let rf = opts.remount_flags();
        if !rf.is_empty() {
            if let Err(e) = mount(
                None::<&str>,
                &target,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | rf,
                None::<&str>,
            ) {
                let _ = umount2(&target, MntFlags::MNT_DETACH);
                return Err(sys(format!("{what}: remount"))(e));
            }
        }
    } else {
        let fstype = if m.kind.is_empty() { "none" } else { &m.kind };
        mount(
            Some(m.source.as_str()),
            &target,
            Some(fstype),
            opts.flags,
            data,
        )
        .map_err(sys(what.clone()))?;
    }
    drop(staged);
    if let (Some(map), true) = (&idmap, opts.is_bind()) {
        if let Err(source) = idmap::idmap_in_place(map, &target) {
            let _ = umount2(&target, MntFlags::MNT_DETACH);
            return Err(Error::Idmap { what, source });
        }
    }
    for p in &opts.propagation {
        if let Err(e) = mount(None::<&str>, &target, None::<&str>, *p, None::<&str>) {
            let _ = umount2(&target, MntFlags::MNT_DETACH);
            return Err(sys(format!("{what}: set propagation"))(e));
        }
    }
    Ok(target)
}

/// Mounts `mounts` on `rootfs` in order. On failure, unmounts what it mounted.
pub fn mount_all(mounts: &[MountSpec], rootfs: &Path) -> Result<()> {
    let mut done: Vec<PathBuf> = Vec::new();
    for m in mounts {
        match mount_one(m, rootfs) {
            Ok(t) => done.push(t),
            Err(e) => {
                for t in done.iter().rev() {
                    if umount2(t, MntFlags::empty()).is_err() {
                        let _ = umount2(t, MntFlags::MNT_DETACH);
                    }
                }
                return Err(e);
            }
        }
    }
    Ok(())
}

/// Mount points at or under `root`, deepest (latest) first.
fn mounts_under(root: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = mountopt::mount_points()
        .into_iter()
        .map(PathBuf::from)
        .filter(|m| m.starts_with(root))
        .collect();
    v.reverse();
    v
}

/// Unmounts everything at or under `rootfs` (lazily if busy). Missing or unmounted is success.
pub fn unmount_all(rootfs: &Path) -> Result<()> {
    let root = match std::fs::canonicalize(rootfs) {
        Ok(p) => p,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(PathIoError::on("resolve", rootfs)(e).into()),
    };
    for _ in 0..64 {
        let list = mounts_under(&root);
        if list.is_empty() {
            return Ok(());
        }
        for m in list {
            match umount2(&m, MntFlags::empty()) {
                Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => {}
                Err(Errno::EBUSY) => {
                    umount2(&m, MntFlags::MNT_DETACH)
                        .map_err(sys(format!("umount {}", m.display())))?;
                }
                Err(e) => return Err(sys(format!("umount {}", m.display()))(e)),
            }
        }
    }
    Err(Error::Sys {
        syscall: format!("umount {}: still mounted", root.display()),
        source: Errno::EBUSY,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unmount_missing_is_ok() {
        unmount_all(Path::new("/nonexistent/amphi/rootfs")).unwrap();
        let d = tempfile::tempdir().unwrap();
        unmount_all(d.path()).unwrap();
    }
}
