//! Why a rootfs step inside the container process failed: [`StepError`], one variant per
//! step, naming the mount, device or path it acted on and the errno (in runc's wording,
//! `etext`). `child::Error` wraps it; it becomes text only where `child::main` reports the
//! failure to the caller.

use std::io;
use std::path::PathBuf;

use nix::errno::Errno;

use super::mount_attr::RecursiveError;
use crate::child::{etext, ioerr};

/// What a step of [`MountError`] did when it failed; its text is the message's middle part
/// ("" for the mount call itself, as runc says it).
#[derive(Debug, Clone, Copy)]
pub(crate) enum MountStep {
    /// Opening the bind source, the mount call or the bind itself.
    Mount,
    CreateMountPoint,
    AttachProc,
    Remount,
    SetPropagation,
}

impl MountStep {
    fn prefix(self) -> &'static str {
        match self {
            MountStep::Mount => "",
            MountStep::CreateMountPoint => "create mount point: ",
            MountStep::AttachProc => "attach the runtime's proc mount: ",
            MountStep::Remount => "remount: ",
            MountStep::SetPropagation => "set propagation: ",
        }
    }
}

/// A failure on a device node in the container's /dev (`shown` paths are the container's).
#[derive(Debug, thiserror::Error)]
pub(crate) enum DeviceError {
    /// `call` names the call ("mknod", "open new device"), `path` what it was called on.
    #[error("{call} {path}: {}", ioerr(source))]
    Call {
        call: &'static str,
        path: String,
        #[source]
        source: io::Error,
    },
    /// Binding the host's node where mknod was refused.
    #[error("bind {} to {path}: {}", host.display(), ioerr(source))]
    BindHost {
        host: PathBuf,
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("new device {path} is not the node made ({kind:o} {major}:{minor})")]
    NotTheNodeMade {
        path: String,
        kind: u32,
        major: u64,
        minor: u64,
    },
    /// mknod was refused and the host has no such node to bind instead.
    #[error("mknod {path}: operation not permitted")]
    NoHostNode { path: String },
}

impl DeviceError {
    /// `map_err` for a failed call on a device: `DeviceError::on("mknod", "/dev/null")`.
    pub(super) fn on<'a, E: Into<io::Error>>(
        call: &'static str,
        path: &'a str,
    ) -> impl FnOnce(E) -> Self + 'a {
        move |e| DeviceError::Call {
            call,
            path: path.into(),
            source: e.into(),
        }
    }
}

/// A mount of the spec's (`src` as the spec has it, or the filesystem type).
#[derive(Debug, thiserror::Error)]
pub(crate) enum MountError {
    #[error("mount {src} to {}: {}{}", dest.display(), step.prefix(), ioerr(source))]
    Failed {
        src: String,
        dest: PathBuf,
        step: MountStep,
        #[source]
        source: io::Error,
    },
    #[error("mount {src} to {}: the mount point is the top of the rootfs", dest.display())]
    OnTop { src: String, dest: PathBuf },
    #[error("mount {src} to {}: {source}", dest.display())]
    Recursive {
        src: String,
        dest: PathBuf,
        #[source]
        source: RecursiveError,
    },
    #[error("mount destination {} is not an absolute path", dest.display())]
    NotAbsolute { dest: PathBuf },
}

/// Why a rootfs step failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StepError {
    #[error("invalid rootfsPropagation {0:?}")]
    BadPropagation(String),
    /// `of`: "/" (before pivot_root) or "the new root" (after).
    #[error("set mount propagation of {of} to {name:?}: {}", etext(*source))]
    Propagation {
        of: &'static str,
        name: String,
        #[source]
        source: Errno,
    },
    #[error("bind mount rootfs {} on itself: {}", rootfs.display(), etext(*source))]
    BindRootfs {
        rootfs: PathBuf,
        #[source]
        source: Errno,
    },
    #[error("open rootfs {}: {}", rootfs.display(), ioerr(source))]
    OpenRootfs {
        rootfs: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Mount(#[from] MountError),
    #[error("open /dev: {}", ioerr(.0))]
    OpenDev(#[source] io::Error),
    #[error("create device {path}: {source}")]
    Device {
        path: String,
        #[source]
        source: DeviceError,
    },
    #[error("symlink /dev/{name}: {}", etext(*source))]
    DevSymlink {
        name: &'static str,
        #[source]
        source: Errno,
    },
    #[error("device {} is not under /dev", path.display())]
    DeviceNotUnderDev { path: PathBuf },
    #[error("device {}: type \"a\" is not a device", path.display())]
    DeviceTypeA { path: PathBuf },
    #[error("device {} has no name", path.display())]
    DeviceNoName { path: PathBuf },
    #[error("create /{}: {}", dir.display(), ioerr(source))]
    DeviceDir {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("chown device {path}: {}", etext(*source))]
    DeviceChown {
        path: String,
        #[source]
        source: Errno,
    },
    /// A pivot_root step: `step` names the call and its object ("chdir to old root").
    #[error("{step}: {}", etext(*source))]
    Pivot {
        step: &'static str,
        #[source]
        source: Errno,
    },
    #[error("pivot_root to {}: {}", rootfs.display(), etext(*source))]
    PivotRoot {
        rootfs: PathBuf,
        #[source]
        source: Errno,
    },
    #[error("open the container's /: {}", ioerr(.0))]
    OpenContainerRoot(#[source] io::Error),
    #[error("mask path {path}: {}", ioerr(source))]
    Mask {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("mask path {path}: /dev/null: {}", ioerr(source))]
    MaskNull {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("mask path {path}: /dev/null in the container is not the null device")]
    NullNotNullDevice { path: String },
    #[error("make {path} read-only: {}", ioerr(source))]
    Readonly {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("make the root filesystem read-only: {}", etext(*.0))]
    ReadonlyRoot(#[source] Errno),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_are_runcs() {
        let e = StepError::from(MountError::Failed {
            src: "/h".into(),
            dest: "/vol".into(),
            step: MountStep::Mount,
            source: io::Error::from(Errno::ENOENT),
        });
        assert_eq!(e.to_string(), "mount /h to /vol: no such file or directory");
        let e = StepError::from(MountError::Failed {
            src: "/h".into(),
            dest: "/vol".into(),
            step: MountStep::CreateMountPoint,
            source: io::Error::from(Errno::ENOTDIR),
        });
        assert_eq!(
            e.to_string(),
            "mount /h to /vol: create mount point: not a directory"
        );
        let e = StepError::Device {
            path: "/dev/x".into(),
            source: DeviceError::on("mknod", "/dev/x")(Errno::EPERM),
        };
        assert_eq!(
            e.to_string(),
            "create device /dev/x: mknod /dev/x: operation not permitted"
        );
        assert!(std::error::Error::source(&e).is_some());
    }
}
