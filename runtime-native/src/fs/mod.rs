//! Files the host must not trust: a tenant's files opened through one bounded opener
//! (`tenant_file`), paths resolved by the kernel inside a root (`resolve`), verified procfs
//! writes (`procfs`), and the fds a container process keeps (`fds`).

pub(crate) mod fds;
pub(crate) mod procfs;
pub mod resolve;
pub mod tenant_file;
