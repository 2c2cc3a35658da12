//! What confines a container process beyond its namespaces: the seccomp filter
//! (`seccomp/`). Loaded by the container process itself at the end of its setup (child.rs).

pub(crate) mod seccomp;
