//! Compiling a wasm module in a short-lived helper process charged to the container's cgroup.
//!
//! Compiling is the one tenant-triggered job whose memory grows with what the tenant sends
//! (≈ 100 × a function's body size, DESIGN.md). Done in the shim, that memory is the host's;
//! done here, it is the pod's: the shim forks and re-executes its own binary
//! (`/proc/self/exe`, action [`ACTION`]); between the fork and the exec the child writes
//! itself into every `cgroup.procs` of the container's cgroup (v1 hierarchies or v2), so the
//! exec, the engine and the compile are all charged there, and the container's memory limit
//! applies: past it the kernel's OOM killer ends the helper, not the node. The helper stays
//! in the host's namespaces (it writes the node cache), is non-dumpable, and dies with the
//! thread that started it.
//!
//! Protocol: on stdin a little-endian `u32` length, that many bytes of JSON ([`Request`]:
//! the cache directory and the [`CompileJob`]), then the module's bytes; on stdout one JSON
//! [`Reply`]. The helper writes the cache entry itself (0600, temp file + rename, digest
//! trailer: `runtime_wasm::compile_entry`), and the shim opens and verifies it like a hit.
//! The shim waits on the blocking pool with a deadline, never on an async worker.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use runtime_native::child_wait::{self, ChildExit};
use runtime_native::Cgroup;
use runtime_wasm::{CompileJob, WasmKind};
use serde::{Deserialize, Serialize};

/// The hidden action that makes the binary a compile helper (`args::Mode::CompileHelper`).
pub const ACTION: &str = "_compile-helper";

/// Bound on the request header and on the reply.
const MAX_HEADER: u32 = 1 << 20;
const MAX_REPLY: usize = 64 << 10;
/// A helper's own error message is cut to this (its reply must fit in the pipe).
const MAX_ERROR: usize = 16 << 10;
/// How much of the helper's stderr (a panic) goes into an error.
const STDERR_TAIL: usize = 2048;

/// What the shim asks a helper to compile.
#[derive(Debug, Serialize, Deserialize)]
struct Request {
    cache_dir: PathBuf,
    job: CompileJob,
    /// The module's length: exactly this many bytes follow the header.
    module_len: u64,
}

/// The helper's answer.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
enum Reply {
    /// The entry is written.
    Compiled(WasmKind),
    /// Why not (a `runtime_wasm::Error`'s text: invalid module, cache error...).
    Failed(String),
}

/// Why a compile in a helper did not produce an entry.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    /// The module itself (or the cache) failed: the helper's own error.
    #[error("{0}")]
    Failed(String),
    #[error("wasm module {module}: compiling it needs more memory than its container may use: the kernel's OOM killer ended the compile in cgroup {cgroup} (memory limit {limit}); raise the container's memory limit or make the module's functions smaller")]
    OutOfMemory {
        module: String,
        cgroup: String,
        limit: String,
    },
    #[error("wasm module {module}: start the compile helper (join the container's cgroup {cgroup}, exec /proc/self/exe): {source}")]
    Spawn {
        module: String,
        cgroup: String,
        source: std::io::Error,
    },
    #[error("wasm module {module}: the compile helper ended without an answer ({exit}){stderr}")]
    Ended {
        module: String,
        exit: String,
        stderr: String,
    },
    #[error("wasm module {module}: the compile was not done after {after:?} and was killed")]
    TimedOut { module: String, after: Duration },
    #[error("wasm module {module}: compile helper: {reason}")]
    Protocol { module: String, reason: String },
    #[error("wasm module {module}: compile helper: {source}")]
    Wait {
        module: String,
        #[source]
        source: runtime_native::child_wait::Error,
    },
}

impl CompileError {
    /// The tenant's module or limit is the cause (a Create error for the user to fix).
    pub fn is_invalid_input(&self) -> bool {
        matches!(
            self,
            CompileError::Failed(_) | CompileError::OutOfMemory { .. }
        )
    }
}

/// Compiles `job` (the module `bytes`) into the cache at `cache_dir` in a helper placed in
/// `cgroup` (None: left where the shim is, for callers without a container), waiting at most
/// `timeout`. Blocks the calling thread.
pub fn compile(
    cache_dir: &Path,
    job: &CompileJob,
    bytes: &[u8],
    cgroup: Option<&Cgroup>,
    timeout: Duration,
) -> Result<WasmKind, CompileError> {
    let deadline = Instant::now() + timeout;
    let module = job.name.clone();
    // Named by its memory hierarchy's directory on v1 (the one whose limit applies).
    let cgroup_name = cgroup
        .and_then(|c| {
            let files = c.procs_files();
            let memory = files
                .iter()
                .find(|p| p.components().any(|c| c.as_os_str() == "memory"))
                .or(files.first())?;
            memory.parent().map(|d| d.display().to_string())
        })
        .unwrap_or_else(|| "(none)".into());
    let spawn_err = |source| CompileError::Spawn {
        module: module.clone(),
        cgroup: cgroup_name.clone(),
        source,
    };
    let procs = match cgroup {
        Some(c) => open_procs(&c.procs_files()).map_err(spawn_err)?,
        None => Vec::new(),
    };
    let oom_before = cgroup.and_then(|c| c.oom_kills().ok());
    let mut stderr = child_wait::output_file(c"amphi-compile-stderr")
        .map_err(|e| spawn_err(std::io::Error::other(e)))?;
    let mut cmd = Command::new("/proc/self/exe");
    cmd.arg(ACTION)
        .env_clear()
        .current_dir("/")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(stderr.try_clone().map_err(spawn_err)?);
    let fds: Vec<RawFd> = procs.iter().map(|f| f.as_raw_fd()).collect();
    // SAFETY: runs in the forked child before exec: only write(2) on fds opened above and
    // prctl(2), both async-signal-safe; nothing allocates.
    unsafe {
        cmd.pre_exec(move || {
            for fd in &fds {
                // "0": the writing process itself, into this hierarchy's cgroup.
                if libc::write(*fd, b"0".as_ptr().cast(), 1) != 1 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            // The helper ends with the thread waiting for it (a shim that died or gave up).
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
            Ok(())
        })
    };
    let mut child = cmd.spawn().map_err(spawn_err)?;
    // Killed, on a timeout, through this: the reaper may have collected the helper already.
    let pidfd = runtime_native::identity::pidfd_open(child.id() as i32).ok();
    drop(procs);
    let header = request_header(cache_dir, job, bytes.len() as u64);
    let stdin = child.stdin.take().expect("piped stdin");
    let mut stdout = child.stdout.take().expect("piped stdout");
    // Sent with a deadline: a helper that stops reading (a frozen cgroup) must not keep this
    // thread. A write error means the helper is gone; its exit says why.
    let sent = send(&stdin, &[&header, bytes], deadline);
    drop(stdin);
    let left = deadline.saturating_duration_since(Instant::now());
    let exit = match sent {
        Sent::TimedOut => None,
        _ => {
            child_wait::wait_child(&mut child, Some(left)).map_err(|source| CompileError::Wait {
                module: module.clone(),
                source,
            })?
        }
    };
    let Some(exit) = exit else {
        match &pidfd {
            Some(fd) => drop(runtime_native::identity::pidfd_signal(fd, libc::SIGKILL)),
            None => drop(child.kill()),
        }
        let _ = child_wait::wait_child(&mut child, Some(Duration::from_secs(10)));
        return Err(CompileError::TimedOut {
            module,
            after: timeout,
        });
    };
    let mut reply = Vec::new();
    let _ = (&mut stdout).take(MAX_REPLY as u64).read_to_end(&mut reply);
    let oom_rose = match (cgroup, oom_before) {
        (Some(c), Some(before)) => c.oom_kills().ok().map(|now| now > before),
        _ => None,
    };
    let ended = Ended {
        exit,
        oom_rose,
        limit: cgroup.and_then(|c| c.stats().ok()).map(|s| s.memory_limit),
        stderr: child_wait::output_tail(&mut stderr, STDERR_TAIL),
    };
    outcome(&module, &cgroup_name, &reply, ended)
}

fn open_procs(files: &[PathBuf]) -> std::io::Result<Vec<File>> {
    files
        .iter()
        .map(|p| {
            std::fs::OpenOptions::new()
                .write(true)
                .open(p)
                .map_err(|e| std::io::Error::new(e.kind(), format!("open {}: {e}", p.display())))
        })
        .collect()
}

/// The bytes before the module: a `u32` LE length and the [`Request`] JSON.
fn request_header(cache_dir: &Path, job: &CompileJob, module_len: u64) -> Vec<u8> {
    let json = serde_json::to_vec(&Request {
        cache_dir: cache_dir.to_path_buf(),
        job: job.clone(),
        module_len,
    })
    .expect("a compile request serializes");
    let mut out = (json.len() as u32).to_le_bytes().to_vec();
    out.extend_from_slice(&json);
    out
}

enum Sent {
    All,
    /// The helper closed its end (it exited).
    Closed,
    TimedOut,
}

/// Writes `parts` to the pipe, waiting for room with poll(2) until `deadline`.
fn send(pipe: &impl AsRawFd, parts: &[&[u8]], deadline: Instant) -> Sent {
    let fd = pipe.as_raw_fd();
    // SAFETY: fcntl on a pipe fd we own.
    unsafe {
        let fl = libc::fcntl(fd, libc::F_GETFL);
        libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK);
    }
    for part in parts {
        let mut rest = *part;
        while !rest.is_empty() {
            // SAFETY: writes from a live slice.
            let n = unsafe { libc::write(fd, rest.as_ptr().cast(), rest.len()) };
            if n > 0 {
                rest = &rest[n as usize..];
                continue;
            }
            match std::io::Error::last_os_error().raw_os_error() {
                Some(libc::EAGAIN) => {}
                Some(libc::EINTR) => continue,
                _ => return Sent::Closed,
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Sent::TimedOut;
            }
            let mut p = [libc::pollfd {
                fd,
                events: libc::POLLOUT,
                revents: 0,
            }];
            let ms = left.as_millis().clamp(1, i32::MAX as u128) as i32;
            // SAFETY: one valid pollfd.
            unsafe { libc::poll(p.as_mut_ptr(), 1, ms) };
        }
    }
    Sent::All
}

/// What the shim knows once the helper is gone.
struct Ended {
    exit: ChildExit,
    /// Whether the cgroup's OOM kill count rose during the compile (None: not known).
    oom_rose: Option<bool>,
    /// The cgroup's memory limit in bytes (None: not known).
    limit: Option<u64>,
    stderr: String,
}

/// The compile's result from the helper's reply and how it ended.
fn outcome(
    module: &str,
    cgroup: &str,
    reply: &[u8],
    ended: Ended,
) -> Result<WasmKind, CompileError> {
    if !reply.is_empty() {
        return match serde_json::from_slice::<Reply>(reply) {
            Ok(Reply::Compiled(kind)) if ended.exit.success() => Ok(kind),
            Ok(Reply::Compiled(_)) => Err(CompileError::Protocol {
                module: module.into(),
                reason: format!("answered compiled, then ended with {}", ended.exit),
            }),
            Ok(Reply::Failed(why)) => Err(CompileError::Failed(why)),
            Err(e) => Err(CompileError::Protocol {
                module: module.into(),
                reason: format!("unreadable answer: {e}"),
            }),
        };
    }
    // SIGKILL with the cgroup's OOM count up (or unknown: nothing else here sends SIGKILL
    // but the timeout, handled before) is the OOM killer.
    if ended.exit == ChildExit::Signal(libc::SIGKILL) && ended.oom_rose != Some(false) {
        let limit = match ended.limit {
            Some(n) if n > 0 && n < (1 << 62) => format!("{n} bytes"),
            Some(_) => "none: the node or the pod's own limit".into(),
            None => "unknown".into(),
        };
        return Err(CompileError::OutOfMemory {
            module: module.into(),
            cgroup: cgroup.into(),
            limit,
        });
    }
    Err(CompileError::Ended {
        module: module.into(),
        exit: ended.exit.to_string(),
        stderr: if ended.stderr.is_empty() {
            String::new()
        } else {
            format!(": {}", ended.stderr)
        },
    })
}

// ---- the helper's side ------------------------------------------------------------------

/// The helper's `main`: one request from stdin, one reply on stdout; exits 0 once the entry is
/// written, 1 otherwise.
pub fn run() -> ! {
    // Before anything else: no ptrace attach or /proc/<pid>/mem by a container sharing the
    // host's pid namespace without CAP_SYS_PTRACE.
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    let code = serve(&mut std::io::stdin().lock(), &mut std::io::stdout().lock());
    std::process::exit(code)
}

fn serve(input: &mut impl Read, output: &mut impl Write) -> i32 {
    let reply = match handle(input) {
        Ok(kind) => Reply::Compiled(kind),
        Err(e) => {
            // Text from here on: the shim is another process.
            let mut why = e.to_string();
            if why.len() > MAX_ERROR {
                let mut end = MAX_ERROR;
                while !why.is_char_boundary(end) {
                    end -= 1;
                }
                why.truncate(end);
                why.push_str("...");
            }
            Reply::Failed(why)
        }
    };
    let code = i32::from(!matches!(reply, Reply::Compiled(_)));
    let json = serde_json::to_vec(&reply).expect("a reply serializes");
    if output
        .write_all(&json)
        .and_then(|()| output.flush())
        .is_err()
    {
        return 2;
    }
    code
}

/// Why the helper wrote no entry. It reaches the shim as text in [`Reply::Failed`] (another
/// process), formatted in `serve`.
#[derive(Debug, thiserror::Error)]
enum HelperError {
    #[error("compile helper: read the request: {0}")]
    ReadRequest(#[source] std::io::Error),
    #[error("compile helper: a request of {0} bytes (at most {MAX_HEADER})")]
    RequestTooLarge(u32),
    #[error("compile helper: unreadable request: {0}")]
    BadRequest(#[source] serde_json::Error),
    #[error("wasm module {module}: {source}")]
    Reserve {
        module: String,
        #[source]
        source: std::collections::TryReserveError,
    },
    #[error("wasm module {module}: read it: {source}")]
    ReadModule {
        module: String,
        #[source]
        source: std::io::Error,
    },
    #[error("wasm module {module}: {got} of its {want} bytes arrived")]
    ShortModule { module: String, got: u64, want: u64 },
    #[error(transparent)]
    Compile(#[from] runtime_wasm::Error),
}

fn handle(input: &mut impl Read) -> Result<WasmKind, HelperError> {
    let mut len = [0u8; 4];
    input
        .read_exact(&mut len)
        .map_err(HelperError::ReadRequest)?;
    let len = u32::from_le_bytes(len);
    if len > MAX_HEADER {
        return Err(HelperError::RequestTooLarge(len));
    }
    let mut header = vec![0u8; len as usize];
    input
        .read_exact(&mut header)
        .map_err(HelperError::ReadRequest)?;
    let req: Request = serde_json::from_slice(&header).map_err(HelperError::BadRequest)?;
    let module = || req.job.name.clone();
    let mut bytes = Vec::new();
    bytes
        .try_reserve_exact(usize::try_from(req.module_len).unwrap_or(usize::MAX))
        .map_err(|source| HelperError::Reserve {
            module: module(),
            source,
        })?;
    input
        .take(req.module_len)
        .read_to_end(&mut bytes)
        .map_err(|source| HelperError::ReadModule {
            module: module(),
            source,
        })?;
    if bytes.len() as u64 != req.module_len {
        return Err(HelperError::ShortModule {
            module: module(),
            got: bytes.len() as u64,
            want: req.module_len,
        });
    }
    Ok(runtime_wasm::compile_entry(
        &req.cache_dir,
        &req.job,
        &bytes,
    )?)
}

#[cfg(test)]
mod tests;
