//! What a guest runs with: its stdio, argv, env, cwd, directories and memory cap
//! ([`RunContext`]), and the wasmtime store data built from it for core modules and components.

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Mutex;

use wasmtime::component::ResourceTable;
use wasmtime::{StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::cli::{InputFile, OutputFile};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::view::GuestDir;

/// The directories preopened for the guest (WASI preopens), by the path the guest sees.
#[derive(Debug)]
pub enum GuestDirs {
    /// Host paths (tools and tests; `amphi-wasm-run` gives the host's `/`).
    Paths(Vec<(String, PathBuf)>),
    /// The detached copies [`crate::take_guest_dirs`] made in the container process.
    Copies(Vec<GuestDir>),
}

/// Where the guest's stdin/stdout/stderr come from.
#[derive(Debug, Default)]
pub enum Stdio {
    /// The process's fds 0, 1, 2 (fifos, a pty, /dev/null: whatever the container got).
    #[default]
    Inherit,
    /// Explicit files (tests, tools). Trap messages go to `stderr` too.
    Files {
        stdin: File,
        stdout: File,
        stderr: File,
    },
}

/// How to run a loaded program: from the OCI spec's process section.
#[derive(Debug)]
pub struct RunContext {
    /// argv, argv[0] as given.
    pub args: Vec<String>,
    /// `KEY=VALUE` entries.
    pub env: Vec<String>,
    /// Initial working directory reported to the guest (`wasi:cli/environment`).
    pub cwd: String,
    /// Cap on each instance's linear memories (and tables' backing) in bytes: the
    /// container's memory limit, so `memory.grow` fails in the guest before an OOM kill.
    pub memory_limit: Option<u64>,
    pub stdio: Stdio,
    /// What the guest sees of the file system (read/write where the mount is; file
    /// permissions apply). None by default.
    pub dirs: GuestDirs,
    /// Block SIGTERM/SIGINT and handle them in a helper thread (exit `128+sig`, or drain
    /// an HTTP proxy). Only for a process that runs nothing else: the container process.
    pub handle_signals: bool,
}

impl RunContext {
    /// Defaults for a container process: inherit stdio, no directories, cwd `/`, handle signals.
    pub fn new(args: Vec<String>, env: Vec<String>) -> RunContext {
        RunContext {
            args,
            env,
            cwd: "/".into(),
            memory_limit: None,
            stdio: Stdio::Inherit,
            dirs: GuestDirs::Paths(Vec::new()),
            handle_signals: true,
        }
    }

    fn env_pairs(&self) -> Vec<(String, String)> {
        self.env
            .iter()
            .map(|kv| match kv.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (kv.clone(), String::new()),
            })
            .collect()
    }

    pub(crate) fn env_var(&self, key: &str) -> Option<String> {
        self.env_pairs()
            .into_iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }

    /// A fresh WASI context builder configured from this run context.
    pub(crate) fn wasi_builder(&self) -> std::result::Result<WasiCtxBuilder, ContextError> {
        self.wasi_builder_with(true)
    }

    /// The same, for a server that makes a context per request: without `preopens` the
    /// directories are not opened; the caller copies them (shared handles) from a context it
    /// built once with them: `*ctx.filesystem() = template.filesystem().clone()`.
    pub(crate) fn wasi_builder_with(
        &self,
        preopens: bool,
    ) -> std::result::Result<WasiCtxBuilder, ContextError> {
        let mut b = WasiCtxBuilder::new();
        match &self.stdio {
            Stdio::Inherit => {
                b.inherit_stdio();
            }
            Stdio::Files {
                stdin,
                stdout,
                stderr,
            } => {
                let dup = |f: &File| f.try_clone().map_err(ContextError::DupStdio);
                b.stdin(InputFile::new(dup(stdin)?));
                b.stdout(OutputFile::new(dup(stdout)?));
                b.stderr(OutputFile::new(dup(stderr)?));
            }
        }
        b.args(&self.args);
        b.envs(&self.env_pairs());
        b.initial_cwd(&self.cwd);
        if preopens {
            match &self.dirs {
                GuestDirs::Paths(dirs) => {
                    for (guest, host) in dirs {
                        b.preopened_dir(host, guest, FsPerms::ReadWrite)
                            .map_err(|e| ContextError::PreopenPath {
                                host: host.clone(),
                                guest: guest.clone(),
                                error: crate::chain(&e),
                            })?;
                    }
                }
                GuestDirs::Copies(dirs) => {
                    for d in dirs {
                        preopen_fd(&mut b, &d.dir, &d.guest)?;
                    }
                }
            }
        }
        b.inherit_network();
        b.allow_tcp(true);
        b.allow_udp(true);
        b.allow_ip_name_lookup(true);
        Ok(b)
    }

    pub(crate) fn limits(&self) -> StoreLimits {
        let mut l = StoreLimitsBuilder::new();
        if let Some(m) = self.memory_limit {
            l = l.memory_size(usize::try_from(m).unwrap_or(usize::MAX));
        }
        l.build()
    }

    /// Write a diagnostic line to the guest's stderr (fd 2 or the injected file).
    pub(crate) fn report(&self, msg: &str) {
        match &self.stdio {
            Stdio::Inherit => {
                let _ = writeln!(std::io::stderr(), "{msg}");
            }
            Stdio::Files { stderr, .. } => {
                let _ = writeln!(&*stderr, "{msg}");
            }
        }
    }
}

/// Preopens the directory `dir` (a detached mount: it has no path) as `guest`. wasmtime-wasi
/// preopens by path only, so the process changes into `dir` and preopens `.`, then changes
/// back; the lock keeps concurrent builders (an HTTP proxy's requests) from racing on the
/// process's working directory, which nothing else in the runner uses.
/// Why a guest's WASI context could not be built.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ContextError {
    #[error("dup stdio: {0}")]
    DupStdio(#[source] std::io::Error),
    /// `error`: wasmtime's error with its cause chain, on one line.
    #[error("preopen {} as {guest}: {error}", host.display())]
    PreopenPath {
        host: std::path::PathBuf,
        guest: String,
        error: String,
    },
    #[error("preopen {guest}: {step}: {source}")]
    Enter {
        guest: String,
        step: &'static str,
        #[source]
        source: nix::errno::Errno,
    },
    #[error("preopen {guest}: {error}")]
    Preopen { guest: String, error: String },
}

fn preopen_fd(b: &mut WasiCtxBuilder, dir: &OwnedFd, guest: &str) -> Result<(), ContextError> {
    static CWD: Mutex<()> = Mutex::new(());
    let _held = CWD.lock().unwrap_or_else(|p| p.into_inner());
    let enter = |step| {
        move |source| ContextError::Enter {
            guest: guest.to_string(),
            step,
            source,
        }
    };
    let here = nix::fcntl::open(
        ".",
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(enter("open the working directory"))?;
    nix::unistd::fchdir(dir.as_fd()).map_err(enter("enter it"))?;
    let r = b
        .preopened_dir(".", guest, FsPerms::ReadWrite)
        .map(|_| ())
        .map_err(|e| ContextError::Preopen {
            guest: guest.to_string(),
            error: crate::chain(&e),
        });
    if let Err(e) = nix::unistd::fchdir(here.as_fd()) {
        // Continuing in the guest's directory would make relative host paths resolve there.
        panic!("preopen {guest}: cannot return to the working directory: {e}");
    }
    r
}

/// Store data for core modules (WASI preview1).
pub(crate) struct CoreState {
    pub(crate) wasi: WasiP1Ctx,
    pub(crate) limits: StoreLimits,
}

/// Store data for components (WASI preview2 + wasi:http).
pub(crate) struct CompState {
    pub(crate) wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    pub(crate) http: WasiHttpCtx,
    pub(crate) limits: StoreLimits,
}

impl WasiView for CompState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for CompState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: Default::default(),
        }
    }
}
