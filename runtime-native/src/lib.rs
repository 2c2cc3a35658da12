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
//! cloned by an intermediate the spawner reaps, and is reparented to the shim: userns_join.rs.)

pub mod cgroup;
pub mod devices_bpf;
pub mod error;
pub mod features;
pub mod hooks;
pub mod identity;
pub mod idmap;
pub mod memory;
pub mod mount_attr;
pub mod network;
mod procfs;
pub mod request;
pub mod resolve;
pub mod rootfs;
pub mod spawner;
pub mod spec;
pub mod tenant_file;
pub mod testgen;
pub mod workload;

mod bpf;
mod child;
mod fds;
mod lsm;
mod mountopt;
mod ns;
#[cfg(test)]
mod parser_props;
mod personality;
mod security;
mod sync;
mod userns;
mod userns_join;

/// seccomp lives in `security/`; the container process's setup (child.rs) reaches it here.
use security::seccomp;

pub use cgroup::{Cgroup, CgroupStats};
pub use error::{Error, Result};
pub use fds::{private_dir, private_file};
pub use mountopt::mount_points;
pub use request::{ExecRequest, InitRequest};
pub use spawner::{PendingProcess, Spawner, Stdio};
pub use workload::{
    PreparedWorkload, ProcessContext, SetupFds, Workload, WorkloadRunner, WorkloadTable,
};
