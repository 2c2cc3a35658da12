//! In the container process: load the artifact, link WASI, run the program (an HTTP proxy
//! through `crate::http`).

use std::fs::File;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::sync::atomic::AtomicI32;
use std::sync::Arc;

use wasmtime::component::{Component, ResourceTable};
use wasmtime::{Engine, InstancePre, Linker, Module, Val};
use wasmtime_wasi::p2::bindings::CommandPre;
use wasmtime_wasi::I32Exit;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::WasiHttpCtx;

use crate::context::{CompState, CoreState, RunContext};
use crate::loaded::{Loaded, Program};
use crate::signals::Shared;
use crate::{Error, Result, WasmKind, WasmPayload};

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
    // Async host calls: a guest waiting in one (a sleep, a read) is a future the runner can
    // drop when SIGTERM comes (see `Loaded::run_until_signal`).
    wasmtime_wasi::p1::add_to_linker_async(&mut linker, |s| &mut s.wasi).map_err(link_err)?;
    wasmtime_wasi::p0::add_to_linker_async(&mut linker, |s| &mut s.wasi).map_err(link_err)?;
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

/// What a component is by its exports: a `wasi:cli/run` command or a
/// `wasi:http/incoming-handler` proxy (anything else is refused).
pub(crate) fn component_kind(
    engine: &Engine,
    name: &str,
    component: &Component,
) -> Result<WasmKind> {
    let exports: Vec<String> = component
        .component_type()
        .exports(engine)
        .map(|(n, _)| n.to_string())
        .collect();
    if has_export(&exports, "wasi:cli/run") {
        Ok(WasmKind::ComponentCommand)
    } else if has_export(&exports, "wasi:http/incoming-handler") {
        Ok(WasmKind::HttpProxy)
    } else {
        Err(Error::UnsupportedComponent {
            module: name.to_string(),
            exports: if exports.is_empty() {
                "none".into()
            } else {
                exports.join(", ")
            },
        })
    }
}

/// Classify a component (command or HTTP proxy) and link it against WASI p2 + wasi:http.
pub(crate) fn prepare_component(
    engine: &Engine,
    name: &str,
    component: &Component,
    expected: Option<WasmKind>,
) -> Result<(WasmKind, Program)> {
    let kind = component_kind(engine, name, component)?;
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
    // Both kinds link against the same WASI p2 + wasi:http; they differ in the world checked.
    let mut linker = wasmtime::component::Linker::<CompState>::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(link_err)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker).map_err(link_err)?;
    let pre = linker.instantiate_pre(component).map_err(link_err)?;
    let program = match kind {
        WasmKind::ComponentCommand => Program::Command {
            pre: CommandPre::new(pre).map_err(link_err)?,
        },
        WasmKind::HttpProxy => Program::Http {
            pre: ProxyPre::new(pre).map_err(link_err)?,
        },
        WasmKind::CoreModule => unreachable!(),
    };
    Ok((kind, program))
}

/// Load the compiled artifact (an fd opened by the shim from its cache) and check that
/// every import can be satisfied. Call this in the container before reporting success.
pub fn load(artifact: File, payload: &WasmPayload) -> Result<Loaded> {
    let engine = match payload.kind {
        WasmKind::HttpProxy => crate::serving_engine(&payload.settings)?,
        _ => crate::engine_for(&payload.settings)?,
    };
    let name = &payload.name;
    let artifact_err = |e: wasmtime::Error| Error::Artifact {
        module: name.clone(),
        reason: crate::chain(&e),
    };
    let program = match payload.kind {
        WasmKind::CoreModule => {
            // SAFETY: the artifact was produced by `Cache::compile` with the same engine
            // config, its digest matched before the shim handed it over, and it is open on a
            // read-only mount that no container can make writable (cache/dir.rs).
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
        settings: payload.settings.clone(),
        idle_hook: None,
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

    fn run_core(&self, pre: &InstancePre<CoreState>, entry: &str, ctx: &RunContext) -> i32 {
        // Not `allow_blocking_current_thread`: with it, WASI p1 serves a lone relative-clock
        // `poll_oneoff` (a guest's sleep) with `std::thread::sleep` and file I/O in place, which
        // blocks the runtime's only thread, so the guest's future can't be dropped when SIGTERM
        // comes (the process waited for the SIGNAL_GRACE backstop). Off, they are awaited.
        let wasi = match ctx.wasi_builder() {
            Ok(mut b) => b.build_p1(),
            Err(e) => return self.setup_failed(ctx, &e.to_string()),
        };
        let mut store = match self.new_store(CoreState {
            wasi,
            limits: ctx.limits(),
        }) {
            Ok(s) => s,
            Err(e) => return self.exit_code(ctx, Err(e)),
        };
        store.limiter(|s| &mut s.limits);
        let result = self.run_until_signal(async move {
            let instance = pre.instantiate_async(&mut store).await?;
            if entry != "_start" {
                if let Ok(init) = instance.get_typed_func::<(), ()>(&mut store, "_initialize") {
                    init.call_async(&mut store, ()).await?;
                }
            }
            let func = instance
                .get_func(&mut store, entry)
                .ok_or_else(|| wasmtime::format_err!("export `{entry}` disappeared"))?;
            let mut results = vec![Val::I32(0); func.ty(&store).results().len()];
            func.call_async(&mut store, &[], &mut results).await?;
            Ok(match results.first() {
                Some(Val::I32(n)) => *n,
                _ => 0,
            })
        });
        self.exit_code(ctx, result)
    }

    fn run_command(&self, pre: &CommandPre<CompState>, ctx: &RunContext) -> i32 {
        // Not `allow_blocking_current_thread` either (see `run_core`): a file read that blocks
        // (a fifo in the rootfs) would hold the thread the signal needs.
        let wasi = match ctx.wasi_builder() {
            Ok(mut b) => b.build(),
            Err(e) => return self.setup_failed(ctx, &e.to_string()),
        };
        let state = CompState {
            wasi,
            table: ResourceTable::new(),
            http: WasiHttpCtx::new(),
            limits: ctx.limits(),
        };
        let mut store = match self.new_store(state) {
            Ok(s) => s,
            Err(e) => return self.exit_code(ctx, Err(e)),
        };
        store.limiter(|s| &mut s.limits);
        let result = self.run_until_signal(async move {
            let cmd = pre.instantiate_async(&mut store).await?;
            Ok(match cmd.wasi_cli_run().call_run(&mut store).await? {
                Ok(()) => 0,
                Err(()) => 1,
            })
        });
        self.exit_code(ctx, result)
    }
}
