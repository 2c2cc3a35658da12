//! WebAssembly workloads for amphi.
//!
//! The crate is used in two places:
//!
//! * in the **shim** (multi-threaded, may compile): [`detect_bytes`] decides native vs wasm
//!   from an entrypoint's first bytes, [`Cache::compile`] compiles through the node-wide on-disk cache and
//!   returns the artifact (an open file) plus a [`WasmPayload`] for the container process;
//! * in the **container process** (after pivot_root): [`take_guest_dirs`] copies the directories
//!   the guest may see while the process still has its privileges, [`load`] maps the artifact
//!   from the inherited fd and links it, then [`Loaded::run`] runs it and returns the exit code.
//!
//! Exit codes of [`Loaded::run`]: `proc_exit(n)` / `wasi:cli/exit` → `n`; normal return → 0
//! (`wasi:cli/run` returning `err` → 1); trap → 134 (message and wasm backtrace on stderr);
//! SIGTERM/SIGINT → `128 + signal` at once (a guest computing traps at its next epoch check, a
//! guest waiting in a host call has its future dropped; [`SIGNAL_GRACE`] is only a backstop). An HTTP proxy drains on the
//! first SIGTERM/SIGINT (stops accepting, finishes in-flight requests) and exits 0; a second
//! signal ends it at once with `128 + signal`.

mod cache;
mod code_size;
mod context;
mod detect;
mod engine;
mod http;
mod loaded;
mod mount;
mod payload;
mod proctitle;
mod run;
mod settings;
mod signals;
#[cfg(test)]
mod tests;
mod view;

use std::path::PathBuf;

pub use cache::{
    compile_entry, Cache, CompileJob, Compiled, Lookup, Module, DEFAULT_CACHE_DIR,
    DEFAULT_CACHE_MAX_BYTES,
};
pub use code_size::{check_function_sizes, largest_function};
pub use context::{GuestDirs, RunContext, Stdio};
pub use detect::{detect_bytes, split_entry, Entrypoint, WasmFormat};
pub use engine::{config_for, engine_config, engine_for, new_engine, serving_engine};
pub use loaded::{Loaded, EXIT_TRAP};
pub use payload::{WasmKind, WasmPayload};
pub use proctitle::set_process_title;
pub use run::load;
pub use settings::{CompileKey, Http, Pooling, Proposals, WasmSettings, ANNOTATION_PREFIX};
pub use signals::block_termination_signals;
pub use signals::{Interrupter, SIGNAL_GRACE};
pub use view::{take as take_guest_dirs, DataMount, GuestDir};

/// Errors of this crate. Each says which module (the name given by the caller: the
/// entrypoint path or image reference) and what failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("wasm module {module}: invalid: {reason}")]
    InvalidModule { module: String, reason: String },
    #[error("wasm module {module}: export `{export}` not found or not a function taking no arguments (function exports: {available})")]
    MissingExport {
        module: String,
        export: String,
        available: String,
    },
    #[error("wasm component {module}: exports neither wasi:cli/run nor wasi:http/incoming-handler (exports: {exports})")]
    UnsupportedComponent { module: String, exports: String },
    #[error("wasm module {module}: imports that amphi cannot provide: {reason}")]
    Link { module: String, reason: String },
    #[error("wasm cache {path}: {op}: {source}")]
    Cache {
        path: PathBuf,
        op: &'static str,
        source: std::io::Error,
    },
    #[error("wasm module {module}: cannot load compiled artifact: {reason}")]
    Artifact { module: String, reason: String },
    #[error("wasm engine: {0}")]
    Engine(String),
    /// A `[wasm]` setting of the runtime options (or an `io.amphi.wasm.*` annotation) is
    /// unknown, of the wrong type, out of range, or not supported by wasmtime.
    #[error("wasm settings: {0}")]
    Settings(String),
    #[error("wasm payload: {0}")]
    Payload(String),
    #[error("wasm guest directories: {0}")]
    Sandbox(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Format a wasmtime error with its whole cause chain on one line.
pub(crate) fn chain(e: &wasmtime::Error) -> String {
    format!("{e:#}")
}
