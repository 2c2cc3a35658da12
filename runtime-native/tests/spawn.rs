//! Root-only integration test: real containers from a busybox rootfs.
//! `harness = false`: the spawner must be forked before any thread exists.

mod common;

use std::path::{Path, PathBuf};

use common::{
    assert_nothing_mounted, exec_request, init_request, pipe, read_all, reap_all, run, sh_process,
    stdio_to, wait,
};
use oci_spec::runtime::Spec;
use runtime_native::{
    Cgroup, InitRequest, PendingProcess, PreparedWorkload, ProcessContext, Stdio, Workload,
    WorkloadRunner,
};

struct EchoRunner;
struct EchoPrepared(Vec<u8>);

impl WorkloadRunner for EchoRunner {
    fn prepare(
        &self,
        ctx: &ProcessContext,
        payload: &[u8],
        _: runtime_native::SetupFds,
    ) -> Result<Box<dyn PreparedWorkload>, runtime_native::RunnerError> {
        if payload == b"bad" {
            return Err("invalid payload: bad".into());
        }
        if ctx.extra_fds.len() != 1 {
            return Err(format!("expected one extra fd, got {:?}", ctx.extra_fds).into());
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

/// The common spec with a hostname.
fn spec(root: &Path, args: &[&str]) -> Spec {
    let mut spec = common::spec(root, args);
    spec.set_hostname(Some("amphi-test".into()));
    spec
}

fn init(root: &Path, bundle: &Path, spec: Spec, cg: &[PathBuf], workload: Workload) -> InitRequest {
    init_request("test", root, bundle, spec, cg, workload)
}

/// Starts `p`, which has a terminal, and waits for it; returns (exit code, what it wrote).
fn run_on_pty(p: PendingProcess, what: &str) -> (i32, String) {
    let master = p
        .pty_master
        .as_ref()
        .unwrap_or_else(|| panic!("{what}: no pty master"))
        .try_clone()
        .unwrap();
    let pid = p.pid;
    p.start().unwrap_or_else(|e| panic!("start {what}: {e}"));
    let out = read_all(master);
    (wait(pid), out)
}

fn main() {
    let Some(spawner) = common::spawner("spawn", RUNNERS) else {
        return;
    };
    let (dir, root) = common::bundle();
    let bundle = dir.path();

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
    let (code, out) = run(&spawner, init(&root, bundle, s, &procs, Workload::Exec)).expect("run");
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
    let create_error = |s: Spec| {
        let r = init(&root, bundle, s, &[], Workload::Exec);
        spawner
            .spawn_init(r, Stdio::default())
            .unwrap_err()
            .to_string()
    };
    let e = create_error(spec(&root, &["nosuchcmd"]));
    println!("missing binary: {e}");
    assert_eq!(e, "exec: \"nosuchcmd\": executable file not found in $PATH");
    let mut s = spec(&root, &["true"]);
    let mut pr = s.process().clone().unwrap();
    pr.set_cwd("/nope".into());
    s.set_process(Some(pr));
    let e = create_error(s);
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
    let script = "hostname; echo $$; cat /proc/1/cmdline; echo; ls /work && echo inroot";
    let process = sh_process(script, "/work").build().unwrap();
    let ep = spawner
        .spawn_exec(
            exec_request("test", "e1", init_pid, process, s.clone(), &procs),
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
    let process = sh_process("tty", "/").terminal(true).build().unwrap();
    let ep = spawner
        .spawn_exec(
            exec_request("test", "e2", init_pid, process, s.clone(), &procs),
            Stdio::default(),
        )
        .expect("spawn_exec tty");
    let (code, out) = run_on_pty(ep, "exec tty");
    assert_eq!(code, 0);
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
    let (code, out) = run_on_pty(p, "tty");
    assert_eq!(code, 0);
    println!("tty output: {out:?}");
    assert!(out.contains("/dev/pts/0") && out.contains("ok"), "{out}");

    // 5. A custom workload with an extra fd; a bad payload fails at create.
    let (r, w) = pipe();
    let (r2, w2) = pipe();
    let mut st = stdio_to(&w2);
    st.extra_fds.push(w.try_clone().unwrap());
    drop(w);
    drop(w2);
    let echo = |payload: &[u8]| {
        let w = Workload::Custom {
            runner: "echo".into(),
            payload: payload.to_vec(),
        };
        init(&root, bundle, spec(&root, &["app.wasm"]), &[], w)
    };
    let p = spawner
        .spawn_init(echo(b"payload\n"), st)
        .expect("spawn custom");
    let cpid = p.pid;
    p.start().expect("start custom");
    assert_eq!(read_all(r), "payload\n");
    assert_eq!(read_all(r2), "stdout\n");
    assert_eq!(wait(cpid), 7);
    let e = spawner
        .spawn_init(echo(b"bad"), Stdio::default())
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
    assert_nothing_mounted(bundle);
    assert!(!Path::new("/sys/fs/cgroup/memory/amphi-test/spawn").exists());
    for h in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        let _ = std::fs::remove_dir(h.path().join("amphi-test"));
    }
    drop(spawner);
    println!("spawn: all ok");
}
