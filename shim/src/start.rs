//! The `start` action: find or launch the server for this container's group and tell containerd
//! where it listens.
//!
//! Grouping: containers of one pod share one shim. The key is the spec annotation
//! `io.kubernetes.cri.sandbox-id` (CRI) or `io.containerd.runc.v2.group` (ctr/others), else the
//! container id. The socket path is `<dir>/<sha256(ttrpc_address/namespace/key)>`, so every
//! `start` for the same group computes the same path; `dir` is the `socket_dir` containerd
//! passed in bootstrap params, else `$AMPHI_SOCKET_DIR` (tests), else `/run/containerd/s`.
//!
//! If a live server already listens there, it is reused. Otherwise `start` binds the socket,
//! forks the server (new session, stdio on /dev/null, the listener as fd 3, cwd the bundle),
//! writes the bundle's `address` file and prints the reply.

use std::io::{IsTerminal, Read};
use std::os::fd::{IntoRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::args::Flags;
use crate::bootstrap::{self, StartEnv, StartParams};
use crate::error::{Result, ShimError};

pub const DEFAULT_SOCKET_DIR: &str = "/run/containerd/s";
pub const SANDBOX_ID_ANNOTATION: &str = "io.kubernetes.cri.sandbox-id";
pub const GROUP_ANNOTATION: &str = "io.containerd.runc.v2.group";
/// The fd the server finds its listener on.
pub const LISTENER_FD: RawFd = 3;
/// Max bytes of a unix socket path (sun_path is 108 bytes with the NUL).
const MAX_SOCKET_PATH: usize = 107;
const MAX_STDIN: u64 = 10 << 20;

pub fn run(flags: &Flags) -> Result<()> {
    let stdin = read_stdin()?;
    let (params, format) = bootstrap::resolve(&stdin, flags, &StartEnv::from_process())?;
    let bundle = bundle_dir(flags)?;

    let key = grouping_key(&bundle, &params.id)?;
    let dir = socket_dir(
        params.socket_dir.as_deref(),
        std::env::var("AMPHI_SOCKET_DIR").ok(),
    );
    let path = socket_path(&dir, &params.ttrpc_address, &params.namespace, &key)?;
    let address = format!("unix://{}", path.display());

    // None: a live server of the same group answers on that socket already.
    if let Some(listener) = bind_or_reuse(&path)? {
        spawn_server(flags, &params, &bundle, &path, listener)?;
    }
    let address_file = bundle.join("address");
    std::fs::write(&address_file, &address).map_err(ShimError::io("write", address_file))?;

    let reply = bootstrap::encode_reply(format, &address)?;
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(&reply)
        .and_then(|_| out.flush())
        .map_err(ShimError::io("write reply to", "stdout"))
}

/// The bundle: `-bundle` if given, else the working directory containerd started us in.
pub fn bundle_dir(flags: &Flags) -> Result<PathBuf> {
    if !flags.bundle.is_empty() {
        return Ok(PathBuf::from(&flags.bundle));
    }
    std::env::current_dir().map_err(ShimError::io("getcwd", "."))
}

fn read_stdin() -> Result<Vec<u8>> {
    let stdin = std::io::stdin();
    let mut buf = Vec::new();
    if stdin.is_terminal() {
        return Ok(buf);
    }
    stdin
        .lock()
        .take(MAX_STDIN)
        .read_to_end(&mut buf)
        .map_err(ShimError::io("read", "stdin"))?;
    Ok(buf)
}

/// The group this container's shim serves (see the module doc).
pub fn grouping_key(bundle: &Path, id: &str) -> Result<String> {
    let config = bundle.join("config.json");
    let data = match std::fs::read(&config) {
        Ok(d) => d,
        // No spec (never the case under containerd): the container is its own group.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(id.to_string()),
        Err(e) => return Err(ShimError::io("read", config)(e)),
    };
    let spec: serde_json::Value = serde_json::from_slice(&data)
        .map_err(|e| ShimError::Bootstrap(format!("parse {}: {e}", config.display())))?;
    Ok(grouping_key_of(&spec, id))
}

pub fn grouping_key_of(spec: &serde_json::Value, id: &str) -> String {
    let annotations = &spec["annotations"];
    [SANDBOX_ID_ANNOTATION, GROUP_ANNOTATION]
        .iter()
        .filter_map(|k| annotations[*k].as_str())
        .find(|v| !v.is_empty())
        .unwrap_or(id)
        .to_string()
}

pub fn socket_dir(from_params: Option<&str>, from_env: Option<String>) -> PathBuf {
    from_params
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or(from_env.filter(|d| !d.is_empty()).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET_DIR))
}

pub fn socket_path(dir: &Path, ttrpc_address: &str, namespace: &str, key: &str) -> Result<PathBuf> {
    let digest = Sha256::digest(format!("{ttrpc_address}/{namespace}/{key}").as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    let path = dir.join(hex);
    let len = path.as_os_str().len();
    if len > MAX_SOCKET_PATH {
        return Err(ShimError::SocketPathTooLong { path, len });
    }
    Ok(path)
}

/// Binds `path`; `None` if a live server already listens there. A dead socket (nothing
/// accepts) is removed and bound again.
pub fn bind_or_reuse(path: &Path) -> Result<Option<UnixListener>> {
    if let Some(dir) = path.parent() {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(ShimError::io("create dir", dir))?;
    }
    for _ in 0..2 {
        match UnixListener::bind(path) {
            Ok(l) => {
                // 0600 whatever umask containerd gave us: whoever can connect can drive
                // every container of this shim (connect needs write permission).
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                    .map_err(ShimError::io("chmod", path))?;
                return Ok(Some(l));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                if UnixStream::connect(path).is_ok() {
                    return Ok(None);
                }
                match std::fs::remove_file(path) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        return Err(ShimError::io("remove dead socket", path)(e))
                    }
                    _ => {}
                }
            }
            Err(e) => return Err(ShimError::io("bind", path)(e)),
        }
    }
    Err(ShimError::io("bind", path)(
        std::io::ErrorKind::AddrInUse.into(),
    ))
}

fn spawn_server(
    flags: &Flags,
    params: &StartParams,
    bundle: &Path,
    socket: &Path,
    listener: UnixListener,
) -> Result<()> {
    let server_flags = Flags {
        debug: params.debug,
        namespace: params.namespace.clone(),
        id: params.id.clone(),
        address: params.grpc_address.clone(),
        publish_binary: params.publish_binary.clone(),
        bundle: flags.bundle.clone(),
        socket: socket.display().to_string(),
        ..Flags::default()
    };
    // The server is a fork of this process, not a re-exec of /proc/self/exe: no exec and
    // dynamic loading of the whole binary before it can answer containerd, and `start` can
    // return as soon as the fork exists (containerd's connection waits in the listener's
    // backlog meanwhile). `start` has a single thread, so the child may run ordinary code;
    // the server forks its spawner first thing, still single-threaded (ARCHITECTURE.md).
    // SAFETY: fork of a single-threaded process.
    match unsafe { libc::fork() } {
        -1 => Err(ShimError::SpawnServer {
            exe: PathBuf::from("fork"),
            source: std::io::Error::last_os_error(),
        }),
        0 => {
            let code = match become_server(bundle, params, listener)
                .and_then(|()| crate::run(crate::args::Mode::Server, server_flags))
            {
                Ok(()) => 0,
                Err(_) => 1,
            };
            std::process::exit(code)
        }
        _ => {
            // The server is reparented once we exit; containerd (or init) reaps it.
            drop(listener);
            Ok(())
        }
    }
}

/// In the forked server: a session of its own; stdio on /dev/null (containerd reads `start`'s
/// stdout and stderr until EOF, so the server must not keep them); the listener on fd 3 and no
/// other fd (whatever containerd's side leaked to us must not live on in a long-running
/// daemon); the bundle as cwd; the environment the server reads.
fn become_server(bundle: &Path, params: &StartParams, listener: UnixListener) -> Result<()> {
    let sys = |what: &'static str| {
        let e = std::io::Error::last_os_error();
        ShimError::io(what, "")(e)
    };
    // SAFETY: plain syscalls on fds this process owns, single-threaded.
    unsafe {
        if libc::setsid() < 0 {
            return Err(sys("setsid"));
        }
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC);
        if null < 0 {
            return Err(sys("open /dev/null"));
        }
        for fd in 0..3 {
            if libc::dup2(null, fd) < 0 {
                return Err(sys("dup2 /dev/null"));
            }
        }
        let fd = listener.into_raw_fd();
        if fd != LISTENER_FD {
            if libc::dup2(fd, LISTENER_FD) < 0 {
                return Err(sys("dup2 listener"));
            }
            libc::close(fd);
        }
        if libc::close_range(LISTENER_FD as u32 + 1, u32::MAX, 0) < 0 {
            for fd in LISTENER_FD + 1..4096 {
                libc::close(fd);
            }
        }
    }
    std::env::set_current_dir(bundle).map_err(ShimError::io("chdir to", bundle))?;
    std::env::set_var("TTRPC_ADDRESS", &params.ttrpc_address);
    std::env::set_var("GRPC_ADDRESS", &params.grpc_address);
    std::env::set_var("NAMESPACE", &params.namespace);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn grouping_key_prefers_sandbox_then_group_then_id() {
        let spec = json!({"annotations": {
            "io.kubernetes.cri.sandbox-id": "pod1",
            "io.containerd.runc.v2.group": "g1"
        }});
        assert_eq!(grouping_key_of(&spec, "c1"), "pod1");
        let spec = json!({"annotations": {"io.containerd.runc.v2.group": "g1"}});
        assert_eq!(grouping_key_of(&spec, "c1"), "g1");
        let spec = json!({"annotations": {"io.kubernetes.cri.sandbox-id": ""}});
        assert_eq!(grouping_key_of(&spec, "c1"), "c1");
        assert_eq!(grouping_key_of(&json!({"ociVersion": "1.0.2"}), "c1"), "c1");
    }

    #[test]
    fn grouping_key_from_bundle() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(grouping_key(dir.path(), "c1").unwrap(), "c1");
        std::fs::write(
            dir.path().join("config.json"),
            r#"{"annotations":{"io.kubernetes.cri.sandbox-id":"sb"}}"#,
        )
        .unwrap();
        assert_eq!(grouping_key(dir.path(), "c1").unwrap(), "sb");
        std::fs::write(dir.path().join("config.json"), "{").unwrap();
        assert!(grouping_key(dir.path(), "c1").is_err());
    }

    #[test]
    fn socket_path_is_stable_and_short() {
        let p = socket_path(
            Path::new(DEFAULT_SOCKET_DIR),
            "/run/containerd/containerd.sock.ttrpc",
            "default",
            "123",
        )
        .unwrap();
        // sha256("/run/containerd/containerd.sock.ttrpc/default/123")
        let expect: String = Sha256::digest(b"/run/containerd/containerd.sock.ttrpc/default/123")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(p, Path::new(DEFAULT_SOCKET_DIR).join(&expect));
        assert_eq!(expect.len(), 64);
        // Another group, namespace or containerd gets another socket.
        let q = socket_path(
            Path::new("/run/containerd/s"),
            "/run/containerd/containerd.sock.ttrpc",
            "k8s.io",
            "123",
        )
        .unwrap();
        assert_ne!(p, q);
        let long = PathBuf::from("/".to_string() + &"d".repeat(60));
        assert!(matches!(
            socket_path(&long, "/a", "b", "c"),
            Err(ShimError::SocketPathTooLong { .. })
        ));
    }

    #[test]
    fn socket_dir_precedence() {
        assert_eq!(socket_dir(None, None), PathBuf::from(DEFAULT_SOCKET_DIR));
        assert_eq!(
            socket_dir(None, Some("/tmp/e".into())),
            PathBuf::from("/tmp/e")
        );
        assert_eq!(
            socket_dir(Some("/run/p"), Some("/tmp/e".into())),
            PathBuf::from("/run/p")
        );
        assert_eq!(
            socket_dir(Some(""), Some("".into())),
            PathBuf::from(DEFAULT_SOCKET_DIR)
        );
    }

    #[test]
    fn bind_reuse_and_dead_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s").join("sock");
        let live = bind_or_reuse(&path).unwrap().expect("bound");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "socket mode {mode:o}");
        // Something listens: reuse.
        assert!(bind_or_reuse(&path).unwrap().is_none());
        // The server died: the file remains, nobody accepts -> removed and bound again.
        drop(live);
        assert!(path.exists());
        let again = bind_or_reuse(&path).unwrap();
        assert!(again.is_some());
    }
}
