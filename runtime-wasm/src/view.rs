//! The directories a guest sees: its image's root and the spec's data mounts, and nothing of
//! the kernel filesystems the runtime mounted for the container process itself.
//!
//! The runner *is* the container process, so preopening its `/` would hand the guest `/proc`
//! (`/proc/self/mem` is the runner's memory, read-write), `/sys`, `/dev`, mqueue and cgroupfs.
//! Instead, while the process still has its privileges (after its mounts, before capabilities
//! and seccomp), [`take`] makes detached, non-recursive copies ([`crate::mount`]):
//! * of `/`: the image's files, without a single submount — `/proc`, `/sys`, `/dev` are the
//!   image's own (normally empty) directories;
//! * of each data mount of the spec (volumes, tmpfs), preopened at its destination (wasi-libc
//!   resolves a path through the longest preopen prefix), except kernel filesystems, anything
//!   at or below `/proc`, `/sys`, `/dev`, binds of something there, and mounts that are not
//!   directories (a preopen is a directory; a file bind such as `/etc/hosts` shows the
//!   image's file).
//!
//! Every copy is `nodev,nosuid`, and its filesystem type is checked after the fact, whatever
//! the spec said. `..` cannot climb out of a copy (a detached mount has no parent, and
//! wasmtime-wasi resolves beneath the preopen), and a symlink resolves inside it.

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;

use crate::mount;
use crate::{Error, Result};

/// A mount of the container's spec, as [`take`] decides on it.
#[derive(Debug, Clone, Copy)]
pub struct DataMount<'a> {
    pub destination: &'a str,
    /// The spec's `type` (may be empty for a bind).
    pub typ: &'a str,
    pub source: &'a str,
    /// A bind mount (`type: bind` or a `bind`/`rbind` option).
    pub bind: bool,
}

/// A directory for the guest: the detached copy `dir`, seen by the guest at `guest`.
#[derive(Debug)]
pub struct GuestDir {
    pub guest: String,
    pub dir: OwnedFd,
}

/// Spec mount types that are never a guest's.
const KERNEL_FS_TYPES: &[&str] = &[
    "proc",
    "sysfs",
    "devpts",
    "devtmpfs",
    "mqueue",
    "cgroup",
    "cgroup2",
    "securityfs",
    "debugfs",
    "tracefs",
    "bpf",
    "pstore",
    "efivarfs",
    "configfs",
    "fusectl",
    "selinuxfs",
    "binfmt_misc",
];

/// `f_type`s (`<linux/magic.h>`) refused whatever the spec called the mount.
const KERNEL_FS_MAGIC: &[i64] = &[
    0x9fa0,     // proc
    0x62656572, // sysfs
    0x1cd1,     // devpts
    0x19800202, // mqueue
    0x27e0eb,   // cgroup
    0x63677270, // cgroup2
    0x73636673, // securityfs
    0x64626720, // debugfs
    0x74726163, // tracefs
    0xcafe4a11, // bpf
    0x6165676c, // pstore
    0xde5e81e4, // efivarfs
    0x62656570, // configfs
    0x65735543, // fusectl
    0xf97cff8c, // selinuxfs
    0x43415d53, // smackfs
    0x42494e4d, // binfmt_misc
    0x6e736673, // nsfs
];

/// Trees of the runtime's own: nothing at or below them is a guest's.
const RUNTIME_TREES: &[&str] = &["/proc", "/sys", "/dev"];

/// `p` made absolute and clean (`.`, `..` and repeated slashes resolved lexically, `..` stops
/// at `/`).
fn clean(p: &str) -> String {
    let mut out = PathBuf::from("/");
    for part in Path::new(p).components() {
        match part {
            Component::Normal(name) => out.push(name),
            // Popping `/` leaves `/`: a `..` cannot climb out.
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    // Made of the parts of a `&str`: still UTF-8.
    out.to_string_lossy().into_owned()
}

fn in_runtime_tree(p: &str) -> bool {
    let p = clean(p);
    RUNTIME_TREES
        .iter()
        .any(|t| p == *t || p.strip_prefix(t).is_some_and(|r| r.starts_with('/')))
}

/// Whether the spec entry `m` may become a guest directory (before looking at what is there).
pub(crate) fn allowed(m: &DataMount) -> bool {
    let dest = clean(m.destination);
    let refused = dest == "/"
        || in_runtime_tree(&dest)
        || KERNEL_FS_TYPES.contains(&m.typ)
        || (m.bind && in_runtime_tree(m.source));
    !refused
}

/// The detached, `nodev,nosuid` copy of the mount at `dir`, if it is a directory on a
/// filesystem that is not a kernel one. `what` names it in errors.
fn copy(dir: &OwnedFd, what: &str) -> Result<Option<OwnedFd>> {
    let err = |op: &str, e: std::io::Error| Error::Sandbox(format!("{what}: {op}: {e}"));
    let m = mount::clone_mount(dir.as_fd()).map_err(|e| err("copy the mount (open_tree)", e))?;
    let st = nix::sys::stat::fstat(&m).map_err(|e| err("stat", e.into()))?;
    if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
        return Ok(None);
    }
    if KERNEL_FS_MAGIC.contains(&mount::fs_type(m.as_fd()).map_err(|e| err("statfs", e))?) {
        return Ok(None);
    }
    mount::set_attrs(
        m.as_fd(),
        mount::MOUNT_ATTR_NODEV | mount::MOUNT_ATTR_NOSUID,
    )
    .map_err(|e| err("make it nodev,nosuid (mount_setattr)", e))?;
    Ok(Some(m))
}

/// The guest's directories: `/` first, then the allowed data mounts of `mounts` (the spec's,
/// in order) at their destinations. Call in the container process after its mounts are made,
/// with CAP_SYS_ADMIN over its mount namespace still held.
pub fn take(mounts: &[DataMount]) -> Result<Vec<GuestDir>> {
    let root = nix::fcntl::open(
        "/",
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::Sandbox(format!("open /: {e}")))?;
    let root_copy = copy(&root, "/")?
        .ok_or_else(|| Error::Sandbox("/ is a kernel filesystem, not an image's root".into()))?;
    let mut dirs = vec![GuestDir {
        guest: "/".into(),
        dir: root_copy,
    }];
    for m in mounts.iter().filter(|m| allowed(m)) {
        let dest = clean(m.destination);
        if dirs.iter().any(|d| d.guest == dest) {
            continue; // the same (topmost) mount
        }
        // Resolved as the runtime resolved it when mounting: inside the root, and refusing
        // procfs magic links.
        let how = OpenHow::new()
            .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        let at = open_in_root(&root, &dest[1..], how)
            .map_err(|e| Error::Sandbox(format!("mount {dest}: open its destination: {e}")))?;
        if let Some(dir) = copy(&at, &format!("mount {dest}"))? {
            dirs.push(GuestDir { guest: dest, dir });
        }
    }
    Ok(dirs)
}

/// openat2 that retries the EAGAIN a scoped lookup gets when a rename or mount anywhere on the
/// host raced with its `..` steps (openat2(2) says to retry; see runtime-native's resolve.rs).
fn open_in_root(root: &OwnedFd, rel: &str, how: OpenHow) -> nix::Result<OwnedFd> {
    for _ in 0..256 {
        match nix::fcntl::openat2(root, rel, how) {
            Err(nix::errno::Errno::EAGAIN) => std::thread::yield_now(),
            other => return other,
        }
    }
    Err(nix::errno::Errno::EAGAIN)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m<'a>(destination: &'a str, typ: &'a str, source: &'a str, bind: bool) -> DataMount<'a> {
        DataMount {
            destination,
            typ,
            source,
            bind,
        }
    }

    #[test]
    fn clean_paths() {
        assert_eq!(clean("/data/"), "/data");
        assert_eq!(clean("data//x/./y"), "/data/x/y");
        assert_eq!(clean("/../../proc/x"), "/proc/x");
        assert_eq!(clean("/a/../.."), "/");
    }

    #[test]
    fn what_a_guest_may_see() {
        assert!(allowed(&m("/data", "bind", "/srv/vol", true)));
        assert!(allowed(&m("/tmp", "tmpfs", "tmpfs", false)));
        assert!(allowed(&m("/run/secrets", "", "/var/lib/x", true)));
        assert!(allowed(&m("/process", "bind", "/srv/p", true)));
        for no in [
            m("/proc", "proc", "proc", false),
            m("/x/proc", "proc", "proc", false),
            m("/sys", "sysfs", "sysfs", false),
            m("/sys/fs/cgroup", "cgroup", "cgroup", false),
            m("/cg", "cgroup2", "cgroup2", false),
            m("/dev", "tmpfs", "tmpfs", false),
            m("/dev/shm", "tmpfs", "shm", false),
            m("/dev/pts", "devpts", "devpts", false),
            m("/mq", "mqueue", "mqueue", false),
            m("/data/../proc/sys", "bind", "/srv/x", true),
            m("/host-proc", "bind", "/proc", true),
            m("/host-sys", "none", "/sys/fs/cgroup", true),
            m("/kmsg", "bind", "/dev/kmsg", true),
            m("/", "bind", "/srv/root", true),
            m("//", "tmpfs", "tmpfs", false),
        ] {
            assert!(!allowed(&no), "{no:?} allowed");
        }
        // Not a bind: the source of a tmpfs names nothing.
        assert!(allowed(&m("/scratch", "tmpfs", "/dev/shm", false)));
    }
}
