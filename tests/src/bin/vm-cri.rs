//! The CRI pod lifecycle as kubelet drives it, for the cgroup v2 guest (`tests/vm/`), where no
//! crictl exists: RunPodSandbox, CreateContainer, StartContainer, ExecSync, ContainerStats,
//! UpdateContainerResources, StopContainer, RemoveContainer, StopPodSandbox, RemovePodSandbox
//! through containerd's CRI plugin with one runtime handler, checking the cgroup v2 files of
//! the pod on the way and that none of its container cgroups is left at the end.
//!
//!   vm-cri SOCKET HANDLER POD_NAME CGROUP_PARENT BUSYBOX_IMAGE [WASM_IMAGE]
//!
//! With WASM_IMAGE (a busybox rootfs with `/sleeper.wasm`) a wasm container joins the pod.
//! Pods use the host network: the guest has no CNI plugins, and the network is not what this
//! checks. Prints one line per step; exits 1 with the reason on the first failed check.

use amphi_tests::cmd::wait_for;
use amphi_tests::cri::{self, container_config, v1, CriClient};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(120);

/// The cgroup v2 directory of a process, from its `/proc/PID/cgroup` (`0::/path`).
fn cgroup_dir(pid: i32) -> Result<PathBuf> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .with_context(|| format!("reading /proc/{pid}/cgroup"))?;
    let rel = text
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .with_context(|| format!("no cgroup v2 line in /proc/{pid}/cgroup: {text:?}"))?;
    Ok(Path::new("/sys/fs/cgroup").join(rel.trim_start_matches('/')))
}

fn read(dir: &Path, file: &str) -> Result<String> {
    let p = dir.join(file);
    Ok(std::fs::read_to_string(&p)
        .with_context(|| format!("reading {}", p.display()))?
        .trim()
        .to_string())
}

fn expect_file(dir: &Path, file: &str, want: &str) -> Result<()> {
    let got = read(dir, file)?;
    anyhow::ensure!(
        got == want,
        "{}/{file} is {got:?}, want {want:?}",
        dir.display()
    );
    println!("vm-cri: {file} = {got}");
    Ok(())
}

/// A container of a pod without CNI: the host's network namespace, as the sandbox's.
fn host_network_container(
    name: &str,
    image: &str,
    command: &[&str],
    resources: Option<v1::LinuxContainerResources>,
) -> v1::ContainerConfig {
    let mut c = container_config(name, image, command, &[]);
    if let Some(l) = c.linux.as_mut() {
        if resources.is_some() {
            l.resources = resources;
        }
        if let Some(ns) = l
            .security_context
            .as_mut()
            .and_then(|sc| sc.namespace_options.as_mut())
        {
            ns.network = v1::NamespaceMode::Node as i32;
        }
    }
    c
}

fn resources(memory: i64, quota: i64) -> v1::LinuxContainerResources {
    v1::LinuxContainerResources {
        memory_limit_in_bytes: memory,
        cpu_quota: quota,
        cpu_period: 100_000,
        cpu_shares: 512,
        ..Default::default()
    }
}

struct Pod<'a> {
    cri: &'a CriClient,
    config: v1::PodSandboxConfig,
    id: String,
}

impl Pod<'_> {
    /// Creates and starts a container; returns (id, init pid, cgroup dir).
    fn start(&self, config: v1::ContainerConfig) -> Result<(String, i32, PathBuf)> {
        let pod = cri::Sandbox {
            id: &self.id,
            config: &self.config,
        };
        let id = self.cri.create_and_start(pod, &config)?;
        let name = cri::container_name(&config);
        self.cri
            .wait_container_state(&id, v1::ContainerState::ContainerRunning, WAIT)?;
        let pid = self.cri.container_pid(&id)?;
        let dir = cgroup_dir(pid)?;
        println!(
            "vm-cri: container {name} running, pid {pid}, cgroup {}",
            dir.display()
        );
        Ok((id, pid, dir))
    }

    fn stop_and_remove(&self, id: &str, dir: &Path) -> Result<()> {
        self.cri.stop_container(id, 2)?;
        let st = self
            .cri
            .wait_container_state(id, v1::ContainerState::ContainerExited, WAIT)?;
        println!("vm-cri: container {id} exited {}", st.exit_code);
        self.cri.remove_container(id)?;
        wait_for(WAIT, &format!("{} to be removed", dir.display()), || {
            Ok((!dir.exists()).then_some(()))
        })
    }
}

fn run(args: &[String]) -> Result<()> {
    let [socket, handler, name, parent, busybox, rest @ ..] = args else {
        anyhow::bail!(
            "usage: vm-cri SOCKET HANDLER POD_NAME CGROUP_PARENT BUSYBOX_IMAGE [WASM_IMAGE]"
        );
    };
    let wasm = rest.first();
    let cri = CriClient::connect(Path::new(socket))?;
    println!("vm-cri: {:?}", cri.version()?.runtime_version);
    for image in [Some(busybox), wasm].into_iter().flatten() {
        cri::wait_image(&cri, image)?;
    }

    let log_dir = Path::new("/tmp/vm-cri-logs").join(name);
    std::fs::create_dir_all(&log_dir)?;
    let mut config = cri::pod_config(name, &format!("uid-{name}"), &log_dir, parent);
    // As kubelet for a host-network pod: no hostname (the UTS namespace is the node's; runc
    // refuses one, amphi ignores it with a warning).
    config.hostname.clear();
    if let Some(ns) = config
        .linux
        .as_mut()
        .and_then(|l| l.security_context.as_mut())
        .and_then(|sc| sc.namespace_options.as_mut())
    {
        ns.network = v1::NamespaceMode::Node as i32;
    }
    let id = cri
        .run_pod_sandbox(&config, handler)
        .with_context(|| format!("RunPodSandbox with handler {handler}"))?;
    let pod = Pod {
        cri: &cri,
        config,
        id,
    };
    let sandbox_dir = cgroup_dir(cri.sandbox_pid(&pod.id)?)?;
    println!("vm-cri: sandbox {} in {}", pod.id, sandbox_dir.display());
    let parent_dir = Path::new("/sys/fs/cgroup").join(parent.trim_start_matches('/'));
    anyhow::ensure!(
        sandbox_dir.starts_with(&parent_dir),
        "the sandbox's cgroup {} is not below the pod's cgroup parent {}",
        sandbox_dir.display(),
        parent_dir.display()
    );

    let app = host_network_container(
        "app",
        busybox,
        &["sleep", "3600"],
        Some(resources(64 << 20, 50_000)),
    );
    let (app_id, _, app_dir) = pod.start(app)?;
    anyhow::ensure!(
        app_dir.starts_with(&parent_dir),
        "the container's cgroup {} is not below {}",
        app_dir.display(),
        parent_dir.display()
    );
    expect_file(&app_dir, "memory.max", "67108864")?;
    expect_file(&app_dir, "cpu.max", "50000 100000")?;

    let out = cri
        .exec_sync(
            &app_id,
            &["sh", "-c", "echo exec-in-$(cat /proc/1/comm)"],
            60,
        )?
        .ok()?;
    anyhow::ensure!(out.trim() == "exec-in-sleep", "ExecSync printed {out:?}");
    println!("vm-cri: ExecSync {}", out.trim());

    let stats = cri.container_stats(&app_id)?;
    let usage = stats
        .memory
        .as_ref()
        .map_or(0, |m| cri::counter(&m.usage_bytes));
    anyhow::ensure!(
        usage > 0,
        "ContainerStats reports no memory usage: {stats:?}"
    );
    println!("vm-cri: ContainerStats memory usage {usage}");

    cri.update_container_resources(&app_id, &resources(128 << 20, 20_000))?;
    expect_file(&app_dir, "memory.max", "134217728")?;
    expect_file(&app_dir, "cpu.max", "20000 100000")?;

    let mut wasm_container = None;
    if let Some(image) = wasm {
        let w = host_network_container("wasm", image, &["/sleeper.wasm", "100000"], None);
        let (wid, _, wdir) = pod.start(w)?;
        anyhow::ensure!(
            wdir.starts_with(&parent_dir),
            "wasm cgroup {}",
            wdir.display()
        );
        wasm_container = Some((wid, wdir));
    }
    if let Some((wid, wdir)) = &wasm_container {
        pod.stop_and_remove(wid, wdir)?;
    }
    pod.stop_and_remove(&app_id, &app_dir)?;

    cri.stop_pod_sandbox(&pod.id)?;
    cri.remove_pod_sandbox(&pod.id)?;
    anyhow::ensure!(
        !cri.list_pod_sandboxes()?.iter().any(|s| s.id == pod.id),
        "sandbox {} still listed after RemovePodSandbox",
        pod.id
    );
    wait_for(WAIT, "the sandbox's cgroup to be removed", || {
        Ok((!sandbox_dir.exists()).then_some(()))
    })?;
    println!("vm-cri: pod {name} removed");
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Err(e) = run(&args) {
        println!("vm-cri: FAIL: {e:#}");
        std::process::exit(1);
    }
}
