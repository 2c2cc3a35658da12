//! A program loaded in the container process, and what every way of running it shares: its
//! store setup and how a result becomes the process's exit code.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use wasmtime::{InstancePre, Store};
use wasmtime_wasi::p2::bindings::sync::CommandPre;
use wasmtime_wasi::I32Exit;
use wasmtime_wasi_http::p2::bindings::ProxyPre;

use crate::context::{CompState, CoreState, RunContext};
use crate::signals::{Interrupter, Shared};
use crate::WasmKind;

/// Exit code after a trap (like SIGABRT).
pub const EXIT_TRAP: i32 = 134;

/// What a loaded artifact runs: a core module's entry, a `wasi:cli/run` command, or an HTTP
/// proxy, each pre-instantiated.
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

/// A program loaded in the container process, imports checked, ready to run.
pub struct Loaded {
    pub(crate) name: String,
    pub(crate) kind: WasmKind,
    pub(crate) program: Program,
    pub(crate) shared: Arc<Shared>,
}

impl Loaded {
    pub fn kind(&self) -> WasmKind {
        self.kind
    }

    /// A handle to interrupt `run` from another thread (what the signal thread uses).
    pub fn interrupter(&self) -> Interrupter {
        Interrupter(self.shared.clone())
    }

    pub(crate) fn new_store<T>(&self, data: T) -> Store<T> {
        let mut store = Store::new(&self.shared.engine, data);
        // The epoch only moves when a signal arrives.
        store.set_epoch_deadline(1);
        store.epoch_deadline_trap();
        store
    }

    pub(crate) fn setup_failed(&self, ctx: &RunContext, msg: &str) -> i32 {
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
