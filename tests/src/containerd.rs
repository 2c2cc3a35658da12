//! A private containerd daemon for one test: its own root, state, socket, log and namespace.
//! Stopped by pid on drop; never touches a containerd it did not start.

use crate::cmd::{self, Output};
use crate::paths;
use crate::versions::Version;
use crate::{cgroups, mounts, procs};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Default deadline for one `ctr` invocation.
pub const CTR_TIMEOUT: Duration = Duration::from_secs(60);

static COUNTER: AtomicU32 = AtomicU32::new(0);

pub struct Containerd {
    pub version: Version,
    /// Temp dir holding everything of this daemon (root/, state/, c.sock, log, bin/, amphi/).
    pub dir: PathBuf,
    pub namespace: String,
    child: Option<Child>,
    /// Set when the temp dir should survive (AMPHI_E2E_KEEP=1).
    keep: bool,
    /// The CRI plugin's settings when it is enabled ([`Containerd::start_cri`]); then the
    /// namespace is CRI's `k8s.io`.
    pub cri: Option<crate::cri_env::CriConfig>,
    /// Extra environment of the daemon, which the shims it starts inherit
    /// ([`Containerd::restart_with_env`]).
    env: Vec<(String, String)>,
}

impl Containerd {
    /// Starts a daemon of `version`. Fails if that version is not installed.
    pub fn start(version: Version) -> Result<Containerd> {
        Self::start_with(version, COUNTER.fetch_add(1, Ordering::SeqCst), None)
    }

    /// Starts a daemon of `version` with the CRI plugin enabled (runtime handlers `amphi` and
    /// `runc`, a private CNI network, the pause image of [`crate::cri_env`] imported).
    pub fn start_cri(version: Version) -> Result<Containerd> {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let cri = crate::cri_env::CriConfig::new(&n.to_string())?;
        let d = Self::start_with(version, n, Some(cri))?;
        crate::cri_env::import_pause(&d)?;
        Ok(d)
    }

    fn start_with(
        version: Version,
        n: u32,
        cri: Option<crate::cri_env::CriConfig>,
    ) -> Result<Containerd> {
        version.require()?;
        let pid = std::process::id();
        // Short path: unix socket paths must stay under 108 bytes.
        let dir = PathBuf::from(format!("/tmp/amphi-e2e-{pid}-{n}"));
        if dir.exists() {
            let _ = mounts::unmount_all_under(&dir);
            std::fs::remove_dir_all(&dir).with_context(|| format!("clearing {}", dir.display()))?;
        }
        for d in ["root", "state", "bin", "amphi/state", "amphi/sockets"] {
            std::fs::create_dir_all(dir.join(d))?;
        }
        // The shim is optional here: runc-only tests run before it is built; amphi tests fail
        // with a clear message from the shim lookup in the case runner.
        if let Ok(shim) = paths::shim_binary() {
            std::os::unix::fs::symlink(&shim, dir.join("bin").join(paths::SHIM_BINARY))?;
        }
        let mut d = Containerd {
            version,
            dir,
            namespace: if cri.is_some() {
                "k8s.io".to_string()
            } else {
                format!("e2e{pid}x{n}")
            },
            child: None,
            keep: std::env::var("AMPHI_E2E_KEEP").is_ok_and(|v| v == "1"),
            cri,
            env: Vec::new(),
        };
        if let Some(cri) = &d.cri {
            crate::cri_env::write_cni_conf(&d.dir, cri)?;
        }
        std::fs::write(d.config_path(), d.config())?;
        d.spawn()?;
        Ok(d)
    }

    pub fn address(&self) -> PathBuf {
        self.dir.join("c.sock")
    }
    pub fn root(&self) -> PathBuf {
        self.dir.join("root")
    }
    pub fn state(&self) -> PathBuf {
        self.dir.join("state")
    }
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("containerd.log")
    }
    fn config_path(&self) -> PathBuf {
        self.dir.join("config.toml")
    }
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// The bundle directory containerd creates for a task.
    pub fn bundle(&self, id: &str) -> PathBuf {
        self.state()
            .join("io.containerd.runtime.v2.task")
            .join(&self.namespace)
            .join(id)
    }

    fn config(&self) -> String {
        if let Some(cri) = &self.cri {
            return crate::cri_env::containerd_config(self.version, &self.dir, cri);
        }
        // Version 2 config: 1.6 and 1.7 read it natively, 2.x migrates it.
        config_head(
            2,
            '"',
            &self.root(),
            &self.state(),
            &self.address(),
            CRI_PLUGINS,
        )
    }

    /// PATH for the daemon (and so for the shims it starts): built shim, this version's
    /// binaries, then the system's.
    fn path_env(&self) -> String {
        let sys = std::env::var("PATH").unwrap_or_else(|_| {
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()
        });
        format!(
            "{}:{}:{}",
            self.dir.join("bin").display(),
            self.version.bin_dir().display(),
            sys
        )
    }

    fn spawn(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let mut cmd = Command::new(self.version.containerd());
        cmd.arg("--config")
            .arg(self.config_path())
            .env("PATH", self.path_env())
            .env("AMPHI_STATE_DIR", self.dir.join("amphi/state"))
            .env("AMPHI_SOCKET_DIR", self.dir.join("amphi/sockets"))
            .env_remove("NOTIFY_SOCKET")
            .env_remove("CONTAINERD_ADDRESS")
            .env_remove("CONTAINERD_NAMESPACE")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", self.version.containerd().display()))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(st) = self.child.as_mut().unwrap().try_wait()? {
                self.child = None;
                anyhow::bail!(
                    "containerd {} exited at start-up ({st}); log:\n{}",
                    self.version.label(),
                    self.log_tail(80)
                );
            }
            if self.address().exists() {
                let out = self.ctr(&["version"])?;
                if out.success() {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                anyhow::bail!(
                    "containerd {} did not come up within 30s; log:\n{}",
                    self.version.label(),
                    self.log_tail(80)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM (then SIGKILL after 10s) to our daemon only; shims keep running, like a
    /// containerd upgrade or crash would leave them.
    pub fn stop(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if child.try_wait()?.is_some() {
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = std::fs::remove_file(self.address());
        Ok(())
    }

    /// Stops and starts the daemon again on the same root, state and socket.
    pub fn restart(&mut self) -> Result<()> {
        self.stop()?;
        self.spawn()
    }

    /// Restarts the daemon with `key=value` added to its environment, so that the shims it
    /// starts from now on see it (e.g. a private `AMPHI_WASM_CACHE_DIR`).
    pub fn restart_with_env(&mut self, key: &str, value: &str) -> Result<()> {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_string(), value.to_string()));
        self.restart()
    }

    /// `ctr --address A --namespace N ARGS...` with the default deadline.
    pub fn ctr(&self, args: &[&str]) -> Result<Output> {
        self.ctr_timeout(args, CTR_TIMEOUT)
    }

    pub fn ctr_timeout(&self, args: &[&str], timeout: Duration) -> Result<Output> {
        cmd::run(self.ctr_command(args), timeout)
    }

    /// The `ctr` command, not started (for background runs and ptys).
    pub fn ctr_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(self.version.ctr());
        cmd.arg("--address")
            .arg(self.address())
            .arg("--namespace")
            .arg(&self.namespace)
            .args(args);
        cmd.env_remove("CONTAINERD_ADDRESS")
            .env_remove("CONTAINERD_NAMESPACE");
        cmd
    }

    /// The last `lines` lines of the daemon's log (which includes the shims' logs).
    pub fn log_tail(&self, lines: usize) -> String {
        let s = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let v: Vec<&str> = s.lines().collect();
        v[v.len().saturating_sub(lines)..].join("\n")
    }

    /// Markers identifying processes started on behalf of this daemon.
    pub fn markers(&self) -> Vec<String> {
        vec![
            self.address().display().to_string(),
            self.dir.display().to_string(),
        ]
    }

    /// Best effort: kill and delete every task and container in our namespace.
    fn remove_everything(&self) {
        let Ok(out) = self.ctr_timeout(&["containers", "ls", "-q"], Duration::from_secs(20)) else {
            return;
        };
        for id in out.stdout.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let _ = self.ctr_timeout(
                &["task", "kill", "-a", "-s", "SIGKILL", id],
                Duration::from_secs(10),
            );
            std::thread::sleep(Duration::from_millis(200));
            let _ = self.ctr_timeout(&["task", "delete", "-f", id], Duration::from_secs(20));
            let _ = self.ctr_timeout(&["containers", "delete", id], Duration::from_secs(20));
        }
    }
}

/// Kills processes that carry our markers (shims and their forks we caused to exist).
fn kill_our_shims(dir: &Path, address: &Path) {
    let markers = [address.display().to_string(), dir.display().to_string()];
    let m: Vec<&str> = markers.iter().map(String::as_str).collect();
    for name in [paths::SHIM_BINARY, "containerd-shim-runc-v2"] {
        for p in procs::shim_processes(name, &m) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(p.pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// Plugins a daemon without CRI does not need, besides [`DISABLED`].
const CRI_PLUGINS: &str = r#"  "io.containerd.grpc.v1.cri",
  "io.containerd.cri.v1.images",
  "io.containerd.cri.v1.runtime",
  "io.containerd.podsandbox.controller.v1.podsandbox",
"#;

/// Plugins no test daemon needs, for every version.
const DISABLED: &str = r#"  "io.containerd.internal.v1.opt",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.blockfile",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
  "io.containerd.nri.v1.nri","#;

/// The part every test daemon's config shares (`version`, root, state, disabled plugins, the
/// grpc and ttrpc sockets, debug logs), with `q` the TOML string quote of that version's
/// examples and `disabled` plugins to turn off besides [`DISABLED`] (whole lines).
pub(crate) fn config_head(
    version: u32,
    q: char,
    root: &Path,
    state: &Path,
    sock: &Path,
    disabled: &str,
) -> String {
    format!(
        "version = {version}\nroot = {q}{root}{q}\nstate = {q}{state}{q}\ndisabled_plugins = [\n{disabled}{DISABLED}\n]\n\n[grpc]\n  address = {q}{sock}{q}\n\n[ttrpc]\n  address = {q}{sock}.ttrpc{q}\n\n[debug]\n  level = {q}debug{q}\n",
        root = root.display(),
        state = state.display(),
        sock = sock.display(),
    )
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.remove_everything();
        }
        let _ = self.stop();
        kill_our_shims(&self.dir, &self.address());
        std::thread::sleep(Duration::from_millis(100));
        mounts::unmount_all_under(&self.dir);
        if let Some(cri) = &self.cri {
            cgroups::remove(&cri.cgroup_parent);
            cri.remove_bridges();
        } else {
            cgroups::remove(&self.namespace);
            let _ = std::fs::remove_dir(format!("/run/containerd/runc/{}", self.namespace));
        }
        if self.keep {
            eprintln!(
                "containerd {} dir kept at {}",
                self.version.label(),
                self.dir.display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
