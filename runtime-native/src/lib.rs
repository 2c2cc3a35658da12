//! Linux containers for amphi.
//!
//! This crate turns an OCI runtime spec into a running Linux container: namespaces, a cgroup,
//! the rootfs, devices, identity and limits. It knows nothing about containerd or WebAssembly:
//! it runs a *workload* inside a prepared container, and "execve this argv" is just the
//! built-in workload. Other workloads (wasm) are registered by the binary as [`WorkloadRunner`]s.
//!
//! Process model (see ARCHITECTURE.md): [`Spawner::fork_before_threads`] must be called first
//! thing in `main`, while the process is single-threaded. Every container init and every exec is
//! cloned by that spawner with `CLONE_PARENT`, so the caller (the shim, a child subreaper) is the
//! parent of every container process and reaps it. (An init that joins a user namespace is
//! cloned by an intermediate the spawner reaps, and is reparented to the shim:
//! process/userns_join.rs.)

// The tree by phase and concern (each folder opens with what it holds):
//   container/  the create flow: cgroup -> rootfs -> spawn init, undo on error
//   process/    what happens between clone and exec (namespaces, user namespaces,
//               identity, hooks, helper processes); spawner/ the process that clones,
//               by job (the caller's side, wire, serve, enter, clone, cgroup_join)
//   rootfs/     mounts, devices, masking, pivot, idmapped and recursive mount options
//   cgroup/     v1 and v2 behind one interface, stats
//   security/   seccomp, the device filter, LSMs
//   network/    loopback and the amphi bridge
//   fs/         opening what the host must not trust: tenant files, procfs, fds
pub mod cgroup;
pub mod container;
pub mod error;
pub mod features;
pub mod fs;
pub mod memory;
pub mod network;
pub mod process;
pub mod request;
pub mod rootfs;
pub mod security;
pub mod spec;
pub mod testgen;
pub mod workload;

#[cfg(test)]
mod parser_props;

// Crate-wide short names for modules that moved into the folders above, so the code inside
// the crate reads `crate::child::...` as before; outside the crate the folder paths are used.
use fs::{fds, procfs, resolve};
use process::{child, exec_ns, ns, personality, sync, userns, userns_join};
pub use process::{child_wait, hooks, identity, spawner};
use rootfs::{idmap, mount_attr, mountopt};
use security::{bpf, devices_bpf, lsm, seccomp};

pub use cgroup::{Cgroup, CgroupStats};
pub use error::{Error, PathIoError, Result};
pub use fds::{private_dir, private_file};
pub use mountopt::mount_points;
/// The error types inside [`Error`]'s variants.
pub use process::sync::Error as ChannelError;
pub use process::userns::{Error as UserNsError, MapWriteError};
pub use request::{ExecRequest, InitRequest};
pub use spawner::{PendingProcess, Spawner, Stdio};
pub use workload::{
    PreparedWorkload, ProcessContext, RunnerError, SetupFds, Workload, WorkloadRunner,
    WorkloadTable,
};
