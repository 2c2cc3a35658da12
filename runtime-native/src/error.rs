//! Errors of runtime-native: each says what failed and on what.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid spec {path}: {reason}")]
    InvalidSpec { path: PathBuf, reason: String },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
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
