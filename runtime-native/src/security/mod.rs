//! What confines a container process beyond its namespaces: the seccomp filter (`seccomp/`,
//! loaded by the container process itself at the end of its setup), the cgroup v2 device
//! filter (`devices_bpf`, over the eBPF loader in `bpf`) and the LSM labels (`lsm`).

pub(crate) mod bpf;
pub mod devices_bpf;
pub(crate) mod lsm;
pub(crate) mod seccomp;
