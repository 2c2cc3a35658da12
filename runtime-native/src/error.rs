//! Errors of runtime-native: each says what failed and on what.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `config.json` is not a runtime spec.
    #[error("invalid spec {}: {source}", path.display())]
    SpecJson {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// The spec asks for what cannot work (checked before anything is created).
    #[error("invalid spec {}: {source}", path.display())]
    InvalidSpec {
        path: PathBuf,
        #[source]
        source: crate::spec::Invalid,
    },
    #[error(transparent)]
    Io(#[from] PathIoError),
    #[error("{syscall}: {source}")]
    Sys {
        syscall: String,
        #[source]
        source: nix::Error,
    },
    #[error("{what}: {reason}")]
    Mount { what: String, reason: String },
    /// An idmapped rootfs mount (`what`: the mount).
    #[error("{what}: {source}")]
    Idmap {
        what: String,
        #[source]
        source: crate::idmap::Error,
    },
    /// The spec's idmapped volumes, staged before the clone: the spec's fault or the host's.
    #[error("{} {}: {source}", if source.is_callers() { "invalid spec" } else { "stage the idmapped volumes of" }, path.display())]
    IdmappedVolumes {
        path: PathBuf,
        #[source]
        source: crate::idmap::Error,
    },
    #[error("cgroup {path}: {reason}")]
    Cgroup { path: String, reason: String },
    /// The cgroup v2 device filter of `dir` (`linux.resources.devices`).
    #[error("cgroup {}: {source}", dir.display())]
    DeviceFilter {
        dir: PathBuf,
        #[source]
        source: crate::security::devices_bpf::DeviceFilterError,
    },
    /// `linux.cgroupsPath` names no cgroup (below the hierarchy root `root`).
    #[error("cgroup {}: {source}", root.display())]
    CgroupPath {
        root: PathBuf,
        #[source]
        source: crate::cgroup::path::InvalidPath,
    },
    /// The container process reported why it could not be set up or started; the message is
    /// for the user as is (e.g. `exec: "nosuch": executable file not found in $PATH`).
    #[error("{0}")]
    Container(String),
    /// The sync socket to container process `pid` failed at `step` ("set up", "start").
    #[error("{step} container process {pid}: {source}")]
    ContainerSync {
        step: &'static str,
        pid: i32,
        #[source]
        source: crate::sync::Error,
    },
    #[error("container process {pid} exited during setup")]
    ContainerExited { pid: i32 },
    /// A `prestart`/`createRuntime` hook the caller ran for a container process.
    #[error(transparent)]
    Hook(#[from] crate::hooks::Error),
    /// Why the spawner could not clone a process, as it reported it (text: it comes from the
    /// spawner's process, `process/spawner/serve.rs`).
    #[error("spawner: {0}")]
    Spawner(String),
    /// The caller's socket to the spawner.
    #[error("spawner: {0}")]
    SpawnerChannel(#[source] crate::sync::Error),
    #[error("spawner: spawner process exited")]
    SpawnerExited,
    #[error("spawner: reply without sync socket")]
    SpawnerReply,
    #[error(
        "spawner: fork_before_threads called with {threads} threads running; call it first in main"
    )]
    ThreadsRunning { threads: usize },
}

impl Error {
    /// The spec (the user's input) is at fault, not the host.
    pub fn is_invalid_spec(&self) -> bool {
        match self {
            Error::SpecJson { .. } | Error::InvalidSpec { .. } => true,
            Error::IdmappedVolumes { source, .. } => source.is_callers(),
            _ => false,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An I/O operation that failed on a path, "`op` `path`: `source`". One type for the `Io`
/// variant of the error enums of runtime-native, its network module and the shim, so that
/// `?` carries it into any of them.
#[derive(Debug, thiserror::Error)]
#[error("{op} {path}: {source}")]
pub struct PathIoError {
    pub op: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

impl PathIoError {
    /// `map_err` helper: `.map_err(PathIoError::on("open", &path))?`.
    pub fn on(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| PathIoError { op, path, source }
    }
}
