//! containerd-shim-amphi-v1: native and WebAssembly containers behind one containerd shim v2.
//!
//! Modes (see `args`): `start` (launch or reuse the server, reply with its address), `delete`
//! (clean up after a dead shim), `-v`, `-info`, no action: the server itself, and the hidden
//! `_compile-helper` a server runs to compile a module in a container's cgroup.

mod args;
mod bootstrap;
mod compile_helper;
mod compile_slots;
mod containerd_api;
mod delete;
mod error;
mod events;
mod idle;
mod info;
mod logger;
mod network;
mod record;
mod runtime_options;
mod server;
mod service;
mod start;
mod tenant_limits;
mod wasm;
mod wasm_layers;

use crate::args::Mode;
use crate::error::{Result, ShimError};

/// The custom workloads container processes can run (the wasm runner is registered here).
pub static WORKLOADS: runtime_native::WorkloadTable = &[(wasm::RUNNER, &wasm::WASM_RUNNER)];

pub const RUNTIME_NAME: &str = "io.containerd.amphi.v1";
pub const BINARY_NAME: &str = "containerd-shim-amphi-v1";
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// Set `AMPHI_GIT_REVISION` at build time to embed the commit.
pub const REVISION: &str = match option_env!("AMPHI_GIT_REVISION") {
    Some(r) => r,
    None => "unknown",
};

fn main() {
    let argv: Vec<String> = std::env::args_os()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let result = args::parse(&argv).and_then(|flags| {
        let mode = flags.mode()?;
        run(mode, flags)
    });
    if let Err(e) = result {
        eprintln!("{BINARY_NAME}: {e}");
        std::process::exit(1);
    }
}

fn run(mode: Mode, flags: args::Flags) -> Result<()> {
    match mode {
        Mode::Server => {
            // One malloc arena for all threads: a shim's few threads never contend, and each
            // extra arena costs hundreds of KB of resident memory per shim.
            // SAFETY: mallopt before any thread exists.
            unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) };
            // First, while this process has exactly one thread (see ARCHITECTURE.md).
            let spawner =
                runtime_native::Spawner::fork_before_threads(WORKLOADS).map_err(|source| {
                    ShimError::Runtime {
                        what: "fork the spawner".into(),
                        source,
                    }
                })?;
            // Orphaned container processes (CLONE_PARENT children of the spawner are ours
            // already) are reparented to us, so we reap them and report their exit.
            // SAFETY: prctl with integer arguments.
            if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
                return Err(ShimError::io("prctl(PR_SET_CHILD_SUBREAPER)", "")(
                    std::io::Error::last_os_error(),
                ));
            }
            server::run(flags, spawner)
        }
        Mode::Start => start::run(&flags),
        Mode::Delete => delete::run(&flags),
        Mode::CompileHelper => compile_helper::run(),
        Mode::Version => {
            print!("{}", version_text());
            Ok(())
        }
        Mode::Info => {
            let bytes = info::runtime_info(info::read_options())?;
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            out.write_all(&bytes)
                .and_then(|_| out.flush())
                .map_err(ShimError::io("write runtime info to", "stdout"))
        }
    }
}

fn version_text() -> String {
    format!("{BINARY_NAME}:\n  Version:  {VERSION}\n  Revision: {REVISION}\n  Go version: n/a\n\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_output() {
        let v = version_text();
        assert!(v.starts_with("containerd-shim-amphi-v1:\n  Version:  "));
        assert!(v.contains("\n  Revision: "));
    }
}
