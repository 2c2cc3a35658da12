//! Errors of runtime-native: each says what failed and on what.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid spec {path}: {reason}")]
    InvalidSpec { path: PathBuf, reason: String },
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
    #[error("cgroup {path}: {reason}")]
    Cgroup { path: String, reason: String },
    /// The container process reported why it could not be set up or started; the message is
    /// for the user as is (e.g. `exec: "nosuch": executable file not found in $PATH`).
    #[error("{0}")]
    Container(String),
    #[error("spawner: {0}")]
    Spawner(String),
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
