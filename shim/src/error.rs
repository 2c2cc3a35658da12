//! Errors of the shim's lifecycle (`start`, `delete`, the server's setup). The Task service has
//! its own error type (`service::error`), the only one mapped to ttrpc codes.
//!
//! These errors end up on the shim's stderr, which containerd shows to the user
//! (`ctr: failed to start shim: start failed: <this message>`), so each says what failed on what.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    #[error("invalid arguments: {0}")]
    Args(String),
    #[error(transparent)]
    Io(#[from] runtime_native::error::PathIoError),
    #[error("{0}")]
    Bootstrap(String),
    #[error("socket path {path} is {len} bytes long, longer than a unix socket address allows")]
    SocketPathTooLong { path: PathBuf, len: usize },
    #[error("spawn the shim server {exe}: {source}")]
    SpawnServer {
        exe: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("encode {what}: {source}")]
    Protobuf {
        what: &'static str,
        #[source]
        source: containerd_shim_protos::protobuf::Error,
    },
    #[error("encode {what} as JSON: {source}")]
    Json {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("{what}: {source}")]
    Runtime {
        what: String,
        #[source]
        source: runtime_native::Error,
    },
    #[error("{0}")]
    Network(String),
    #[error("ttrpc server: {0}")]
    Ttrpc(#[from] ttrpc::Error),
}

pub type Result<T, E = ShimError> = std::result::Result<T, E>;

impl ShimError {
    /// `map_err` helper: `.map_err(ShimError::io("open", &path))`.
    pub fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> ShimError {
        let on = runtime_native::error::PathIoError::on(op, path);
        move |source| ShimError::Io(on(source))
    }
}

/// `msg` in protobuf wire format; an error names it as `what`.
pub fn encode(
    msg: &impl containerd_shim_protos::protobuf::Message,
    what: &'static str,
) -> Result<Vec<u8>> {
    msg.write_to_bytes()
        .map_err(|source| ShimError::Protobuf { what, source })
}
