//! Runs the example apps of `examples/wasm/out/` (built by `examples/wasm/build.sh`)
//! through compile → load → run, in-process and through the `amphi-wasm-run` runner
//! (signals, HTTP serving and drain need a process of their own).

use std::fs::File;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use runtime_wasm::{
    load, Cache, GuestDirs, Module, RunContext, Stdio, WasmKind, DEFAULT_CACHE_MAX_BYTES,
};

mod common;
use common::cache;

fn out_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/wasm/out")
}

fn example(name: &str) -> Vec<u8> {
    let p = out_dir().join(name);
    std::fs::read(&p)
        .unwrap_or_else(|e| panic!("{}: {e} (run examples/wasm/build.sh)", p.display()))
}

fn runner() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples/amphi-wasm-run")
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

fn run_in_process(
    cache: &Cache,
    file: &str,
    args: &[&str],
    root: Option<PathBuf>,
) -> (WasmKind, Out) {
    let compiled = cache.compile(Module::new(file, &example(file))).unwrap();
    let loaded = load(compiled.file, &compiled.payload).unwrap();
    let (out_r, out_w) = nix::unistd::pipe().unwrap();
    let (err_r, err_w) = nix::unistd::pipe().unwrap();
    let mut ctx = RunContext::new(
        args.iter().map(|s| s.to_string()).collect(),
        vec!["GREETING=hi there".into(), "EMPTY=".into()],
    );
    ctx.handle_signals = false;
    ctx.dirs = GuestDirs::Paths(vec![("/".into(), root.unwrap_or_else(|| "/".into()))]);
    ctx.stdio = Stdio::Files {
        stdin: File::open("/dev/null").unwrap(),
        stdout: out_w.into(),
        stderr: err_w.into(),
    };
    let code = loaded.run(ctx);
    let (mut stdout, mut stderr) = (String::new(), String::new());
    File::from(out_r).read_to_string(&mut stdout).unwrap();
    File::from(err_r).read_to_string(&mut stderr).unwrap();
    (
        compiled.payload.kind,
        Out {
            code,
            stdout,
            stderr,
        },
    )
}

#[test]
fn hello_p1_and_p2_print_args_env_and_root() {
    let (dir, cache) = cache();
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(root.join("file.txt"), "x").unwrap();
    for (file, kind) in [
        ("hello.wasm", WasmKind::CoreModule),
        ("hello-p2.wasm", WasmKind::ComponentCommand),
    ] {
        let (k, out) = run_in_process(&cache, file, &["/hello", "a b", "c"], Some(root.clone()));
        assert_eq!(k, kind);
        assert_eq!(out.code, 0, "{file}: {}", out.stderr);
        for want in [
            "arg[0]=/hello\narg[1]=a b\narg[2]=c\n",
            "env GREETING=hi there\n",
            "env EMPTY=\n",
            "ls / : etc file.txt\n",
        ] {
            assert!(out.stdout.contains(want), "{file}: {}", out.stdout);
        }
    }
}

#[test]
fn exit_codes() {
    let (_d, cache) = cache();
    for (file, arg, code) in [
        ("exit-code.wasm", "7", 7),
        ("exit-code.wasm", "0", 0),
        ("exit-code-p2.wasm", "0", 0),
        // Rust std on wasip2 exits through `wasi:cli/exit.exit(err)`: any failure is 1.
        ("exit-code-p2.wasm", "9", 1),
    ] {
        let out = run_in_process(&cache, file, &["x", arg], None).1;
        assert_eq!(out.code, code, "{file} {arg}: {}", out.stderr);
    }
}

#[test]
fn trap_is_134_with_message() {
    let (_d, cache) = cache();
    for args in [&["trap"][..], &["trap", "panic"][..]] {
        let out = run_in_process(&cache, "trap.wasm", args, None).1;
        assert_eq!(out.code, 134);
        assert!(out.stdout.contains("about to trap"));
        assert!(
            out.stderr
                .contains("trap.wasm trapped: wasm trap: wasm `unreachable`"),
            "{}",
            out.stderr
        );
        assert!(out.stderr.contains("wasm backtrace"), "{}", out.stderr);
    }
}

fn spawn_runner(cache: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> Child {
    let mut cmd = Command::new(runner());
    cmd.arg("--cache").arg(cache).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdout(std::process::Stdio::piped());
    cmd.spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", runner().display()))
}

fn kill(child: &Child, sig: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), sig).unwrap();
}

fn wait_line(child: &mut Child, want: &str) {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    let stdout = child.stdout.as_mut().unwrap();
    while !String::from_utf8_lossy(&buf).contains(want) {
        assert_eq!(stdout.read(&mut byte).unwrap(), 1, "eof before {want:?}");
        buf.push(byte[0]);
    }
}

#[test]
fn sigterm_and_sigint_end_a_sleeper() {
    let dir = tempfile::tempdir().unwrap();
    let sleeper = out_dir().join("sleeper.wasm");
    for (sig, code, interval) in [
        (nix::sys::signal::Signal::SIGTERM, 143, "100"),
        // stuck in a 60 s host sleep: ended after the grace period
        (nix::sys::signal::Signal::SIGINT, 130, "60000"),
    ] {
        let mut child = spawn_runner(dir.path(), &[sleeper.to_str().unwrap(), interval], &[]);
        wait_line(&mut child, "sleeper started");
        let t = Instant::now();
        kill(&child, sig);
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(code), "{status:?}");
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn http_get(port: u16, path: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    Ok(resp)
}

#[test]
fn http_proxy_serves_and_drains_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let wasm = out_dir().join("http-hello.wasm");
    let mut child = spawn_runner(
        dir.path(),
        &[wasm.to_str().unwrap()],
        &[("PORT", &port.to_string())],
    );
    let t = Instant::now();
    let resp = loop {
        match http_get(port, "/hello?x=1") {
            Ok(r) => break r,
            Err(_) if t.elapsed() < Duration::from_secs(20) => {
                std::thread::sleep(Duration::from_millis(50))
            }
            Err(e) => panic!("server never came up: {e}"),
        }
    };
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(
        resp.contains("hello from wasi:http (Method::Get /hello?x=1)"),
        "{resp}"
    );

    // An in-flight request survives SIGTERM; then the process exits 0.
    let slow = std::thread::spawn(move || http_get(port, "/slow?ms=1000"));
    std::thread::sleep(Duration::from_millis(300));
    kill(&child, nix::sys::signal::Signal::SIGTERM);
    let resp = slow.join().unwrap().unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains("/slow?ms=1000"), "{resp}");
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{status:?}");
    assert!(http_get(port, "/").is_err());
}
