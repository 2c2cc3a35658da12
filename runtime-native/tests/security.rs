//! Root-only integration test: seccomp, personality, hooks and user namespaces in real
//! containers from a busybox rootfs. `harness = false`: the spawner must be forked before any
//! thread exists.
//!
//! Over 600 lines on purpose: one `harness = false` binary (the spawner is forked before any
//! thread), so every attack case shares its fork and rootfs fixture instead of a binary each.

mod common;

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use common::{
    exec_request, init_request, pipe, read_all, reap_all, run, sh_process, spec, stdio_to, wait,
};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;
use oci_spec::runtime::{LinuxSeccomp, Spec};
use runtime_native::testgen::{edit_namespaces, join_namespace, new_namespace};
use runtime_native::{
    InitRequest, PreparedWorkload, ProcessContext, Spawner, Stdio, Workload, WorkloadRunner,
};

/// A custom workload (as the wasm runner is): reports the seccomp mode it runs under and
/// whether a denied syscall fails, then spawns and joins a thread (wasmtime needs clone).
struct ProbeRunner;
struct ProbePrepared;

impl WorkloadRunner for ProbeRunner {
    fn prepare(
        &self,
        _: &ProcessContext,
        _: &[u8],
        _: runtime_native::SetupFds,
    ) -> Result<Box<dyn PreparedWorkload>, runtime_native::RunnerError> {
        Ok(Box::new(ProbePrepared))
    }
}

impl PreparedWorkload for ProbePrepared {
    fn run(self: Box<Self>, _: &ProcessContext) -> i32 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let mode = status
            .lines()
            .find(|l| l.starts_with("Seccomp:"))
            .unwrap_or("Seccomp: ?")
            .to_string();
        let mkdir = match std::fs::create_dir("/tmp/probe") {
            Ok(()) => "mkdir ok".to_string(),
            Err(e) => format!("mkdir failed: {e}"),
        };
        let t = std::thread::spawn(|| 21 * 2).join().unwrap_or(0);
        println!("{mode}\n{mkdir}\nthread {t}");
        0
    }
}

static RUNNERS: &[(&str, &dyn WorkloadRunner)] = &[("probe", &ProbeRunner)];

fn with_seccomp(mut s: Spec, json: &str, nnp: bool) -> Spec {
    let sc: LinuxSeccomp = serde_json::from_str(json).unwrap();
    let mut l = s.linux().clone().unwrap();
    l.set_seccomp(Some(sc));
    s.set_linux(Some(l));
    let mut p = s.process().clone().unwrap();
    p.set_no_new_privileges(Some(nnp));
    s.set_process(Some(p));
    s
}

fn req(root: &Path, bundle: &Path, spec: Spec, workload: Workload) -> InitRequest {
    init_request("sec", root, bundle, spec, &[], workload)
}

const DENY_MKDIR: &str = r#"{
  "defaultAction": "SCMP_ACT_ALLOW",
  "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
  "syscalls": [
    {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1},
    {"names": ["no_such_syscall_in_any_kernel"], "action": "SCMP_ACT_ERRNO"}
  ]
}"#;

fn seccomp_cases(sp: &Spawner, root: &Path, bundle: &Path) {
    let script = "grep Seccomp: /proc/self/status; mkdir /tmp/x && echo made || echo denied";
    for nnp in [true, false] {
        let s = with_seccomp(spec(root, &["sh", "-c", script]), DENY_MKDIR, nnp);
        let (code, out) = run(sp, req(root, bundle, s, Workload::Exec)).expect("seccomp run");
        println!("seccomp nnp={nnp}: {out:?}");
        assert_eq!(code, 0, "{out}");
        assert!(out.contains("Seccomp:\t2"), "{out}");
        assert!(out.contains("Operation not permitted"), "{out}");
        assert!(out.contains("denied") && !out.contains("made"), "{out}");
    }
    // A custom (in-process) workload runs under the filter too, threads and all.
    let s = with_seccomp(spec(root, &["app.wasm"]), DENY_MKDIR, true);
    let w = Workload::Custom {
        runner: "probe".into(),
        payload: vec![],
    };
    let (code, out) = run(sp, req(root, bundle, s, w)).expect("seccomp custom workload");
    println!("seccomp custom workload: {out:?}");
    assert_eq!(code, 0);
    assert!(out.contains("Seccomp:\t2"), "{out}");
    assert!(
        out.contains("mkdir failed") && out.contains("thread 42"),
        "{out}"
    );

    // An allow-list (default deny with ENOSYS... here EPERM) that is too small for the
    // program: the exec itself is refused, and the error says so.
    let tiny = r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
        {"names": ["sendmsg", "recvmsg", "exit_group", "close", "close_range"], "action": "SCMP_ACT_ALLOW"}]}"#;
    let s = with_seccomp(spec(root, &["/bin/true"]), tiny, true);
    let e = run(sp, req(root, bundle, s, Workload::Exec)).unwrap_err();
    println!("tiny allow-list: {e}");
    assert!(e.contains("operation not permitted"), "{e}");

    // SCMP_ACT_NOTIFY without a listenerPath fails create with a clear message.
    let notify = r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_NOTIFY"}]}"#;
    let s = with_seccomp(spec(root, &["true"]), notify, true);
    let e = run(sp, req(root, bundle, s, Workload::Exec)).unwrap_err();
    assert!(e.contains("listenerPath"), "{e}");

    // With a listener: the agent gets the fd and the state, and answers mkdir with EACCES.
    let sock_path = bundle.join("agent.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock_path).unwrap();
    let agent = std::thread::spawn(move || -> Result<String, String> {
        let (conn, _) = listener.accept().map_err(|e| e.to_string())?;
        let mut buf = vec![0u8; 64 << 10];
        let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 4]);
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        let msg = nix::sys::socket::recvmsg::<()>(
            conn.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            nix::sys::socket::MsgFlags::empty(),
        )
        .map_err(|e| e.to_string())?;
        let n = msg.bytes;
        let mut fd = -1;
        for c in msg.cmsgs().map_err(|e| e.to_string())? {
            if let nix::sys::socket::ControlMessageOwned::ScmRights(f) = c {
                fd = f[0];
            }
        }
        let state = String::from_utf8_lossy(&buf[..n]).into_owned();
        if fd < 0 {
            return Err(format!("no fd with {state}"));
        }
        // Answer notifications until the container exits (the fd then reports an error).
        while let Ok(req) = libseccomp::ScmpNotifReq::receive(fd) {
            let resp = libseccomp::ScmpNotifResp::new_error(
                req.id,
                -libc::EACCES,
                libseccomp::ScmpNotifRespFlags::empty(),
            );
            let _ = resp.respond(fd);
        }
        Ok(state)
    });
    let notify_l = format!(
        r#"{{"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "{}", "listenerMetadata": "m1",
        "syscalls": [{{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_NOTIFY"}}]}}"#,
        sock_path.display()
    );
    let s = with_seccomp(spec(root, &["sh", "-c", script]), &notify_l, true);
    let (code, out) = run(sp, req(root, bundle, s, Workload::Exec)).expect("notify run");
    let state = agent.join().unwrap().expect("agent");
    println!("notify: {out:?} agent got {state}");
    assert_eq!(code, 0);
    assert!(
        out.contains("Permission denied") && out.contains("denied"),
        "{out}"
    );
    let v: serde_json::Value = serde_json::from_str(&state).unwrap();
    assert_eq!(v["fds"][0], "seccompFd");
    assert_eq!(v["metadata"], "m1");
    assert_eq!(v["state"]["id"], "sec");
    assert!(v["pid"].as_i64().unwrap() > 1);
}

/// The CVE-2025-52881 class: the spec's own mounts put something else where the runtime later
/// writes into /proc (here the file behind a sysctl). The write must be refused, with the
/// sysctl named, and the decoy left untouched.
fn procfs_redirect_cases(sp: &Spawner, root: &Path, bundle: &Path) {
    let decoy = bundle.join("decoy-ip_forward");
    std::fs::write(&decoy, "decoy\n").unwrap();
    let with_sysctl = |extra: Option<oci_spec::runtime::Mount>| {
        let mut s = spec(root, &["true"]);
        let mut mounts = s.mounts().clone().unwrap();
        mounts.extend(extra);
        s.set_mounts(Some(mounts));
        let mut l = s.linux().clone().unwrap();
        l.set_sysctl(Some(
            [("net.ipv4.ip_forward".to_string(), "1".to_string())].into(),
        ));
        s.set_linux(Some(l));
        s
    };
    // Control: the sysctl itself is fine (the container has its own network namespace).
    let (code, out) = run(sp, req(root, bundle, with_sysctl(None), Workload::Exec))
        .expect("sysctl without redirection");
    assert_eq!(code, 0, "{out}");

    // A regular file bind-mounted over /proc/sys/net/ipv4/ip_forward.
    let bind = oci_spec::runtime::MountBuilder::default()
        .destination("/proc/sys/net/ipv4/ip_forward")
        .typ("bind")
        .source(&decoy)
        .options(vec!["bind".to_string()])
        .build()
        .unwrap();
    // A tmpfs over all of /proc/sys.
    let tmpfs = oci_spec::runtime::MountBuilder::default()
        .destination("/proc/sys")
        .typ("tmpfs")
        .source("tmpfs")
        .build()
        .unwrap();
    for (what, m) in [
        ("bind over the sysctl file", bind),
        ("tmpfs over /proc/sys", tmpfs),
    ] {
        let e = run(sp, req(root, bundle, with_sysctl(Some(m)), Workload::Exec)).unwrap_err();
        println!("procfs redirect ({what}): {e}");
        assert!(e.contains("sysctl net.ipv4.ip_forward"), "{what}: {e}");
        assert!(
            e.contains("cross-device") || e.contains("not on procfs"),
            "{what}: {e}"
        );
        assert_eq!(
            std::fs::read_to_string(&decoy).unwrap(),
            "decoy\n",
            "{what}"
        );
    }
}

fn personality_case(sp: &Spawner, root: &Path, bundle: &Path) {
    let mut s = spec(root, &["uname", "-m"]);
    let mut l = s.linux().clone().unwrap();
    l.set_personality(Some(
        serde_json::from_str(r#"{"domain":"LINUX32"}"#).unwrap(),
    ));
    s.set_linux(Some(l));
    let (code, out) = run(sp, req(root, bundle, s, Workload::Exec)).expect("personality");
    println!("personality LINUX32: uname -m = {out:?}");
    assert_eq!(code, 0);
    if cfg!(target_arch = "x86_64") {
        assert_eq!(out.trim(), "i686");
    }
}

fn hook(path: &Path, args: &[&str]) -> oci_spec::runtime::Hook {
    oci_spec::runtime::HookBuilder::default()
        .path(path)
        .args(args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .timeout(10)
        .build()
        .unwrap()
}

fn hooks_case(sp: &Spawner, root: &Path, bundle: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let out = bundle.join("hooks-out");
    std::fs::create_dir_all(&out).unwrap();
    let o = out.display();
    // Host-side scripts (createRuntime, createContainer resolve in the runtime's mount tree).
    let write = |name: &str, body: &str| {
        let p = bundle.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    };
    let cr = write(
        "create-runtime.sh",
        &format!("cat > {o}/cr.json; readlink /proc/self/ns/net > {o}/cr.net"),
    );
    let cc = write(
        "create-container.sh",
        &format!("cat > {o}/cc.json; readlink /proc/self/ns/net > {o}/cc.net"),
    );
    // startContainer resolves inside the container.
    let sc = root.join("bin/start-hook");
    std::fs::write(&sc, "#!/bin/sh\ncat > /dev/shm/start.json\n").unwrap();
    std::fs::set_permissions(&sc, std::fs::Permissions::from_mode(0o755)).unwrap();

    let mut s = spec(root, &["sh", "-c", "cat /dev/shm/start.json"]);
    let mut h = oci_spec::runtime::Hooks::default();
    h.set_create_runtime(Some(vec![hook(&cr, &["cr"])]));
    h.set_create_container(Some(vec![hook(&cc, &["cc"])]));
    h.set_start_container(Some(vec![hook(Path::new("/bin/start-hook"), &["sc"])]));
    s.set_hooks(Some(h));
    s.set_annotations(Some([("who".to_string(), "test".to_string())].into()));

    let (rd, w) = pipe();
    let stdio = stdio_to(&w);
    drop(w);
    let p = sp
        .spawn_init(req(root, bundle, s.clone(), Workload::Exec), stdio)
        .expect("spawn with hooks");
    let pid = p.pid;
    // createRuntime and createContainer ran during create.
    let crj: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("cr.json")).unwrap()).unwrap();
    assert_eq!(crj["status"], "creating");
    assert_eq!(crj["pid"], pid);
    assert_eq!(crj["id"], "sec");
    assert_eq!(crj["annotations"]["who"], "test");
    assert_eq!(crj["bundle"], bundle.display().to_string());
    let ccj: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("cc.json")).unwrap()).unwrap();
    assert_eq!(ccj["pid"], pid);
    let host_net = std::fs::read_link("/proc/self/ns/net").unwrap();
    let cr_net = std::fs::read_to_string(out.join("cr.net")).unwrap();
    let cc_net = std::fs::read_to_string(out.join("cc.net")).unwrap();
    println!("hooks: host net {host_net:?}, createRuntime {cr_net:?}, createContainer {cc_net:?}");
    assert_eq!(cr_net.trim(), host_net.to_str().unwrap());
    assert_ne!(cc_net.trim(), host_net.to_str().unwrap());
    p.start().expect("start with hooks");
    let started = read_all(rd);
    assert_eq!(wait(pid), 0);
    println!("startContainer state: {started}");
    let scj: serde_json::Value = serde_json::from_str(&started).expect("start state");
    assert_eq!(scj["status"], "created");
    assert_eq!(scj["pid"], pid);
    // poststart/poststop: the caller's functions.
    let mut s2 = s.clone();
    let mut h = oci_spec::runtime::Hooks::default();
    h.set_poststop(Some(vec![hook(&cr, &["ps"])]));
    s2.set_hooks(Some(h));
    runtime_native::hooks::run_poststop(&s2, "sec", bundle).unwrap();
    let psj: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("cr.json")).unwrap()).unwrap();
    assert_eq!(psj["status"], "stopped");

    // A failing createRuntime hook fails create with its output, and leaves no process.
    let bad = write("bad-hook.sh", "echo 'no network for you' >&2; exit 2");
    let mut s = spec(root, &["true"]);
    let mut h = oci_spec::runtime::Hooks::default();
    h.set_create_runtime(Some(vec![hook(&bad, &["bad"])]));
    s.set_hooks(Some(h));
    let e = sp
        .spawn_init(req(root, bundle, s, Workload::Exec), Stdio::default())
        .unwrap_err()
        .to_string();
    println!("failing createRuntime hook: {e}");
    assert!(
        e.contains("createRuntime hook #0") && e.contains("no network for you"),
        "{e}"
    );
    // A failing startContainer hook fails start.
    let mut s = spec(root, &["true"]);
    let mut h = oci_spec::runtime::Hooks::default();
    h.set_start_container(Some(vec![hook(Path::new("/bin/false-hook"), &["x"])]));
    s.set_hooks(Some(h));
    let p = sp
        .spawn_init(req(root, bundle, s, Workload::Exec), Stdio::default())
        .expect("spawn with a bad start hook");
    let pid = p.pid;
    let e = p.start().unwrap_err().to_string();
    println!("failing startContainer hook: {e}");
    assert!(
        e.contains("startContainer hook #0") && e.contains("/bin/false-hook"),
        "{e}"
    );
    assert_eq!(wait(pid), 1);
    // The child of the failed create exits by itself once the caller gives up.
    std::thread::sleep(std::time::Duration::from_millis(200));
    reap_all();
    let me = std::process::id().to_string();
    let kids: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            let ppid = stat
                .rsplit(')')
                .next()?
                .split_whitespace()
                .nth(1)?
                .to_string();
            let pid = e.file_name().into_string().ok()?;
            (ppid == me && pid != sp.pid().to_string()).then_some(stat)
        })
        .collect();
    assert!(
        kids.is_empty(),
        "processes left after failed creates: {kids:?}"
    );
}

fn userns_spec(root: &Path, args: &[&str]) -> Spec {
    let mut s = spec(root, args);
    edit_namespaces(&mut s, |nss| {
        nss.push(new_namespace(oci_spec::runtime::LinuxNamespaceType::User))
    });
    let mut l = s.linux().clone().unwrap();
    let map = |c: u32, h: u32, n: u32| {
        oci_spec::runtime::LinuxIdMappingBuilder::default()
            .container_id(c)
            .host_id(h)
            .size(n)
            .build()
            .unwrap()
    };
    l.set_uid_mappings(Some(vec![map(0, 100000, 65536)]));
    l.set_gid_mappings(Some(vec![map(0, 200000, 65536)]));
    s.set_linux(Some(l));
    s
}

fn userns_case(sp: &Spawner, root: &Path, bundle: &Path) {
    let script = "cat /proc/self/uid_map /proc/self/gid_map; echo uid=$(id -u) gid=$(id -g); \
                  ls -ln /bin/busybox; ls /dev; cat /proc/self/status | grep CapEff; \
                  echo x > /dev/null && echo devnull-ok; sleep 1";
    let s = userns_spec(root, &["sh", "-c", script]);
    let (rd, w) = pipe();
    let stdio = stdio_to(&w);
    drop(w);
    let p = sp
        .spawn_init(req(root, bundle, s, Workload::Exec), stdio)
        .expect("spawn in a new user namespace");
    let pid = p.pid;
    p.start().expect("start in a new user namespace");
    // The host sees the mapped ids.
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let host_uid = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    let host_gid = status.lines().find(|l| l.starts_with("Gid:")).unwrap();
    let out = read_all(rd);
    assert_eq!(wait(pid), 0, "{out}");
    println!("userns: host {host_uid:?} {host_gid:?}; inside:\n{out}");
    assert_eq!(host_uid.split_whitespace().nth(1), Some("100000"));
    assert_eq!(host_gid.split_whitespace().nth(1), Some("200000"));
    let maps: Vec<Vec<&str>> = out
        .lines()
        .take(2)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(maps[0], ["0", "100000", "65536"], "{out}");
    assert_eq!(maps[1], ["0", "200000", "65536"], "{out}");
    assert!(out.contains("uid=0 gid=0"), "{out}");
    // Host root's files show as the overflow ids.
    assert!(out.contains("65534"), "{out}");
    assert!(out.contains("devnull-ok"), "{out}");

    // A network namespace of the host's user namespace, joined by path together with a new
    // user namespace (a CNI-made pod netns): the spawner enters it for the clone.
    let netns = format!("amphi-sec-{}", std::process::id());
    let ok = std::process::Command::new("ip")
        .args(["netns", "add", &netns])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if ok {
        let path = PathBuf::from(format!("/run/netns/{netns}"));
        let s = with_ns_path(
            userns_spec(root, &["sh", "-c", "readlink /proc/self/ns/net; id -u"]),
            oci_spec::runtime::LinuxNamespaceType::Network,
            &path,
        );
        let res = run(sp, req(root, bundle, s, Workload::Exec));
        let want = nix::sys::stat::stat(&path).unwrap().st_ino;
        let _ = std::process::Command::new("ip")
            .args(["netns", "delete", &netns])
            .status();
        let (code, out) = res.expect("user namespace + joined netns");
        println!("userns + netns by path: {out:?}");
        assert_eq!(code, 0, "{out}");
        assert_eq!(out, format!("net:[{want}]\n0\n"));
        // The spawner went back to its own network namespace.
        let (code, out) = run(sp, req(root, bundle, spec(root, &["true"]), Workload::Exec))
            .expect("plain run after");
        assert_eq!(code, 0, "{out}");
        let spawner_net = std::fs::read_link(format!("/proc/{}/ns/net", sp.pid())).unwrap();
        assert_eq!(
            spawner_net,
            std::fs::read_link("/proc/self/ns/net").unwrap()
        );
    } else {
        println!("userns + netns by path: skipped (ip netns add failed)");
    }

    // An exec into a running user-namespaced container with a seccomp profile: same user
    // namespace (root inside, mapped uid outside), same filter.
    let s = with_seccomp(userns_spec(root, &["true"]), DENY_MKDIR, false);
    let script = "id -u; grep Seccomp: /proc/self/status; mkdir /tmp/y || echo denied";
    let (code, out, status) = exec_in(sp, root, bundle, s, script);
    assert_eq!(code, 0, "{out}");
    println!("exec in userns: {out:?}");
    let host_uid = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert_eq!(
        host_uid.split_whitespace().nth(1),
        Some("100000"),
        "{status}"
    );
    assert!(out.starts_with("0\nSeccomp:\t2\n"), "{out}");
    assert!(out.contains("denied"), "{out}");

    // A user namespace without mappings is refused before anything is cloned.
    let mut s = userns_spec(root, &["true"]);
    let mut l = s.linux().clone().unwrap();
    l.set_uid_mappings(None);
    s.set_linux(Some(l));
    let e = sp
        .spawn_init(req(root, bundle, s, Workload::Exec), Stdio::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("uidMappings"), "{e}");
}

/// `s` with the namespace of type `t` given by `path` (added if the spec has none of that type).
fn with_ns_path(mut s: Spec, t: oci_spec::runtime::LinuxNamespaceType, path: &Path) -> Spec {
    join_namespace(&mut s, t, path);
    s
}

/// A process holding namespaces made by `unshare <args> --fork sleep 1000`: the unshare
/// process and its child (the `sleep`, born in the new namespaces).
struct Holder(std::process::Child, i32);

impl Holder {
    fn start(args: &[&str]) -> Option<Holder> {
        let mut child = std::process::Command::new("unshare")
            .args(args)
            .args(["--fork", "sleep", "1000"])
            .spawn()
            .ok()?;
        let id = child.id();
        for _ in 0..200 {
            let kids = std::fs::read_to_string(format!("/proc/{id}/task/{id}/children"))
                .unwrap_or_default();
            if let Some(k) = kids.split_whitespace().next() {
                // Past the exec of sleep (the comm changes from unshare).
                let k: i32 = k.parse().unwrap();
                let comm = std::fs::read_to_string(format!("/proc/{k}/comm")).unwrap_or_default();
                if comm.trim() == "sleep" {
                    return Some(Holder(child, k));
                }
            }
            if let Ok(Some(_)) = child.try_wait() {
                return None; // e.g. the kernel has no such namespace
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    fn ns(&self, name: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/ns/{name}", self.1))
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(Pid::from_raw(self.1), nix::sys::signal::Signal::SIGKILL);
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Spawns `s` as a sleeping init, runs `script` in it as an exec, kills the init; returns
/// (exec exit code, exec output, the exec's /proc/<pid>/status as the runtime sees it).
fn exec_in(
    sp: &Spawner,
    root: &Path,
    bundle: &Path,
    s: Spec,
    script: &str,
) -> (i32, String, String) {
    let mut sleeper = s.clone();
    let mut pr = sleeper.process().clone().unwrap();
    pr.set_args(Some(vec!["sleep".into(), "10".into()]));
    sleeper.set_process(Some(pr));
    let p = sp
        .spawn_init(req(root, bundle, sleeper, Workload::Exec), Stdio::default())
        .expect("spawn sleeper");
    let init_pid = p.pid;
    p.start().expect("start sleeper");
    let (rd, w) = pipe();
    let process = sh_process(&format!("{script}; sleep 1"), "/")
        .build()
        .unwrap();
    let res = sp.spawn_exec(
        exec_request("sec", "e2", init_pid, process, s, &[]),
        stdio_to(&w),
    );
    drop(w);
    let ep = match res {
        Ok(ep) => ep,
        Err(e) => {
            // Not waited for: the failed exec, in the init's pid namespace, is our unreaped
            // child, and the init cannot finish dying before it is reaped.
            let _ =
                nix::sys::signal::kill(Pid::from_raw(init_pid), nix::sys::signal::Signal::SIGKILL);
            panic!("exec: {e}");
        }
    };
    let epid = ep.pid;
    ep.start().expect("start exec");
    let status = std::fs::read_to_string(format!("/proc/{epid}/status")).unwrap_or_default();
    let out = read_all(rd);
    let code = wait(epid);
    let _ = nix::sys::signal::kill(Pid::from_raw(init_pid), nix::sys::signal::Signal::SIGKILL);
    wait(init_pid);
    (code, out, status)
}

fn nspid(status: &str) -> Vec<String> {
    status
        .lines()
        .find(|l| l.starts_with("NSpid:"))
        .map(|l| l.split_whitespace().skip(1).map(String::from).collect())
        .unwrap_or_default()
}

/// The spawner is back in its own pid_for_children / time_for_children / time.
fn spawner_namespaces_restored(sp: &Spawner) {
    for name in ["pid_for_children", "time", "time_for_children", "net"] {
        let own = format!("/proc/self/ns/{name}");
        if !Path::new(&own).exists() {
            continue;
        }
        assert_eq!(
            std::fs::read_link(format!("/proc/{}/ns/{name}", sp.pid())).unwrap(),
            std::fs::read_link(&own).unwrap(),
            "spawner's {name}"
        );
    }
}

/// The lines of `out`, the first three checked: the namespace link `want` (from `readlink`),
/// the uid map of [`userns_spec`], and uid 0.
fn joined_as_mapped_root<'a>(out: &'a str, want: &Path) -> Vec<&'a str> {
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], want.to_str().unwrap(), "{out}");
    assert_eq!(
        lines[1].split_whitespace().collect::<Vec<_>>(),
        ["0", "100000", "65536"],
        "{out}"
    );
    assert_eq!(lines[2], "0", "{out}");
    lines
}

/// A new user namespace with the `t` (`name`) namespace given as the holder's `other` one,
/// another kind: setns refuses it, and the spawner is back in its own namespaces.
fn wrong_kind_of_namespace(
    sp: &Spawner,
    root: &Path,
    bundle: &Path,
    t: oci_spec::runtime::LinuxNamespaceType,
    name: &str,
    holder: &Holder,
    other: &str,
) {
    let bad = with_ns_path(userns_spec(root, &["true"]), t, &holder.ns(other));
    let e = run(sp, req(root, bundle, bad, Workload::Exec)).unwrap_err();
    println!("{name} namespace path to a {other} namespace: {e}");
    assert!(
        e.contains(&format!("join {name} namespace")) && e.contains("EINVAL"),
        "{e}"
    );
    spawner_namespaces_restored(sp);
}

/// A new user namespace together with pid and time namespaces joined by path (made in the
/// host's user namespace by `unshare`), and the combinations that are refused.
fn userns_joined_pid_time_case(sp: &Spawner, root: &Path, bundle: &Path) {
    use oci_spec::runtime::LinuxNamespaceType as T;
    // (1) pid: the container is born in the holder's pid namespace (the holder's sleep is its
    // pid 1), its /proc is that namespace's, and it is root of its own user namespace.
    let holder = Holder::start(&["--pid"]).expect("unshare --pid");
    let pidns = holder.ns("pid");
    let want = std::fs::read_link(&pidns).unwrap();
    let script = "readlink /proc/self/ns/pid; cat /proc/self/uid_map; id -u; \
                  tr '\\0' ' ' < /proc/1/cmdline; echo; grep NSpid /proc/self/status";
    let s = with_ns_path(userns_spec(root, &["sh", "-c", script]), T::Pid, &pidns);
    let (code, out) =
        run(sp, req(root, bundle, s.clone(), Workload::Exec)).expect("userns + pidns");
    println!("userns + pidns by path: {out:?}");
    assert_eq!(code, 0, "{out}");
    let lines = joined_as_mapped_root(&out, &want);
    assert!(lines[3].starts_with("sleep 1000"), "{out}");
    // Pid 1 is the holder's sleep: the container's own pid is another one.
    let inner: i32 = lines[4].split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(inner > 1, "{out}");
    // An exec joins the same pid namespace; the runtime sees its host pid, and the pid inside.
    let (code, out, status) = exec_in(
        sp,
        root,
        bundle,
        s.clone(),
        "readlink /proc/self/ns/pid; id -u",
    );
    println!("exec in userns + pidns by path: {out:?}");
    assert_eq!(code, 0, "{out}");
    assert_eq!(out, format!("{}\n0\n", want.to_str().unwrap()));
    let ns = nspid(&status);
    assert_eq!(ns.len(), 2, "{status}");
    assert!(status.contains("Uid:\t100000"), "{status}");
    spawner_namespaces_restored(sp);
    // A pid namespace path that is another kind of namespace is refused by setns.
    wrong_kind_of_namespace(sp, root, bundle, T::Pid, "pid", &holder, "net");
    // The same type twice is refused before anything is created.
    let mut dup = with_ns_path(userns_spec(root, &["true"]), T::Pid, &pidns);
    edit_namespaces(&mut dup, |nss| nss.push(new_namespace(T::Pid)));
    let e = run(sp, req(root, bundle, dup, Workload::Exec)).unwrap_err();
    assert!(e.contains("pid namespace is listed more than once"), "{e}");

    // (3) A mount namespace by path with a new user namespace: refused at validation.
    let s = with_ns_path(userns_spec(root, &["true"]), T::Mount, &holder.ns("mnt"));
    let e = run(sp, req(root, bundle, s.clone(), Workload::Exec)).unwrap_err();
    println!("userns + mntns by path: {e}");
    assert!(e.starts_with("invalid spec "), "{e}");
    assert!(
        e.contains("mount namespace joined by path cannot be combined with a new user namespace: "),
        "{e}"
    );
    assert!(runtime_native::spec::validate(&s).is_err());
    drop(holder);

    // (2) time: the container sees the holder's boot-time offset and namespace.
    if !Path::new("/proc/self/ns/time").exists() {
        println!("userns + timens by path: skipped (no time namespaces)");
        return;
    }
    let Some(holder) = Holder::start(&["--time", "--boottime", "1000000"]) else {
        println!("userns + timens by path: skipped (unshare --time failed)");
        return;
    };
    let timens = holder.ns("time");
    let want = std::fs::read_link(&timens).unwrap();
    let script =
        "readlink /proc/self/ns/time; cat /proc/self/uid_map; id -u; cut -d. -f1 /proc/uptime";
    let s = with_ns_path(userns_spec(root, &["sh", "-c", script]), T::Time, &timens);
    let check = |out: &str| {
        let lines = joined_as_mapped_root(out, &want);
        let up: u64 = lines[3].trim().parse().unwrap();
        assert!(up >= 1_000_000, "uptime {up}: {out}");
    };
    let (code, out) =
        run(sp, req(root, bundle, s.clone(), Workload::Exec)).expect("userns + timens");
    println!("userns + timens by path: {out:?}");
    assert_eq!(code, 0, "{out}");
    check(&out);
    let (code, out, _) = exec_in(sp, root, bundle, s, script);
    println!("exec in userns + timens by path: {out:?}");
    assert_eq!(code, 0, "{out}");
    check(&out);
    spawner_namespaces_restored(sp);
    // A time namespace path that is another kind of namespace.
    wrong_kind_of_namespace(sp, root, bundle, T::Time, "time", &holder, "uts");
    drop(holder);
}

/// Hooks run by a caller whose reaper collects every child (as the shim's does): the exit
/// status comes back through `set_reaped_exit_lookup`. Runs last: the reaper thread takes
/// every child of this process from here on.
fn hooks_under_a_reaper(root: &Path, bundle: &Path) {
    use std::collections::HashMap;
    use std::os::unix::fs::PermissionsExt;
    use std::sync::{Arc, Mutex};
    let book: Arc<Mutex<HashMap<i32, i32>>> = Default::default();
    let b = book.clone();
    std::thread::spawn(move || loop {
        match waitpid(Pid::from_raw(-1), None) {
            Ok(WaitStatus::Exited(p, c)) => {
                b.lock().unwrap().insert(p.as_raw(), c);
            }
            Ok(WaitStatus::Signaled(p, s, _)) => {
                b.lock().unwrap().insert(p.as_raw(), 128 + s as i32);
            }
            Ok(_) => {}
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(1)),
        }
    });
    let b = book.clone();
    runtime_native::hooks::set_reaped_exit_lookup(move |pid| b.lock().unwrap().remove(&pid));
    let mk = |name: &str, code: i32| {
        let p = bundle.join(name);
        std::fs::write(&p, format!("#!/bin/sh\necho out-{code}\nexit {code}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    };
    let (ok, bad) = (mk("ok-hook.sh", 0), mk("bad3-hook.sh", 3));
    let with = |p: &Path| {
        let mut s = spec(root, &["true"]);
        let mut h = oci_spec::runtime::Hooks::default();
        h.set_poststop(Some(vec![hook(p, &["h"])]));
        s.set_hooks(Some(h));
        s
    };
    for _ in 0..20 {
        runtime_native::hooks::run_poststop(&with(&ok), "sec", bundle).expect("ok hook");
        let e = runtime_native::hooks::run_poststop(&with(&bad), "sec", bundle)
            .unwrap_err()
            .to_string();
        assert!(e.contains("exit status: 3") && e.contains("out-3"), "{e}");
    }
    println!("hooks under a reaper: ok");
}

fn main() {
    common::main("security", RUNNERS, |spawner, root, bundle| {
        seccomp_cases(spawner, root, bundle);
        procfs_redirect_cases(spawner, root, bundle);
        personality_case(spawner, root, bundle);
        hooks_case(spawner, root, bundle);
        userns_case(spawner, root, bundle);
        userns_joined_pid_time_case(spawner, root, bundle);
        hooks_under_a_reaper(root, bundle);
    });
}
