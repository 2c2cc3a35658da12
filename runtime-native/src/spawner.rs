//! The single-threaded spawner process and the client the shim holds.
//!
//! `fork_before_threads` forks a tiny helper before the caller creates any thread. The caller
//! keeps a SEQPACKET socket to it; each request carries a JSON-encoded message plus fds
//! (SCM_RIGHTS). The spawner clones the container process with `CLONE_PARENT` (so the caller
//! is the parent and reaps it) and answers with its pid. The container process then reports on
//! its own sync socket: `Ready` once it is set up (or `Failed(msg)`), and it waits there for
//! `Start` before running the workload.

use std::os::fd::OwnedFd;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::{Result, Workload, WorkloadTable};

/// Handle on the spawner process, held by the (multi-threaded) caller. Requests are
/// serialised by an internal mutex; each call blocks for the few ms a clone + setup takes,
/// so async callers use `spawn_blocking`.
pub struct Spawner {
    // implementation detail
    _private: (),
}

/// The three stdio fds a container process gets, already opened by the caller. With
/// `terminal: true` in the request, these are not given to the process: it gets a pty slave,
/// and the master comes back in [`PendingProcess::pty_master`].
#[derive(Debug, Default)]
pub struct Stdio {
    pub stdin: Option<OwnedFd>,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
}

/// Create a container's first process.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InitRequest {
    /// Container id (for messages).
    pub id: String,
    /// The bundle directory; `config.json` is read from the spec below, not re-read.
    pub bundle: PathBuf,
    /// The rootfs directory, already mounted by the caller (see [`crate::rootfs`]).
    pub rootfs: PathBuf,
    /// The whole OCI spec as given in `config.json`.
    pub spec: oci_spec::runtime::Spec,
    /// `cgroup.procs` files (one per v1 hierarchy, or the single v2 one) the process must
    /// join before it unshares its cgroup namespace.
    pub cgroup_procs: Vec<PathBuf>,
    pub workload: Workload,
}

/// Start another process in a running container (`ctr task exec`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExecRequest {
    pub container_id: String,
    pub exec_id: String,
    /// Pid of the container's init; its `/proc/<pid>/ns/*` are joined, and its root is the
    /// rootfs the process sees.
    pub init_pid: i32,
    /// The exec's process spec (args, env, cwd, user, terminal, capabilities, rlimits...).
    pub process: oci_spec::runtime::Process,
    /// The container's spec, for its namespace list and security settings.
    pub spec: oci_spec::runtime::Spec,
    pub cgroup_procs: Vec<PathBuf>,
    pub workload: Workload,
}

/// A process that has been cloned and set up, and is waiting for [`PendingProcess::start`].
#[derive(Debug)]
pub struct PendingProcess {
    /// Host pid of the container process (the caller is its parent).
    pub pid: i32,
    /// With `terminal: true`, the pty master; the caller copies between it and the stdio fifos
    /// and resizes it with `TIOCSWINSZ`.
    pub pty_master: Option<OwnedFd>,
    // the sync socket, private
}

impl Spawner {
    /// Forks the spawner. Must be called while the process has exactly one thread (first
    /// thing in `main`). `workloads` are the custom runners the container processes may use.
    pub fn fork_before_threads(workloads: WorkloadTable) -> Result<Spawner> {
        todo!()
    }

    /// Clones and sets up a container init; returns once it reported `Ready` (or the error it
    /// reported, after it has exited and been reaped... by the caller's reaper).
    pub fn spawn_init(&self, req: InitRequest, stdio: Stdio) -> Result<PendingProcess> {
        todo!()
    }

    /// Clones a process into a running container's namespaces and cgroup.
    pub fn spawn_exec(&self, req: ExecRequest, stdio: Stdio) -> Result<PendingProcess> {
        todo!()
    }
}

impl PendingProcess {
    /// Lets the process run its workload. Returns once the workload has begun (execve
    /// succeeded, or the custom runner took over), or the error that stopped it
    /// (e.g. execve failed: "exec /app: no such file or directory").
    pub fn start(self) -> Result<()> {
        todo!()
    }
}
