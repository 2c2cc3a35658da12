//! Wasm end-to-end cases: real containerd, real kernel, real wasmtime. The support code is in
//! `amphi_tests::wasm_images` (modules from examples/wasm/out, wrapped into images).
//!
//! Most cases use one busybox rootfs image holding every example module plus a few generated
//! inputs (a `.wat` that grows memory, broken modules, a component of an unsupported world),
//! and name the module as the first `ctr run` argument.
//!
//! Over 600 lines on purpose: one test binary per area, each case against the same private
//! containerds; a split would add a binary and a containerd start per run for no new reader.

use amphi_tests::cmd::{self, Output, Running};
use amphi_tests::wasm_images::{self, Target};
use amphi_tests::{paths, procs, wasm_e2e, Case};
use anyhow::{Context, Result};
use std::path::PathBuf;
use std::time::Duration;

const IMAGE: &str = "docker.io/amphi/wasm-apps:e2e";

/// Loops `memory.grow` by one page (touching each new page, so without a store limit the
/// cgroup would OOM-kill it) up to 1 GiB. Prints and exits 42 when a grow returns -1, exits 1
/// when every grow succeeded.
const GROW_WAT: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "memory.grow returned -1\n")
  (data (i32.const 64) "memory.grow never failed\n")
  (func (export "_start")
    (local $pages i32) (local $r i32)
    (block $failed
      (loop $grow
        (local.set $r (memory.grow (i32.const 1)))
        (br_if $failed (i32.eq (local.get $r) (i32.const -1)))
        (i32.store (i32.mul (local.get $r) (i32.const 65536)) (i32.const 1))
        (local.set $pages (i32.add (local.get $pages) (i32.const 1)))
        (br_if $grow (i32.lt_u (local.get $pages) (i32.const 16384))))
      (i32.store (i32.const 0) (i32.const 64))
      (i32.store (i32.const 4) (i32.const 25))
      (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
      (call $proc_exit (i32.const 1)))
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 24))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
    (call $proc_exit (i32.const 42))))
"#;

/// A component that exports one plain function: neither `wasi:cli/run` nor
/// `wasi:http/incoming-handler`.
const ODD_WORLD_WAT: &str = r#"(component
  (core module $m (func (export "f")))
  (core instance $i (instantiate $m))
  (func (export "f") (canon lift (core func $i "f"))))
"#;

/// A core module importing a function no host provides.
const BAD_IMPORT_WAT: &str = r#"(module
  (import "env" "nope" (func))
  (func (export "_start")))
"#;

/// Writes `data` to the e2e cache dir as `name` (when it differs) and returns its path.
fn generated(name: &str, data: &[u8]) -> Result<PathBuf> {
    let dir = paths::cache_dir().join("wasm-inputs");
    std::fs::create_dir_all(&dir)?;
    let p = dir.join(name);
    if std::fs::read(&p).ok().as_deref() != Some(data) {
        let tmp = dir.join(format!("{name}.{}", std::process::id()));
        std::fs::write(&tmp, data)?;
        std::fs::rename(&tmp, &p)?;
    }
    Ok(p)
}

/// Imports the image with every example module and the generated inputs.
fn apps_image(c: &Case) -> Result<&'static str> {
    let hello = wasm_images::module("hello", Target::P1)?;
    let hello_bytes = std::fs::read(&hello)?;
    let mut garbage = b"\0asm\x01\0\0\0".to_vec();
    garbage.extend_from_slice(b"\xff\xfe this is not a wasm section \x01\x02\x03");
    let files: Vec<(PathBuf, &str)> = vec![
        (hello, "/hello.wasm"),
        (wasm_images::module("hello", Target::P2)?, "/hello-p2.wasm"),
        (
            wasm_images::module("exit-code", Target::P1)?,
            "/exit-code.wasm",
        ),
        (
            wasm_images::module("exit-code", Target::P2)?,
            "/exit-code-p2.wasm",
        ),
        (wasm_images::module("trap", Target::P1)?, "/trap.wasm"),
        (wasm_images::module("sleeper", Target::P1)?, "/sleeper.wasm"),
        (
            paths::workspace_root().join("examples/wasm/out/http-hello.wasm"),
            "/http-hello.wasm",
        ),
        (generated("grow.wat", GROW_WAT.as_bytes())?, "/grow.wat"),
        (
            generated("odd-world.wat", ODD_WORLD_WAT.as_bytes())?,
            "/odd-world.wat",
        ),
        (
            generated("bad-import.wat", BAD_IMPORT_WAT.as_bytes())?,
            "/bad-import.wat",
        ),
        (generated("garbage.wasm", &garbage)?, "/garbage.wasm"),
        (
            generated("truncated.wasm", &hello_bytes[..hello_bytes.len() / 2])?,
            "/truncated.wasm",
        ),
    ];
    let refs: Vec<(&std::path::Path, &str)> =
        files.iter().map(|(p, d)| (p.as_path(), *d)).collect();
    wasm_images::import_rootfs_files(&c.cd, &refs, IMAGE, None)?;
    Ok(IMAGE)
}

/// `ctr run MODE --runtime amphi OPTS IMAGE ID ARGS...`
/// Entries of `/` on the host that the image does not have (they must not show in a container).
fn host_only_root_entries(image_entries: &[&str]) -> Vec<String> {
    std::fs::read_dir("/")
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| {
                    !image_entries.contains(&n.as_str())
                        && !["dev", "proc", "sys", "run", "mnt"].contains(&n.as_str())
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The "ls / : a b c" line of hello's output, as a list.
fn listing(out: &Output) -> Result<Vec<String>> {
    let line = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("ls / : "))
        .ok_or_else(|| anyhow::anyhow!("no `ls /` line: {}", out.describe()))?;
    anyhow::ensure!(
        !line.starts_with("error"),
        "listing / failed: {}",
        out.describe()
    );
    Ok(line.split_whitespace().map(str::to_string).collect())
}

/// p1 module and p2 component: args, env from `--env`, `/` is the image's rootfs only.
fn hello(c: &mut Case) -> Result<()> {
    let image = apps_image(c)?;
    let image_entries = [
        "bin",
        "sbin",
        "usr",
        "etc",
        "tmp",
        "proc",
        "sys",
        "dev",
        "root",
        "var",
        "app",
        "linuxrc",
        "hello.wasm",
        "hello-p2.wasm",
        "exit-code.wasm",
        "exit-code-p2.wasm",
        "trap.wasm",
        "sleeper.wasm",
        "http-hello.wasm",
        "grow.wat",
        "odd-world.wat",
        "bad-import.wat",
        "garbage.wasm",
        "truncated.wasm",
    ];
    let host_only = host_only_root_entries(&image_entries);
    for (module, tag) in [("/hello.wasm", "p1"), ("/hello-p2.wasm", "p2")] {
        let id = c.id(tag);
        let out = c
            .with_image(image)
            .run_rm(
                &["--env", "AMPHI_E2E_FOO=bar baz", "--env", "SECOND=2"],
                &id,
                &[module, "a1", "b 2"],
            )?
            .ok()?;
        let s = &out.stdout;
        for want in [
            "hello from wasm".to_string(),
            format!("arg[0]={module}"),
            "arg[1]=a1".into(),
            "arg[2]=b 2".into(),
            "env AMPHI_E2E_FOO=bar baz".into(),
            "env SECOND=2".into(),
            "env PATH=/usr/local/sbin".into(),
        ] {
            anyhow::ensure!(
                s.contains(&want),
                "{tag}: `{want}` missing from the output: {}",
                out.describe()
            );
        }
        anyhow::ensure!(
            !s.contains("arg[3]"),
            "{tag}: extra args: {}",
            out.describe()
        );
        let ls = listing(&out)?;
        for e in ["bin", "etc", "hello.wasm", "grow.wat", "app"] {
            anyhow::ensure!(
                ls.iter().any(|l| l == e),
                "{tag}: `/` of the container lacks {e}: {ls:?}"
            );
        }
        let leaked: Vec<&String> = ls.iter().filter(|l| host_only.contains(l)).collect();
        anyhow::ensure!(
            leaked.is_empty(),
            "{tag}: host entries visible in the container's `/`: {leaked:?} (listing {ls:?})"
        );
        let unknown: Vec<&String> = ls
            .iter()
            .filter(|l| {
                !image_entries.contains(&l.as_str()) && !["run", "mnt"].contains(&l.as_str())
            })
            .collect();
        anyhow::ensure!(
            unknown.is_empty(),
            "{tag}: `/` has entries the image does not: {unknown:?}"
        );
    }
    Ok(())
}

/// `proc_exit(n)` (p1) and `exit` (p2) come back as the task's exit status. (wasmtime's
/// WASI p1 `proc_exit` accepts 0..126 only; a larger status traps, so 125 is the top here.)
fn exit_codes(c: &mut Case) -> Result<()> {
    let apps = c.with_image(apps_image(c)?);
    // The p2 example only imports `wasi:cli/exit.exit(result)` (no `exit-with-code`): a
    // non-zero code reaches the host as `err`, i.e. 1.
    let runs = [
        ("/exit-code.wasm", "7", 7),
        ("/exit-code.wasm", "0", 0),
        ("/exit-code.wasm", "125", 125),
        ("/exit-code-p2.wasm", "3", 1),
        ("/exit-code-p2.wasm", "0", 0),
    ];
    for (i, (module, code, want)) in runs.into_iter().enumerate() {
        let id = c.id(&format!("e{i}"));
        let out = apps.run_rm(&[], &id, &[module, code])?.expect_code(want)?;
        out.expect_stdout(&format!("exiting with {code}"), "output")?;
    }
    Ok(())
}

/// A trap exits 134 with the trap message and a wasm backtrace on the container's stderr; a
/// Rust panic (which aborts with `unreachable`) too, after its panic message.
fn trap(c: &mut Case) -> Result<()> {
    let apps = c.with_image(apps_image(c)?);
    let id = c.id("trap");
    let out = apps.run_rm(&[], &id, &["/trap.wasm"])?.expect_code(134)?;
    out.expect_stdout("about to trap", "stdout before the trap")?;
    out.expect_stderr(
        "wasm `unreachable` instruction executed",
        "trap message missing from stderr",
    )?;
    out.expect_stderr("wasm backtrace", "wasm backtrace missing from stderr")?;
    let id = c.id("panic");
    let out = apps
        .run_rm(&[], &id, &["/trap.wasm", "panic"])?
        .expect_code(134)?;
    out.expect_stderr("trap example panicked on purpose", "panic message missing")?;
    out.expect_stderr("wasm backtrace", "wasm backtrace missing from stderr")?;
    Ok(())
}

/// SIGTERM interrupts the sleeping guest: 143. SIGKILL: 137. One SIGTERM is enough for a guest
/// blocked in a host call (a 100 s sleep): it ends at once, not after the runner's backstop
/// grace period (the time is printed, not asserted beyond a generous bound).
fn signals(c: &mut Case) -> Result<()> {
    let apps = c.with_image(apps_image(c)?);
    let id = c.id("term");
    let bg = apps.run_bg(&[], &id, &["/sleeper.wasm", "100000"])?;
    // RUNNING is reported after Start; the runner installs its signal thread right after.
    std::thread::sleep(Duration::from_millis(300));
    let sent = std::time::Instant::now();
    c.ctr(&["task", "kill", "-s", "SIGTERM", &id])?.ok()?;
    let out = bg.wait(Duration::from_secs(30))?.expect_code(143)?;
    eprintln!(
        "sleeping guest ended {:?} after one SIGTERM",
        sent.elapsed()
    );
    out.expect_stdout("sleeper started", "sleeper output")?;
    let id = c.id("kill");
    let bg = apps.run_bg(&[], &id, &["/sleeper.wasm"])?;
    c.ctr(&["task", "kill", "-s", "SIGKILL", &id])?.ok()?;
    bg.wait(Duration::from_secs(30))?.expect_code(137)?;
    Ok(())
}

/// `ps` and `/proc/<pid>/cmdline` show the module and its arguments, comm is the module's file
/// name; the shim and its spawner keep their own names.
fn process_names(c: &mut Case) -> Result<()> {
    let apps = c.with_image(apps_image(c)?);
    let id = c.id("ps");
    apps.run_detached(&[], &id, &["/sleeper.wasm", "100000"])?;
    let (pid, _) = c
        .task(&id)?
        .ok_or_else(|| anyhow::anyhow!("no task {id}"))?;
    let p = cmd::wait_for(
        Duration::from_secs(10),
        "the task to read as its module",
        || Ok(procs::Proc::read(pid as i32).filter(|p| p.comm == "sleeper.wasm")),
    )?;
    anyhow::ensure!(
        p.cmdline == ["/sleeper.wasm", "100000"],
        "cmdline of the wasm task: {:?}",
        p.cmdline
    );
    let others = c.shim_processes();
    anyhow::ensure!(
        others.iter().any(|o| o.comm == "amphi-spawner"),
        "no amphi-spawner among {:?}",
        others.iter().map(|o| &o.comm).collect::<Vec<_>>()
    );
    for o in others.iter().filter(|o| o.pid != pid as i32) {
        anyhow::ensure!(
            o.comm != "sleeper.wasm",
            "shim process {} reads as the module",
            o.pid
        );
    }
    c.remove(&id)
}

/// Cumulative CPU time (ns) of a task's cgroup from `ctr task metrics` (v1 and v2 tables).
fn cpu_usage(c: &Case, id: &str) -> Result<(u64, Output)> {
    let out = c.ctr(&["task", "metrics", id])?.ok()?;
    let v = out
        .stdout
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 2 && (f[0] == "cpuacct.usage" || f[0] == "cpu.usage_usec"))
                .then(|| f[1].parse::<u64>().ok())
                .flatten()
        })
        .ok_or_else(|| anyhow::anyhow!("no cpu usage in metrics: {}", out.describe()))?;
    Ok((v, out))
}

/// Pause freezes the guest (no CPU time while PAUSED), resume lets it go on; metrics answer.
fn pause_metrics(c: &mut Case) -> Result<()> {
    let apps = c.with_image(apps_image(c)?);
    let id = c.id("pm");
    // A tick every 5ms keeps it using a little CPU.
    apps.run_detached(&[], &id, &["/sleeper.wasm", "5"])?;
    let (_, m) = cpu_usage(c, &id)?;
    m.expect_stdout("memory", "metrics lack memory")?;
    c.ctr(&["task", "pause", &id])?.ok()?;
    c.wait_status(&id, "PAUSED", Duration::from_secs(10))?;
    let (a, _) = cpu_usage(c, &id)?;
    std::thread::sleep(Duration::from_millis(700));
    let (b, _) = cpu_usage(c, &id)?;
    anyhow::ensure!(a == b, "cpu usage grew while PAUSED: {a} -> {b}");
    c.ctr(&["task", "resume", &id])?.ok()?;
    c.wait_status(&id, "RUNNING", Duration::from_secs(10))?;
    cmd::wait_for(
        Duration::from_secs(10),
        "cpu usage to grow after resume",
        || Ok((cpu_usage(c, &id)?.0 > b).then_some(())),
    )?;
    // Processes are listed like a native task's.
    anyhow::ensure!(!c.task_pids(&id)?.is_empty(), "task ps lists nothing");
    c.remove(&id)
}

/// The spec's memory limit caps linear memory: `memory.grow` returns -1 inside the guest
/// (exit 42 from the module), rather than the kernel OOM-killing it (137).
fn memory_limit(c: &mut Case) -> Result<()> {
    let apps = c.with_image(apps_image(c)?);
    // The control, with room for the whole 1 GiB: every grow succeeds (exit 1), so the -1 of
    // the first run came from the limit.
    let runs = [
        (
            "grow",
            "33554432",
            42,
            "memory.grow returned -1",
            "expected memory.grow to fail in the guest (exit 42), got",
        ),
        (
            "grow-big",
            "2147483648",
            1,
            "memory.grow never failed",
            "with a 2 GiB limit every grow should succeed (exit 1), got",
        ),
    ];
    for (tag, limit, code, says, what) in runs {
        let id = c.id(tag);
        let out = apps.run_rm(&["--memory-limit", limit], &id, &["/grow.wat"])?;
        anyhow::ensure!(
            out.code == Some(code) && out.stdout.contains(says),
            "{what}: {}",
            out.describe()
        );
    }
    Ok(())
}

/// Exec into a wasm container: a wasm module and a native binary from its rootfs.
fn exec(c: &mut Case) -> Result<()> {
    let apps = c.with_image(apps_image(c)?);
    let id = c.id("x");
    apps.run_detached(&[], &id, &["/sleeper.wasm"])?;
    let out = c
        .ctr(&[
            "task",
            "exec",
            "--exec-id",
            "w1",
            &id,
            "/hello.wasm",
            "from-exec",
        ])?
        .ok()?;
    anyhow::ensure!(
        out.stdout.contains("hello from wasm") && out.stdout.contains("arg[1]=from-exec"),
        "wasm exec: {}",
        out.describe()
    );
    let out = c
        .ctr(&[
            "task",
            "exec",
            "--exec-id",
            "w2",
            &id,
            "/exit-code.wasm",
            "5",
        ])?
        .expect_code(5)?;
    out.expect_stdout("exiting with 5", "wasm exec")?;
    let out = c
        .ctr(&[
            "task",
            "exec",
            "--exec-id",
            "n1",
            &id,
            "/bin/echo",
            "native-in-wasm",
        ])?
        .ok()?;
    anyhow::ensure!(
        out.stdout.trim() == "native-in-wasm",
        "native exec: {}",
        out.describe()
    );
    // The native exec shares the wasm init's pid namespace: it sees pid 1.
    let out = c
        .ctr(&["task", "exec", "--exec-id", "n2", &id, "ps"])?
        .ok()?;
    anyhow::ensure!(
        out.stdout
            .lines()
            .any(|l| l.split_whitespace().next() == Some("1")),
        "ps in the container: {}",
        out.describe()
    );
    c.remove(&id)
}

/// wasi:http: the proxy component serves on :8080 inside the container's netns; a busybox
/// wget exec'd into the same container reaches it.
fn http(c: &mut Case) -> Result<()> {
    let apps = c.with_image(apps_image(c)?);
    let id = c.id("http");
    apps.run_detached(&[], &id, &["/http-hello.wasm"])?;
    let mut n = 0;
    let out = wget_until_ok(
        c,
        &mut n,
        &id,
        "http://127.0.0.1:8080/hi?x=1",
        "the wasi:http server to answer",
    )?;
    anyhow::ensure!(
        out.stdout.contains("hello from wasi:http (") && out.stdout.contains("Get /hi?x=1)\n"),
        "response body: {}",
        out.describe()
    );
    // PORT from the env moves it.
    let id2 = c.id("http-port");
    apps.run_detached(&["--env", "PORT=9090"], &id2, &["/http-hello.wasm"])?;
    let out = wget_until_ok(
        c,
        &mut n,
        &id2,
        "http://127.0.0.1:9090/p",
        "the wasi:http server on :9090",
    )?;
    anyhow::ensure!(
        out.stdout.contains("Get /p)"),
        "response body on :9090: {}",
        out.describe()
    );
    c.remove(&id2)?;
    c.remove(&id)
}

/// `wget -qO- URL` exec'd into container `id` (exec ids get1, get2... from `n`) until it
/// succeeds, for at most 20 s (`what` names the wait); returns its output.
fn wget_until_ok(c: &Case, n: &mut u32, id: &str, url: &str, what: &str) -> Result<Output> {
    cmd::wait_for(Duration::from_secs(20), what, || {
        *n += 1;
        let o = c.ctr(&[
            "task",
            "exec",
            "--exec-id",
            &format!("get{n}"),
            id,
            "wget",
            "-qO-",
            url,
        ])?;
        Ok(o.success().then_some(o))
    })
}

/// The command `curl ARGS` inside the network namespace of process `pid`, printing the HTTP
/// status on a last line of its own.
fn curl_command(pid: u32, args: &[&str]) -> std::process::Command {
    let mut cmd = std::process::Command::new("nsenter");
    cmd.args([
        "-t",
        &pid.to_string(),
        "-n",
        "curl",
        "-sS",
        "--max-time",
        "60",
    ])
    .args(["-w", "\n%{http_code}"])
    .args(args);
    cmd
}

/// `curl ARGS` inside the network namespace of process `pid`; returns (HTTP status, body).
/// curl's own exit status is not required to be 0: a server that answers 413 before reading
/// the whole upload may reset the connection under curl's feet after the answer arrived.
fn curl_in(pid: u32, args: &[&str]) -> Result<(u16, String)> {
    let out = cmd::run(curl_command(pid, args), Duration::from_secs(90))?;
    let (body, code) = out
        .stdout
        .rsplit_once('\n')
        .ok_or_else(|| anyhow::anyhow!("curl output: {}", out.describe()))?;
    let code: u16 = code.trim().parse()?;
    anyhow::ensure!(code != 0, "curl got no answer: {}", out.describe());
    Ok((code, body.to_string()))
}

/// Waits until the wasi:http server of task `id` answers `/`; returns the task's pid.
fn wait_serving(c: &Case, id: &str, port: u16) -> Result<u32> {
    let (pid, _) = c.task(id)?.ok_or_else(|| anyhow::anyhow!("no task {id}"))?;
    let url = format!("http://127.0.0.1:{port}/");
    cmd::wait_for(
        Duration::from_secs(20),
        "the wasi:http server to answer",
        || Ok(curl_in(pid, &[&url]).ok().filter(|(s, _)| *s == 200)),
    )?;
    Ok(pid)
}

/// An HTTP/1.1 server on 127.0.0.1 inside the network namespace of `pid` (a thread that
/// entered it: network namespaces are per thread), answering every request with `body`.
/// Returns its port.
fn server_in_netns(pid: u32, body: &'static str) -> Result<u16> {
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/net"))?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        use std::os::fd::AsFd;
        let bound = nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(anyhow::Error::from)
            .and_then(|()| Ok(std::net::TcpListener::bind("127.0.0.1:0")?));
        let listener = match bound {
            Ok(l) => l,
            Err(e) => {
                let _ = tx.send(Err(e));
                return;
            }
        };
        let _ = tx.send(Ok(listener.local_addr().map(|a| a.port()).unwrap_or(0)));
        for mut s in listener.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    rx.recv_timeout(Duration::from_secs(10))?
}

/// wasi:http serving, complete: a trap answers 500 and the server goes on; body-size and
/// run-time limits (annotations) answer 413 and 503; outgoing HTTP from the guest reaches a
/// server in the container's own network namespace; the access log reaches stdout; a 100 MB
/// request body and a 100 MB streamed response pass through a container whose memory limit is
/// smaller than either; SIGTERM drains: an in-flight request finishes, then exit 0.
fn http_serving(c: &mut Case) -> Result<()> {
    let apps = c.with_image(apps_image(c)?);
    let id = c.id("limits");
    let opts = [
        "--annotation",
        "io.amphi.wasm.http.access_log=true",
        "--annotation",
        "io.amphi.wasm.http.max_body_bytes=1048576",
        "--annotation",
        "io.amphi.wasm.http.request_timeout_ms=1000",
    ];
    let bg = apps.run_bg(&opts, &id, &["/http-hello.wasm"])?;
    let pid = wait_serving(c, &id, 8080)?;
    let url = |p: &str| format!("http://127.0.0.1:8080{p}");
    let (st, body) = curl_in(pid, &[&url("/hi")])?;
    anyhow::ensure!(
        st == 200 && body.contains("Get /hi)"),
        "GET /hi: {st} {body}"
    );
    // `curl ARGS` must answer `want`; `who` names the case.
    let expect_status = |args: &[&str], want: u16, who: &str| -> Result<()> {
        let (st, _) = curl_in(pid, args)?;
        anyhow::ensure!(st == want, "{who} answered {st}");
        Ok(())
    };
    expect_status(&[&url("/trap")], 500, "a trapping guest")?;
    expect_status(&[&url("/after-trap")], 200, "after a trap the server")?;
    let big = c.cd.dir.join("two-mib");
    std::fs::write(&big, vec![b'a'; 2 << 20])?;
    let big_arg = format!("@{}", big.display());
    let post_big = ["--data-binary", &big_arg, &url("/count")];
    expect_status(&post_big, 413, "a 2 MiB body with a 1 MiB limit")?;
    let chunked = ["-H", "Transfer-Encoding: chunked"];
    expect_status(
        &[&chunked[..], &post_big].concat(),
        413,
        "a chunked 2 MiB body",
    )?;
    let (st, body) = curl_in(pid, &["--data-binary", "small", &url("/count")])?;
    anyhow::ensure!(
        st == 200 && body.contains("count 5"),
        "small body: {st} {body}"
    );
    expect_status(
        &[&url("/slow?ms=20000")],
        503,
        "a guest sleeping past the limit",
    )?;
    expect_status(&[&url("/spin")], 503, "a guest computing past the limit")?;
    let port = server_in_netns(pid, "from the server in the test")?;
    let (st, body) = curl_in(
        pid,
        &[&url(&format!("/fetch?url=http://127.0.0.1:{port}/x"))],
    )?;
    anyhow::ensure!(
        st == 200 && body.contains("fetched 200") && body.contains("from the server in the test"),
        "outgoing request: {st} {body}"
    );
    c.ctr(&["task", "kill", "-s", "SIGTERM", &id])?.ok()?;
    let out = bg.wait(Duration::from_secs(30))?.expect_code(0)?;
    for line in [
        "GET /hi 200 ",
        "GET /trap 500 ",
        "POST /count 413 ",
        "GET /slow?ms=20000 503 ",
        "GET /spin 503 ",
    ] {
        anyhow::ensure!(
            out.stdout.contains(line),
            "access log lacks `{line}`: {}",
            out.describe()
        );
    }

    // Defaults (128 MiB body limit), 96 MiB of memory for the whole container.
    let id = c.id("big");
    let bg = apps.run_bg(&["--memory-limit", "100663296"], &id, &["/http-hello.wasm"])?;
    let pid = wait_serving(c, &id, 8080)?;
    let file = c.cd.dir.join("hundred-mb");
    std::fs::File::create(&file)?.set_len(100 << 20)?;
    let (st, body) = curl_in(pid, &["-T", &file.display().to_string(), &url("/count")])?;
    anyhow::ensure!(
        st == 200 && body.contains(&format!("count {}", 100u64 << 20)),
        "100 MiB request body: {st} {body}"
    );
    let (st, body) = curl_in(
        pid,
        &[
            "-o",
            "/dev/null",
            "-w",
            // The last -w wins: the size, then the status line curl_in parses.
            "size=%{size_download}\n%{http_code}",
            &url("/stream?mb=100"),
        ],
    )?;
    anyhow::ensure!(
        st == 200 && body.contains(&format!("size={}", 100u64 << 20)),
        "100 MiB streamed response: {st} {body}"
    );
    std::fs::remove_file(&file)?;
    // Drain: a request in flight when SIGTERM comes still gets its answer.
    let mut slow = Running::spawn(curl_command(pid, &[&url("/slow?ms=1500")]), None)?;
    cmd::wait_for(
        Duration::from_secs(10),
        "the slow request to be in flight",
        || {
            let mut ss = std::process::Command::new("nsenter");
            ss.args([
                "-t",
                &pid.to_string(),
                "-n",
                "ss",
                "-Htn",
                "state",
                "established",
            ])
            .args(["( sport = :8080 )"]);
            let o = cmd::run(ss, Duration::from_secs(5))?;
            Ok((!o.stdout.trim().is_empty() || slow.exited()).then_some(()))
        },
    )?;
    c.ctr(&["task", "kill", "-s", "SIGTERM", &id])?.ok()?;
    let answered = slow.wait(Duration::from_secs(30))?.ok()?;
    anyhow::ensure!(
        answered.stdout.trim_end().ends_with("200")
            && answered.stdout.contains("Get /slow?ms=1500"),
        "the in-flight request during drain: {}",
        answered.describe()
    );
    bg.wait(Duration::from_secs(30))?.expect_code(0)?;
    Ok(())
}

/// `[wasm.http] instance_reuse`: by default every request gets a fresh instance (the guest's
/// request counter reads 1 each time); with `instance_reuse=4` one instance serves four
/// requests in a row, then a fresh one takes over; an instance whose guest trapped is never
/// kept (the next request finds a fresh one).
fn http_instance_reuse(c: &mut Case) -> Result<()> {
    let apps = c.with_image(apps_image(c)?);
    let url = "http://127.0.0.1:8080/served";
    let served = |pid: u32| -> Result<String> {
        let (st, body) = curl_in(pid, &[url])?;
        anyhow::ensure!(st == 200, "GET /served answered {st}: {body}");
        Ok(body.trim().to_string())
    };
    let id = c.id("fresh");
    apps.run_detached(&[], &id, &["/http-hello.wasm"])?;
    let pid = wait_serving(c, &id, 8080)?;
    for _ in 0..3 {
        let got = served(pid)?;
        anyhow::ensure!(
            got == "served 1",
            "default settings: {got}, not a fresh instance"
        );
    }
    c.remove(&id)?;

    let id = c.id("reuse");
    let opts = ["--annotation", "io.amphi.wasm.http.instance_reuse=4"];
    apps.run_detached(&opts, &id, &["/http-hello.wasm"])?;
    let pid = wait_serving(c, &id, 8080)?;
    // wait_serving's request left an instance that served 1: three more, then a fresh one.
    let got: Vec<String> = (0..5).map(|_| served(pid)).collect::<Result<_>>()?;
    anyhow::ensure!(
        got == ["served 2", "served 3", "served 4", "served 1", "served 2"],
        "instance_reuse=4: {got:?}"
    );
    // The instance that served 2 traps on its third: it is dropped, not kept.
    let (st, _) = curl_in(pid, &["http://127.0.0.1:8080/trap"])?;
    anyhow::ensure!(st == 500, "a trapping guest answered {st}");
    let got = served(pid)?;
    anyhow::ensure!(
        got == "served 1",
        "after a trap: {got}, the trapped instance was kept"
    );
    c.remove(&id)
}

/// A second wasi:http server on a port another one holds fails its start with the reason, as
/// any server does (two workers each, so the workers' shared sockets are in play: they must
/// not join the first server's and split its connections). Host network, a port free now.
fn http_port_taken(c: &mut Case) -> Result<()> {
    let apps = c.with_image(apps_image(c)?);
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let env = format!("PORT={port}");
    let opts = [
        "--net-host",
        "--env",
        &env,
        "--annotation",
        "io.amphi.wasm.http.workers=2",
    ];
    let first = c.id("first");
    apps.run_detached(&opts, &first, &["/http-hello.wasm"])?;
    let pid = wait_serving(c, &first, port)?;
    let second = c.id("second");
    let out = apps.run_rm(&opts, &second, &["/http-hello.wasm"])?;
    out.expect_code(1)?
        .expect_output(&format!("bind 0.0.0.0:{port}"), "the second server's error")?
        .expect_output("in use", "the second server's error")?;
    let (st, body) = curl_in(pid, &[&format!("http://127.0.0.1:{port}/after")])?;
    anyhow::ensure!(
        st == 200 && body.contains("Get /after)"),
        "the first server after: {st} {body}"
    );
    c.remove(&first)
}

/// `[wasm]` settings: from the runtime options file and from annotations; one that changes
/// compiled code gives the module a second cache entry; an unknown one fails Create naming it.
fn settings(c: &mut Case) -> Result<()> {
    let apps = c.with_image(apps_image(c)?);
    let id = c.id("unknown");
    let out = apps
        .run_rm(
            &["--annotation", "io.amphi.wasm.turbo=true"],
            &id,
            &["/hello.wasm"],
        )?
        .failed()?;
    out.expect_output("turbo", "the error should name the unknown setting")?;
    c.remove(&id)?;
    c.check_leaks()?;
    // The file: a fuel budget far too small for hello.wasm's start-up.
    let cfg = c.cd.dir.join("amphi.toml");
    std::fs::write(&cfg, "[wasm]\nfuel = 50\n")?;
    let cfg_s = cfg.display().to_string();
    let id = c.id("fuel");
    let out = apps
        .run_rm(&["--runtime-config-path", &cfg_s], &id, &["/hello.wasm"])?
        .expect_code(134)?;
    out.expect_stderr("fuel", "fuel trap")?;
    // Two settings, one module: two cache entries (a unique module, so the count is ours).
    let nonce = format!("{}-{}", std::process::id(), c.cd.namespace);
    let src = c.cd.dir.join("unique-settings.wat");
    std::fs::write(&src, format!(";; {nonce}\n{GROW_WAT}"))?;
    let img = format!("docker.io/amphi/wasm-settings:{}", c.cd.namespace);
    wasm_images::import_rootfs_files(&c.cd, &[(src.as_path(), "/u.wat")], &img, Some(&c.cd.dir))?;
    let limit = ["--memory-limit", "33554432"];
    c.with_image(&img)
        .run_rm(&limit, &c.id("s0"), &["/u.wat"])?
        .expect_code(42)?;
    let mut with_fuel = limit.to_vec();
    with_fuel.extend(["--annotation", "io.amphi.wasm.fuel=100000000000"]);
    c.with_image(&img)
        .run_rm(&with_fuel, &c.id("s1"), &["/u.wat"])?
        .expect_code(42)?;
    // A setting that does not change code reuses the first entry.
    let mut with_log = limit.to_vec();
    with_log.extend(["--annotation", "io.amphi.wasm.http.access_log=true"]);
    c.with_image(&img)
        .run_rm(&with_log, &c.id("s2"), &["/u.wat"])?
        .expect_code(42)?;
    let entries = cache_entries(&sha256_hex(&src)?);
    for e in &entries {
        let _ = std::fs::remove_file(cache_dir().join(e));
    }
    anyhow::ensure!(
        entries.len() == 2,
        "expected two cache entries for the module, found {entries:?}"
    );
    Ok(())
}

/// A wasm container and a native container served by one shim (same group annotation).
fn mixed_group(c: &mut Case) -> Result<()> {
    let apps = c.with_image(apps_image(c)?);
    let w = c.id("w");
    let n = c.id("n");
    let ann = format!("io.containerd.runc.v2.group={}-mixed", c.cd.namespace);
    apps.run_detached(&["--annotation", &ann], &w, &["/sleeper.wasm"])?;
    apps.run_detached(&["--annotation", &ann], &n, &["sleep", "1000"])?;
    procs::expect_one_top_level(&c.shim_processes(), "shim serving both")?;
    let out = c
        .ctr(&["task", "exec", "--exec-id", "h", &n, "/hello.wasm"])?
        .ok()?;
    out.expect_stdout("hello from wasm", "wasm exec in the native container")?;
    c.ctr(&["task", "exec", "--exec-id", "t", &w, "true"])?
        .ok()?;
    c.remove(&w)?;
    c.expect_running(&n, "after removing the wasm one")?;
    c.remove(&n)
}

/// Bad modules fail with a reason naming the module, visible in ctr's output; nothing is
/// left behind.
fn bad_input(c: &mut Case) -> Result<()> {
    let apps = c.with_image(apps_image(c)?);
    let cases: [(&str, &str, &[&str]); 5] = [
        ("garbage", "/garbage.wasm", &["garbage.wasm"]),
        ("trunc", "/truncated.wasm", &["truncated.wasm"]),
        ("noexport", "/hello.wasm#nosuch", &["nosuch"]),
        ("world", "/odd-world.wat", &["odd-world.wat"]),
        ("import", "/bad-import.wat", &["nope"]),
    ];
    for (tag, entry, needles) in cases {
        let id = c.id(tag);
        let out = apps.run_rm(&[], &id, &[entry])?.failed()?;
        for n in needles {
            out.expect_output(n, &format!("{tag}: the error should name `{n}`"))?;
        }
        c.remove(&id)?;
        c.check_leaks()
            .with_context(|| format!("after {tag}: {}", out.describe()))?;
    }
    // The export that does exist runs.
    let id = c.id("export-ok");
    let out = apps.run_rm(&[], &id, &["/hello.wasm#_start"])?.ok()?;
    out.expect_stdout("hello from wasm", "hello.wasm#_start")?;
    Ok(())
}

/// sha256 hex digest of a file (as the cache names its entries).
fn sha256_hex(path: &std::path::Path) -> Result<String> {
    let mut s = std::process::Command::new("sha256sum");
    s.arg(path);
    let out = cmd::run(s, Duration::from_secs(10))?.ok()?;
    let digest = out
        .stdout
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    anyhow::ensure!(digest.len() == 64, "sha256sum: {}", out.describe());
    Ok(digest)
}

/// The node cache dir the shims use (they inherit containerd's env, i.e. ours).
fn cache_dir() -> PathBuf {
    std::env::var_os("AMPHI_WASM_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/lib/amphi/wasm-cache"))
}

/// Names of the cache entries of the module with this digest.
fn cache_entries(digest: &str) -> Vec<String> {
    std::fs::read_dir(cache_dir())
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(digest) && n.ends_with(".cwasm"))
                .collect()
        })
        .unwrap_or_default()
}

/// The second run of a module is a cache hit. The module is a `.wat` with a unique comment,
/// so its first run is a miss whatever the node-wide cache holds: that run must leave an entry
/// named by the module's sha256 in the cache dir (the shims inherit containerd's env, i.e. ours:
/// `AMPHI_WASM_CACHE_DIR` or the default), and the second must log `(cache hit)`.
///
/// The first run's `(compiled)` log line is not required: the shim's log fifo is written
/// non-blocking and drops lines when containerd falls behind, so a single line is not proof
/// enough; the cache entry on disk is.
fn cache(c: &mut Case) -> Result<()> {
    let nonce = format!(
        "{}-{}-{}",
        std::process::id(),
        c.cd.namespace,
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_nanos()
    );
    let wat = format!(";; {nonce}\n{GROW_WAT}");
    let src = c.cd.dir.join("unique.wat");
    std::fs::write(&src, &wat)?;
    let digest = sha256_hex(&src)?;
    let cache_dir = cache_dir();
    let entries = || cache_entries(&digest);
    anyhow::ensure!(
        entries().is_empty(),
        "a cache entry for a fresh module already exists: {:?}",
        entries()
    );
    let image = format!("docker.io/amphi/wasm-unique:{}", c.cd.namespace);
    wasm_images::import_rootfs_files(
        &c.cd,
        &[(src.as_path(), "/unique.wat")],
        &image,
        Some(&c.cd.dir),
    )?;
    let lines = |id: &str, want: &str| -> usize {
        std::fs::read_to_string(c.cd.log_path())
            .unwrap_or_default()
            .lines()
            .filter(|l| {
                l.contains(&format!("id={id}"))
                    && l.contains("wasm /unique.wat")
                    && l.contains(want)
            })
            .count()
    };
    // Miss.
    let id0 = c.id("run0");
    c.with_image(&image)
        .run_rm(&["--memory-limit", "33554432"], &id0, &["/unique.wat"])?
        .expect_code(42)?;
    anyhow::ensure!(
        entries().len() == 1,
        "expected one cache entry {digest}-*.cwasm in {} after the first run, found {:?}",
        cache_dir.display(),
        entries()
    );
    anyhow::ensure!(
        lines(&id0, "(cache hit)") == 0,
        "the first run of a fresh module was logged as a cache hit"
    );
    // Hit.
    let id1 = c.id("run1");
    let out = c
        .with_image(&image)
        .run_rm(&["--memory-limit", "33554432"], &id1, &["/unique.wat"])?
        .expect_code(42)?;
    cmd::wait_for(
        Duration::from_secs(5),
        "a `wasm /unique.wat: ... (cache hit)` line of the second run in the containerd log",
        || Ok((lines(&id1, "(cache hit)") == 1).then_some(())),
    )
    .with_context(|| out.describe())?;
    anyhow::ensure!(
        lines(&id1, "(compiled)") == 0,
        "the second run compiled the module again"
    );
    anyhow::ensure!(
        entries().len() == 1,
        "cache entries after the second run: {:?}",
        entries()
    );
    // The module is unique to this run: do not leave its artifact in the node-wide cache.
    for e in entries() {
        let _ = std::fs::remove_file(cache_dir.join(e));
    }
    Ok(())
}

/// The original first case, kept: the module as the image's entrypoint.
fn hello_module(c: &mut Case) -> Result<()> {
    let module = wasm_images::module("hello", Target::P1)?;
    let image =
        wasm_images::import_rootfs_module(&c.cd, &module, "docker.io/amphi/hello-wasm:e2e")?;
    let id = c.id("hello");
    let out = c.with_image(&image).run_rm(&[], &id, &[])?.ok()?;
    out.expect_stdout("hello from wasm", "wasm output")?;
    let module = wasm_images::module("exit-code", Target::P1)?;
    let image =
        wasm_images::import_rootfs_module(&c.cd, &module, "docker.io/amphi/exit-code-wasm:e2e")?;
    let id = c.id("exit");
    // ctr's args replace the image's entrypoint, so the module is named again.
    c.with_image(&image)
        .run_rm(&[], &id, &["/exit-code.wasm", "7"])?
        .expect_code(7)?;
    Ok(())
}

wasm_e2e!(wasm_hello_module, hello_module);
wasm_e2e!(wasm_hello, hello);
wasm_e2e!(wasm_exit_codes, exit_codes);
wasm_e2e!(wasm_trap, trap);
wasm_e2e!(wasm_signals, signals);
wasm_e2e!(wasm_process_names, process_names);
wasm_e2e!(wasm_http_serving, http_serving);
wasm_e2e!(wasm_http_instance_reuse, http_instance_reuse);
wasm_e2e!(wasm_http_port_taken, http_port_taken);
wasm_e2e!(wasm_settings, settings);
wasm_e2e!(wasm_pause_metrics, pause_metrics);
wasm_e2e!(wasm_memory_limit, memory_limit);
wasm_e2e!(wasm_exec, exec);
wasm_e2e!(wasm_http, http);
wasm_e2e!(wasm_mixed_group, mixed_group);
wasm_e2e!(wasm_bad_input, bad_input);
wasm_e2e!(wasm_cache, cache);

/// Images whose layers are the modules themselves (no file in a rootfs). On containerd 1.7 and
/// 2.1 the rootfs is empty and the shim reads the module from containerd's content store, for
/// each wasm layer media type; with several layers the entrypoint's file name picks one by its
/// title, and a name none has is an error naming the layers; an exec may name a layer module
/// too. containerd 1.6 cannot unpack such
/// an image at all: `ctr run` fails before any shim is involved.
fn layer_images(c: &mut Case) -> Result<()> {
    let hello = wasm_images::module("hello", Target::P1)?;
    if c.cd.version == amphi_tests::Version::V1_6 {
        let refused = |text: &str| {
            text.contains("mismatched image rootfs and manifest layers")
                || text.contains("no processor for media-type")
        };
        let image = "docker.io/amphi/hello-layer:e2e";
        match wasm_images::import_layer_image(&c.cd, &[&hello], Default::default(), image) {
            Err(e) => anyhow::ensure!(refused(&format!("{e:#}")), "import: {e:#}"),
            Ok(_) => {
                let out = c
                    .with_image(image)
                    .run_rm(&[], &c.id("l16"), &["/hello.wasm"])?
                    .failed()?;
                anyhow::ensure!(refused(&out.all()), "1.6 run: {}", out.describe());
            }
        }
        return c.check_leaks();
    }
    let hello_p2 = wasm_images::module("hello", Target::P2)?;
    let exit_code = wasm_images::module("exit-code", Target::P1)?;
    let singles: [(&str, &std::path::Path, Option<&str>); 3] = [
        ("content", &hello, None), // application/vnd.wasm.content.layer.v1+wasm
        ("plain", &hello, Some("application/wasm")),
        ("component", &hello_p2, None), // ...bytecodealliance.wasm.component.layer.v0+wasm
    ];
    for (tag, module, media) in singles {
        let image = format!("docker.io/amphi/hello-layer-{tag}:e2e");
        let opts = wasm_images::LayerOptions {
            media_type: media,
            ..Default::default()
        };
        wasm_images::import_layer_image(&c.cd, &[module], opts, &image)?;
        let id = c.id(tag);
        let out = c
            .with_image(&image)
            .run_rm(&[], &id, &["/hello.wasm", "a", "b"])?
            .ok()?;
        anyhow::ensure!(
            out.stdout.contains("hello from wasm") && out.stdout.contains("arg[2]=b"),
            "{tag}: {}",
            out.describe()
        );
        // The guest's `/` is the empty rootfs plus the runtime's mounts, nothing of the host.
        let seen = listing(&out)?;
        let leaked: Vec<_> = host_only_root_entries(&[])
            .into_iter()
            .filter(|e| seen.contains(e))
            .collect();
        anyhow::ensure!(
            leaked.is_empty() && !seen.iter().any(|e| e == "bin"),
            "{tag}: / shows {seen:?}"
        );
        c.check_leaks().with_context(|| tag.to_string())?;
    }
    // Two modules in one image: the image's entrypoint, or the one ctr's args name.
    let image = "docker.io/amphi/two-layers:e2e";
    wasm_images::import_layer_image(&c.cd, &[&hello, &exit_code], Default::default(), image)?;
    let out = c.with_image(image).run_rm(&[], &c.id("first"), &[])?.ok()?;
    out.expect_stdout("hello from wasm", "entrypoint")?;
    c.with_image(image)
        .run_rm(&[], &c.id("second"), &["/exit-code.wasm", "7"])?
        .expect_code(7)?;
    let id = c.id("none");
    let out = c
        .with_image(image)
        .run_rm(&[], &id, &["/nope.wasm"])?
        .failed()?;
    anyhow::ensure!(
        out.all().contains("nope.wasm") && out.all().contains("2 wasm layers"),
        "an unnamed module: {}",
        out.describe()
    );
    c.remove(&id)?;
    // An exec of a module that is a layer of the running container's image.
    let sleeper = wasm_images::module("sleeper", Target::P1)?;
    let image = "docker.io/amphi/sleeper-hello-layers:e2e";
    wasm_images::import_layer_image(&c.cd, &[&sleeper, &hello], Default::default(), image)?;
    let id = c.id("exec");
    c.with_image(image).run_detached(&[], &id, &[])?;
    let out = c
        .ctr(&["task", "exec", "--exec-id", "e1", &id, "/hello.wasm", "x"])?
        .ok()?;
    anyhow::ensure!(
        out.stdout.contains("hello from wasm") && out.stdout.contains("arg[1]=x"),
        "exec of a layer module: {}",
        out.describe()
    );
    c.remove(&id)?;
    c.check_leaks()
}

wasm_e2e!(wasm_layer_images, layer_images);
