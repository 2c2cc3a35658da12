//! After pivot_root: the spec's masked paths (hidden behind /dev/null or an empty read-only
//! tmpfs) and read-only paths. Each path is opened in the container's root and mounted onto
//! through that fd, and /dev/null is bound through the fd that was checked to be the null
//! device (the CVE-2025-31133 class: a /dev/null swapped for a link to a procfs file between
//! a check by path and a bind by path).

use std::os::fd::OwnedFd;
use std::path::Path;

use nix::mount::MsFlags;

use super::inroot::Root;
use super::mounts::{bind_fd, change_mount, labelled, locked_flags_fd, mount_on};
use super::{StepError, R};

/// The masking and read-only steps, in the pivoted root.
pub(super) struct Masker {
    root: Root,
    /// The container's /dev/null, opened once and checked to be the null device (1:3).
    null: Option<OwnedFd>,
    mount_label: Option<String>,
}

fn is_null_device(st: &nix::sys::stat::FileStat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFCHR && st.st_rdev == nix::sys::stat::makedev(1, 3)
}

fn mask_err(p: &str) -> impl FnOnce(std::io::Error) -> StepError + '_ {
    move |source| StepError::Mask {
        path: p.into(),
        source,
    }
}

fn null_err(p: &str) -> impl FnOnce(std::io::Error) -> StepError + '_ {
    move |source| StepError::MaskNull {
        path: p.into(),
        source,
    }
}

fn readonly_err(p: &str) -> impl FnOnce(std::io::Error) -> StepError + '_ {
    move |source| StepError::Readonly {
        path: p.into(),
        source,
    }
}

impl Masker {
    pub(super) fn new(mount_label: Option<String>) -> R<Masker> {
        let root = Root::open(Path::new("/")).map_err(StepError::OpenContainerRoot)?;
        Ok(Masker {
            root,
            null: None,
            mount_label,
        })
    }

    /// `/dev/null` as the container has it (symlinks followed inside the root, as runc does),
    /// refused unless its fd is the null device.
    fn null(&mut self, p: &str) -> R<&OwnedFd> {
        if self.null.is_none() {
            let fd = self
                .root
                .open_path(Path::new("/dev/null"))
                .map_err(null_err(p))?;
            let st = nix::sys::stat::fstat(&fd).map_err(|e| null_err(p)(e.into()))?;
            if !is_null_device(&st) {
                return Err(StepError::NullNotNullDevice { path: p.into() });
            }
            self.null = Some(fd);
        }
        Ok(self.null.as_ref().expect("set above"))
    }

    pub(super) fn mask_path(&mut self, p: &str) -> R {
        let target = match self.root.open_path(Path::new(p)) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
            Err(e) => return Err(mask_err(p)(e)),
        };
        let st = nix::sys::stat::fstat(&target).map_err(|e| mask_err(p)(e.into()))?;
        if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
            let data = labelled("", "tmpfs", self.mount_label.as_deref());
            let data = (!data.is_empty()).then_some(data.as_str());
            mount_on(
                Some(Path::new("tmpfs")),
                &target,
                Some("tmpfs"),
                MsFlags::MS_RDONLY,
                data,
            )
            .map_err(mask_err(p))
        } else {
            let null = self.null(p)?;
            bind_fd(null, &target, false).map_err(mask_err(p))
        }
    }

    pub(super) fn readonly_path(&mut self, p: &str) -> R {
        let target = match self.root.open_path(Path::new(p)) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
            Err(e) => return Err(readonly_err(p)(e)),
        };
        bind_fd(&target, &target, true).map_err(readonly_err(p))?;
        let bound = self.root.reopen(&target).map_err(readonly_err(p))?;
        let flags = MsFlags::MS_BIND
            | MsFlags::MS_REMOUNT
            | MsFlags::MS_RDONLY
            | MsFlags::MS_REC
            | locked_flags_fd(&bound);
        change_mount(&bound, flags, None).map_err(readonly_err(p))
    }
}
