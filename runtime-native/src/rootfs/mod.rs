//! The container's filesystem: containerd's prepared rootfs on the host side (`prepared`), and
//! inside the container process everything from the spec's mounts to the pivoted, masked root
//! (`mounts`, `devices`, `pivot`, `masking`), every destination inside the rootfs reached
//! through a file descriptor (`inroot`). A failed step inside the container process is a
//! [`StepError`] (`error`), which becomes the container process's own error
//! ([`Container::Error`]).

use std::os::fd::RawFd;
use std::path::Path;

use nix::mount::MsFlags;
use oci_spec::runtime::Spec;

mod devices;
mod error;
pub mod idmap;
mod inroot;
mod masking;
pub mod mount_attr;
pub(crate) mod mountopt;
mod mounts;
mod pivot;
mod prepared;

pub(crate) use error::StepError;
pub use prepared::{mount_all, unmount_all, MountSpec};

type R<T = ()> = std::result::Result<T, StepError>;

/// What the rootfs steps need from the container process they run in (child.rs).
pub(crate) trait Container {
    /// The container process's error, which a failed step becomes.
    type Error: From<StepError>;
    /// A warning for the shim's log.
    fn warn(&self, msg: String);
    /// Waits until the process is in its cgroup (the cgroup namespace created if asked) and
    /// returns /proc/self/cgroup as read before that namespace existed (host paths).
    fn joined_cgroups(&self) -> Result<String, Self::Error>;
    /// The detached procfs mount the spawner made for the spec's proc mount, once.
    fn take_proc_mount(&self) -> Option<RawFd>;
    /// Runs the hooks due before pivot_root (createRuntime by the caller, createContainer),
    /// in the container's cgroup; nothing when the spec has none.
    fn before_pivot(&self) -> Result<(), Self::Error>;
}

pub(crate) fn setup<C: Container>(c: &C, spec: &Spec, rootfs: &Path) -> Result<(), C::Error> {
    // SAFETY: umask never fails.
    unsafe { libc::umask(0) };
    let linux = spec.linux().clone().unwrap_or_default();
    let prop_name = linux.rootfs_propagation().clone().unwrap_or_default();
    let prop = if prop_name.is_empty() {
        MsFlags::MS_SLAVE | MsFlags::MS_REC
    } else {
        mountopt::propagation(&prop_name)
            .ok_or_else(|| StepError::BadPropagation(prop_name.clone()))?
    };
    mounts::change_mount_at(Path::new("/"), prop).map_err(|source| StepError::Propagation {
        of: "/",
        name: prop_name.clone(),
        source,
    })?;
    // As runc: the mount the rootfs is on (the rootfs itself when it is a mount point, as the
    // snapshotter's overlay is) is never shared: pivot_root refuses a shared parent of the new
    // root, and the rootfs bind below would propagate to the host through it. Slave when the
    // root propagation is slave, else private.
    if let Some(parent) = mounts::mount_point_of(rootfs) {
        let f = if prop.contains(MsFlags::MS_SLAVE) {
            MsFlags::MS_SLAVE
        } else {
            MsFlags::MS_PRIVATE
        };
        let _ = mounts::change_mount_at(&parent, f);
    }
    let bind = MsFlags::MS_BIND | MsFlags::MS_REC;
    nix::mount::mount(Some(rootfs), rootfs, None::<&str>, bind, None::<&str>).map_err(
        |source| StepError::BindRootfs {
            rootfs: rootfs.to_path_buf(),
            source,
        },
    )?;
    // Opened after the bind: lookups from it see the mounts made below.
    let root = inroot::Root::open(rootfs).map_err(|source| StepError::OpenRootfs {
        rootfs: rootfs.to_path_buf(),
        source,
    })?;
    let mount_label = linux.mount_label().clone().filter(|l| !l.is_empty());

    let mounts = spec.mounts().clone().unwrap_or_default();
    let mut dev_is_tmpfs = false;
    let mut has_devpts = false;
    for m in &mounts {
        let dest = m.destination();
        let typ = m.typ().clone().unwrap_or_default();
        let opts = mountopt::parse(&m.options().clone().unwrap_or_default());
        if dest == Path::new("/dev") && typ != "bind" && !opts.is_bind() {
            dev_is_tmpfs = true;
        }
        if dest == Path::new("/dev/pts") {
            has_devpts = true;
        }
        mounts::mount_one(c, &root, m, mount_label.as_deref())?;
    }
    if dev_is_tmpfs {
        devices::default_devices(&root)?;
        devices::dev_symlinks(&root, has_devpts)?;
    }
    for d in linux.devices().clone().unwrap_or_default() {
        devices::create_device(&root, &d)?;
    }
    drop(root);
    c.before_pivot()?;
    pivot::pivot_root(rootfs)?;
    // A shared or unbindable root propagation is for the new "/" (set before the pivot it
    // would only have reached the old root); private and slave were set above.
    if !prop.intersects(MsFlags::MS_PRIVATE | MsFlags::MS_SLAVE) {
        mounts::change_mount_at(Path::new("/"), prop).map_err(|source| StepError::Propagation {
            of: "the new root",
            name: prop_name,
            source,
        })?;
    }
    Ok(())
}

/// After hostname and sysctls (which write /proc/sys, usually among the read-only paths), as
/// runc does: masked paths, read-only paths, a read-only root.
pub(crate) fn finalize(spec: &Spec) -> R {
    let linux = spec.linux().clone().unwrap_or_default();
    let masked = linux.masked_paths().clone().unwrap_or_default();
    let readonly = linux.readonly_paths().clone().unwrap_or_default();
    if !masked.is_empty() || !readonly.is_empty() {
        let mut m = masking::Masker::new(linux.mount_label().clone().filter(|l| !l.is_empty()))?;
        for p in &masked {
            m.mask_path(p)?;
        }
        for p in &readonly {
            m.readonly_path(p)?;
        }
    }
    if spec
        .root()
        .as_ref()
        .and_then(|r| r.readonly())
        .unwrap_or(false)
    {
        let flags =
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | mounts::locked_flags("/");
        mounts::change_mount_at(Path::new("/"), flags).map_err(StepError::ReadonlyRoot)?;
    }
    Ok(())
}
