//! Kubernetes' path through containerd's CRI plugin, driven as kubelet drives it: pods run with
//! the runtime handler `amphi` (what a RuntimeClass selects), native and wasm containers side by
//! side in one pod, one shim per pod, and nothing left once the pod is removed.

use amphi_tests::cri::{busybox_sh, container_config, counter, v1};
use amphi_tests::cri_case::{
    self, CriCase, BUSYBOX, WASM_EXIT, WASM_HELLO, WASM_HTTP, WASM_SLEEPER, WASM_WGET,
};
use amphi_tests::cri_env::{AMPHI_HANDLER, AMPHI_OPTS_HANDLER};
use amphi_tests::{cri_e2e, wasm_images};
use anyhow::{Context, Result};
use std::time::{Duration, Instant};
use v1::ContainerState::{ContainerExited as EXITED, ContainerRunning as RUNNING};

const WAIT: Duration = Duration::from_secs(30);

/// A wasm container with amphi; with runc (which cannot run wasm: the runc validation run) a
/// busybox container printing what the wasm app would, so the rest of the case still checks
/// the test's own expectations.
fn wasm_or_native(
    c: &CriCase,
    name: &str,
    image: &str,
    args: &[&str],
    native: &str,
) -> v1::ContainerConfig {
    if c.handler == AMPHI_HANDLER {
        container_config(name, image, &[], args)
    } else {
        container_config(name, BUSYBOX, &["sh", "-c", native], &[])
    }
}

/// A wasm sleeper (200 s) that stays running, or a busybox stand-in for another handler.
fn sleeper(c: &CriCase) -> v1::ContainerConfig {
    wasm_or_native(
        c,
        "sleeper",
        WASM_SLEEPER,
        &["200"],
        "echo sleeper started; trap 'exit 143' TERM; while true; do sleep 0.1; done",
    )
}

/// A busybox container that sleeps (an exec target).
fn sleeping(name: &str) -> v1::ContainerConfig {
    container_config(name, BUSYBOX, &["sleep", "1000"], &[])
}

/// `ip -4 addr show eth0` inside container `id`.
fn eth0_addr(c: &CriCase, id: &str) -> Result<String> {
    c.cri
        .exec_sync(id, &["ip", "-4", "addr", "show", "eth0"], 10)?
        .ok()
}

/// The pod's sandbox status, which must say READY (`when` ends the message otherwise).
fn ready_sandbox(c: &CriCase, pod: &cri_case::Pod, when: &str) -> Result<v1::PodSandboxStatus> {
    let st = c
        .cri
        .pod_sandbox_status(&pod.id)?
        .status
        .context("no sandbox status")?;
    anyhow::ensure!(
        st.state == v1::PodSandboxState::SandboxReady as i32,
        "sandbox not ready{when}: {st:?}"
    );
    Ok(st)
}

/// A client container `name` (the wasm wget, or busybox wget for another handler) fetching
/// `path` from `addr`; returns its exit status and its log once the response headers show.
fn fetch(
    c: &CriCase,
    pod: &cri_case::Pod,
    name: &str,
    addr: &str,
    path: &str,
) -> Result<(v1::ContainerStatus, Vec<amphi_tests::cri::LogLine>)> {
    let client = c.start_container(
        pod,
        &wasm_or_native(
            c,
            name,
            WASM_WGET,
            &[addr, path],
            &format!("wget -S -q -O - http://{addr}{path} 2>&1"),
        ),
    )?;
    let s = exited(c, &client)?;
    Ok((s, c.wait_log(pod, name, "HTTP/1.")?))
}

fn exited(c: &CriCase, id: &str) -> Result<v1::ContainerStatus> {
    c.cri.wait_container_state(id, EXITED, WAIT)
}

/// A pod with native and wasm containers through their whole CRI life.
fn pod_lifecycle(c: &mut CriCase) -> Result<()> {
    for img in [WASM_HELLO, WASM_SLEEPER, WASM_EXIT] {
        c.import_wasm(img)?;
    }
    let pod = c.run_pod("pod")?;

    // The sandbox: READY, with the handler, an address from the CNI network.
    let st = ready_sandbox(c, &pod, "")?;
    if c.cd.version != amphi_tests::Version::V1_6 {
        anyhow::ensure!(
            st.runtime_handler == c.handler,
            "runtime_handler {:?}",
            st.runtime_handler
        );
    }
    let ip = c.pod_ip(&pod)?;
    let net = &c.cd.cri.as_ref().unwrap().net;
    anyhow::ensure!(
        ip.starts_with(net.subnet.trim_end_matches("0/24")),
        "pod ip {ip} not in {}",
        net.subnet
    );

    // A native container: logs on both streams, handles SIGTERM.
    let app = c.start_container(
        &pod,
        &busybox_sh(
            "app",
            "echo native-out; echo native-err >&2; trap 'echo got-term; exit 0' TERM; while true; do sleep 0.1; done",
        ),
    )?;
    // A wasm container that keeps running (exec target, stats).
    let wasm = c.start_container(&pod, &sleeper(c))?;
    // A wasm container that runs to completion.
    let hello = c.start_container(
        &pod,
        &wasm_or_native(
            c,
            "hello",
            WASM_HELLO,
            &["a1"],
            "echo hello from wasm; echo 'arg[1]=a1'",
        ),
    )?;
    // Exit codes, native and wasm.
    let nexit = c.start_container(
        &pod,
        &container_config("native-exit", BUSYBOX, &["sh", "-c", "exit 5"], &[]),
    )?;
    let wexit = c.start_container(
        &pod,
        &wasm_or_native(
            c,
            "wasm-exit",
            WASM_EXIT,
            &["3"],
            "echo exiting with 3; exit 3",
        ),
    )?;

    c.cri.wait_container_state(&app, RUNNING, WAIT)?;
    c.cri.wait_container_state(&wasm, RUNNING, WAIT)?;
    let s = exited(c, &hello)?;
    anyhow::ensure!(
        s.exit_code == 0,
        "wasm hello exit code {} ({:?})",
        s.exit_code,
        s.reason
    );
    let s = exited(c, &nexit)?;
    anyhow::ensure!(
        s.exit_code == 5,
        "native exit code {} (want 5)",
        s.exit_code
    );
    let s = exited(c, &wexit)?;
    anyhow::ensure!(s.exit_code == 3, "wasm exit code {} (want 3)", s.exit_code);
    anyhow::ensure!(
        // (not ordered: containerd stamps started_at when Start returns, after a quick exit)
        s.finished_at > 0 && s.started_at > 0,
        "times: {s:?}"
    );

    // All containers of the pod (and its pause) are served by one shim: their parent.
    c.expect_one_shim_for(&pod, &[&app, &wasm])?;

    // Logs: the CRI format at the log path, both streams, native and wasm.
    let lines = c.wait_log(&pod, "app", "native-err")?;
    anyhow::ensure!(
        lines
            .iter()
            .any(|l| l.stream == "stdout" && l.tag == "F" && l.content == "native-out"),
        "app log: {lines:?}"
    );
    anyhow::ensure!(
        lines
            .iter()
            .any(|l| l.stream == "stderr" && l.content == "native-err"),
        "app log: {lines:?}"
    );
    let lines = c.wait_log(&pod, "hello", "hello from wasm")?;
    anyhow::ensure!(
        lines
            .iter()
            .any(|l| l.stream == "stdout" && l.content == "arg[1]=a1"),
        "hello log: {lines:?}"
    );
    c.wait_log(&pod, "sleeper", "sleeper started")?;
    c.wait_log(&pod, "wasm-exit", "exiting with 3")?;

    // ExecSync into both: exit codes, output, the pod's network and hostname.
    let r = c
        .cri
        .exec_sync(&app, &["sh", "-c", "echo out; echo err >&2; exit 2"], 10)?;
    anyhow::ensure!(
        r.exit_code == 2 && r.stdout == "out\n" && r.stderr == "err\n",
        "exec in app: {r:?}"
    );
    let addr = eth0_addr(c, &app)?;
    anyhow::ensure!(
        addr.contains(&format!("inet {ip}/")),
        "eth0 of the pod has not {ip}: {addr}"
    );
    let module = if c.handler == AMPHI_HANDLER {
        "/sleeper.wasm"
    } else {
        "/bin/busybox"
    };
    let r = c
        .cri
        .exec_sync(
            &wasm,
            &["sh", "-c", &format!("ls {module} && hostname")],
            10,
        )?
        .ok()?;
    anyhow::ensure!(
        r.contains(module) && r.contains(&pod.config.hostname),
        "exec in the wasm container: {r:?}"
    );
    // The test network keeps traffic on this host: no default route in the pod.
    let routes = c.cri.exec_sync(&app, &["ip", "route"], 10)?.ok()?;
    anyhow::ensure!(
        !routes.contains("default"),
        "the pod has a default route: {routes}"
    );
    let r = c.cri.exec_sync(&wasm, &["sh", "-c", "exit 4"], 10)?;
    anyhow::ensure!(
        r.exit_code == 4,
        "exec exit code in the wasm container: {r:?}"
    );
    // Same network namespace: the wasm container sees the pod's eth0 address.
    let waddr = eth0_addr(c, &wasm)?;
    anyhow::ensure!(
        waddr.contains(&format!("inet {ip}/")),
        "wasm container not in the pod's netns: {waddr}"
    );

    // ContainerStats.
    for id in [&app, &wasm] {
        let st = c.cri.container_stats(id)?;
        let mem = st
            .memory
            .as_ref()
            .map_or(0, |m| counter(&m.working_set_bytes));
        let cpu = st
            .cpu
            .as_ref()
            .map_or(0, |m| counter(&m.usage_core_nano_seconds));
        anyhow::ensure!(mem > 0, "ContainerStats {id}: no working set: {st:?}");
        anyhow::ensure!(cpu > 0, "ContainerStats {id}: no cpu usage: {st:?}");
    }

    // UpdateContainerResources: the new limits land in the container's cgroup.
    let res = v1::LinuxContainerResources {
        memory_limit_in_bytes: 96 << 20,
        cpu_period: 100_000,
        cpu_quota: 50_000,
        cpu_shares: 512,
        ..Default::default()
    };
    for id in [&app, &wasm] {
        c.cri.update_container_resources(id, &res)?;
        let (file, want) = match c.cgroup_file(id, "memory.limit_in_bytes") {
            Ok(f) => (f, (96u64 << 20).to_string()),
            Err(_) => (c.cgroup_file(id, "memory.max")?, (96u64 << 20).to_string()),
        };
        let got = cri_case::read_trim(&file)?;
        anyhow::ensure!(
            got == want,
            "{}: {got} after UpdateContainerResources (want {want})",
            file.display()
        );
        let quota = c
            .cgroup_file(id, "cpu.cfs_quota_us")
            .or_else(|_| c.cgroup_file(id, "cpu.max"))?;
        let q = cri_case::read_trim(&quota)?;
        anyhow::ensure!(
            q == "50000" || q.starts_with("50000 "),
            "{}: {q}",
            quota.display()
        );
    }

    // StopContainer: SIGTERM within the grace period...
    let t = Instant::now();
    c.cri.stop_container(&app, 10)?;
    let s = exited(c, &app)?;
    anyhow::ensure!(
        s.exit_code == 0,
        "app exit code after SIGTERM: {} ({:?})",
        s.exit_code,
        s.reason
    );
    anyhow::ensure!(
        t.elapsed() < Duration::from_secs(8),
        "app took {:?} to stop on SIGTERM",
        t.elapsed()
    );
    c.wait_log(&pod, "app", "got-term")?;
    // ... then SIGKILL when it is ignored.
    let stubborn = c.start_container(
        &pod,
        &container_config(
            "stubborn",
            BUSYBOX,
            &[
                "sh",
                "-c",
                "trap '' TERM; echo ready; while true; do sleep 1; done",
            ],
            &[],
        ),
    )?;
    c.wait_log(&pod, "stubborn", "ready")?;
    let t = Instant::now();
    c.cri.stop_container(&stubborn, 2)?;
    let took = t.elapsed();
    let s = exited(c, &stubborn)?;
    anyhow::ensure!(
        s.exit_code == 137,
        "stubborn exit code {} (want 137, SIGKILL)",
        s.exit_code
    );
    anyhow::ensure!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(10),
        "stop with grace 2s took {took:?}"
    );
    // The wasm container stops on SIGTERM within its grace period (amphi ends the module on
    // SIGTERM: WASI has no signals), with the signal's exit status.
    let t = Instant::now();
    c.cri.stop_container(&wasm, 10)?;
    let took = t.elapsed();
    let s = exited(c, &wasm)?;
    anyhow::ensure!(
        took < Duration::from_secs(8),
        "the wasm container took {took:?} to stop (grace 10s)"
    );
    anyhow::ensure!(
        s.exit_code == 143 || s.exit_code == 0,
        "wasm exit code after SIGTERM: {} ({:?})",
        s.exit_code,
        s.reason
    );

    for id in [&app, &wasm, &hello, &nexit, &wexit, &stubborn] {
        c.cri.remove_container(id)?;
    }
    c.remove_pod(&pod)
}

/// A native server and wasm containers talking over the pod's localhost, both directions.
fn mixed_pod(c: &mut CriCase) -> Result<()> {
    c.import_wasm(WASM_HTTP)?;
    c.import_wasm(WASM_WGET)?;
    let pod = c.run_pod("mixed")?;
    // Native server on 8081.
    let web = c.start_container(
        &pod,
        &container_config("web", BUSYBOX, &["sh", "-c"], &["mkdir -p /www && echo native-says-hi > /www/index.html && exec httpd -f -v -p 8081 -h /www"]),
    )?;
    // wasi:http proxy component on 8080.
    let mut http = wasm_or_native(
        c,
        "http",
        WASM_HTTP,
        &[],
        "mkdir -p /w && for p in from-native from-wasm; do echo \"hello from wasi:http (GET /$p)\" > /w/$p; done && exec httpd -f -p 8080 -h /w",
    );
    http.envs.push(v1::KeyValue {
        key: "PORT".into(),
        value: "8080".into(),
    });
    let wasm_http = c.start_container(&pod, &http)?;
    c.cri.wait_container_state(&web, RUNNING, WAIT)?;
    c.cri.wait_container_state(&wasm_http, RUNNING, WAIT)?;

    // native -> wasm: busybox wget in the native container to the component.
    let got = amphi_tests::cmd::wait_for(
        WAIT,
        "the wasm http server to answer on localhost:8080",
        || {
            let r = c.cri.exec_sync(
                &web,
                &["wget", "-q", "-O", "-", "http://127.0.0.1:8080/from-native"],
                10,
            )?;
            Ok((r.exit_code == 0).then_some(r.stdout))
        },
    )?;
    anyhow::ensure!(
        got.contains("hello from wasi:http") && got.contains(" /from-native)"),
        "native -> wasm got {got:?}"
    );

    // wasm -> native: a wasm client fetching from the native server.
    let (s, lines) = fetch(c, &pod, "wget", "127.0.0.1:8081", "/index.html")?;
    anyhow::ensure!(
        s.exit_code == 0,
        "wasm client exit code {}: {lines:?}",
        s.exit_code
    );
    anyhow::ensure!(
        lines.iter().any(|l| l.content.contains("native-says-hi")),
        "wasm -> native got {lines:?}"
    );

    // wasm -> wasm over localhost too.
    let (s, lines) = fetch(c, &pod, "wget2", "127.0.0.1:8080", "/from-wasm")?;
    anyhow::ensure!(
        s.exit_code == 0 && lines.iter().any(|l| l.content.contains(" /from-wasm)")),
        "wasm -> wasm: {lines:?}"
    );

    c.expect_one_shim_for(&pod, &[&web, &wasm_http])?;
    c.remove_pod(&pod)
}

/// A container over its memory limit is OOM-killed and ContainerStatus says so.
fn oom(c: &mut CriCase) -> Result<()> {
    let pod = c.run_pod("oom")?;
    let mut cfg = busybox_sh(
        "hog",
        "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived",
    );
    cfg.linux
        .as_mut()
        .unwrap()
        .resources
        .as_mut()
        .unwrap()
        .memory_limit_in_bytes = 32 << 20;
    let hog = c.start_container(&pod, &cfg)?;
    let s = exited(c, &hog)?;
    anyhow::ensure!(
        s.reason == "OOMKilled",
        "reason {:?} exit code {} (want OOMKilled)",
        s.reason,
        s.exit_code
    );
    anyhow::ensure!(s.exit_code == 137, "exit code {} (want 137)", s.exit_code);
    c.cri.remove_container(&hog)?;
    c.remove_pod(&pod)
}

/// Many pods through one handler: each has its own shim, address and cleanup.
fn pods_in_parallel(c: &mut CriCase) -> Result<()> {
    let mut pods = Vec::new();
    for i in 0..4 {
        let pod = c.run_pod(&format!("p{i}"))?;
        c.start_container(&pod, &sleeping("s"))?;
        pods.push(pod);
    }
    let ips: std::collections::HashSet<String> =
        pods.iter().map(|p| c.pod_ip(p)).collect::<Result<_>>()?;
    anyhow::ensure!(ips.len() == 4, "pods share addresses: {ips:?}");
    if c.handler == AMPHI_HANDLER {
        let top = amphi_tests::procs::top_level(&c.shim_processes());
        anyhow::ensure!(
            top.len() == 4,
            "expected one shim per pod (4), found {}",
            top.len()
        );
    }
    for p in &pods {
        c.remove_pod(p)?;
    }
    Ok(())
}

/// containerd restarts under running pods (what the node installer does): the pod and its
/// native and wasm containers keep running and stay manageable, then clean up as usual.
fn containerd_restart(c: &mut CriCase) -> Result<()> {
    c.import_wasm(WASM_SLEEPER)?;
    let pod = c.run_pod("restart")?;
    let app = c.start_container(&pod, &sleeping("app"))?;
    let wasm = c.start_container(&pod, &sleeper(c))?;
    c.cri.wait_container_state(&wasm, RUNNING, WAIT)?;
    let before = c.cri.container_pid(&app)?;
    c.cd.restart()?;
    c.reconnect()?;
    ready_sandbox(c, &pod, " after the restart")?;
    for id in [&app, &wasm] {
        c.cri
            .wait_container_state(id, RUNNING, WAIT)
            .with_context(|| format!("{id} after the restart"))?;
    }
    anyhow::ensure!(
        c.cri.container_pid(&app)? == before,
        "the container was restarted, not kept"
    );
    c.cri.exec_sync(&app, &["true"], 10)?.ok()?;
    c.cri.exec_sync(&wasm, &["true"], 10)?.ok()?;
    c.expect_one_shim_for(&pod, &[&app, &wasm])?;
    c.remove_pod(&pod)
}

/// A handler with runtime options (`ConfigPath` naming a bridge-mode shim config, as the
/// README documents): accepted, and ignored for pods, whose network is the CNI plugin's.
fn runtime_options(c: &mut CriCase) -> Result<()> {
    c.import_wasm(WASM_HELLO)?;
    let handler = if c.handler == AMPHI_HANDLER {
        AMPHI_OPTS_HANDLER
    } else {
        c.handler
    };
    let pod = c.run_pod_with("opts", handler)?;
    let app = c.start_container(&pod, &sleeping("app"))?;
    let hello = c.start_container(
        &pod,
        &wasm_or_native(c, "hello", WASM_HELLO, &[], "echo hello from wasm"),
    )?;
    c.cri.wait_container_state(&app, RUNNING, WAIT)?;
    let s = exited(c, &hello)?;
    anyhow::ensure!(s.exit_code == 0, "hello exit code {}", s.exit_code);
    let ip = c.pod_ip(&pod)?;
    let addr = eth0_addr(c, &app)?;
    anyhow::ensure!(
        addr.contains(&format!("inet {ip}/")),
        "eth0 has not the CNI address {ip}: {addr}"
    );
    let bridge = &c.cd.cri.as_ref().unwrap().opts_bridge;
    anyhow::ensure!(
        !std::path::Path::new("/sys/class/net").join(bridge).exists(),
        "the shim config's bridge {bridge} was created for a CRI pod"
    );
    let st = c
        .cri
        .pod_sandbox_status(&pod.id)?
        .status
        .context("no sandbox status")?;
    if c.cd.version != amphi_tests::Version::V1_6 {
        anyhow::ensure!(
            st.runtime_handler == handler,
            "runtime_handler {:?}",
            st.runtime_handler
        );
    }
    c.expect_one_shim_for(&pod, &[&app])?;
    c.cri.remove_container(&hello)?;
    c.remove_pod(&pod)
}

/// A wasm image whose module is an OCI layer (no rootfs file), as wasm tooling for Kubernetes
/// builds them: kubelet's path through CRI reaches the module through the shim's content-store
/// lookup. containerd 1.6 cannot unpack such an image, and runc cannot run wasm: those
/// variants have nothing to check.
fn wasm_layer_image(c: &mut CriCase) -> Result<()> {
    if c.cd.version == amphi_tests::Version::V1_6 || c.handler != AMPHI_HANDLER {
        return Ok(());
    }
    let image = "docker.io/amphi/cri-hello-layer:e2e";
    let module = wasm_images::module("hello", wasm_images::Target::P1)?;
    // CRI before containerd 2.0 lists only images of the node's platform.
    let opts = wasm_images::LayerOptions {
        platform: Some("linux/amd64"),
        ..Default::default()
    };
    wasm_images::import_layer_image(&c.cd, &[&module], opts, image)?;
    amphi_tests::cri::wait_image(&c.cri, image)?;
    let pod = c.run_pod("layer")?;
    let hello = c.start_container(&pod, &container_config("layer-hello", image, &[], &["a1"]))?;
    let s = exited(c, &hello)?;
    anyhow::ensure!(
        s.exit_code == 0,
        "exit code {} ({:?})",
        s.exit_code,
        s.message
    );
    c.wait_log(&pod, "layer-hello", "hello from wasm")?;
    c.wait_log(&pod, "layer-hello", "arg[1]=a1")?;
    c.cri.remove_container(&hello)?;
    c.remove_pod(&pod)
}

cri_e2e!(cri_pod_lifecycle, pod_lifecycle);
cri_e2e!(cri_runtime_options, runtime_options);
cri_e2e!(cri_containerd_restart, containerd_restart);
cri_e2e!(cri_mixed_pod, mixed_pod);
cri_e2e!(cri_oom, oom);
cri_e2e!(cri_pods_in_parallel, pods_in_parallel);
cri_e2e!(cri_wasm_layer_image, wasm_layer_image);
