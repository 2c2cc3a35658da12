//! containerd's own runc shim (`io.containerd.runc.v2 --runc-binary amphi-oci`) drives
//! amphi-oci: run with an exit code, exec, ps, pause/resume, kill, delete. Root only; uses
//! the containerd of the test cache (`.cache/containerd/<v>`, from scripts/) or the system's,
//! with a private state dir, and `ctr run --rootfs` over a busybox directory (no image).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_amphi-oci");

/// Directories holding `containerd`, `ctr` and `containerd-shim-runc-v2`.
fn containerd_dirs() -> Vec<PathBuf> {
    let ws = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut v: Vec<PathBuf> = ["1.7", "2.1", "1.6"]
        .iter()
        .map(|ver| ws.join(".cache/containerd").join(ver).join("usr/bin"))
        .collect();
    v.push(PathBuf::from("/usr/bin"));
    v.into_iter()
        .filter(|d| {
            ["containerd", "ctr", "containerd-shim-runc-v2"]
                .iter()
                .all(|b| d.join(b).exists())
        })
        .collect()
}

struct Daemon {
    dir: PathBuf,
    bin: PathBuf,
    child: Child,
}

impl Daemon {
    fn start(bin: &Path, tag: &str) -> Daemon {
        let dir = PathBuf::from(format!("/tmp/aoci-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("root")).unwrap();
        std::fs::create_dir_all(dir.join("state")).unwrap();
        let config = format!(
            r#"version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.nri.v1.nri",
  "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "{d}/c.sock"
[ttrpc]
  address = "{d}/c.sock.ttrpc"
"#,
            d = dir.display()
        );
        std::fs::write(dir.join("config.toml"), config).unwrap();
        let log = std::fs::File::create(dir.join("containerd.log")).unwrap();
        let path = format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let child = Command::new(bin.join("containerd"))
            .arg("--config")
            .arg(dir.join("config.toml"))
            .env("PATH", path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let d = Daemon {
            dir,
            bin: bin.to_path_buf(),
            child,
        };
        let start = Instant::now();
        while !(d.dir.join("c.sock").exists() && d.ctr(&["version"]).0 == 0) {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "containerd did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        d
    }

    fn ctr(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(self.bin.join("ctr"))
            .arg("-a")
            .arg(self.dir.join("c.sock"))
            .args(["-n", "aoci"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn ok(&self, args: &[&str]) -> String {
        let (code, out, err) = self.ctr(args);
        assert_eq!(code, 0, "ctr {args:?}: {err}\n{}", self.log());
        out
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default()
    }

    fn task_status(&self, id: &str) -> String {
        self.ok(&["task", "ls"])
            .lines()
            .find(|l| l.split_whitespace().next() == Some(id))
            .and_then(|l| l.split_whitespace().nth(2).map(String::from))
            .unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn rootfs(dir: &Path) -> PathBuf {
    let root = dir.join("rootfs");
    for d in ["bin", "proc", "sys", "dev", "tmp", "etc"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    for l in ["sh", "sleep", "echo", "true", "cat"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(l)).unwrap();
    }
    root
}

#[test]
fn containerd_runc_shim_drives_amphi_oci() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let dirs = containerd_dirs();
    let Some(bin) = dirs.first() else {
        eprintln!("skipped: no containerd with containerd-shim-runc-v2 (run scripts/setup.sh)");
        return;
    };
    let d = Daemon::start(bin, "shim");
    let tmp = tempfile::tempdir().unwrap();
    let root = rootfs(tmp.path());
    let root = root.to_str().unwrap();
    let run = |extra: &[&str], id: &str, cmd: &[&str]| {
        let mut a = vec![
            "run",
            "--runtime",
            "io.containerd.runc.v2",
            "--runc-binary",
            BIN,
        ];
        a.extend_from_slice(extra);
        a.extend(["--rootfs", root, id]);
        a.extend_from_slice(cmd);
        d.ctr(&a)
    };

    // Foreground, with the exit code.
    let (code, out, err) = run(&["--rm"], "t1", &["sh", "-c", "echo hi; exit 3"]);
    assert_eq!(code, 3, "{err}\n{}", d.log());
    assert_eq!(out, "hi\n");

    // Detached, then exec, ps, pause/resume, kill, delete.
    let (code, _, err) = run(&["-d"], "t2", &["sleep", "1000"]);
    assert_eq!(code, 0, "{err}\n{}", d.log());
    assert_eq!(d.task_status("t2"), "RUNNING");
    let (code, out, err) = d.ctr(&[
        "task",
        "exec",
        "--exec-id",
        "e1",
        "t2",
        "sh",
        "-c",
        "echo exec-ok; exit 4",
    ]);
    assert_eq!(code, 4, "{err}");
    assert_eq!(out, "exec-ok\n");
    let ps = d.ok(&["task", "ps", "t2"]);
    assert!(ps.lines().count() >= 2, "{ps}");
    d.ok(&["task", "pause", "t2"]);
    assert_eq!(d.task_status("t2"), "PAUSED");
    d.ok(&["task", "resume", "t2"]);
    assert_eq!(d.task_status("t2"), "RUNNING");
    d.ok(&["task", "kill", "-s", "KILL", "t2"]);
    let start = Instant::now();
    while d.task_status("t2") != "STOPPED" {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the shim never saw the init exit"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    d.ok(&["task", "rm", "t2"]);
    d.ok(&["container", "rm", "t2"]);
    assert!(!d.ok(&["task", "ls"]).contains("t2"));
}
