//! In-process tests of compile + cache + load + run with small WAT programs.
//!
//! Over 600 lines on purpose: every case shares the same engine, cache directory and WAT
//! fixtures, and each is a few lines of one phase (compile, cache, load, run, signals, idle);
//! split by phase they would each re-declare the fixtures.

use std::fs::File;
use std::io::Read;
use std::time::Duration;

use crate::*;

#[path = "../tests/common/mod.rs"]
mod common;
use common::cache;

const HELLO_EXIT3: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "hello from wasm\n")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 16))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
    (call $proc_exit (i32.const 3))))"#;

const TRAP: &str = r#"(module
  (func $inner unreachable)
  (func (export "_start") call $inner))"#;

/// `grow` returns 42 if growing by 16 pages (1 MiB) failed, 7 if it worked.
const GROW: &str = r#"(module
  (memory 1)
  (func (export "_start"))
  (func (export "grow") (result i32)
    (if (result i32) (i32.eq (memory.grow (i32.const 16)) (i32.const -1))
      (then (i32.const 42)) (else (i32.const 7)))))"#;

const SPIN: &str = r#"(module (func (export "_start") (loop $l (br $l))))"#;

/// Sleeps 1000 s in one `poll_oneoff` (a relative monotonic-clock subscription).
const SLEEP: &str = r#"(module
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (i32.store8 (i32.const 8) (i32.const 0))
    (i32.store (i32.const 16) (i32.const 1))
    (i64.store (i32.const 24) (i64.const 1000000000000))
    (drop (call $poll (i32.const 0) (i32.const 64) (i32.const 1) (i32.const 128)))))"#;

const IMPORTS_ENV: &str = r#"(module
  (import "env" "foo" (func))
  (func (export "_start")))"#;

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

fn pipe() -> (File, File) {
    let (r, w) = nix::unistd::pipe().unwrap();
    (File::from(r), File::from(w))
}

fn ctx(args: &[&str]) -> (RunContext, File, File) {
    let (out_r, out_w) = pipe();
    let (err_r, err_w) = pipe();
    let mut c = RunContext::new(
        args.iter().map(|s| s.to_string()).collect(),
        vec!["A=1".into()],
    );
    c.handle_signals = false;
    c.stdio = Stdio::Files {
        stdin: File::open("/dev/null").unwrap(),
        stdout: out_w,
        stderr: err_w,
    };
    (c, out_r, err_r)
}

fn run_loaded(loaded: Loaded, c: RunContext, mut out_r: File, mut err_r: File) -> Out {
    let code = loaded.run(c); // drops the write ends
    let mut stdout = String::new();
    let mut stderr = String::new();
    out_r.read_to_string(&mut stdout).unwrap();
    err_r.read_to_string(&mut stderr).unwrap();
    Out {
        code,
        stdout,
        stderr,
    }
}

fn compile_and_run(
    cache: &Cache,
    name: &str,
    src: &str,
    export: Option<&str>,
    limit: Option<u64>,
) -> Out {
    let loaded = compile_and_load(cache, name, src.as_bytes(), export).unwrap();
    let (mut c, out_r, err_r) = ctx(&["prog"]);
    c.memory_limit = limit;
    run_loaded(loaded, c, out_r, err_r)
}

/// `hello.wat` compiled through `cache` (a hit or a miss: see its `cache_hit`).
fn compile_hello(cache: &Cache) -> Compiled {
    cache
        .compile(Module::new("hello.wat", HELLO_EXIT3.as_bytes()))
        .unwrap()
}

#[test]
fn p1_stdout_and_proc_exit() {
    let (_d, cache) = cache();
    let out = compile_and_run(&cache, "hello.wat", HELLO_EXIT3, None, None);
    assert_eq!(out.code, 3, "stderr: {}", out.stderr);
    assert_eq!(out.stdout, "hello from wasm\n");
}

#[test]
fn proc_exit_keeps_codes_a_process_could_exit_with() {
    let (_d, cache) = cache();
    for code in [0, 125, 126, 200, 255] {
        let src = format!(
            r#"(module
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 1)
  (func (export "_start") (call $proc_exit (i32.const {code}))))"#
        );
        let out = compile_and_run(&cache, "exit.wat", &src, None, None);
        assert_eq!(out.code, code, "stderr: {}", out.stderr);
    }
}

#[test]
fn trap_exits_134_with_backtrace() {
    let (_d, cache) = cache();
    let out = compile_and_run(&cache, "trap.wat", TRAP, None, None);
    assert_eq!(out.code, EXIT_TRAP);
    assert!(out.stderr.contains("trap.wat"), "{}", out.stderr);
    assert!(out.stderr.contains("unreachable"), "{}", out.stderr);
    assert!(out.stderr.contains("wasm backtrace"), "{}", out.stderr);
}

#[test]
fn memory_limit_makes_grow_fail() {
    let (_d, cache) = cache();
    let out = compile_and_run(&cache, "grow.wat", GROW, Some("grow"), Some(256 * 1024));
    assert_eq!(out.code, 42, "stderr: {}", out.stderr);
    let out = compile_and_run(&cache, "grow.wat", GROW, Some("grow"), None);
    assert_eq!(out.code, 7, "stderr: {}", out.stderr);
}

/// Runs `src` (`name`, a guest that never ends by itself) and interrupts it with SIGTERM after
/// 200 ms. The harness has no SIGNAL_GRACE backstop (`handle_signals` is off), so the run
/// returns at all only because the interrupt ended the guest; a watchdog aborts the test binary
/// when it has not two minutes after the signal, so a regression fails instead of hanging.
fn run_until_sigterm(cache: &Cache, name: &str, src: &str) -> Out {
    let loaded = compile_and_load(cache, name, src.as_bytes(), None).unwrap();
    let int = loaded.interrupter();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let guest = name.to_string();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        int.interrupt(libc::SIGTERM);
        if done_rx.recv_timeout(Duration::from_secs(120)).is_err() {
            eprintln!("the guest {guest} did not end after SIGTERM");
            std::process::abort();
        }
    });
    let (c, out_r, err_r) = ctx(&[name.trim_end_matches(".wat")]);
    let out = run_loaded(loaded, c, out_r, err_r);
    done_tx.send(()).unwrap();
    t.join().unwrap();
    out
}

#[test]
fn interrupt_exits_128_plus_signal() {
    let (_d, cache) = cache();
    let out = run_until_sigterm(&cache, "spin.wat", SPIN);
    assert_eq!(out.code, 143, "stderr: {}", out.stderr);
}

/// A guest waiting in a host call (a 1000 s sleep) ends with 143 when SIGTERM arrives: the
/// interrupt drops the sleeping guest.
#[test]
fn interrupt_reaches_a_guest_blocked_in_a_host_call() {
    let (_d, cache) = cache();
    let out = run_until_sigterm(&cache, "sleep.wat", SLEEP);
    assert_eq!(out.code, 143, "stderr: {}", out.stderr);
}

#[test]
fn cache_miss_then_hit() {
    let (_d, cache) = cache();
    let a = compile_hello(&cache);
    assert!(!a.cache_hit);
    let b = compile_hello(&cache);
    assert!(b.cache_hit);
    assert_eq!(a.artifact, b.artifact);
    assert_eq!(a.payload, b.payload);
    assert!(a.payload.digest.starts_with("sha256:"));
    assert_eq!(a.payload.kind, WasmKind::CoreModule);
    // A second cache instance (another shim) sees the same entry.
    let other = Cache::open(cache.dir(), DEFAULT_CACHE_MAX_BYTES).unwrap();
    assert!(compile_hello(&other).cache_hit);
    // The payload survives serialization.
    assert_eq!(
        WasmPayload::from_bytes(&b.payload.to_bytes()).unwrap(),
        b.payload
    );
}

#[test]
fn corrupt_entry_is_recompiled() {
    let (_d, cache) = cache();
    let a = compile_hello(&cache);
    drop(a.file);
    std::fs::write(&a.artifact, b"garbage, not an ELF artifact").unwrap();
    let b = compile_hello(&cache);
    assert!(!b.cache_hit);
    let loaded = load(b.file, &b.payload).unwrap();
    let (c, out_r, err_r) = ctx(&["x"]);
    assert_eq!(run_loaded(loaded, c, out_r, err_r).code, 3);
    // truncated entry too
    let len = std::fs::metadata(&b.artifact).unwrap().len();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&b.artifact)
        .unwrap();
    f.set_len(len / 2).unwrap();
    assert!(!compile_hello(&cache).cache_hit);
}

#[test]
fn concurrent_compiles_of_the_same_module() {
    let (dir, _) = cache();
    let path = dir.path().join("shared");
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let path = path.clone();
            std::thread::spawn(move || {
                // each thread its own Cache, like separate shims
                let cache = Cache::open(path, DEFAULT_CACHE_MAX_BYTES).unwrap();
                compile_hello(&cache)
            })
        })
        .collect();
    for t in threads {
        let compiled = t.join().unwrap();
        let loaded = load(compiled.file, &compiled.payload).unwrap();
        let (c, out_r, err_r) = ctx(&["x"]);
        assert_eq!(run_loaded(loaded, c, out_r, err_r).code, 3);
    }
    let names: Vec<_> = std::fs::read_dir(&path)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
}

#[test]
fn eviction_is_lru_and_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let probe = Cache::open(dir.path().join("probe"), u64::MAX).unwrap();
    let modules: Vec<String> = (0..3)
        .map(|i| format!("(module (func (export \"_start\") (drop (i32.const {i}))))"))
        .collect();
    let size = std::fs::metadata(
        probe
            .compile(Module::new("m", modules[0].as_bytes()))
            .unwrap()
            .artifact,
    )
    .unwrap()
    .len();
    let cache = Cache::open(dir.path().join("c"), size * 5 / 2).unwrap();
    let a = cache
        .compile(Module::new("a", modules[0].as_bytes()))
        .unwrap();
    std::thread::sleep(Duration::from_millis(20));
    let b = cache
        .compile(Module::new("b", modules[1].as_bytes()))
        .unwrap();
    std::thread::sleep(Duration::from_millis(20));
    assert!(
        cache
            .compile(Module::new("a", modules[0].as_bytes()))
            .unwrap()
            .cache_hit
    ); // touch a
    std::thread::sleep(Duration::from_millis(20));
    let c = cache
        .compile(Module::new("c", modules[2].as_bytes()))
        .unwrap();
    assert!(a.artifact.exists(), "recently used entry evicted");
    assert!(!b.artifact.exists(), "LRU entry kept");
    assert!(c.artifact.exists());
    // the evicted module's open fd still loads
    load(b.file, &b.payload).unwrap();
}

/// Compiles through the cache and loads, as the shim and then the container do: the error of
/// whichever step refused the module.
fn compile_and_load(cache: &Cache, name: &str, src: &[u8], export: Option<&str>) -> Result<Loaded> {
    let c = cache.compile(Module {
        name,
        bytes: src,
        export,
    })?;
    load(c.file, &c.payload)
}

#[test]
fn errors_name_the_module_and_problem() {
    let (_d, cache) = cache();
    let err = |name: &str, src: &[u8], export: Option<&str>| match compile_and_load(
        &cache, name, src, export,
    ) {
        Ok(_) => panic!("{name} loaded"),
        Err(e) => e.to_string(),
    };
    let e = err("bad.wasm", b"\0asm\x01\0\0\0\x01garbage", None);
    assert!(e.contains("bad.wasm") && e.contains("invalid"), "{e}");
    let e = err("short.wasm", b"\0asm\x01", None);
    assert!(e.contains("short.wasm") && e.contains("truncated"), "{e}");
    let e = err("sh", b"#!/bin/sh\necho", None);
    assert!(e.contains("sh") && e.contains("not a WebAssembly"), "{e}");
    let e = err("hello.wat", HELLO_EXIT3.as_bytes(), Some("nope"));
    assert!(
        e.contains("hello.wat") && e.contains("`nope`") && e.contains("_start"),
        "{e}"
    );
    let e = err("lib.wat", b"(module (func (export \"f\")))", None);
    assert!(
        e.contains("lib.wat") && e.contains("_start") && e.contains("f"),
        "{e}"
    );
    let e = err("env.wat", IMPORTS_ENV.as_bytes(), None);
    assert!(
        e.contains("env.wat") && e.contains("env") && e.contains("foo"),
        "{e}"
    );
    let e = err("empty.wat", b"(component)", None);
    assert!(e.contains("empty.wat") && e.contains("wasi:cli/run"), "{e}");
    // A hit (the module is cached now) reports the same user error.
    let again = err("env.wat", IMPORTS_ENV.as_bytes(), None);
    assert!(
        cache
            .compile(Module::new("env.wat", IMPORTS_ENV.as_bytes()))
            .unwrap()
            .cache_hit
    );
    assert!(again.contains("foo"), "{again}");
}

fn mode(p: &std::path::Path) -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(p).unwrap().mode() & 0o7777
}

#[test]
fn cache_is_private_to_its_owner() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c");
    let cache = Cache::open(&path, DEFAULT_CACHE_MAX_BYTES).unwrap();
    assert_eq!(mode(&path), 0o700);
    let a = compile_hello(&cache);
    assert_eq!(mode(&a.artifact), 0o600);
    let name = a
        .artifact
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert!(
        name.ends_with(".v2.cwasm"),
        "{name}: the format is in the name"
    );
    // An existing world-readable directory (an older shim's) is narrowed.
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    Cache::open(&path, DEFAULT_CACHE_MAX_BYTES).unwrap();
    assert_eq!(mode(&path), 0o700);
    // Somebody else's directory is refused, naming the owner.
    let theirs = dir.path().join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    std::os::unix::fs::chown(&theirs, Some(4242), None).unwrap();
    let e = Cache::open(&theirs, DEFAULT_CACHE_MAX_BYTES)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("theirs") && e.contains("4242"), "{e}");
    // So is a symlink to a directory.
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&path, &link).unwrap();
    let e = Cache::open(&link, DEFAULT_CACHE_MAX_BYTES)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("link") && e.contains("symlink"), "{e}");
}

#[test]
fn untrusted_entries_are_recompiled() {
    let (_d, cache) = cache();
    let a = compile_hello(&cache);
    let entry = a.artifact.clone();
    drop(a);
    let good = std::fs::read(&entry).unwrap();
    let decoy = cache.dir().join("decoy");
    std::fs::write(&decoy, &good).unwrap();
    // A symlink in place of the entry, even to a valid entry, is not followed.
    std::fs::remove_file(&entry).unwrap();
    std::os::unix::fs::symlink(&decoy, &entry).unwrap();
    let b = compile_hello(&cache);
    assert!(!b.cache_hit);
    assert!(!std::fs::symlink_metadata(&entry)
        .unwrap()
        .file_type()
        .is_symlink());
    // An entry others may read or write.
    std::fs::set_permissions(&entry, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    assert!(!compile_hello(&cache).cache_hit);
    assert_eq!(mode(&entry), 0o600);
    // An entry with a second name.
    let twin = cache.dir().join("twin");
    std::fs::hard_link(&entry, &twin).unwrap();
    assert!(!compile_hello(&cache).cache_hit);
    std::fs::remove_file(&twin).unwrap();
    assert!(compile_hello(&cache).cache_hit);
}

#[test]
fn a_changed_artifact_is_caught_by_its_digest() {
    use std::os::unix::fs::FileExt;
    let (_d, cache) = cache();
    let a = compile_hello(&cache);
    drop(a.file);
    // Code bytes changed in place, size and mtime restored: only the digest tells.
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&a.artifact)
        .unwrap();
    let mtime = f.metadata().unwrap().modified().unwrap();
    f.write_all_at(
        b"\xcc\xcc\xcc\xcc",
        4096.min(f.metadata().unwrap().len() / 2),
    )
    .unwrap();
    f.set_modified(mtime).unwrap();
    drop(f);
    // Another shim (a fresh cache on the same directory) checks the digest.
    let other = Cache::open(cache.dir(), DEFAULT_CACHE_MAX_BYTES).unwrap();
    let b = compile_hello(&other);
    assert!(!b.cache_hit, "a changed entry was trusted");
    let loaded = load(b.file, &b.payload).unwrap();
    let (c, out_r, err_r) = ctx(&["x"]);
    let out = run_loaded(loaded, c, out_r, err_r);
    assert_eq!((out.code, out.stdout.as_str()), (3, "hello from wasm\n"));
    assert!(compile_hello(&other).cache_hit);
}

#[test]
fn the_handed_over_artifact_cannot_be_reopened_for_writing() {
    use std::os::fd::AsRawFd;
    let (_d, cache) = cache();
    for hit in [false, true] {
        let a = compile_hello(&cache);
        assert_eq!(a.cache_hit, hit);
        let reopen = format!("/proc/self/fd/{}", a.file.as_raw_fd());
        let e = std::fs::OpenOptions::new()
            .write(true)
            .open(&reopen)
            .unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{reopen}: {e}");
        // Read-only reopens (a component is mapped that way) still work.
        std::fs::File::open(&reopen).unwrap();
        // The cache itself still writes its directory.
        assert!(std::fs::metadata(&a.artifact).unwrap().len() > 0);
    }
}

#[test]
fn guest_root_has_no_kernel_filesystems() {
    let dirs = crate::take_guest_dirs(&[]).unwrap();
    assert_eq!(dirs.len(), 1);
    assert_eq!(dirs[0].guest, "/");
    let root = &dirs[0].dir;
    let open = |p: &str| {
        nix::fcntl::openat(
            root,
            p,
            nix::fcntl::OFlag::O_RDONLY,
            nix::sys::stat::Mode::empty(),
        )
    };
    // The host's root file system is there, its /proc and /sys mounts are not.
    assert!(open("etc").is_ok());
    for p in ["proc/self/maps", "proc/1/mem", "sys/kernel", "dev/pts/ptmx"] {
        assert!(open(p).is_err(), "{p} reachable through the copy of /");
    }
}

#[test]
fn a_cache_hit_does_not_compile() {
    use std::os::unix::fs::MetadataExt;
    let (_d, cache) = cache();
    let entries = |c: &Cache| {
        let mut v: Vec<(String, u64, i64)> = std::fs::read_dir(c.dir())
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let m = e.metadata().unwrap();
                (
                    e.file_name().to_string_lossy().into_owned(),
                    m.ino(),
                    m.mtime_nsec(),
                )
            })
            .collect();
        v.sort();
        v
    };
    let miss = compile_hello(&cache);
    assert!(!miss.cache_hit);
    let after_miss = entries(&cache);
    assert_eq!(after_miss.len(), 1, "one entry: {after_miss:?}");
    let hit = compile_hello(&cache);
    // A hit opens the entry the miss wrote and writes nothing: same inode, same mtime, no
    // temp file left, the same payload.
    assert!(hit.cache_hit);
    assert_eq!(
        hit.file.metadata().unwrap().ino(),
        miss.file.metadata().unwrap().ino()
    );
    assert_eq!(entries(&cache), after_miss);
    assert_eq!(hit.payload.digest, miss.payload.digest);
}

#[test]
fn component_loads_without_procfs() {
    let (_d, cache) = cache();
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/wasm/out/hello-p2.wasm");
    let compiled = cache
        .compile(Module::new("hello-p2.wasm", &std::fs::read(path).unwrap()))
        .unwrap();
    assert_eq!(compiled.payload.kind, WasmKind::ComponentCommand);
    let c = crate::run::deserialize_component_via(cache.engine(), compiled.file, false).unwrap();
    crate::run::prepare_component(
        cache.engine(),
        "hello-p2.wasm",
        &c,
        Some(WasmKind::ComponentCommand),
    )
    .unwrap();
}

/// Settings that change compiled code make another cache entry; the others do not.
#[test]
fn settings_that_change_code_get_their_own_cache_entry() {
    let (_d, cache) = cache();
    let base = WasmSettings::default();
    let mut fuel = base.clone();
    fuel.fuel = Some(1_000_000);
    let mut log = base.clone();
    log.http.access_log = true;
    let a = cache
        .compile_with(&base, Module::new("hello.wat", HELLO_EXIT3.as_bytes()))
        .unwrap();
    let b = cache
        .compile_with(&fuel, Module::new("hello.wat", HELLO_EXIT3.as_bytes()))
        .unwrap();
    let c = cache
        .compile_with(&log, Module::new("hello.wat", HELLO_EXIT3.as_bytes()))
        .unwrap();
    assert_ne!(a.artifact, b.artifact);
    assert!(!b.cache_hit);
    assert_eq!(a.artifact, c.artifact);
    assert!(c.cache_hit);
    assert_eq!(b.payload.settings, fuel);
    let entries = std::fs::read_dir(cache.dir())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".cwasm")
        })
        .count();
    assert_eq!(entries, 2);
    // The fuel-metered artifact runs with its settings.
    let loaded = load(b.file, &b.payload).unwrap();
    let (ctx, out_r, err_r) = ctx(&["x"]);
    assert_eq!(run_loaded(loaded, ctx, out_r, err_r).code, 3);
}

/// SPIN compiled and run with `settings`.
fn run_spin_with(settings: &WasmSettings) -> Out {
    let (_d, cache) = cache();
    let c = cache
        .compile_with(settings, Module::new("spin.wat", SPIN.as_bytes()))
        .unwrap();
    let loaded = load(c.file, &c.payload).unwrap();
    let (ctx, out_r, err_r) = ctx(&["spin"]);
    run_loaded(loaded, ctx, out_r, err_r)
}

/// A guest computing past its fuel, or past its time limit, traps (134) instead of running
/// forever, with a message that says why.
#[test]
fn fuel_and_time_limits_end_a_spinning_guest() {
    let fuel = WasmSettings {
        fuel: Some(10_000),
        ..Default::default()
    };
    let out = run_spin_with(&fuel);
    assert_eq!(out.code, EXIT_TRAP, "stderr: {}", out.stderr);
    assert!(out.stderr.contains("fuel"), "stderr: {}", out.stderr);
    let time = WasmSettings {
        time_limit_ms: Some(100),
        ..Default::default()
    };
    let out = run_spin_with(&time);
    assert_eq!(out.code, EXIT_TRAP, "stderr: {}", out.stderr);
    assert!(
        out.stderr.contains("time limit of 100 ms"),
        "stderr: {}",
        out.stderr
    );
}

static IDLE_CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn count_idle() {
    IDLE_CALLS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
}

/// The idle hook (the text and heap trim of a sleeping guest's process) runs once the
/// runner's runtime has been quiet, without another park or wake-up to trigger it: the first
/// version ran at a park, so a guest that fell asleep right after start-up was never trimmed.
#[test]
fn idle_hook_runs_once_the_runtime_is_quiet() {
    use std::sync::atomic::Ordering;
    let mut b = tokio::runtime::Builder::new_current_thread();
    crate::loaded::IdleWatch::start(count_idle).attach(&mut b);
    let rt = b.enable_all().build().unwrap();
    let called = rt.block_on(async {
        // Long sleeps, each one park: the watcher must call the hook while we sleep. A bound
        // on the number of rounds turns a regression into a failure instead of a hang.
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_secs(3)).await;
            if IDLE_CALLS.load(Ordering::SeqCst) > 0 {
                return true;
            }
        }
        false
    });
    assert!(called, "the idle hook never ran while the runtime slept");
}
