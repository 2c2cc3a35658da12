//! What runs inside a prepared container.
//!
//! The child process that the spawner clones sets up the container and then hands over to a
//! workload. [`Workload::Exec`] is built in (execve of the process args). Everything else is a
//! [`Workload::Custom`] resolved by name in the [`WorkloadTable`] given to the spawner; the
//! payload is opaque bytes the registering crate defines (the wasm runtime puts its module
//! artifact path and options there).

use std::os::fd::OwnedFd;

use serde::{Deserialize, Serialize};

/// Which program the container process runs once it is set up.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub enum Workload {
    /// `execve` of `process.args[0]` (resolved through the container's `PATH`).
    #[default]
    Exec,
    /// A runner registered under `runner` in the [`WorkloadTable`], with its own payload.
    Custom { runner: String, payload: Vec<u8> },
}

/// The process as the container sees it, after setup: what a runner needs to start the
/// program. All paths are inside the container (after pivot_root).
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct ProcessContext {
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub terminal: bool,
    /// The container's memory limit in bytes, if the spec sets one.
    pub memory_limit: Option<u64>,
    /// Numbers, in the container process, of [`crate::Stdio::extra_fds`] (same order).
    pub extra_fds: Vec<i32>,
}

/// A workload that has been validated inside the container and is ready to run on Start.
pub trait PreparedWorkload {
    /// Runs the workload with stdio on fds 0, 1, 2. Returns the exit status the container
    /// process exits with (0..=255; 128+n for "killed by signal n").
    fn run(self: Box<Self>, ctx: &ProcessContext) -> i32;
}

/// File descriptors a runner's [`WorkloadRunner::setup`] took, each with a name of its choosing
/// (the wasm runner: the path at which its guest sees a directory). They stay open when the
/// container process closes every other fd, and are handed to [`WorkloadRunner::prepare`].
pub type SetupFds = Vec<(String, OwnedFd)>;

/// A runner's failure. runtime-native knows no runner's error types, so any error, kept whole
/// (with its sources) until the container process reports it to the caller as text.
pub type RunnerError = Box<dyn std::error::Error + Send + Sync>;

/// Prepares a custom workload inside the container (after pivot_root, before Create returns),
/// so that bad input fails Create with a clear message rather than a mysterious exit.
pub trait WorkloadRunner: Sync {
    /// Runs in the container process once its mounts are made (an exec: once it joined the
    /// container), before it gives up its privileges (identity, capabilities, seccomp): for a
    /// runner that must take hold of the container's files while it still can.
    fn setup(&self, _spec: &oci_spec::runtime::Spec) -> Result<SetupFds, RunnerError> {
        Ok(Vec::new())
    }

    fn prepare(
        &self,
        ctx: &ProcessContext,
        payload: &[u8],
        setup: SetupFds,
    ) -> Result<Box<dyn PreparedWorkload>, RunnerError>;
}

/// The runners the binary registers, by name.
pub type WorkloadTable = &'static [(&'static str, &'static dyn WorkloadRunner)];
