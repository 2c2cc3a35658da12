//! What the Task service launches, and where: the seam between the task state machine
//! (`mod.rs`, `exits.rs`, `state.rs`) and the machinery that makes real containers.
//!
//! The service only keeps state and orders events; every side effect on the host — building a
//! container, spawning an exec, letting a process run, signals, cgroup files, teardown — goes
//! through a [`Launcher`]. The real one ([`super::native::NativeLauncher`]) talks to
//! runtime-native's spawner; the unit tests use a recording double, so the state machine and
//! the exit-ordering rules run without root.
//!
//! Every method may block: the service calls them on the blocking pool.

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;

use containerd_shim_protos::protobuf::well_known_types::any::Any;
use oci_spec::runtime::{LinuxResources, Spec};
use runtime_native::{rootfs, CgroupStats};
use tokio::sync::oneshot;

use super::error::ServiceResult;
use super::stdio::{StdioHolders, StdioPaths};

/// Builds containers and processes for the Task service.
pub trait Launcher: Send + Sync + 'static {
    /// A process cloned and set up, waiting to be let run ([`Launcher::start`]).
    type Pending: Send + 'static;
    /// The container's cgroup.
    type Cgroup: TaskCgroup;

    /// Create's host half: everything up to an init waiting for Start. On failure nothing it
    /// made is left behind.
    fn create(&self, req: CreateTask) -> ServiceResult<Launched<Self::Pending, Self::Cgroup>>;

    /// Exec Start's host half: clones the exec into the container, waiting for `start`.
    fn exec(&self, req: ExecTask<Self::Cgroup>) -> ServiceResult<LaunchedProcess<Self::Pending>>;

    /// Lets a created process run its workload; returns once it began (or why it did not).
    fn start(&self, pending: Self::Pending) -> ServiceResult<()>;

    /// The spec's `poststart` hooks after the init began; when one fails the init is killed.
    fn poststart(
        &self,
        spec: &Spec,
        id: &str,
        bundle: &std::path::Path,
        init: &SignalTarget,
    ) -> ServiceResult<()>;

    /// Sends `signal` to one process.
    fn signal(&self, target: &SignalTarget, signal: nix::sys::signal::Signal) -> ServiceResult<()>;

    /// Delete's host half: kills what is left, undoes what Create made, runs `poststop` hooks.
    fn delete(&self, container: Removed<Self::Cgroup>);
}

/// The container cgroup operations the service needs (runtime-native's `Cgroup`, or a fake).
pub trait TaskCgroup: Clone + Send + Sync + 'static {
    fn signal_all(&self, signal: i32) -> ServiceResult<()>;
    fn freeze(&self) -> ServiceResult<()>;
    fn thaw(&self) -> ServiceResult<()>;
    fn pids(&self) -> ServiceResult<Vec<i32>>;
    fn update(&self, resources: &LinuxResources) -> ServiceResult<()>;
    fn stats(&self) -> ServiceResult<CgroupStats>;
    /// OOM kills the kernel counted so far (cheap: one small file, read in place).
    fn oom_kills(&self) -> ServiceResult<u64>;
    /// An fd that becomes readable on an OOM kill, where the cgroup version has one.
    fn oom_notifier(&self) -> ServiceResult<Option<OwnedFd>>;
}

/// What Create asks for, straight from containerd's request.
pub struct CreateTask {
    pub id: String,
    pub bundle: PathBuf,
    /// The rootfs mounts containerd's snapshotter prepared (empty: containerd mounted it).
    pub mounts: Vec<rootfs::MountSpec>,
    pub stdio: StdioPaths,
    /// containerd's runtime options (amphi networking reads them).
    pub options: Option<Any>,
}

/// Where a signal goes: the process's pidfd when the kernel gave one, so a signal sent after
/// the reaper took the exit never reaches a process that reused the pid; else its pid.
#[derive(Debug, Clone)]
pub struct SignalTarget {
    pub pid: i32,
    pub pidfd: Option<Arc<OwnedFd>>,
}

/// A container Create built: its init waits for Start.
pub struct Launched<P, C> {
    pub spec: Spec,
    /// The rootfs the processes see, as the spec names it: an exec's entrypoint is looked up
    /// here, as the init's was.
    pub rootfs: PathBuf,
    pub cgroup: C,
    /// The rootfs directory Create mounted (None when containerd mounted it).
    pub mounted_rootfs: Option<PathBuf>,
    /// The container has its own pid namespace: when its init dies the kernel kills the rest.
    pub own_pid_ns: bool,
    /// Bounds on what the shim reads of this container's files (from the runtime options).
    pub limits: runtime_native::fs::tenant_file::Limits,
    pub init: LaunchedProcess<P>,
}

/// One process a launcher cloned, and the shim's ends of its stdio.
pub struct LaunchedProcess<P> {
    pub pid: i32,
    /// Its pidfd, where the kernel gave one ([`SignalTarget`]).
    pub pidfd: Option<Arc<OwnedFd>>,
    pub pending: P,
    pub io: ProcessIo,
}

/// The shim's side of a process's stdio.
#[derive(Default)]
pub struct ProcessIo {
    pub holders: StdioHolders,
    /// With a terminal: the pty master (for ResizePty).
    pub pty_master: Option<OwnedFd>,
    /// With a terminal: fires once the pty output has drained.
    pub io_done: Option<oneshot::Receiver<()>>,
}

/// What Exec Start asks for: the exec's process in a running container.
pub struct ExecTask<C> {
    pub container_id: String,
    pub exec_id: String,
    pub init_pid: i32,
    /// The init's pidfd: the exec joins the namespaces of that process, not of whatever has
    /// `init_pid` now (runtime-native `exec_ns`).
    pub init_pidfd: Option<Arc<OwnedFd>>,
    pub process: oci_spec::runtime::Process,
    pub spec: Spec,
    pub cgroup: C,
    /// Where the container's entrypoints are looked up ([`Launched::rootfs`]).
    pub rootfs: PathBuf,
    /// [`Launched::limits`] of the container.
    pub limits: runtime_native::fs::tenant_file::Limits,
    pub stdio: StdioPaths,
}

/// A container Delete removed from the service, for [`Launcher::delete`].
pub struct Removed<C> {
    pub id: String,
    pub bundle: PathBuf,
    pub spec: Spec,
    pub cgroup: C,
    pub mounted_rootfs: Option<PathBuf>,
    /// The init while it may still be alive (a Created task that never ran).
    pub live: Option<SignalTarget>,
}
