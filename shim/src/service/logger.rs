//! `binary://` stdio: a log driver process, started the way containerd's runc shim starts it,
//! so existing drivers work unchanged.
//!
//! `binary:///path/to/driver?key=value&flag` runs `/path/to/driver key value flag` with env
//! `CONTAINER_ID` and `CONTAINER_NAMESPACE`, the container's stdout on fd 3, its stderr on fd 4,
//! and a readiness pipe on fd 5 that the driver closes (or writes to) once it is ready. The shim
//! waits for that before the container starts, so no early line is lost. The driver exits when
//! the container's output pipes close.

use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Who the output belongs to, as the driver learns it from its environment.
#[derive(Debug, Clone, Default)]
pub struct Owner {
    pub container_id: String,
    pub namespace: String,
}

/// How long a driver may take to report ready.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// Splits `binary:///path?a=1&b` into the program and its arguments.
pub fn parse_url(url: &str) -> Result<(String, Vec<String>), LogDriverError> {
    let rest = url.strip_prefix("binary://").unwrap_or(url);
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    if !path.starts_with('/') {
        return Err(LogDriverError::RelativePath {
            url: url.to_string(),
        });
    }
    let mut args = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        args.push(unescape(k));
        if !v.is_empty() {
            args.push(unescape(v));
        }
    }
    Ok((unescape(path), args))
}

fn unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match u8::from_str_radix(&s[i + 1..i + 3], 16) {
                Ok(b) => {
                    out.push(b);
                    i += 3;
                    continue;
                }
                Err(_) => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A `binary://` log driver that is misnamed or could not be started.
#[derive(Debug, thiserror::Error)]
pub enum LogDriverError {
    /// The caller's mistake (containerd passes the URL the user gave).
    #[error("log driver {url:?}: the path must be absolute")]
    RelativePath { url: String },
    #[error("log driver pipe: {0}")]
    Pipe(#[source] nix::errno::Errno),
    #[error("start log driver {program}: {source}")]
    Start {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("log driver {program} did not become ready within {seconds}s")]
    NotReady { program: String, seconds: u64 },
}

impl LogDriverError {
    /// Whether the URL itself is wrong, rather than the driver failing.
    pub fn is_invalid_input(&self) -> bool {
        matches!(self, LogDriverError::RelativePath { .. })
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd), LogDriverError> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(LogDriverError::Pipe)
}

/// Starts the driver; returns the write ends the container gets as stdout and stderr.
pub fn start(url: &str, owner: &Owner) -> Result<(OwnedFd, OwnedFd), LogDriverError> {
    let (program, args) = parse_url(url)?;
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let (ready_r, ready_w) = pipe()?;
    let fds = [out_r.as_raw_fd(), err_r.as_raw_fd(), ready_w.as_raw_fd()];
    let mut cmd = Command::new(&program);
    cmd.args(&args)
        .env("CONTAINER_ID", &owner.container_id)
        .env("CONTAINER_NAMESPACE", &owner.namespace)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: between fork and exec the closure only calls dup2 and fcntl, which are
    // async-signal-safe; it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            for (target, fd) in (3..).zip(fds) {
                if fd == target {
                    let flags = libc::fcntl(fd, libc::F_GETFD);
                    libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC);
                } else if libc::dup2(fd, target) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    cmd.spawn().map_err(|source| LogDriverError::Start {
        program: program.to_string(),
        source,
    })?;
    // The driver holds its own copies now; ours must go so that EOF and readiness work.
    drop((out_r, err_r, ready_w));
    wait_ready(ready_r, &program)?;
    Ok((out_w, err_w))
}

/// Waits until the driver closes or writes to its readiness pipe.
fn wait_ready(ready: OwnedFd, program: &str) -> Result<(), LogDriverError> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut f = std::fs::File::from(ready);
        let mut b = [0u8; 1];
        let _ = tx.send(f.read(&mut b));
    });
    match rx.recv_timeout(READY_TIMEOUT) {
        Ok(_) => Ok(()),
        Err(_) => Err(LogDriverError::NotReady {
            program: program.to_string(),
            seconds: READY_TIMEOUT.as_secs(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_become_program_and_args() {
        let (p, a) =
            parse_url("binary:///usr/bin/logger?tag=web&verbose&path=%2Fvar%2Flog").unwrap();
        assert_eq!(p, "/usr/bin/logger");
        assert_eq!(a, ["tag", "web", "verbose", "path", "/var/log"]);
    }

    /// A relative driver path is the caller's mistake (INVALID_ARGUMENT), named with its URL.
    #[test]
    fn a_relative_driver_path_is_the_callers_error() {
        let e = parse_url("binary://relative/bin").unwrap_err();
        assert_eq!(
            e.to_string(),
            "log driver \"binary://relative/bin\": the path must be absolute"
        );
        let code = crate::service::error::ServiceError::from(e).code();
        assert_eq!(code, ttrpc::Code::INVALID_ARGUMENT);
    }

    #[test]
    fn a_driver_receives_output_and_identity() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out.txt");
        let script = dir.path().join("driver.sh");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\nexec 5>&-\necho \"$CONTAINER_NAMESPACE/$CONTAINER_ID $1\" > {o}\ncat <&3 >> {o}\ncat <&4 >> {o}\n",
                o = out.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let owner = Owner {
            container_id: "c1".into(),
            namespace: "ns".into(),
        };
        let url = format!("binary://{}?tag", script.display());
        let (o, e) = start(&url, &owner).unwrap();
        std::fs::File::from(o).write_all(b"to stdout\n").unwrap();
        std::fs::File::from(e).write_all(b"to stderr\n").unwrap();
        for _ in 0..100 {
            let s = std::fs::read_to_string(&out).unwrap_or_default();
            if s.contains("to stderr") {
                assert_eq!(s, "ns/c1 tag\nto stdout\nto stderr\n");
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("driver output: {:?}", std::fs::read_to_string(&out));
    }
}
