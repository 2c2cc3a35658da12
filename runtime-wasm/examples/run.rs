//! `amphi-wasm-run [--cache DIR] [--memory BYTES] FILE[#EXPORT] [ARGS...]`
//!
//! Runs a wasm module the way an amphi container process does: compile through the
//! node-wide cache, open the artifact, `load` it from the fd, `run` with inherited stdio,
//! `/` preopened, the current environment, SIGTERM/SIGINT handling. Exits with the
//! module's exit code. With `AMPHI_WASM_TIMING=1`, prints compile/load times to stderr.
//! argv[0] for the guest is FILE.
use std::time::Instant;

use runtime_wasm::{
    load, split_entry, Cache, GuestDirs, Module, RunContext, DEFAULT_CACHE_MAX_BYTES,
};

fn main() {
    // Before compiling (a thread pool) so every thread has SIGTERM/SIGINT blocked.
    runtime_wasm::block_termination_signals().expect("block signals");
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut cache_dir =
        std::env::var("AMPHI_WASM_CACHE").unwrap_or_else(|_| "/tmp/amphi-wasm-cache".into());
    let mut memory = None;
    while args.first().is_some_and(|a| a.starts_with("--")) {
        let flag = args.remove(0);
        let value = if args.is_empty() {
            usage()
        } else {
            args.remove(0)
        };
        match flag.as_str() {
            "--cache" => cache_dir = value,
            "--memory" => memory = Some(value.parse::<u64>().unwrap_or_else(|_| usage())),
            _ => usage(),
        }
    }
    if args.is_empty() {
        usage();
    }
    let (path, export) = split_entry(&args[0]);
    let (path, export) = (path.to_string(), export.map(str::to_string));
    args[0] = path.clone();
    let timing = std::env::var_os("AMPHI_WASM_TIMING").is_some();

    let bytes = std::fs::read(&path).unwrap_or_else(|e| fail(&format!("{path}: {e}")));
    let t = Instant::now();
    let cache =
        Cache::open(&cache_dir, DEFAULT_CACHE_MAX_BYTES).unwrap_or_else(|e| fail(&e.to_string()));
    let engine_t = t.elapsed();
    let t = Instant::now();
    let compiled = cache
        .compile(Module {
            name: &path,
            bytes: &bytes,
            export: export.as_deref(),
        })
        .unwrap_or_else(|e| fail(&e.to_string()));
    let compile_t = t.elapsed();
    let payload = runtime_wasm::WasmPayload::from_bytes(&compiled.payload.to_bytes()).unwrap();
    let t = Instant::now();
    let loaded = load(compiled.file, &payload).unwrap_or_else(|e| fail(&e.to_string()));
    let load_t = t.elapsed();
    if timing {
        eprintln!(
            "amphi-wasm-run: engine {engine_t:?}, compile ({}) {compile_t:?}, load {load_t:?}, kind {:?}",
            if compiled.cache_hit { "cache hit" } else { "cache miss" },
            payload.kind
        );
    }
    let env = std::env::vars().map(|(k, v)| format!("{k}={v}")).collect();
    let mut ctx = RunContext::new(args, env);
    ctx.dirs = GuestDirs::Paths(vec![("/".into(), "/".into())]);
    ctx.memory_limit = memory;
    if let Ok(cwd) = std::env::current_dir() {
        ctx.cwd = cwd.display().to_string();
    }
    std::process::exit(loaded.run(ctx));
}

fn usage() -> ! {
    eprintln!("usage: amphi-wasm-run [--cache DIR] [--memory BYTES] FILE[#EXPORT] [ARGS...]");
    std::process::exit(2)
}

fn fail(msg: &str) -> ! {
    eprintln!("amphi-wasm-run: {msg}");
    std::process::exit(1)
}
