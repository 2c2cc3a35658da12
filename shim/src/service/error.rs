//! The one place where failures become ttrpc status codes.
//!
//! Every Task RPC returns `Result<_, ServiceError>`; `code` maps the variant to the code
//! containerd expects (it turns NotFound / AlreadyExists / FailedPrecondition into its own
//! errdefs, which `ctr` and the CRI plugin rely on), and `into_ttrpc` keeps the message for the
//! user. Host failures are typed (what failed, on what) and all read as UNKNOWN.

use ttrpc::{Code, Status};

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("{0}: not found")]
    NotFound(String),
    #[error("{0}: already exists")]
    AlreadyExists(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    Unimplemented(String),
    /// What runtime-native reported; a bad spec is the user's fault, the rest the host's.
    #[error(transparent)]
    Runtime(#[from] runtime_native::Error),
    /// What runtime-wasm reported: the tenant's module or settings are the user's fault; the
    /// node's cache, engine or artifact the host's (`is_callers`).
    #[error(transparent)]
    Wasm(#[from] runtime_wasm::Error),
    /// A stdio target the shim opens for a process (fifo, log file, /dev/null).
    #[error("open {what} {path}: {source}")]
    OpenStdio {
        what: String,
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The container's record (`crate::record`) could not be written.
    #[error("save state of task {id}: {source}")]
    SaveState {
        id: String,
        #[source]
        source: std::io::Error,
    },
    /// A signal the shim sends to one process.
    #[error("kill {pid} with {signal}: {source}")]
    Signal {
        pid: i32,
        signal: nix::sys::signal::Signal,
        #[source]
        source: nix::errno::Errno,
    },
    /// A terminal operation (dup, non-blocking mode, window size).
    #[error("{op}: {source}")]
    Pty {
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// A `binary://` log driver that is misnamed or could not be started.
    #[error(transparent)]
    LogDriver(#[from] crate::service::logger::LogDriverError),
    /// Networking in Create of task `id` (`crate::network`); the user's config or
    /// annotations are at fault when `NetError::is_config`.
    #[error("network of task {id}: {source}")]
    Network {
        id: String,
        #[source]
        source: runtime_native::network::NetError,
    },
    /// The entrypoint in the rootfs could not be opened or read (a special file, too large,
    /// an unreadable path): the image's fault.
    #[error("entrypoint: {0}")]
    Entrypoint(#[source] runtime_native::fs::tenant_file::TenantFileError),
    /// An entrypoint missing from the rootfs, looked up among the image's wasm layers.
    #[error("entrypoint {path} is not in the rootfs, and {source}")]
    EntrypointLayer {
        path: String,
        #[source]
        source: Box<crate::wasm_layers::FindError>,
    },
    /// The Create's runtime options or a table of the config they carry (`[tenant_files]`).
    #[error(transparent)]
    Config(Box<crate::runtime_options::ConfigError>),
    /// The `[wasm]` settings of the module `module`.
    #[error("wasm module {module}: {source}")]
    WasmConfig {
        module: String,
        #[source]
        source: Box<crate::runtime_options::ConfigError>,
    },
    /// A compile in the container's cgroup (`crate::compile_helper`); the tenant's module or
    /// limit, or the host.
    #[error(transparent)]
    Compile(crate::compile_helper::CompileError),
    /// Planning a workload (`what`) on the blocking pool panicked or was cancelled.
    #[error("{what}: {source}")]
    PlanFailed {
        what: String,
        #[source]
        source: tokio::task::JoinError,
    },
    #[error("{what}: not done after {timeout:?} (reading, fetching or compiling the entrypoint)")]
    PlanTimeout {
        what: String,
        timeout: std::time::Duration,
    },
    /// The container's rootfs, opened for reading its entrypoint.
    #[error("open rootfs {}: {source}", path.display())]
    OpenRootfs {
        path: std::path::PathBuf,
        #[source]
        source: nix::errno::Errno,
    },
    /// Metrics that could not be encoded for containerd.
    #[error("encode metrics: {0}")]
    Metrics(#[source] containerd_shim_protos::protobuf::Error),
    /// A blocking-pool job that panicked or was cancelled.
    #[error("blocking task failed: {0}")]
    Blocking(#[from] tokio::task::JoinError),
}

pub type ServiceResult<T> = std::result::Result<T, ServiceError>;

impl From<crate::runtime_options::ConfigError> for ServiceError {
    fn from(e: crate::runtime_options::ConfigError) -> ServiceError {
        ServiceError::Config(Box::new(e))
    }
}

/// Whether a wasm error is about what the caller sent (the module, its exports and imports,
/// the settings) rather than the node's own cache, engine or artifact.
fn wasm_is_callers(e: &runtime_wasm::Error) -> bool {
    use runtime_wasm::Error as E;
    match e {
        E::InvalidModule { .. }
        | E::MissingExport { .. }
        | E::UnsupportedComponent { .. }
        | E::Link { .. }
        | E::Settings(_) => true,
        E::Cache { .. } | E::Artifact { .. } | E::Engine(_) | E::Payload(_) | E::Sandbox(_) => {
            false
        }
    }
}

impl ServiceError {
    pub fn code(&self) -> Code {
        match self {
            ServiceError::NotFound(_) => Code::NOT_FOUND,
            ServiceError::AlreadyExists(_) => Code::ALREADY_EXISTS,
            ServiceError::FailedPrecondition(_) => Code::FAILED_PRECONDITION,
            ServiceError::InvalidArgument(_) => Code::INVALID_ARGUMENT,
            ServiceError::Unimplemented(_) => Code::UNIMPLEMENTED,
            ServiceError::Runtime(e) if e.is_invalid_spec() => Code::INVALID_ARGUMENT,
            ServiceError::Wasm(e) if wasm_is_callers(e) => Code::INVALID_ARGUMENT,
            ServiceError::Network { source, .. } if source.is_config() => Code::INVALID_ARGUMENT,
            ServiceError::LogDriver(e) if e.is_invalid_input() => Code::INVALID_ARGUMENT,
            ServiceError::Config(_)
            | ServiceError::WasmConfig { .. }
            | ServiceError::Entrypoint(_)
            | ServiceError::EntrypointLayer { .. } => Code::INVALID_ARGUMENT,
            ServiceError::Compile(e) if e.is_invalid_input() => Code::INVALID_ARGUMENT,
            ServiceError::Runtime(_)
            | ServiceError::Wasm(_)
            | ServiceError::OpenStdio { .. }
            | ServiceError::SaveState { .. }
            | ServiceError::Signal { .. }
            | ServiceError::Pty { .. }
            | ServiceError::LogDriver(_)
            | ServiceError::Network { .. }
            | ServiceError::Compile(_)
            | ServiceError::PlanFailed { .. }
            | ServiceError::PlanTimeout { .. }
            | ServiceError::OpenRootfs { .. }
            | ServiceError::Metrics(_)
            | ServiceError::Blocking(_) => Code::UNKNOWN,
        }
    }

    pub fn into_ttrpc(self) -> ttrpc::Error {
        let mut status = Status::new();
        status.set_code(self.code());
        status.set_message(self.to_string());
        ttrpc::Error::RpcStatus(status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io(kind: std::io::ErrorKind) -> std::io::Error {
        std::io::Error::from(kind)
    }

    /// `err` reaches ttrpc as a status with `code` and `msg`.
    fn assert_status(err: ServiceError, code: Code, msg: &str) {
        match err.into_ttrpc() {
            ttrpc::Error::RpcStatus(s) => {
                assert_eq!(s.code(), code, "{msg}");
                assert_eq!(s.message(), msg);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn each_variant_maps_to_its_code_and_keeps_the_message() {
        // The variants that carry only a text: (variant, text, code, message).
        type Variant = fn(String) -> ServiceError;
        let texts: [(Variant, &str, Code, &str); 5] = [
            (
                ServiceError::NotFound,
                "task t1",
                Code::NOT_FOUND,
                "task t1: not found",
            ),
            (
                ServiceError::AlreadyExists,
                "exec e1",
                Code::ALREADY_EXISTS,
                "exec e1: already exists",
            ),
            (
                ServiceError::FailedPrecondition,
                "running",
                Code::FAILED_PRECONDITION,
                "running",
            ),
            (
                ServiceError::InvalidArgument,
                "bad",
                Code::INVALID_ARGUMENT,
                "bad",
            ),
            (ServiceError::Unimplemented, "no", Code::UNIMPLEMENTED, "no"),
        ];
        for (variant, text, code, msg) in texts {
            assert_status(variant(text.into()), code, msg);
        }
        let cases = [
            (
                ServiceError::Runtime(runtime_native::Error::InvalidSpec {
                    path: "/b/config.json".into(),
                    source: runtime_native::spec::Invalid::NoArgs,
                }),
                Code::INVALID_ARGUMENT,
                "invalid spec /b/config.json: process.args must not be empty",
            ),
            (
                ServiceError::Runtime(runtime_native::Error::InvalidSpec {
                    path: "/b/config.json".into(),
                    source: runtime_native::UserNsError::MapsMissing.into(),
                }),
                Code::INVALID_ARGUMENT,
                "invalid spec /b/config.json: a new user namespace needs linux.uidMappings and \
                 linux.gidMappings",
            ),
            (
                ServiceError::Runtime(runtime_native::Error::Container(
                    "exec: \"nosuch\": executable file not found in $PATH".into(),
                )),
                Code::UNKNOWN,
                "exec: \"nosuch\": executable file not found in $PATH",
            ),
            (
                ServiceError::OpenStdio {
                    what: "stdin fifo".into(),
                    path: "/run/fifo".into(),
                    source: io(std::io::ErrorKind::NotFound),
                },
                Code::UNKNOWN,
                "open stdin fifo /run/fifo: entity not found",
            ),
            (
                ServiceError::SaveState {
                    id: "t1".into(),
                    source: io(std::io::ErrorKind::PermissionDenied),
                },
                Code::UNKNOWN,
                "save state of task t1: permission denied",
            ),
            (
                ServiceError::Signal {
                    pid: 42,
                    signal: nix::sys::signal::Signal::SIGTERM,
                    source: nix::errno::Errno::EPERM,
                },
                Code::UNKNOWN,
                "kill 42 with SIGTERM: EPERM: Operation not permitted",
            ),
            (
                ServiceError::Pty {
                    op: "resize pty",
                    source: io(std::io::ErrorKind::InvalidInput),
                },
                Code::UNKNOWN,
                "resize pty: invalid input parameter",
            ),
            (
                ServiceError::LogDriver(crate::service::logger::LogDriverError::NotReady {
                    program: "/bin/x".into(),
                    seconds: 10,
                }),
                Code::UNKNOWN,
                "log driver /bin/x did not become ready within 10s",
            ),
            (
                ServiceError::Network {
                    id: "t1".into(),
                    source: runtime_native::network::NetError::Config("bad subnet".into()),
                },
                Code::INVALID_ARGUMENT,
                "network of task t1: network config: bad subnet",
            ),
            (
                ServiceError::Network {
                    id: "t1".into(),
                    source: runtime_native::network::NetError::Firewall("no iptables".into()),
                },
                Code::UNKNOWN,
                "network of task t1: firewall: no iptables",
            ),
            (
                ServiceError::OpenRootfs {
                    path: "/b/rootfs".into(),
                    source: nix::errno::Errno::ENOENT,
                },
                Code::UNKNOWN,
                "open rootfs /b/rootfs: ENOENT: No such file or directory",
            ),
            (
                ServiceError::PlanTimeout {
                    what: "plan task t1".into(),
                    timeout: std::time::Duration::from_secs(120),
                },
                Code::UNKNOWN,
                "plan task t1: not done after 120s (reading, fetching or compiling the entrypoint)",
            ),
            (
                ServiceError::from(crate::runtime_options::ConfigError::Options(
                    crate::runtime_options::OptionsError::Decode(
                        crate::runtime_options::DecodeError::TruncatedField,
                    ),
                )),
                Code::INVALID_ARGUMENT,
                "runtime options: truncated field",
            ),
            (
                ServiceError::Wasm(runtime_wasm::Error::InvalidModule {
                    module: "/app.wasm".into(),
                    reason: "bad magic".into(),
                }),
                Code::INVALID_ARGUMENT,
                "wasm module /app.wasm: invalid: bad magic",
            ),
            (
                ServiceError::Wasm(runtime_wasm::Error::Cache {
                    path: "/var/lib/amphi/wasm-cache".into(),
                    op: "create",
                    source: io(std::io::ErrorKind::StorageFull),
                }),
                Code::UNKNOWN,
                "wasm cache /var/lib/amphi/wasm-cache: create: no storage space",
            ),
        ];
        for (err, code, msg) in cases {
            assert_status(err, code, msg);
        }
    }

    #[test]
    fn a_failed_blocking_job_is_unknown() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let join = rt.block_on(async { tokio::task::spawn_blocking(|| panic!("x")).await });
        let e = ServiceError::from(join.unwrap_err());
        assert_eq!(e.code(), Code::UNKNOWN);
        assert!(e.to_string().starts_with("blocking task failed: "), "{e}");
    }
}
