//! Mount attributes set with `mount_setattr(2)` (Linux 5.12): the recursive mount options
//! (`rro`, `rnosuid`, `rnoexec`... applied to a mount and every mount below it, which
//! `MS_REMOUNT` cannot do: a remount changes one mount only, so an `ro` bind of a tree with
//! submounts leaves the submounts writable), and idmapped mounts (`MOUNT_ATTR_IDMAP` on a
//! detached clone made with `open_tree(OPEN_TREE_CLONE)`).
//!
//! The options are the ones runc and the runtime spec name. A kernel without `mount_setattr`
//! answers ENOSYS; the caller then refuses the mount with an error that names it, rather than
//! leaving a mount writable that the spec asked to be read-only.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use nix::errno::Errno;

// The attribute bits and `struct mount_attr` (MOUNT_ATTR_SIZE_VER0) are the kernel's, from
// libc. The access-time mode is a 3-bit field (`MOUNT_ATTR__ATIME`), not a set of flags:
// relatime is 0.
use libc::{
    mount_attr as MountAttr, MOUNT_ATTR_IDMAP, MOUNT_ATTR_NOATIME, MOUNT_ATTR_NODEV,
    MOUNT_ATTR_NODIRATIME, MOUNT_ATTR_NOEXEC, MOUNT_ATTR_NOSUID, MOUNT_ATTR_NOSYMFOLLOW,
    MOUNT_ATTR_RDONLY, MOUNT_ATTR_RELATIME, MOUNT_ATTR_STRICTATIME, MOUNT_ATTR__ATIME,
    OPEN_TREE_CLONE,
};

/// The recursive mount options runtime-native understands, each with the attribute it sets
/// (`false`) or clears (`true`). The access-time modes (`rnoatime`, `rstrictatime`,
/// `rrelatime`) select one value of the atime field.
const RECURSIVE_OPTIONS: [(&str, bool, u64); 15] = [
    ("rro", false, MOUNT_ATTR_RDONLY),
    ("rrw", true, MOUNT_ATTR_RDONLY),
    ("rnosuid", false, MOUNT_ATTR_NOSUID),
    ("rsuid", true, MOUNT_ATTR_NOSUID),
    ("rnodev", false, MOUNT_ATTR_NODEV),
    ("rdev", true, MOUNT_ATTR_NODEV),
    ("rnoexec", false, MOUNT_ATTR_NOEXEC),
    ("rexec", true, MOUNT_ATTR_NOEXEC),
    ("rnodiratime", false, MOUNT_ATTR_NODIRATIME),
    ("rdiratime", true, MOUNT_ATTR_NODIRATIME),
    ("rnosymfollow", false, MOUNT_ATTR_NOSYMFOLLOW),
    ("rsymfollow", true, MOUNT_ATTR_NOSYMFOLLOW),
    ("rnoatime", false, MOUNT_ATTR_NOATIME),
    ("rstrictatime", false, MOUNT_ATTR_STRICTATIME),
    ("rrelatime", false, MOUNT_ATTR_RELATIME),
];

/// Names of the recursive options (for the runtime's features).
pub(crate) fn recursive_option_names() -> impl Iterator<Item = &'static str> {
    RECURSIVE_OPTIONS.iter().map(|(n, _, _)| *n)
}

/// Attributes to set and clear on a mount tree, with the options that asked for them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecursiveAttrs {
    set: u64,
    clear: u64,
    /// The options as written, for error messages.
    names: Vec<&'static str>,
}

impl RecursiveAttrs {
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Takes `opt` if it is a recursive option; a later option overrides an earlier one.
    pub(crate) fn add(&mut self, opt: &str) -> bool {
        let Some(&(name, clear, attr)) = RECURSIVE_OPTIONS.iter().find(|(n, _, _)| *n == opt)
        else {
            return false;
        };
        if attr & MOUNT_ATTR__ATIME == attr && !clear {
            // An atime mode: clear the whole field, then set the mode (the kernel wants both).
            self.set = (self.set & !MOUNT_ATTR__ATIME) | attr;
            self.clear |= MOUNT_ATTR__ATIME;
        } else if clear {
            self.clear |= attr;
            self.set &= !attr;
        } else {
            self.set |= attr;
            self.clear &= !attr;
        }
        self.names.retain(|n| *n != name);
        self.names.push(name);
        true
    }

    /// Applies the attributes to the mount `mount` (an fd opened on it) and every mount below.
    pub(crate) fn apply(&self, mount: &impl AsRawFd) -> Result<(), RecursiveError> {
        if self.is_empty() {
            return Ok(());
        }
        let attr = mount_attr(self.set, self.clear, 0);
        let flags = libc::AT_RECURSIVE | libc::AT_EMPTY_PATH;
        setattr_fd(mount.as_raw_fd(), flags, &attr).map_err(|source| {
            let options = self.names.join(",");
            match source {
                Errno::ENOSYS => RecursiveError::Unsupported { options },
                source => RecursiveError::SetAttr { options, source },
            }
        })
    }
}

/// Recursive mount options that could not be applied (`options`: their names, as given).
#[derive(Debug, thiserror::Error)]
pub(crate) enum RecursiveError {
    #[error(
        "recursive mount options ({options}) need mount_setattr(2), which this kernel does \
         not have (Linux 5.12 or newer): ENOSYS"
    )]
    Unsupported { options: String },
    #[error("mount_setattr({options}, AT_RECURSIVE): {}", .source.desc())]
    SetAttr {
        options: String,
        #[source]
        source: Errno,
    },
}

/// A `struct mount_attr` that sets `set`, clears `clear` and idmaps through the user namespace
/// open as `userns_fd` (0 without `MOUNT_ATTR_IDMAP`); propagation is left alone.
fn mount_attr(set: u64, clear: u64, userns_fd: u64) -> MountAttr {
    MountAttr {
        attr_set: set,
        attr_clr: clear,
        propagation: 0,
        userns_fd,
    }
}

/// mount_setattr(2) on the mount open as `fd` (`AT_EMPTY_PATH` is the caller's to pass).
fn setattr_fd(fd: RawFd, flags: libc::c_int, attr: &MountAttr) -> Result<(), Errno> {
    // SAFETY: an fd open for the call, an empty path (AT_EMPTY_PATH), a mount_attr that
    // outlives the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd,
            c"".as_ptr(),
            flags,
            attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r < 0 {
        return Err(Errno::last());
    }
    Ok(())
}

/// A detached copy of the mount tree at `source` (`open_tree(OPEN_TREE_CLONE)`, recursive when
/// `recursive`), idmapped through the user namespace `userns`: a file stored with owner `k`
/// appears owned by the host id that `userns`' mapping sends `k` to, so inside that user
/// namespace it keeps owner `k`. Attach it with [`attach`].
pub fn idmapped_clone(source: &Path, userns: RawFd, recursive: bool) -> Result<OwnedFd, Errno> {
    let tree = clone_tree(source, recursive)?;
    let attr = mount_attr(MOUNT_ATTR_IDMAP, 0, userns as u64);
    let at = if recursive { libc::AT_RECURSIVE } else { 0 };
    setattr_fd(tree.as_raw_fd(), libc::AT_EMPTY_PATH | at, &attr)?;
    Ok(tree)
}

/// A detached copy of the mount tree at `source` (`open_tree(OPEN_TREE_CLONE)`, with every
/// submount when `recursive`), to attach elsewhere with [`attach`].
pub fn clone_tree(source: &Path, recursive: bool) -> Result<OwnedFd, Errno> {
    let s =
        std::ffi::CString::new(source.as_os_str().as_encoded_bytes()).map_err(|_| Errno::EINVAL)?;
    let mut flags = OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint;
    if recursive {
        flags |= libc::AT_RECURSIVE as libc::c_uint;
    }
    // SAFETY: a NUL-terminated path that outlives the call; the result is a new fd.
    let fd = unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, s.as_ptr(), flags) };
    if fd < 0 {
        return Err(Errno::last());
    }
    // SAFETY: open_tree returned a new fd that nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Attaches the detached mount `fd` at `target` (`move_mount(MOVE_MOUNT_F_EMPTY_PATH)`).
pub fn attach(fd: RawFd, target: &Path) -> Result<(), Errno> {
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
            libc::MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if r < 0 {
        return Err(Errno::last());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(opts: &[&str]) -> RecursiveAttrs {
        let mut a = RecursiveAttrs::default();
        for o in opts {
            assert!(a.add(o), "{o} is a recursive option");
        }
        a
    }

    #[test]
    fn recursive_options() {
        let a = attrs(&["rro", "rnosuid"]);
        assert_eq!(a.set, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID);
        assert_eq!(a.clear, 0);
        // A later option overrides an earlier one.
        let a = attrs(&["rro", "rrw"]);
        assert_eq!((a.set, a.clear), (0, MOUNT_ATTR_RDONLY));
        assert_eq!(a.names, ["rro", "rrw"]);
        // An atime mode clears the whole field and sets one value.
        let a = attrs(&["rstrictatime", "rnoatime"]);
        assert_eq!((a.set, a.clear), (MOUNT_ATTR_NOATIME, MOUNT_ATTR__ATIME));
        let a = attrs(&["rrelatime"]);
        assert_eq!((a.set, a.clear), (0, MOUNT_ATTR__ATIME));
        assert!(!a.is_empty());
        let mut a = RecursiveAttrs::default();
        assert!(!a.add("ro") && !a.add("ratime") && !a.add("idmap"));
        assert!(a.is_empty());
        let any = std::fs::File::open("/proc/self").unwrap();
        a.apply(&any).unwrap(); // nothing asked: no syscall
    }

    #[test]
    fn apply_names_the_options_on_failure() {
        // Not the root of a mount: EINVAL (or EPERM without CAP_SYS_ADMIN).
        let not_a_mount = std::fs::File::open("/proc/self").unwrap();
        let e = attrs(&["rro"]).apply(&not_a_mount).unwrap_err().to_string();
        assert!(e.contains("rro"), "{e}");
    }
}
