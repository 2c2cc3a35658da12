//! What a caller asks the spawner for, and what a container process starts with: the
//! messages between the shim (or amphi-oci), the spawner and the container process's setup
//! code (child.rs), kept apart from the spawner so the setup code does not depend on it.

use std::os::fd::OwnedFd;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::Workload;

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
    /// Pid of the container's init, whose namespaces are joined (its root is the rootfs the
    /// process sees).
    pub init_pid: i32,
    /// The init's pidfd, through which they are joined (`exec_ns`); travels as an fd. Without
    /// one, `/proc/<init_pid>/ns/*` by path.
    #[serde(skip)]
    pub init_pidfd: Option<std::sync::Arc<OwnedFd>>,
    /// The exec's process spec (args, env, cwd, user, terminal, capabilities, rlimits...).
    pub process: oci_spec::runtime::Process,
    /// The container's spec, for its namespace list and security settings.
    pub spec: oci_spec::runtime::Spec,
    pub cgroup_procs: Vec<PathBuf>,
    pub workload: Workload,
}

/// What the caller asks the spawner for.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Request {
    Init(Box<InitRequest>),
    Exec(Box<ExecRequest>),
}

/// The fds a container process starts with (still at the spawner's numbers).
pub(crate) struct ChildFds {
    pub stdin: Option<OwnedFd>,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
    pub extra: Vec<OwnedFd>,
    /// A detached procfs mount of the container's pid namespace, made by the spawner when the
    /// process's own user namespace may not mount it (userns.rs [`crate::userns::proc_mount_fd`]).
    pub proc_mnt: Option<OwnedFd>,
    /// An exec's: the container init's pidfd ([`ExecRequest::init_pidfd`]).
    pub init_pidfd: Option<OwnedFd>,
    /// The socket on which the spawner reports the cgroup join (`process/spawner/cgroup_join.rs`);
    /// `None` when the process has no cgroup to join.
    pub join: Option<OwnedFd>,
}
