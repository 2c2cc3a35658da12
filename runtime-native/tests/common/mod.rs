//! Helpers shared by the root-only integration tests (`harness = false`): a busybox rootfs,
//! minimal specs and requests, the spawner set up as the shim sets it up, and running a
//! container to completion. Each test uses a part of them.
#![allow(dead_code)]

use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use oci_spec::runtime::{ProcessBuilder, Spec};
use runtime_native::{ExecRequest, InitRequest, Spawner, Stdio, Workload, WorkloadTable};

/// True when running as root; otherwise says that the test `name` is skipped.
pub fn root_or_skip(name: &str) -> bool {
    let root = nix::unistd::geteuid().is_root();
    if !root {
        println!("{name}: skipped, needs root");
    }
    root
}

/// Forks the spawner (first: before any thread exists), then, as root, makes this process a
/// child subreaper as the shim is. None (the test `name` is skipped) when not root.
pub fn spawner(name: &str, runners: WorkloadTable) -> Option<Spawner> {
    let spawner = Spawner::fork_before_threads(runners).expect("fork spawner");
    if !root_or_skip(name) {
        return None;
    }
    // SAFETY: prctl with integer arguments: become a subreaper like the shim.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    Some(spawner)
}

/// The `main` of a root-only test binary: forks the spawner, makes one [`bundle`], runs `cases`
/// on (spawner, rootfs, bundle directory), then checks that nothing stayed mounted below the
/// bundle. Returns at once (the test `name` skipped) when not root.
pub fn main(name: &str, runners: WorkloadTable, cases: impl FnOnce(&Spawner, &Path, &Path)) {
    let Some(spawner) = spawner(name, runners) else {
        return;
    };
    let (dir, root) = bundle();
    cases(&spawner, &root, dir.path());
    assert_nothing_mounted(dir.path());
    drop(spawner);
    println!("{name}: all ok");
}

/// `dir/rootfs`: busybox with the applets the tests run, and the usual mount points.
pub fn rootfs(dir: &Path) -> PathBuf {
    let root = dir.join("rootfs");
    for d in ["bin", "etc", "proc", "sys", "dev", "tmp", "work"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    for l in [
        "sh", "echo", "cat", "ls", "mkdir", "sleep", "id", "hostname", "grep", "uname", "tty",
        "true", "readlink", "tr", "cut",
    ] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(l)).unwrap();
    }
    root
}

/// A bundle directory holding a [`rootfs`], removed when the guard drops; 0755, so that the
/// mapped root of a user namespace can reach the rootfs. Returns the guard and the rootfs.
pub fn bundle() -> (tempfile::TempDir, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let root = rootfs(dir.path());
    (dir, root)
}

/// The default spec with `root` as its rootfs and `args` as the process (PATH=/bin, HOME=/).
pub fn spec(root: &Path, args: &[&str]) -> Spec {
    let mut spec = Spec::default();
    let mut r = spec.root().clone().unwrap();
    r.set_path(root.to_path_buf());
    spec.set_root(Some(r));
    let mut p = spec.process().clone().unwrap();
    p.set_args(Some(args.iter().map(|s| s.to_string()).collect()));
    p.set_env(Some(vec!["PATH=/bin".into(), "HOME=/".into()]));
    spec.set_process(Some(p));
    spec
}

pub fn init_request(
    id: &str,
    root: &Path,
    bundle: &Path,
    spec: Spec,
    cgroup_procs: &[PathBuf],
    workload: Workload,
) -> InitRequest {
    InitRequest {
        id: id.into(),
        bundle: bundle.to_path_buf(),
        rootfs: root.to_path_buf(),
        spec,
        cgroup_procs: cgroup_procs.to_vec(),
        workload,
    }
}

/// An exec process: `sh -c script` in `cwd` with PATH=/bin (a builder, for more settings).
pub fn sh_process(script: &str, cwd: &str) -> ProcessBuilder {
    ProcessBuilder::default()
        .args(vec!["sh".to_string(), "-c".into(), script.into()])
        .env(vec!["PATH=/bin".to_string()])
        .cwd(cwd)
}

pub fn exec_request(
    container_id: &str,
    exec_id: &str,
    init_pid: i32,
    process: oci_spec::runtime::Process,
    spec: Spec,
    cgroup_procs: &[PathBuf],
) -> ExecRequest {
    ExecRequest {
        container_id: container_id.into(),
        exec_id: exec_id.into(),
        init_pid,
        init_pidfd: None,
        process,
        spec,
        cgroup_procs: cgroup_procs.to_vec(),
        workload: Workload::Exec,
    }
}

pub fn pipe() -> (OwnedFd, OwnedFd) {
    nix::unistd::pipe().unwrap()
}

/// stdout and stderr both to `w`.
pub fn stdio_to(w: &OwnedFd) -> Stdio {
    Stdio {
        stdin: None,
        stdout: Some(w.try_clone().unwrap()),
        stderr: Some(w.try_clone().unwrap()),
        extra_fds: vec![],
    }
}

/// Everything up to end of file (or the error a pty master gives once its slave is closed).
pub fn read_all(fd: OwnedFd) -> String {
    let mut f = std::fs::File::from(fd);
    let mut s = String::new();
    let mut buf = [0u8; 4096];
    loop {
        match f.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => s.push_str(&String::from_utf8_lossy(&buf[..n])),
        }
    }
    s
}

/// The exit code of `pid`, 128 + the signal when killed.
pub fn wait(pid: i32) -> i32 {
    match waitpid(Pid::from_raw(pid), None).unwrap() {
        WaitStatus::Exited(_, c) => c,
        WaitStatus::Signaled(_, s, _) => 128 + s as i32,
        other => panic!("unexpected wait status {other:?}"),
    }
}

/// Reaps every child that has exited, without waiting for the others.
pub fn reap_all() {
    while let Ok(s) = waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
        if s == WaitStatus::StillAlive {
            break;
        }
    }
}

/// Creates, starts and waits for a container; returns (exit code, stdout+stderr).
pub fn run(sp: &Spawner, r: InitRequest) -> Result<(i32, String), String> {
    let (rd, w) = nix::unistd::pipe().unwrap();
    let stdio = stdio_to(&w);
    drop(w);
    let p = sp.spawn_init(r, stdio).map_err(|e| e.to_string())?;
    let pid = p.pid;
    if let Err(e) = p.start() {
        wait(pid);
        return Err(e.to_string());
    }
    let out = read_all(rd);
    Ok((wait(pid), out))
}

/// No mount of this process's mount namespace is below `bundle` any more.
pub fn assert_nothing_mounted(bundle: &Path) {
    let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mi.contains(bundle.to_str().unwrap()), "left mounted: {mi}");
}
