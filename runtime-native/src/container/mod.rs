//! Building a container up to an init that waits for Start: the one start sequence the shim
//! and amphi-oci share. cgroup → rootfs → idmapped volumes → spawn init, with the caller's own
//! steps in between ([`BuildSteps`]: its record, its stdio and workload, what it does once the
//! init exists), and on any failure the undo of all that was made, in one place
//! ([`Made::undo`]).

use std::path::{Path, PathBuf};

use oci_spec::runtime::Spec;

use crate::rootfs::{self, MountSpec};
use crate::{
    idmap, spec, Cgroup, Error, InitRequest, PathIoError, PendingProcess, Spawner, Stdio, Workload,
};

/// The container to build.
pub struct ContainerSpec<'a> {
    pub id: &'a str,
    pub bundle: &'a Path,
    pub spec: &'a Spec,
    /// Mounts that make up the rootfs (containerd's snapshot), mounted on `bundle/rootfs`;
    /// empty when the rootfs is there already.
    pub mounts: &'a [MountSpec],
    /// The rootfs when the caller resolved it already (amphi-oci canonicalizes it, as runc
    /// does); `None`: the spec's root ([`spec::root_path`]).
    pub rootfs: Option<&'a Path>,
}

impl<'a> ContainerSpec<'a> {
    /// A bundle whose rootfs is in place already, at `rootfs` as the caller resolved it (how
    /// amphi-oci builds, like runc).
    pub fn in_place(id: &'a str, bundle: &'a Path, spec: &'a Spec, rootfs: &'a Path) -> Self {
        ContainerSpec {
            id,
            bundle,
            spec,
            mounts: &[],
            rootfs: Some(rootfs),
        }
    }
}

/// What a build makes, named before it exists: enough to undo it, now or after a crash.
#[derive(Debug, Clone)]
pub struct Made {
    pub id: String,
    pub cgroup: Cgroup,
    /// Where the build mounts the rootfs (None without mounts).
    pub mounted_rootfs: Option<PathBuf>,
    /// The rootfs the container's processes see: the spec's root.
    pub rootfs: PathBuf,
}

/// A built container: its init is cloned, set up, and waits for [`PendingProcess::start`].
pub struct Built {
    pub made: Made,
    pub init: PendingProcess,
}

/// What the caller gives the init once the rootfs is in place.
pub struct InitIo {
    pub stdio: Stdio,
    pub workload: Workload,
}

/// The caller's steps of a build. Each may fail; the build then undoes what it made, and the
/// caller undoes only what its own steps made.
pub trait BuildSteps {
    type Error: From<Error>;

    /// Before anything exists: the caller records `made` (cleanup of what was never made is
    /// a no-op), so a crash at any later point leaves nothing it cannot find.
    fn planned(&mut self, _made: &Made) -> Result<(), Self::Error> {
        Ok(())
    }

    /// The init's stdio and workload, once the cgroup and the rootfs exist (a workload is
    /// looked up inside the rootfs, and may be prepared in the container's cgroup).
    fn init_io(&mut self, made: &Made) -> Result<InitIo, Self::Error>;

    /// The init exists and waits for Start (its pid is known; the caller may record it, set
    /// up its network, take its pty). A failure here is undone like any other.
    fn spawned(&mut self, _made: &Made, _init: &mut PendingProcess) -> Result<(), Self::Error> {
        Ok(())
    }
}

/// Builds `c`: plans the cgroup and the rootfs, [`BuildSteps::planned`], creates the cgroup
/// and applies the spec's resources, mounts the rootfs, [`BuildSteps::init_io`], stages the
/// idmapped volumes, spawns the init, [`BuildSteps::spawned`]. When a step fails after the
/// cgroup exists, everything made is undone (the cgroup's processes killed with it) before
/// the error is returned.
pub fn build<S: BuildSteps>(
    spawner: &Spawner,
    c: ContainerSpec,
    steps: &mut S,
) -> Result<Built, S::Error> {
    let made = Made {
        id: c.id.to_string(),
        cgroup: Cgroup::plan(c.id, c.spec)?,
        mounted_rootfs: (!c.mounts.is_empty()).then(|| c.bundle.join("rootfs")),
        rootfs: match c.rootfs {
            Some(r) => r.to_path_buf(),
            None => spec::root_path(c.spec, c.bundle),
        },
    };
    steps.planned(&made)?;
    // The cgroup first: its slow part, the kernel's grace period on the first migration, then
    // runs while the rootfs is mounted and the process is spawned (cgroup/v1.rs
    // `warm_attach_lock`; after the mkdirs, which would wait for it). A cgroup that cannot be
    // made is not ours to remove (it may have been there before); `make` undoes itself.
    made.cgroup.make(c.spec)?;
    Cgroup::warm_attach_lock();
    match spawn(spawner, &c, &made, steps) {
        Ok(init) => Ok(Built { made, init }),
        Err(e) => {
            made.undo();
            Err(e)
        }
    }
}

/// The steps after the cgroup exists; whatever fails here, [`build`] undoes.
fn spawn<S: BuildSteps>(
    spawner: &Spawner,
    c: &ContainerSpec,
    made: &Made,
    steps: &mut S,
) -> Result<PendingProcess, S::Error> {
    if let Some(dir) = &made.mounted_rootfs {
        std::fs::create_dir_all(dir)
            .map_err(PathIoError::on("create", dir))
            .map_err(Error::from)?;
        rootfs::mount_all(c.mounts, dir)?;
    }
    let io = steps.init_io(made)?;
    // Idmapped volumes are made here, as host root, and bound by the container; they are
    // detached again once it reported ready (its mount namespace holds its copies).
    let mut init_spec = c.spec.clone();
    let volumes = idmap::StagedVolumes::stage(&mut init_spec, &c.bundle.join("idmapped-volumes"))
        .map_err(|source| Error::IdmappedVolumes {
        path: c.bundle.join("config.json"),
        source,
    })?;
    let init = spawner.spawn_init(
        InitRequest {
            id: c.id.to_string(),
            bundle: c.bundle.to_path_buf(),
            rootfs: made.rootfs.clone(),
            spec: init_spec,
            cgroup_procs: made.cgroup.procs_files(),
            workload: io.workload,
        },
        io.stdio,
    );
    drop(volumes);
    let mut init = init?;
    // Dropping `init` on a failure closes its sync pipe (it exits without running anything);
    // the undo's cgroup destroy kills it either way.
    steps.spawned(made, &mut init)?;
    Ok(init)
}

impl Made {
    /// Removes the cgroup (killing what is left in it) and unmounts the rootfs the build
    /// mounted. Idempotent; failures are logged, the rest goes on.
    pub fn undo(&self) {
        if let Err(e) = self.cgroup.destroy() {
            log::warn!("cleanup of container {}: {e}", self.id);
        }
        if let Some(root) = &self.mounted_rootfs {
            if let Err(e) = rootfs::unmount_all(root) {
                log::warn!("cleanup of container {}: {e}", self.id);
            }
        }
    }
}
