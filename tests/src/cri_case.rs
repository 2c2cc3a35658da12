//! One CRI end-to-end case: a private containerd with the CRI plugin, a CRI client, pods run
//! with one runtime handler (`amphi`, or `runc` to validate the test), and a leak check that
//! covers what pods leave: sandboxes, containers, mounts, cgroups, shims, veths, IP leases.

use crate::cgroups;
use crate::containerd::Containerd;
use crate::cri::{self, v1, CriClient};
use crate::cri_env::{self, AMPHI_HANDLER};
use crate::images;
use crate::leaks;
use crate::paths;
use crate::procs;
use crate::versions::Version;
use anyhow::{Context, Result};
use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use crate::images::BUSYBOX;

/// The wasm images the CRI cases use: busybox plus a module as the entrypoint.
pub const WASM_HELLO: &str = "docker.io/amphi/cri-hello-wasm:e2e";
pub const WASM_SLEEPER: &str = "docker.io/amphi/cri-sleeper-wasm:e2e";
pub const WASM_EXIT: &str = "docker.io/amphi/cri-exit-code-wasm:e2e";
pub const WASM_HTTP: &str = "docker.io/amphi/cri-http-hello-wasm:e2e";
pub const WASM_WGET: &str = "docker.io/amphi/cri-wget-wasm:e2e";

/// Instantiates a CRI case for containerd 1.6, 1.7 and 2.1 with the handler `amphi`, plus the
/// same with `runc` (ignored by default: validates the test itself; run with `--ignored`).
/// `cri_e2e!(name, f, v2_only)` instantiates only the containerd 2.1 variants, for what older
/// CRI plugins do not have (recursive read-only mounts, user-namespaced pods).
#[macro_export]
macro_rules! cri_e2e {
    ($name:ident, $f:expr) => {
        $crate::cri_e2e!(@versions $name, $f, [containerd_1_6 V1_6, containerd_1_7 V1_7, containerd_2_1 V2_1]);
    };
    ($name:ident, $f:expr, since_1_7) => {
        $crate::cri_e2e!(@versions $name, $f, [containerd_1_7 V1_7, containerd_2_1 V2_1]);
    };
    ($name:ident, $f:expr, v2_only) => {
        $crate::cri_e2e!(@versions $name, $f, [containerd_2_1 V2_1]);
    };
    (@versions $name:ident, $f:expr, [$($test:ident $v:ident),*]) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            fn run(v: $crate::Version, h: &'static str) {
                $crate::require_root();
                $crate::cri_case::run_cri_case(v, h, stringify!($name), $f)
            }
            $(
                #[test]
                fn $test() {
                    run($crate::Version::$v, $crate::cri_env::AMPHI_HANDLER)
                }
            )*
            mod runc {
                use super::*;
                $(
                    #[test]
                    #[ignore = "validates the test against runc; run with --ignored"]
                    fn $test() {
                        run($crate::Version::$v, $crate::cri_env::RUNC_HANDLER)
                    }
                )*
            }
        }
    };
}

pub struct CriCase {
    pub cd: Containerd,
    pub cri: CriClient,
    /// The runtime handler pods are run with.
    pub handler: &'static str,
    name: String,
    pods: RefCell<Vec<Pod>>,
}

/// A pod sandbox this case ran.
#[derive(Debug, Clone)]
pub struct Pod {
    pub id: String,
    pub config: v1::PodSandboxConfig,
    pub log_dir: PathBuf,
}

impl Pod {
    /// The pod as CreateContainer names it.
    pub fn sandbox(&self) -> cri::Sandbox<'_> {
        cri::Sandbox {
            id: &self.id,
            config: &self.config,
        }
    }
}

/// Runs `f` against a CRI daemon of `version` whose pods use `handler`, then the leak check.
pub fn run_cri_case(
    version: Version,
    handler: &'static str,
    name: &str,
    f: impl FnOnce(&mut CriCase) -> Result<()>,
) {
    let label = format!(
        "{name} [containerd {} / CRI handler {handler}]",
        version.label()
    );
    let setup = (|| -> Result<CriCase> {
        if handler == AMPHI_HANDLER {
            paths::shim_binary()?;
        }
        let cd = Containerd::start_cri(version)?;
        let cri = CriClient::connect(&cd.address())?;
        cri.version().context("CRI Version")?;
        images::import_busybox(&cd)?;
        cri::wait_image(&cri, cri_env::PAUSE_IMAGE)?;
        cri::wait_image(&cri, BUSYBOX)?;
        Ok(CriCase {
            cd,
            cri,
            handler,
            name: name.replace('_', "-"),
            pods: RefCell::new(Vec::new()),
        })
    })();
    crate::case::run_checked(&label, setup, f, CriCase::check_leaks, |c| &c.cd, 250);
}

impl CriCase {
    /// The shim binary serving this case's handler.
    pub fn shim_binary(&self) -> &'static str {
        if self.handler == AMPHI_HANDLER {
            paths::SHIM_BINARY
        } else {
            "containerd-shim-runc-v2"
        }
    }

    fn cri_config(&self) -> &cri_env::CriConfig {
        self.cd.cri.as_ref().expect("a CRI daemon")
    }

    /// A new CRI connection (after the daemon restarted).
    pub fn reconnect(&mut self) -> Result<()> {
        self.cri = CriClient::connect(&self.cd.address())?;
        crate::cmd::wait_for(
            Duration::from_secs(30),
            "the CRI service after a restart",
            || Ok(self.cri.version().ok().map(|_| ())),
        )
    }

    /// Imports one of the wasm images (busybox + module as entrypoint) into the daemon.
    pub fn import_wasm(&self, image: &str) -> Result<()> {
        let out = paths::workspace_root().join("examples/wasm/out");
        let (module, dest) = match image {
            WASM_HELLO => (out.join("hello.wasm"), "hello.wasm"),
            WASM_SLEEPER => (out.join("sleeper.wasm"), "sleeper.wasm"),
            WASM_EXIT => (out.join("exit-code.wasm"), "exit-code.wasm"),
            WASM_HTTP => (out.join("http-hello.wasm"), "http-hello.wasm"),
            WASM_WGET => (cri_env::wget_wasm()?, "wget.wasm"),
            other => anyhow::bail!("no wasm image {other}"),
        };
        let archive = cri_env::wasm_rootfs_archive(&module, image, dest)?;
        images::import(&self.cd, &archive, &[])?;
        cri::wait_image(&self.cri, image)
    }

    /// RunPodSandbox `name` with this case's handler.
    pub fn run_pod(&self, name: &str) -> Result<Pod> {
        self.run_pod_with(name, self.handler)
    }

    /// RunPodSandbox `name` with `handler`.
    pub fn run_pod_with(&self, name: &str, handler: &str) -> Result<Pod> {
        self.run_pod_edited(name, handler, |_| {})
    }

    /// RunPodSandbox `name` with `handler` and kubelet's config changed by `edit` (host
    /// namespaces, privileged, sysctls, user namespace options...).
    pub fn run_pod_edited(
        &self,
        name: &str,
        handler: &str,
        edit: impl FnOnce(&mut v1::PodSandboxConfig),
    ) -> Result<Pod> {
        let full = format!("{}-{name}", self.name);
        let log_dir = self.cd.dir.join("pods").join(&full);
        std::fs::create_dir_all(&log_dir)?;
        let uid = format!("uid-{full}");
        let mut config = cri::pod_config(&full, &uid, &log_dir, &self.cri_config().cgroup_parent);
        edit(&mut config);
        let id = self
            .cri
            .run_pod_sandbox(&config, handler)
            .with_context(|| format!("RunPodSandbox {full} (handler {handler})"))?;
        let pod = Pod {
            id,
            config,
            log_dir,
        };
        self.pods.borrow_mut().push(pod.clone());
        Ok(pod)
    }

    /// CreateContainer + StartContainer; returns the container id.
    pub fn start_container(&self, pod: &Pod, config: &v1::ContainerConfig) -> Result<String> {
        self.cri.create_and_start(pod.sandbox(), config)
    }

    /// StopPodSandbox + RemovePodSandbox.
    pub fn remove_pod(&self, pod: &Pod) -> Result<()> {
        self.cri.stop_pod_sandbox(&pod.id)?;
        self.cri.remove_pod_sandbox(&pod.id)?;
        self.pods.borrow_mut().retain(|p| p.id != pod.id);
        Ok(())
    }

    /// The log file of a container of `pod` (its config's log_path under the pod's log dir).
    pub fn log_file(&self, pod: &Pod, name: &str) -> PathBuf {
        pod.log_dir.join(format!("{name}.log"))
    }

    /// The container's log, parsed (CRI format), waiting until it contains `needle`.
    pub fn wait_log(&self, pod: &Pod, name: &str, needle: &str) -> Result<Vec<cri::LogLine>> {
        let f = self.log_file(pod, name);
        crate::cmd::wait_for(
            Duration::from_secs(20),
            &format!("{needle:?} in {}", f.display()),
            || {
                let text = std::fs::read_to_string(&f).unwrap_or_default();
                let lines = cri::parse_cri_log(&text)?;
                Ok(lines
                    .iter()
                    .any(|l| l.content.contains(needle))
                    .then_some(lines))
            },
        )
    }

    /// Processes of this handler's shim started for our daemon (daemons and their forks).
    pub fn shim_processes(&self) -> Vec<procs::Proc> {
        let m = self.cd.markers();
        let m: Vec<&str> = m.iter().map(String::as_str).collect();
        procs::shim_processes(self.shim_binary(), &m)
    }

    /// Fails unless exactly one shim daemon serves our daemon, and the pod's pause process and
    /// the init of every container in `containers` are its children.
    pub fn expect_one_shim_for(&self, pod: &Pod, containers: &[&str]) -> Result<()> {
        self.expect_one_shim()?;
        let shim = procs::top_level(&self.shim_processes())[0].pid;
        let mut pids = vec![("sandbox".to_string(), self.cri.sandbox_pid(&pod.id)?)];
        for c in containers {
            pids.push((c.to_string(), self.cri.container_pid(c)?));
        }
        for (what, pid) in pids {
            let p = procs::Proc::read(pid)
                .ok_or_else(|| anyhow::anyhow!("{what}: pid {pid} is gone"))?;
            anyhow::ensure!(
                p.ppid == shim,
                "{what}: pid {pid} ({}) has parent {}, not the pod's shim {shim}",
                p.comm,
                p.ppid
            );
        }
        Ok(())
    }

    /// Fails unless exactly one shim daemon (top-level shim process) serves our daemon.
    pub fn expect_one_shim(&self) -> Result<()> {
        procs::expect_one_top_level(
            &self.shim_processes(),
            &format!("{} serving the pod", self.shim_binary()),
        )
    }

    /// The container's cgroup directory in the hierarchy holding `file` (e.g.
    /// `memory.limit_in_bytes` on v1, `memory.max` on v2).
    pub fn cgroup_file(&self, container_id: &str, file: &str) -> Result<PathBuf> {
        let rel = format!(
            "{}/{container_id}",
            self.cri_config().cgroup_parent.trim_start_matches('/')
        );
        for root in cgroups::hierarchy_roots() {
            let p = root.join(&rel).join(file);
            if p.is_file() {
                return Ok(p);
            }
        }
        anyhow::bail!("no cgroup file {file} for {rel} in any hierarchy")
    }

    /// Pod ip from PodSandboxStatus.
    pub fn pod_ip(&self, pod: &Pod) -> Result<String> {
        let st = self.cri.pod_sandbox_status(&pod.id)?;
        let ip = st
            .status
            .and_then(|s| s.network)
            .map(|n| n.ip)
            .unwrap_or_default();
        anyhow::ensure!(!ip.is_empty(), "pod {} has no IP", pod.id);
        Ok(ip)
    }

    /// Everything a removed pod must not leave.
    pub fn check_leaks(&self) -> Result<()> {
        let pods = self.cri.list_pod_sandboxes()?;
        anyhow::ensure!(
            pods.is_empty(),
            "pod sandboxes left: {:?}",
            pods.iter().map(|p| &p.id).collect::<Vec<_>>()
        );
        let ctrs = self.cri.list_containers(None)?;
        anyhow::ensure!(
            ctrs.is_empty(),
            "containers left: {:?}",
            ctrs.iter().map(|c| &c.id).collect::<Vec<_>>()
        );
        leaks::check(&self.cd, &[], self.shim_binary(), Duration::from_secs(5))?;
        let mut problems = Vec::new();
        let cfg = self.cri_config();
        for cg in cgroups::existing(&cfg.cgroup_parent) {
            for e in std::fs::read_dir(&cg).into_iter().flatten().flatten() {
                if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    problems.push(format!("cgroup left: {}", e.path().display()));
                }
            }
        }
        for port in cfg.net.bridge_ports() {
            problems.push(format!("veth left on {}: {port}", cfg.net.bridge));
        }
        let leases = cri_env::cni_data_dir(&self.cd.dir).join(&cfg.net.name);
        for e in std::fs::read_dir(&leases).into_iter().flatten().flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n != "lock" && !n.starts_with("last_reserved_ip") {
                problems.push(format!("IP lease left: {}", e.path().display()));
            }
        }
        anyhow::ensure!(
            problems.is_empty(),
            "leak check failed:\n  - {}",
            problems.join("\n  - ")
        );
        Ok(())
    }
}

impl Drop for CriCase {
    /// Best effort: stop and remove every pod through CRI (so CNI releases veths and leases).
    fn drop(&mut self) {
        if let Ok(pods) = self.cri.list_pod_sandboxes() {
            for p in pods {
                let _ = self.cri.stop_pod_sandbox(&p.id);
                let _ = self.cri.remove_pod_sandbox(&p.id);
            }
        }
    }
}

/// Reads a whole small file, trimmed.
pub fn read_trim(p: &Path) -> Result<String> {
    Ok(std::fs::read_to_string(p)
        .with_context(|| format!("reading {}", p.display()))?
        .trim()
        .to_string())
}
