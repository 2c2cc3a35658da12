//! Deciding what the container process runs: the native entrypoint, or (later in this module)
//! a WebAssembly module compiled in the shim. The plan carries the workload for the spawner
//! and any fds the container process needs (such as an opened compiled artifact).

use std::os::fd::OwnedFd;
use std::path::Path;

use runtime_native::Workload;

use super::error::ServiceResult;

pub struct Plan {
    pub workload: Workload,
    pub extra_fds: Vec<OwnedFd>,
}

fn native() -> Plan {
    Plan {
        workload: Workload::Exec,
        extra_fds: Vec::new(),
    }
}

/// The plan for a container's init process.
pub fn plan_init(_rootfs: &Path, _spec: &oci_spec::runtime::Spec) -> ServiceResult<Plan> {
    Ok(native())
}

/// The plan for an exec into a running container.
pub fn plan_exec(_rootfs: &Path, _process: &oci_spec::runtime::Process) -> ServiceResult<Plan> {
    Ok(native())
}
