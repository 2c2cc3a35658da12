//! End-to-end tests of the `amphi-oci` binary (root only; skipped otherwise): real containers
//! from a busybox bundle with a config.json like `runc spec` writes.
//!
//! Over 600 lines on purpose: every case drives the same binary on the same bundle fixture;
//! the file follows runc's command list.

use std::collections::BTreeSet;
use std::io::{IoSliceMut, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_amphi-oci");

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

macro_rules! need_root {
    () => {
        if !is_root() {
            eprintln!("skipped: needs root");
            return;
        }
    };
}

fn uid(name: &str) -> String {
    format!("{name}-{}", std::process::id())
}

/// What most cases start from: a private root, a bundle running `args` without a terminal,
/// and a container id made from `name`.
fn fixture(args: &[&str], name: &str) -> (Env, Bundle, String) {
    (Env::new(), Bundle::new(args, false), uid(name))
}

/// A bundle: busybox rootfs and a runc-spec-like config.json running `args`.
struct Bundle {
    dir: tempfile::TempDir,
}

impl Bundle {
    fn new(args: &[&str], terminal: bool) -> Bundle {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("rootfs");
        for d in ["bin", "proc", "sys", "dev", "tmp", "etc"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
        for l in [
            "sh", "ls", "cat", "echo", "sleep", "true", "tty", "id", "hostname", "readlink",
        ] {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(l)).unwrap();
        }
        let caps = json!(["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]);
        let config = json!({
            "ociVersion": "1.0.2-dev",
            "process": {
                "terminal": terminal,
                "user": {"uid": 0, "gid": 0},
                "args": args,
                "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"],
                "cwd": "/",
                "capabilities": {"bounding": caps, "effective": caps, "permitted": caps, "ambient": caps},
                "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
                "noNewPrivileges": true
            },
            "root": {"path": "rootfs", "readonly": true},
            "hostname": "runc",
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc"},
                {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
                 "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
                {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
                 "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
                {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
                 "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
                {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
                 "options": ["nosuid", "noexec", "nodev"]},
                {"destination": "/sys", "type": "sysfs", "source": "sysfs",
                 "options": ["nosuid", "noexec", "nodev", "ro"]},
                {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
                 "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}
            ],
            "linux": {
                "resources": {"devices": [{"allow": false, "access": "rwm"}]},
                "namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "ipc"},
                               {"type": "uts"}, {"type": "mount"}],
                "maskedPaths": ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
                    "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
                    "/proc/sched_debug", "/sys/firmware", "/proc/scsi"],
                "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys",
                    "/proc/sysrq-trigger"]
            }
        });
        std::fs::write(
            dir.path().join("config.json"),
            serde_json::to_vec_pretty(&config).unwrap(),
        )
        .unwrap();
        Bundle { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The bundle directory as `-b` takes it.
    fn arg(&self) -> &str {
        self.path().to_str().unwrap()
    }

    /// Edits config.json.
    fn config(&self, f: impl FnOnce(&mut Value)) {
        let p = self.path().join("config.json");
        let mut v: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
        f(&mut v);
        std::fs::write(&p, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
    }
}

/// A private `--root` plus a place for output files.
struct Env {
    root: tempfile::TempDir,
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Env {
    fn new() -> Env {
        Env {
            root: tempfile::tempdir().unwrap(),
        }
    }

    fn root(&self) -> PathBuf {
        self.root.path().join("state")
    }

    fn file(&self, name: &str) -> PathBuf {
        self.root.path().join(name)
    }

    /// Runs the CLI with stdin from /dev/null and stdout/stderr to files (a detached
    /// container keeps them open: pipes would never reach EOF).
    fn oci(&self, args: &[&str]) -> Out {
        let tag = next_tag();
        let o = self.file(&format!("out-{tag}"));
        let e = self.file(&format!("err-{tag}"));
        let code = std::process::Command::new(BIN)
            .arg("--root")
            .arg(self.root())
            .args(args)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&o).unwrap())
            .stderr(std::fs::File::create(&e).unwrap())
            .status()
            .unwrap()
            .code()
            .unwrap_or(-1);
        Out {
            code,
            stdout: std::fs::read_to_string(&o).unwrap(),
            stderr: std::fs::read_to_string(&e).unwrap(),
        }
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.oci(args);
        assert_eq!(o.code, 0, "amphi-oci {args:?} failed: {}", o.stderr);
        o.stdout
    }

    /// Runs the CLI, which must fail (exit code 1) with `says` in its error.
    fn fails(&self, args: &[&str], says: &str) -> Out {
        let o = self.oci(args);
        assert_eq!(o.code, 1, "amphi-oci {args:?}: {}", o.stderr);
        assert!(o.stderr.contains(says), "amphi-oci {args:?}: {}", o.stderr);
        o
    }

    /// `run -b BUNDLE ID` in the foreground, which must succeed; returns its stdout.
    fn run_ok(&self, b: &Bundle, id: &str) -> String {
        self.ok(&["run", "-b", b.arg(), id])
    }

    /// `run -d -b BUNDLE ID`, which must succeed; returns the init's pid as `state` reports it.
    fn run_detached(&self, b: &Bundle, id: &str) -> i64 {
        self.ok(&["run", "-d", "-b", b.arg(), id]);
        self.state(id)["pid"].as_i64().unwrap()
    }

    /// `create -b BUNDLE ID`, which must succeed.
    fn create(&self, b: &Bundle, id: &str) {
        self.ok(&["create", "-b", b.arg(), id]);
    }

    /// `run -b BUNDLE ID`, which must fail with `says` in its error and leave nothing of the
    /// container behind.
    fn run_fails(&self, b: &Bundle, id: &str, says: &str) {
        self.fails(&["run", "-b", b.arg(), id], says);
        self.assert_gone(id);
    }

    /// Asserts that the state directory holds nothing of container `id`.
    fn assert_gone(&self, id: &str) {
        assert!(!self.root().join(id).exists(), "{id} left its state behind");
    }

    /// The exit status the monitor reaped, as our own state file records it.
    fn recorded_exit_code(&self, id: &str) -> Value {
        let path = self.root().join(id).join("state.json");
        let raw: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        raw["exit_code"].clone()
    }

    fn state(&self, id: &str) -> Value {
        serde_json::from_str(&self.ok(&["state", id])).unwrap()
    }

    fn wait_status(&self, id: &str, want: &str) -> Value {
        let start = Instant::now();
        loop {
            let s = self.state(id);
            if s["status"] == want {
                return s;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "{id} never became {want}: {s}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn next_tag() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

fn wait_file_contains(p: &Path, s: &str) -> String {
    let start = Instant::now();
    loop {
        let c = std::fs::read_to_string(p).unwrap_or_default();
        if c.contains(s) {
            return c;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{} never contained {s:?}: {c:?}",
            p.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs the CLI with stdout/stderr to the given file (for a container's output).
fn oci_to(env: &Env, args: &[&str], out: &Path) -> i32 {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(out)
        .unwrap();
    std::process::Command::new(BIN)
        .arg("--root")
        .arg(env.root())
        .args(args)
        .stdin(Stdio::null())
        .stdout(f.try_clone().unwrap())
        .stderr(f)
        .status()
        .unwrap()
        .code()
        .unwrap_or(-1)
}

fn pid_alive(pid: i64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.contains(") Z "))
        .unwrap_or(false)
}

#[test]
fn create_start_state_kill_delete() {
    need_root!();
    let (env, b, id) = fixture(&["sh", "-c", "echo started; exec sleep 1000"], "life");
    let out = env.file("ctr.out");
    let pidfile = env.file("pid");
    let bundle = b.arg();
    let code = oci_to(
        &env,
        &[
            "create",
            "--bundle",
            bundle,
            "--pid-file",
            pidfile.to_str().unwrap(),
            &id,
        ],
        &out,
    );
    assert_eq!(code, 0, "{}", std::fs::read_to_string(&out).unwrap());
    let s = env.state(&id);
    assert_eq!(s["status"], "created", "{s}");
    assert_eq!(s["id"], id.as_str());
    assert_eq!(s["ociVersion"], "1.0.2-dev");
    assert_eq!(
        s["bundle"],
        std::fs::canonicalize(b.path()).unwrap().to_str().unwrap()
    );
    let pid = s["pid"].as_i64().unwrap();
    assert!(pid > 0);
    assert_eq!(std::fs::read_to_string(&pidfile).unwrap(), pid.to_string());
    assert!(pid_alive(pid));
    // Not started yet: no output.
    std::thread::sleep(Duration::from_millis(100));
    assert!(!std::fs::read_to_string(&out).unwrap().contains("started"));

    // The same id again.
    let o = env.oci(&["create", "-b", bundle, &id]);
    assert_eq!(o.code, 1);
    assert!(
        o.stderr
            .contains(&format!("container \"{id}\" already exists")),
        "{}",
        o.stderr
    );

    let list = env.ok(&["list"]);
    assert!(list.starts_with("ID"), "{list}");
    assert!(list.contains(&id) && list.contains("created"), "{list}");
    let l: Value = serde_json::from_str(&env.ok(&["list", "--format", "json"])).unwrap();
    assert_eq!(l[0]["id"], id.as_str());
    assert_eq!(env.ok(&["list", "-q"]).trim(), id);

    env.ok(&["start", &id]);
    wait_file_contains(&out, "started");
    let s = env.state(&id);
    assert_eq!(s["status"], "running", "{s}");
    assert_eq!(s["pid"].as_i64().unwrap(), pid);

    env.fails(&["start", &id], "already running");

    // A running container cannot be deleted without --force.
    env.fails(&["delete", &id], "not stopped");

    env.ok(&["kill", &id, "KILL"]);
    let s = env.wait_status(&id, "stopped");
    assert_eq!(s["pid"], 0);
    let o = env.oci(&["kill", &id]);
    assert_eq!(o.code, 1, "kill of a stopped container");
    // Our state file has the exit status the monitor reaped.
    assert_eq!(env.recorded_exit_code(&id), 137);

    env.ok(&["delete", &id]);
    env.assert_gone(&id);
    assert!(!pid_alive(pid));
    env.fails(&["state", &id], "does not exist");
}

#[test]
fn kill_with_signal_names_and_delete_created() {
    need_root!();
    let (env, b, id) = fixture(
        &[
            "sh",
            "-c",
            "trap 'echo got-term; exit 7' TERM; echo ready; while true; do sleep 0.05; done",
        ],
        "sig",
    );
    let out = env.file("out");
    assert_eq!(oci_to(&env, &["run", "-d", "-b", b.arg(), &id], &out), 0);
    wait_file_contains(&out, "ready");
    assert_eq!(env.state(&id)["status"], "running");
    env.ok(&["kill", &id, "SIGTERM"]);
    wait_file_contains(&out, "got-term");
    env.wait_status(&id, "stopped");
    assert_eq!(env.recorded_exit_code(&id), 7);
    env.ok(&["delete", &id]);

    // A created (never started) container is deleted without --force.
    let id2 = uid("created-del");
    env.create(&b, &id2);
    let pid = env.state(&id2)["pid"].as_i64().unwrap();
    env.ok(&["delete", &id2]);
    assert!(!pid_alive(pid));
    env.assert_gone(&id2);
}

#[test]
fn run_foreground_exit_code() {
    need_root!();
    let (env, b, id) = fixture(&["sh", "-c", "echo out; echo err >&2; exit 3"], "run3");
    let pidfile = env.file("run.pid");
    let o = env.oci(&[
        "run",
        "-b",
        b.arg(),
        "--pid-file",
        pidfile.to_str().unwrap(),
        &id,
    ]);
    assert_eq!(o.code, 3, "{}", o.stderr);
    assert_eq!(o.stdout, "out\n");
    assert!(o.stderr.contains("err"), "{}", o.stderr);
    assert!(
        std::fs::read_to_string(&pidfile)
            .unwrap()
            .parse::<i32>()
            .unwrap()
            > 0
    );
    // `run` deletes the container after it exits.
    env.assert_gone(&id);
    assert_eq!(env.oci(&["state", &id]).code, 1);

    // Killed by a signal: 128 + n, and a foreground run is visible to `state` meanwhile.
    let b = Bundle::new(&["sleep", "1000"], false);
    let mut child = std::process::Command::new(BIN)
        .arg("--root")
        .arg(env.root())
        .args(["run", "-b", b.arg(), &id])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !env.oci(&["state", &id]).stdout.contains("\"running\"") {
        assert!(start.elapsed() < Duration::from_secs(10), "never running");
        std::thread::sleep(Duration::from_millis(20));
    }
    env.ok(&["kill", &id, "KILL"]);
    assert_eq!(child.wait().unwrap().code(), Some(137));
    env.assert_gone(&id);

    // --keep leaves it stopped.
    let b = Bundle::new(&["true"], false);
    let o = env.oci(&["run", "--keep", "-b", b.arg(), &id]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(env.state(&id)["status"], "stopped");
    env.ok(&["delete", &id]);

    // A missing executable fails run with the reason and leaves nothing behind.
    let b = Bundle::new(&["/nonexistent"], false);
    env.run_fails(&b, &id, "nonexistent");
}

#[test]
fn exec_ps_pause_resume() {
    need_root!();
    let (env, b, id) = fixture(&["sh", "-c", "exec sleep 1000"], "exec");
    env.run_detached(&b, &id);
    let s = env.wait_status(&id, "running");
    let init = s["pid"].as_i64().unwrap();

    let o = env.oci(&["exec", &id, "sh", "-c", "echo hi from $(hostname); exit 5"]);
    assert_eq!(o.code, 5, "{}", o.stderr);
    assert_eq!(o.stdout, "hi from runc\n");
    // The exec sees the container's pid namespace: sleep is pid 1.
    let o = env.oci(&["exec", &id, "--", "cat", "/proc/1/cmdline"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.stdout.starts_with("sleep"), "{:?}", o.stdout);
    // --cwd and --env.
    let o = env.oci(&[
        "exec",
        "--cwd",
        "/tmp",
        "-e",
        "FOO=bar",
        &id,
        "sh",
        "-c",
        "echo $PWD $FOO",
    ]);
    assert_eq!(o.stdout, "/tmp bar\n", "{}", o.stderr);
    // --process FILE, as containerd's runc shim uses it.
    let pj = env.file("process.json");
    std::fs::write(
        &pj,
        serde_json::to_vec(&json!({
            "terminal": false, "user": {"uid": 0, "gid": 0},
            "args": ["sh", "-c", "echo from-process-file"], "env": ["PATH=/bin"], "cwd": "/"
        }))
        .unwrap(),
    )
    .unwrap();
    let o = env.oci(&["exec", "--process", pj.to_str().unwrap(), &id]);
    assert_eq!(o.stdout, "from-process-file\n", "{}", o.stderr);

    // A detached exec with a pid file shows up in ps.
    let epid = env.file("exec.pid");
    env.ok(&[
        "exec",
        "-d",
        "--pid-file",
        epid.to_str().unwrap(),
        &id,
        "sleep",
        "1000",
    ]);
    let exec_pid: i64 = std::fs::read_to_string(&epid).unwrap().parse().unwrap();
    let pids: Vec<i64> = serde_json::from_str(&env.ok(&["ps", "--format", "json", &id])).unwrap();
    assert!(pids.contains(&init), "{pids:?}");
    assert!(pids.contains(&exec_pid), "{pids:?} {exec_pid}");
    let table = env.ok(&["ps", &id]);
    assert!(table.lines().next().unwrap().contains("PID"), "{table}");
    assert!(table.contains(&init.to_string()), "{table}");

    env.ok(&["pause", &id]);
    assert_eq!(env.state(&id)["status"], "paused");
    let o = env.oci(&["exec", &id, "true"]);
    assert_eq!(o.code, 1, "exec into a paused container");
    let o = env.oci(&["pause", &id]);
    assert_eq!(o.code, 1);
    env.ok(&["resume", &id]);
    assert_eq!(env.state(&id)["status"], "running");
    env.fails(&["resume", &id], "not paused");

    env.ok(&["kill", "--all", &id, "9"]);
    env.wait_status(&id, "stopped");
    env.ok(&["delete", &id]);
    assert!(!pid_alive(exec_pid));
}

#[test]
fn delete_force_running_and_paused() {
    need_root!();
    let (env, b, id) = fixture(&["sleep", "1000"], "force");
    let pid = env.run_detached(&b, &id);
    env.ok(&["pause", &id]);
    env.ok(&["delete", "--force", &id]);
    assert!(!pid_alive(pid));
    env.assert_gone(&id);
    // --force on a missing container is not an error (as runc).
    env.ok(&["delete", "-f", &id]);
}

#[test]
fn unknown_ids() {
    need_root!();
    let env = Env::new();
    for args in [
        vec!["state", "nope"],
        vec!["start", "nope"],
        vec!["kill", "nope"],
        vec!["kill", "nope", "KILL"],
        vec!["delete", "nope"],
        vec!["exec", "nope", "true"],
        vec!["ps", "nope"],
        vec!["pause", "nope"],
        vec!["resume", "nope"],
    ] {
        let o = env.oci(&args);
        assert_eq!(o.code, 1, "{args:?}");
        assert!(
            o.stderr.contains("container \"nope\" does not exist"),
            "{args:?}: {}",
            o.stderr
        );
    }
    let o = env.oci(&["state"]);
    assert_eq!(o.code, 1);
    let o = env.oci(&["kill", "x", "NOSIG"]);
    assert_eq!(o.code, 1);
    env.fails(&["create", "-b", "/nonexistent", "x"], "/nonexistent");
    assert!(env.ok(&["--version"]).contains("amphi-oci version"));
    assert_eq!(env.ok(&["list", "-f", "json"]).trim(), "null");
    // --log json: containerd's runc shim reads the error from there.
    let log = env.file("log.json");
    let o = env.oci(&[
        "--log",
        log.to_str().unwrap(),
        "--log-format",
        "json",
        "state",
        "nope",
    ]);
    assert_eq!(o.code, 1);
    let line = std::fs::read_to_string(&log).unwrap();
    let v: Value = serde_json::from_str(line.lines().last().unwrap()).unwrap();
    assert_eq!(v["level"], "error");
    assert_eq!(v["msg"], "container \"nope\" does not exist");
}

/// Opens a file without O_CLOEXEC (as a careless caller would leave one) and returns its fd.
fn leak_fd(path: &Path) -> RawFd {
    std::fs::write(path, "secret").unwrap();
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: plain open; deliberately without O_CLOEXEC.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDONLY) };
    assert!(fd > 2);
    fd
}

/// The fd numbers in `ls -l /proc/self/fd` output, and the whole output.
fn fds_listed(out: &str) -> BTreeSet<u32> {
    out.lines()
        .filter_map(|l| {
            let l = l.split(" -> ").next().unwrap();
            l.split_whitespace().last()?.parse().ok()
        })
        .collect()
}

#[test]
fn no_host_fd_leaks_into_the_container() {
    need_root!();
    let (env, b, id) = fixture(&["ls", "-l", "/proc/self/fd"], "leak");
    let secret = env.file("secret-file");
    let fd = leak_fd(&secret);
    // Foreground run (this process's fds go through the CLI).
    let stdout = env.run_ok(&b, &id);
    let fds = fds_listed(&stdout);
    assert_eq!(fds, BTreeSet::from([0, 1, 2, 3]), "{stdout}");
    assert!(!stdout.contains("secret-file"), "{stdout}");
    // create + start (through the monitor).
    let out = env.file("leak.out");
    assert_eq!(oci_to(&env, &["create", "-b", b.arg(), &id], &out), 0);
    env.ok(&["start", &id]);
    env.wait_status(&id, "stopped");
    let text = std::fs::read_to_string(&out).unwrap();
    let fds = fds_listed(&text);
    assert_eq!(fds, BTreeSet::from([0, 1, 2, 3]), "{text}");
    assert!(!text.contains("secret-file"), "{text}");
    env.ok(&["delete", &id]);
    // exec.
    let b2 = Bundle::new(&["sleep", "1000"], false);
    env.run_detached(&b2, &id);
    let o = env.oci(&["exec", &id, "ls", "-l", "/proc/self/fd"]);
    assert_eq!(
        fds_listed(&o.stdout),
        BTreeSet::from([0, 1, 2, 3]),
        "{}",
        o.stdout
    );
    assert!(!o.stdout.contains("secret-file"), "{}", o.stdout);
    env.ok(&["delete", "-f", &id]);
    // SAFETY: closing the fd we opened.
    unsafe { libc::close(fd) };
}

/// Accepts one connection on `l` and receives the fd (and payload) runc's console socket
/// protocol sends.
fn recv_console(l: &UnixListener) -> (OwnedFd, String) {
    let (conn, _) = l.accept().unwrap();
    let mut buf = [0u8; 4096];
    let mut cmsg = nix::cmsg_space!([RawFd; 1]);
    let mut iov = [IoSliceMut::new(&mut buf)];
    let msg = nix::sys::socket::recvmsg::<()>(
        conn.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        nix::sys::socket::MsgFlags::empty(),
    )
    .unwrap();
    let mut fd = None;
    for c in msg.cmsgs().unwrap() {
        if let nix::sys::socket::ControlMessageOwned::ScmRights(fds) = c {
            // SAFETY: the kernel installed this fd for us.
            fd = Some(unsafe { OwnedFd::from_raw_fd(fds[0]) });
        }
    }
    let n = msg.bytes;
    let name = String::from_utf8_lossy(&buf[..n]).into_owned();
    (fd.expect("an fd over the console socket"), name)
}

fn read_pty(master: OwnedFd) -> String {
    let mut f = std::fs::File::from(master);
    let mut s = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match f.read(&mut buf) {
            Ok(0) | Err(_) => break, // EIO once the slave side is closed
            Ok(n) => s.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&s).into_owned()
}

#[test]
fn console_socket_with_terminal() {
    need_root!();
    let env = Env::new();
    let b = Bundle::new(&["sh", "-c", "tty; echo tty-ok"], true);
    let id = uid("tty");
    let sock = env.file("console.sock");
    let l = UnixListener::bind(&sock).unwrap();
    let t = std::thread::spawn(move || recv_console(&l));
    // Without a console socket a detached terminal is refused.
    env.fails(&["create", "-b", b.arg(), &id], "console socket");
    env.ok(&[
        "create",
        "-b",
        b.arg(),
        "--console-socket",
        sock.to_str().unwrap(),
        &id,
    ]);
    let (master, name) = t.join().unwrap();
    assert!(name.starts_with("/dev/pts/"), "{name}");
    env.ok(&["start", &id]);
    let text = read_pty(master);
    assert!(text.contains("/dev/pts/0"), "{text:?}");
    assert!(text.contains("tty-ok"), "{text:?}");
    env.wait_status(&id, "stopped");
    env.ok(&["delete", &id]);

    // exec -t with a console socket.
    let b2 = Bundle::new(&["sleep", "1000"], false);
    env.run_detached(&b2, &id);
    let sock2 = env.file("console2.sock");
    let l = UnixListener::bind(&sock2).unwrap();
    let t = std::thread::spawn(move || recv_console(&l));
    let o = env.oci(&[
        "exec",
        "-t",
        "-d",
        "--console-socket",
        sock2.to_str().unwrap(),
        &id,
        "sh",
        "-c",
        "tty; echo exec-tty-ok",
    ]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let (master, _) = t.join().unwrap();
    let text = read_pty(master);
    assert!(text.contains("exec-tty-ok"), "{text:?}");
    assert!(text.contains("/dev/pts/"), "{text:?}");
    env.ok(&["delete", "-f", &id]);
}

/// Under a child subreaper (containerd's runc shim), the monitor hands the started container
/// over, so the subreaper reaps the init and sees its exit status, as it would with runc.
/// Runs itself in a subprocess that is the subreaper (this test process must not be one).
#[test]
fn subreaper_reaps_the_init() {
    need_root!();
    if let Ok(root) = std::env::var("AMPHI_OCI_TEST_SUBREAPER_ROOT") {
        // SAFETY: prctl with integer arguments, in this helper process only.
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
        let b = Bundle::new(&["sh", "-c", "sleep 0.5; exit 7"], false);
        let id = uid("handoff");
        let run = |args: &[&str]| {
            let st = std::process::Command::new(BIN)
                .arg("--root")
                .arg(&root)
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .status()
                .unwrap();
            assert!(st.success(), "{args:?}");
        };
        let pidfile = Path::new(&root).join("init.pid");
        run(&[
            "create",
            "-b",
            b.arg(),
            "--pid-file",
            pidfile.to_str().unwrap(),
            &id,
        ]);
        let pid: i32 = std::fs::read_to_string(&pidfile).unwrap().parse().unwrap();
        run(&["start", &id]);
        let start = Instant::now();
        let code = loop {
            let mut st = 0;
            // SAFETY: waitpid with a valid out pointer.
            let r = unsafe { libc::waitpid(-1, &mut st, libc::WNOHANG) };
            if r == pid {
                break libc::WEXITSTATUS(st);
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "init never reaped here"
            );
            if r <= 0 {
                std::thread::sleep(Duration::from_millis(10));
            }
        };
        run(&["delete", &id]);
        println!("INIT-EXIT {code}");

        // An adopter that did not run `create` itself (here `sh` ran it and exited) is not
        // handed the init: the monitor reaps it and records the exit code.
        let sh = format!(
            "{BIN} --root {root} create -b {} {id} </dev/null >/dev/null",
            b.path().display()
        );
        assert!(std::process::Command::new("sh")
            .args(["-c", &sh])
            .status()
            .unwrap()
            .success());
        run(&["start", &id]);
        let start = Instant::now();
        let state = Path::new(&root).join(&id).join("state.json");
        loop {
            let v: Value = serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
            if v["exit_code"] == 7 {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "no exit code: {v}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        run(&["delete", &id]);
        println!("MONITOR-KEPT");
        return;
    }
    let env = Env::new();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "subreaper_reaps_the_init",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("AMPHI_OCI_TEST_SUBREAPER_ROOT", env.root())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("INIT-EXIT 7"), "{text}");
    assert!(text.contains("MONITOR-KEPT"), "{text}");
}

#[test]
fn preserve_fds() {
    use std::os::unix::process::CommandExt;
    need_root!();
    let (env, b, id) = fixture(&["sh", "-c", "cat <&3; ls /proc/self/fd"], "preserve");
    let data = env.file("data");
    std::fs::write(&data, "preserved-content\n").unwrap();
    for detached in [false, true] {
        let f = std::fs::File::open(&data).unwrap();
        // Well away from 3, which dup2 must really replace in the child.
        // SAFETY: F_DUPFD_CLOEXEC of an fd we own.
        let raw = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 100) };
        assert!(raw >= 100);
        let out = env.file(&format!("preserve-{detached}.out"));
        let mut args = vec!["--root", env.root().to_str().unwrap().to_string().leak()];
        args.extend(["run", "--preserve-fds", "1", "-b", b.arg()]);
        if detached {
            args.push("-d");
        }
        args.push(&id);
        let mut cmd = std::process::Command::new(BIN);
        cmd.args(&args)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap());
        // SAFETY: dup2 between fork and exec (async-signal-safe).
        unsafe {
            cmd.pre_exec(move || {
                if libc::dup2(raw, 3) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        assert!(cmd.status().unwrap().success());
        if detached {
            env.wait_status(&id, "stopped");
            env.ok(&["delete", &id]);
        }
        let text = wait_file_contains(&out, "preserved-content");
        let fds: BTreeSet<u32> = text
            .lines()
            .skip(1)
            .flat_map(|l| l.split_whitespace())
            .filter_map(|t| t.parse().ok())
            .collect();
        assert_eq!(fds, BTreeSet::from([0, 1, 2, 3, 4]), "{text}");
        drop(f);
        // SAFETY: closing the fd we duplicated.
        unsafe { libc::close(raw) };
    }
    // Asking for more fds than were passed is an error, not a leak of the CLI's own.
    let o = env.oci(&["run", "--preserve-fds", "5", "-b", b.arg(), &id]);
    assert_eq!(o.code, 1);
    assert!(o.stderr.contains("not open"), "{}", o.stderr);
}

#[test]
fn hooks_run_with_the_state() {
    need_root!();
    let (env, b, id) = fixture(&["sleep", "1000"], "hooks");
    let out = env.root.path().join("hooks");
    std::fs::create_dir_all(&out).unwrap();
    let hook = |name: &str| json!({"path": "/bin/sh", "args": ["sh", "-c", format!("cat > {}/{name}.json", out.display())]});
    b.config(|c| {
        c["hooks"] = json!({
            "createRuntime": [hook("createRuntime")],
            "poststart": [hook("poststart")],
            "poststop": [hook("poststop")],
        })
    });
    env.create(&b, &id);
    let cr: Value =
        serde_json::from_slice(&std::fs::read(out.join("createRuntime.json")).unwrap()).unwrap();
    assert_eq!(cr["id"], id.as_str());
    assert!(!out.join("poststart.json").exists());
    env.ok(&["start", &id]);
    let ps: Value =
        serde_json::from_slice(&std::fs::read(out.join("poststart.json")).unwrap()).unwrap();
    assert_eq!(ps["status"], "running");
    assert_eq!(ps["pid"], env.state(&id)["pid"]);
    assert!(!out.join("poststop.json").exists());
    env.ok(&["delete", "-f", &id]);
    let pst: Value =
        serde_json::from_slice(&std::fs::read(out.join("poststop.json")).unwrap()).unwrap();
    assert_eq!(pst["status"], "stopped");

    // A failing poststart hook fails start (and run) with its output, and kills the container.
    b.config(|c| {
        c["hooks"] = json!({"poststart": [{"path": "/bin/sh", "args": ["sh", "-c", "echo hook-broke >&2; exit 1"]}]})
    });
    env.create(&b, &id);
    env.fails(&["start", &id], "hook-broke");
    env.wait_status(&id, "stopped");
    env.ok(&["delete", &id]);
    env.run_fails(&b, &id, "hook-broke");
}

/// The container gets default signal dispositions, not the runtime's (Rust ignores SIGPIPE).
#[test]
fn signals_are_default_in_the_container() {
    need_root!();
    let (env, b, id) = fixture(&["cat", "/proc/self/status"], "sigs");
    let status = env.run_ok(&b, &id);
    let field = |name: &str| -> u64 {
        let l = status.lines().find(|l| l.starts_with(name)).unwrap();
        u64::from_str_radix(l.split_whitespace().nth(1).unwrap(), 16).unwrap()
    };
    // Signals 1..=31 (glibc keeps 32 and 33 to itself; a caller may leave those ignored).
    assert_eq!(field("SigIgn:") & 0x7fff_ffff, 0, "{status}");
    assert_eq!(field("SigBlk:") & 0x7fff_ffff, 0, "{status}");
}

#[test]
fn update_resources() {
    need_root!();
    let (env, b, id) = fixture(&["sleep", "1000"], "update");
    let pid = env.run_detached(&b, &id);
    let res = env.file("res.json");
    std::fs::write(&res, r#"{"pids": {"limit": 42}}"#).unwrap();
    env.ok(&["update", "--resources", res.to_str().unwrap(), &id]);
    // The pids controller's path of the init, v1 (`N:pids:/path`) or v2 (`0::/path`).
    let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let max = if let Some(l) = cg.lines().find(|l| l.split(':').nth(1) == Some("pids")) {
        let p = l.splitn(3, ':').nth(2).unwrap();
        std::fs::read_to_string(format!("/sys/fs/cgroup/pids{p}/pids.max")).unwrap()
    } else {
        let p = cg.lines().find(|l| l.starts_with("0::")).unwrap()[3..].to_string();
        std::fs::read_to_string(format!("/sys/fs/cgroup{p}/pids.max")).unwrap()
    };
    assert_eq!(max.trim(), "42");
    env.ok(&["delete", "-f", &id]);
}
