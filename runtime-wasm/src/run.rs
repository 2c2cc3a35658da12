//! In the container process: load the artifact, link WASI, run, map to an exit code.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::{Component, ResourceTable};
use wasmtime::{Engine, InstancePre, Linker, Module, Store, StoreLimits, StoreLimitsBuilder, Val};
use wasmtime_wasi::cli::{InputFile, OutputFile};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::bindings::sync::CommandPre;
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::{Error, Result, WasmKind, WasmPayload};

/// Exit code after a trap (like SIGABRT).
pub const EXIT_TRAP: i32 = 134;
/// How long a guest stuck in a host call (sleep, blocking read) gets after SIGTERM/SIGINT
/// before the process exits with `128 + signal` anyway.
pub const SIGNAL_GRACE: Duration = Duration::from_secs(2);

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
    /// Host directory preopened as the guest's `/` (read/write, file permissions apply).
    /// `/` inside the container.
    pub root: PathBuf,
    /// Block SIGTERM/SIGINT and handle them in a helper thread (exit `128+sig`, or drain
    /// an HTTP proxy). Only for a process that runs nothing else: the container process.
    pub handle_signals: bool,
}

impl RunContext {
    /// Defaults for a container process: inherit stdio, root `/`, cwd `/`, handle signals.
    pub fn new(args: Vec<String>, env: Vec<String>) -> RunContext {
        RunContext {
            args,
            env,
            cwd: "/".into(),
            memory_limit: None,
            stdio: Stdio::Inherit,
            root: PathBuf::from("/"),
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
    pub(crate) fn wasi_builder(&self) -> std::result::Result<WasiCtxBuilder, String> {
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
                let dup = |f: &File| f.try_clone().map_err(|e| format!("dup stdio: {e}"));
                b.stdin(InputFile::new(dup(stdin)?));
                b.stdout(OutputFile::new(dup(stdout)?));
                b.stderr(OutputFile::new(dup(stderr)?));
            }
        }
        b.args(&self.args);
        b.envs(&self.env_pairs());
        b.initial_cwd(&self.cwd);
        b.preopened_dir(&self.root, "/", FsPerms::ReadWrite)
            .map_err(|e| format!("preopen {} as /: {}", self.root.display(), crate::chain(&e)))?;
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

/// Store data for core modules (WASI preview1).
pub(crate) struct CoreState {
    wasi: WasiP1Ctx,
    limits: StoreLimits,
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

pub(crate) enum Program {
    Core {
        pre: InstancePre<CoreState>,
        entry: String,
    },
    Command {
        pre: CommandPre<CompState>,
    },
    Http {
        pre: ProxyPre<CompState>,
    },
}

/// Link a core module against WASI preview1 (and the older `wasi_unstable`), and
/// check the entry export.
pub(crate) fn prepare_module(
    engine: &Engine,
    name: &str,
    module: &Module,
    export: Option<&str>,
) -> Result<Program> {
    let entry = export.unwrap_or("_start");
    let ok = match module.get_export(entry) {
        Some(wasmtime::ExternType::Func(f)) => {
            f.params().len() == 0
                && (f.results().len() == 0
                    || (f.results().len() == 1
                        && matches!(f.results().next(), Some(wasmtime::ValType::I32))))
        }
        _ => false,
    };
    if !ok {
        let available: Vec<String> = module
            .exports()
            .filter(|e| matches!(e.ty(), wasmtime::ExternType::Func(_)))
            .map(|e| e.name().to_string())
            .collect();
        return Err(Error::MissingExport {
            module: name.to_string(),
            export: entry.to_string(),
            available: if available.is_empty() {
                "none".into()
            } else {
                available.join(", ")
            },
        });
    }
    let link_err = |e: wasmtime::Error| Error::Link {
        module: name.to_string(),
        reason: crate::chain(&e),
    };
    let mut linker: Linker<CoreState> = Linker::new(engine);
    wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |s| &mut s.wasi).map_err(link_err)?;
    wasmtime_wasi::p0::add_to_linker_sync(&mut linker, |s| &mut s.wasi).map_err(link_err)?;
    // wasmtime-wasi's proc_exit refuses codes >= 126 (it treats them as a trap); a container's
    // exit status is a byte, and `proc_exit(n)` must exit n like any process does.
    linker.allow_shadowing(true);
    linker
        .func_wrap(
            "wasi_snapshot_preview1",
            "proc_exit",
            |code: i32| -> wasmtime::Result<()> { Err(I32Exit(code & 0xff).into()) },
        )
        .map_err(link_err)?;
    let pre = linker.instantiate_pre(module).map_err(link_err)?;
    Ok(Program::Core {
        pre,
        entry: entry.to_string(),
    })
}

fn has_export(exports: &[String], iface: &str) -> bool {
    exports
        .iter()
        .any(|n| n == iface || n.strip_prefix(iface).is_some_and(|r| r.starts_with('@')))
}

/// Classify a component (command or HTTP proxy) and link it against WASI p2 + wasi:http.
pub(crate) fn prepare_component(
    engine: &Engine,
    name: &str,
    component: &Component,
    expected: Option<WasmKind>,
) -> Result<(WasmKind, Program)> {
    let exports: Vec<String> = component
        .component_type()
        .exports(engine)
        .map(|(n, _)| n.to_string())
        .collect();
    let kind = if has_export(&exports, "wasi:cli/run") {
        WasmKind::ComponentCommand
    } else if has_export(&exports, "wasi:http/incoming-handler") {
        WasmKind::HttpProxy
    } else {
        return Err(Error::UnsupportedComponent {
            module: name.to_string(),
            exports: if exports.is_empty() {
                "none".into()
            } else {
                exports.join(", ")
            },
        });
    };
    if let Some(want) = expected {
        if want != kind {
            return Err(Error::Payload(format!(
                "{name}: payload says {want:?} but the component is a {kind:?}"
            )));
        }
    }
    let link_err = |e: wasmtime::Error| Error::Link {
        module: name.to_string(),
        reason: crate::chain(&e),
    };
    let mut linker = wasmtime::component::Linker::<CompState>::new(engine);
    let program = match kind {
        WasmKind::ComponentCommand => {
            wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(link_err)?;
            wasmtime_wasi_http::p2::add_only_http_to_linker_sync(&mut linker).map_err(link_err)?;
            let pre = linker.instantiate_pre(component).map_err(link_err)?;
            Program::Command {
                pre: CommandPre::new(pre).map_err(link_err)?,
            }
        }
        WasmKind::HttpProxy => {
            wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(link_err)?;
            wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker).map_err(link_err)?;
            let pre = linker.instantiate_pre(component).map_err(link_err)?;
            Program::Http {
                pre: ProxyPre::new(pre).map_err(link_err)?,
            }
        }
        WasmKind::CoreModule => unreachable!(),
    };
    Ok((kind, program))
}

/// State shared between the runner and whoever interrupts it.
pub(crate) struct Shared {
    pub(crate) engine: Engine,
    /// First SIGTERM/SIGINT received, 0 if none.
    pub(crate) signal: AtomicI32,
    /// Set to true to drain an HTTP proxy.
    pub(crate) drain: tokio::sync::watch::Sender<bool>,
    /// An HTTP proxy drains (in-flight requests finish); anything else is interrupted.
    pub(crate) http: bool,
}

/// Interrupts a running [`Loaded`] as SIGTERM/SIGINT would: a command's guest traps at
/// its next epoch check and `run` returns `128 + sig`; an HTTP proxy drains and
/// returns 0. Clone and send it anywhere.
#[derive(Clone)]
pub struct Interrupter(pub(crate) Arc<Shared>);

impl Interrupter {
    pub fn interrupt(&self, sig: i32) {
        let _ = self
            .0
            .signal
            .compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst);
        if self.0.http {
            self.0.drain.send_replace(true);
        } else {
            self.0.engine.increment_epoch();
        }
    }
}

/// A program loaded in the container process, imports checked, ready to run.
pub struct Loaded {
    pub(crate) name: String,
    pub(crate) kind: WasmKind,
    pub(crate) program: Program,
    pub(crate) shared: Arc<Shared>,
}

/// Load the compiled artifact (an fd opened by the shim from its cache) and check that
/// every import can be satisfied. Call this in the container before reporting success.
pub fn load(artifact: File, payload: &WasmPayload) -> Result<Loaded> {
    let engine = crate::new_engine()?;
    let name = &payload.name;
    let artifact_err = |e: wasmtime::Error| Error::Artifact {
        module: name.clone(),
        reason: crate::chain(&e),
    };
    let program = match payload.kind {
        WasmKind::CoreModule => {
            // SAFETY: the artifact was produced by `Cache::compile` with the same engine
            // config and is never modified in place (the cache replaces entries by rename).
            let m = unsafe { Module::deserialize_open_file(&engine, artifact) }
                .map_err(artifact_err)?;
            prepare_module(&engine, name, &m, payload.export.as_deref())?
        }
        kind => {
            let c = deserialize_component(&engine, artifact).map_err(artifact_err)?;
            prepare_component(&engine, name, &c, Some(kind))?.1
        }
    };
    let (drain, _) = tokio::sync::watch::channel(false);
    let shared = Arc::new(Shared {
        engine,
        signal: AtomicI32::new(0),
        drain,
        http: payload.kind == WasmKind::HttpProxy,
    });
    Ok(Loaded {
        name: name.clone(),
        kind: payload.kind,
        program,
        shared,
    })
}

/// wasmtime 48 has no `Component::deserialize_open_file`: map it through
/// `/proc/self/fd` when procfs is there (shares page cache), else read it in.
fn deserialize_component(engine: &Engine, file: File) -> wasmtime::Result<Component> {
    deserialize_component_via(engine, file, true)
}

pub(crate) fn deserialize_component_via(
    engine: &Engine,
    mut file: File,
    try_procfs: bool,
) -> wasmtime::Result<Component> {
    let proc_path = format!("/proc/self/fd/{}", file.as_raw_fd());
    if try_procfs && std::path::Path::new(&proc_path).exists() {
        // SAFETY: see `load`.
        if let Ok(c) = unsafe { Component::deserialize_file(engine, &proc_path) } {
            return Ok(c);
        }
    }
    let mut bytes = Vec::new();
    use std::io::Seek;
    file.seek(std::io::SeekFrom::Start(0))?;
    file.read_to_end(&mut bytes)?;
    // SAFETY: see `load`.
    unsafe { Component::deserialize(engine, &bytes) }
}

impl Loaded {
    pub fn kind(&self) -> WasmKind {
        self.kind
    }

    /// A handle to interrupt `run` from another thread (what the signal thread uses).
    pub fn interrupter(&self) -> Interrupter {
        Interrupter(self.shared.clone())
    }

    /// Run to completion and return the process exit code (see the crate docs).
    pub fn run(self, ctx: RunContext) -> i32 {
        if ctx.handle_signals {
            crate::signals::install(self.interrupter(), self.kind == WasmKind::HttpProxy);
        }
        match &self.program {
            Program::Core { pre, entry } => self.run_core(pre, entry, &ctx),
            Program::Command { pre } => self.run_command(pre, &ctx),
            Program::Http { pre } => crate::http::serve(&self, pre.clone(), ctx),
        }
    }

    fn new_store<T>(&self, data: T) -> Store<T> {
        let mut store = Store::new(&self.shared.engine, data);
        // The epoch only moves when a signal arrives.
        store.set_epoch_deadline(1);
        store.epoch_deadline_trap();
        store
    }

    fn run_core(&self, pre: &InstancePre<CoreState>, entry: &str, ctx: &RunContext) -> i32 {
        let wasi = match ctx.wasi_builder() {
            Ok(mut b) => b.allow_blocking_current_thread(true).build_p1(),
            Err(e) => return self.setup_failed(ctx, &e),
        };
        let mut store = self.new_store(CoreState {
            wasi,
            limits: ctx.limits(),
        });
        store.limiter(|s| &mut s.limits);
        let result = (|| -> wasmtime::Result<i32> {
            let instance = pre.instantiate(&mut store)?;
            if entry != "_start" {
                if let Ok(init) = instance.get_typed_func::<(), ()>(&mut store, "_initialize") {
                    init.call(&mut store, ())?;
                }
            }
            let func = instance
                .get_func(&mut store, entry)
                .ok_or_else(|| wasmtime::format_err!("export `{entry}` disappeared"))?;
            let mut results = vec![Val::I32(0); func.ty(&store).results().len()];
            func.call(&mut store, &[], &mut results)?;
            Ok(match results.first() {
                Some(Val::I32(n)) => *n,
                _ => 0,
            })
        })();
        self.exit_code(ctx, result)
    }

    fn run_command(&self, pre: &CommandPre<CompState>, ctx: &RunContext) -> i32 {
        let wasi = match ctx.wasi_builder() {
            Ok(mut b) => b.allow_blocking_current_thread(true).build(),
            Err(e) => return self.setup_failed(ctx, &e),
        };
        let state = CompState {
            wasi,
            table: ResourceTable::new(),
            http: WasiHttpCtx::new(),
            limits: ctx.limits(),
        };
        let mut store = self.new_store(state);
        store.limiter(|s| &mut s.limits);
        let result = (|| -> wasmtime::Result<i32> {
            let cmd = pre.instantiate(&mut store)?;
            Ok(match cmd.wasi_cli_run().call_run(&mut store)? {
                Ok(()) => 0,
                Err(()) => 1,
            })
        })();
        self.exit_code(ctx, result)
    }

    fn setup_failed(&self, ctx: &RunContext, msg: &str) -> i32 {
        ctx.report(&format!("amphi: wasm module {}: {msg}", self.name));
        EXIT_TRAP
    }

    pub(crate) fn signal(&self) -> i32 {
        self.shared.signal.load(Ordering::SeqCst)
    }

    pub(crate) fn exit_code(&self, ctx: &RunContext, result: wasmtime::Result<i32>) -> i32 {
        match result {
            Ok(code) => code,
            Err(e) => {
                if let Some(exit) = e.downcast_ref::<I32Exit>() {
                    return exit.0;
                }
                let sig = self.signal();
                if sig != 0 {
                    return 128 + sig;
                }
                ctx.report(&format!(
                    "amphi: wasm module {} {}",
                    self.name,
                    describe_failure(&e)
                ));
                EXIT_TRAP
            }
        }
    }
}

/// "trapped: <trap>\n<wasm backtrace>" without the host backtrace that wasmtime's error
/// captures when RUST_BACKTRACE is set in the environment.
pub(crate) fn describe_failure(e: &wasmtime::Error) -> String {
    match (
        e.downcast_ref::<wasmtime::Trap>(),
        e.downcast_ref::<wasmtime::WasmBacktrace>(),
    ) {
        (Some(trap), Some(bt)) => format!("trapped: {trap}\n{bt}"),
        (Some(trap), None) => format!("trapped: {trap}"),
        _ => format!("failed: {}", crate::chain(e)),
    }
}
