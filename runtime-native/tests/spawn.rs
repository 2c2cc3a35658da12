//! Root-only integration test: real containers from a busybox rootfs.
//! `harness = false`: the spawner must be forked before any thread exists.

use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;
use oci_spec::runtime::{ProcessBuilder, Spec};
use runtime_native::{
    Cgroup, ExecRequest, InitRequest, PreparedWorkload, ProcessContext, Spawner, Stdio, Workload,
    WorkloadRunner,
};

struct EchoRunner;
struct EchoPrepared(Vec<u8>);

impl WorkloadRunner for EchoRunner {
    fn prepare(
        &self,
        ctx: &ProcessContext,
        payload: &[u8],
    ) -> Result<Box<dyn PreparedWorkload>, String> {
        if payload == b"bad" {
            return Err("invalid payload: bad".into());
        }
        if ctx.extra_fds.len() != 1 {
            return Err(format!("expected one extra fd, got {:?}", ctx.extra_fds));
        }
        Ok(Box::new(EchoPrepared(payload.to_vec())))
    }
}

impl PreparedWorkload for EchoPrepared {
    fn run(self: Box<Self>, ctx: &ProcessContext) -> i32 {
        let fd = ctx.extra_fds[0];
        // SAFETY: writing to fds the container process owns.
        unsafe {
            libc::write(fd, self.0.as_ptr().cast(), self.0.len());
            libc::write(1, b"stdout\n".as_ptr().cast(), 7);
        }
        // Everything else must be closed: only 0, 1, 2 and the extra fd.
        let open: Vec<String> = std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect();
        if open.len() > 5 {
            return 3;
        }
        7
    }
}

static RUNNERS: &[(&str, &dyn WorkloadRunner)] = &[("echo", &EchoRunner)];

fn rootfs(dir: &Path) -> PathBuf {
    let root = dir.join("rootfs");
    for d in ["bin", "etc", "proc", "sys", "dev", "tmp", "work"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    for l in [
        "sh", "echo", "cat", "ls", "sleep", "id", "hostname", "grep", "tty", "true",
    ] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(l)).unwrap();
    }
    root
}

fn spec(root: &Path, args: &[&str]) -> Spec {
    let mut spec = Spec::default();
    spec.set_hostname(Some("amphi-test".into()));
    let mut r = spec.root().clone().unwrap();
    r.set_path(root.to_path_buf());
    spec.set_root(Some(r));
    let mut p = spec.process().clone().unwrap();
    p.set_args(Some(args.iter().map(|s| s.to_string()).collect()));
    p.set_env(Some(vec!["PATH=/bin".into(), "HOME=/".into()]));
    spec.set_process(Some(p));
    spec
}

fn pipe() -> (OwnedFd, OwnedFd) {
    nix::unistd::pipe().unwrap()
}

fn read_all(fd: OwnedFd) -> String {
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

fn wait(pid: i32) -> i32 {
    match waitpid(Pid::from_raw(pid), None).unwrap() {
        WaitStatus::Exited(_, c) => c,
        WaitStatus::Signaled(_, s, _) => 128 + s as i32,
        other => panic!("unexpected wait status {other:?}"),
    }
}

fn init(root: &Path, bundle: &Path, spec: Spec, cg: &[PathBuf], workload: Workload) -> InitRequest {
    InitRequest {
        id: "test".into(),
        bundle: bundle.to_path_buf(),
        rootfs: root.to_path_buf(),
        spec,
        cgroup_procs: cg.to_vec(),
        workload,
    }
}

fn reap_all() {
    while let Ok(s) = waitpid(
        Pid::from_raw(-1),
        Some(nix::sys::wait::WaitPidFlag::WNOHANG),
    ) {
        if s == WaitStatus::StillAlive {
            break;
        }
    }
}

fn stdio_to(w: &OwnedFd) -> Stdio {
    Stdio {
        stdin: None,
        stdout: Some(w.try_clone().unwrap()),
        stderr: Some(w.try_clone().unwrap()),
        extra_fds: vec![],
    }
}

fn main() {
    let spawner = Spawner::fork_before_threads(RUNNERS).expect("fork spawner");
    if !nix::unistd::geteuid().is_root() {
        println!("spawn: skipped, needs root");
        return;
    }
    // SAFETY: prctl with integer arguments: become a subreaper like the shim.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path();
    let root = rootfs(bundle);

    // A cgroup with a memory limit.
    let mut cspec = spec(&root, &["true"]);
    let mut linux = cspec.linux().clone().unwrap();
    linux.set_cgroups_path(Some(PathBuf::from("/amphi-test/spawn")));
    let mut res = linux.resources().clone().unwrap();
    res.set_memory(Some(
        oci_spec::runtime::LinuxMemoryBuilder::default()
            .limit(64i64 << 20)
            .build()
            .unwrap(),
    ));
    res.set_pids(Some(
        oci_spec::runtime::LinuxPidsBuilder::default()
            .limit(64i64)
            .build()
            .unwrap(),
    ));
    linux.set_resources(Some(res));
    cspec.set_linux(Some(linux));
    let cg = Cgroup::create("spawn", &cspec).expect("create cgroup");
    let procs = cg.procs_files();

    // 1. A plain run.
    let script = "echo hi; hostname; ls /; grep -i cap /proc/self/status; cat /proc/self/cgroup; echo pid=$$; ls /dev; ls /sys/fs/cgroup; cat /sys/fs/cgroup/memory/memory.limit_in_bytes; echo timer=$(wc -c < /proc/timer_list) fw=$(ls /sys/firmware | wc -l); echo x > /proc/sys/kernel/hostname || echo rosys; cat /proc/self/oom_score_adj";
    let mut s = spec(&root, &["sh", "-c", script]);
    let mut pr = s.process().clone().unwrap();
    pr.set_oom_score_adj(Some(-500));
    s.set_process(Some(pr));
    let (r, w) = pipe();
    let p = spawner
        .spawn_init(init(&root, bundle, s, &procs, Workload::Exec), stdio_to(&w))
        .expect("spawn_init");
    drop(w);
    let pid = p.pid;
    p.start().expect("start");
    let out = read_all(r);
    let code = wait(pid);
    println!("--- output ---\n{out}--- exit {code}");
    assert_eq!(code, 0);
    assert!(out.starts_with("hi\namphi-test\n"), "{out}");
    assert!(out.contains("busybox") || out.contains("bin"), "{out}");
    // The default (runc-like) capability set, far from a full root set.
    assert!(out.contains("CapBnd:\t00000000"), "{out}");
    assert!(!out.contains("CapBnd:\t000001ff"), "{out}");
    assert!(out.contains("pid=1"), "{out}");
    assert!(out.contains("null") && out.contains("pts"), "{out}");
    // v1: the container's own cgroup dirs are bound in.
    assert!(
        out.contains("memory\n") && out.contains("67108864\n"),
        "{out}"
    );
    // masked /proc/kcore is empty; /proc/sys is read-only
    assert!(
        out.contains("timer=0 fw=0") && out.contains("rosys"),
        "{out}"
    );
    let stats = cg.stats().expect("stats");
    assert_eq!(stats.memory_limit, 64 << 20);
    assert_eq!(stats.pids_limit, 64);

    // 2. Missing binary and missing cwd fail spawn_init with clear messages.
    let s = spec(&root, &["nosuchcmd"]);
    let e = spawner
        .spawn_init(
            init(&root, bundle, s, &[], Workload::Exec),
            Stdio::default(),
        )
        .unwrap_err()
        .to_string();
    println!("missing binary: {e}");
    assert_eq!(e, "exec: \"nosuchcmd\": executable file not found in $PATH");
    let mut s = spec(&root, &["true"]);
    let mut pr = s.process().clone().unwrap();
    pr.set_cwd("/nope".into());
    s.set_process(Some(pr));
    let e = spawner
        .spawn_init(
            init(&root, bundle, s, &[], Workload::Exec),
            Stdio::default(),
        )
        .unwrap_err()
        .to_string();
    println!("missing cwd: {e}");
    assert_eq!(
        e,
        "chdir to cwd (\"/nope\") set in config.json failed: no such file or directory"
    );
    reap_all();

    // 3. Exec into a running container.
    let s = spec(&root, &["sleep", "5"]);
    let p = spawner
        .spawn_init(
            init(&root, bundle, s.clone(), &procs, Workload::Exec),
            Stdio::default(),
        )
        .expect("spawn sleep");
    let init_pid = p.pid;
    p.start().expect("start sleep");
    let (r, w) = pipe();
    let process = ProcessBuilder::default()
        .args(vec![
            "sh".to_string(),
            "-c".into(),
            "hostname; echo $$; cat /proc/1/cmdline; echo; ls /work && echo inroot".into(),
        ])
        .env(vec!["PATH=/bin".to_string()])
        .cwd("/work")
        .build()
        .unwrap();
    let ep = spawner
        .spawn_exec(
            ExecRequest {
                container_id: "test".into(),
                exec_id: "e1".into(),
                init_pid,
                process,
                spec: s.clone(),
                cgroup_procs: procs.clone(),
                workload: Workload::Exec,
            },
            stdio_to(&w),
        )
        .expect("spawn_exec");
    drop(w);
    let epid = ep.pid;
    ep.start().expect("start exec");
    let out = read_all(r);
    assert_eq!(wait(epid), 0);
    println!("exec output: {out:?}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "amphi-test");
    assert_ne!(lines[1], "1");
    assert!(lines[2].starts_with("sleep"), "{out}");
    assert!(out.contains("inroot"), "{out}");
    // an exec with a terminal
    let process = ProcessBuilder::default()
        .args(vec!["sh".to_string(), "-c".into(), "tty".into()])
        .env(vec!["PATH=/bin".to_string()])
        .cwd("/")
        .terminal(true)
        .build()
        .unwrap();
    let ep = spawner
        .spawn_exec(
            ExecRequest {
                container_id: "test".into(),
                exec_id: "e2".into(),
                init_pid,
                process,
                spec: s.clone(),
                cgroup_procs: procs.clone(),
                workload: Workload::Exec,
            },
            Stdio::default(),
        )
        .expect("spawn_exec tty");
    let master = ep
        .pty_master
        .as_ref()
        .expect("exec pty")
        .try_clone()
        .unwrap();
    let epid = ep.pid;
    ep.start().expect("start exec tty");
    let out = read_all(master);
    assert_eq!(wait(epid), 0);
    assert!(out.starts_with("/dev/pts/"), "{out}");
    let pids = cg.pids().unwrap();
    assert!(pids.contains(&init_pid), "{pids:?}");

    // 4. Terminal mode gives a master fd.
    let mut s = spec(&root, &["sh", "-c", "tty; echo ok"]);
    let mut pr = s.process().clone().unwrap();
    pr.set_terminal(Some(true));
    s.set_process(Some(pr));
    let p = spawner
        .spawn_init(
            init(&root, bundle, s, &[], Workload::Exec),
            Stdio::default(),
        )
        .expect("spawn tty");
    let master = p
        .pty_master
        .as_ref()
        .expect("pty master")
        .try_clone()
        .unwrap();
    let tpid = p.pid;
    p.start().expect("start tty");
    let out = read_all(master);
    assert_eq!(wait(tpid), 0);
    println!("tty output: {out:?}");
    assert!(out.contains("/dev/pts/0") && out.contains("ok"), "{out}");

    // 5. A custom workload with an extra fd; a bad payload fails at create.
    let (r, w) = pipe();
    let (r2, w2) = pipe();
    let mut st = stdio_to(&w2);
    st.extra_fds.push(w.try_clone().unwrap());
    drop(w);
    drop(w2);
    let s = spec(&root, &["app.wasm"]);
    let p = spawner
        .spawn_init(
            init(
                &root,
                bundle,
                s.clone(),
                &[],
                Workload::Custom {
                    runner: "echo".into(),
                    payload: b"payload\n".to_vec(),
                },
            ),
            st,
        )
        .expect("spawn custom");
    let cpid = p.pid;
    p.start().expect("start custom");
    assert_eq!(read_all(r), "payload\n");
    assert_eq!(read_all(r2), "stdout\n");
    assert_eq!(wait(cpid), 7);
    let e = spawner
        .spawn_init(
            init(
                &root,
                bundle,
                s,
                &[],
                Workload::Custom {
                    runner: "echo".into(),
                    payload: b"bad".to_vec(),
                },
            ),
            Stdio::default(),
        )
        .unwrap_err()
        .to_string();
    assert_eq!(e, "invalid payload: bad");

    // Freeze / thaw / destroy with the sleeping init still inside.
    cg.freeze().expect("freeze");
    cg.thaw().expect("thaw");
    cg.destroy().expect("destroy");
    let code = wait(init_pid);
    assert_eq!(code, 128 + 9);
    reap_all();

    // Nothing stays mounted.
    let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mi.contains(bundle.to_str().unwrap()), "left mounted: {mi}");
    assert!(!Path::new("/sys/fs/cgroup/memory/amphi-test/spawn").exists());
    for h in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        let _ = std::fs::remove_dir(h.path().join("amphi-test"));
    }
    drop(spawner);
    println!("spawn: all ok");
}
