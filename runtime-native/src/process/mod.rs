//! Processes: the single-threaded spawner that clones every container process, and what a
//! container process does between the clone and execve (`child`: fds, namespaces, identity,
//! limits, the entrypoint), how an exec enters its container (`exec_ns`), user namespaces,
//! OCI hooks and other helper processes, and processes known by identity rather than pid.

pub(crate) mod child;
pub mod child_wait;
pub(crate) mod exec_ns;
pub mod hooks;
pub mod identity;
pub(crate) mod ns;
pub(crate) mod personality;
pub(crate) mod proc_mount;
pub mod spawner;
pub(crate) mod sync;
pub(crate) mod userns;
pub(crate) mod userns_join;
