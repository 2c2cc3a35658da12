//! What a real Kubernetes node asks of a runtime handler, through containerd's CRI as kubelet
//! calls it: privileged pods (CNI plugins, storage drivers, node installers), mount propagation
//! of host volumes, host namespaces, the security context (users, groups, a read-only root,
//! namespaced sysctls), the streaming calls (Exec, Attach, PortForward over containerd's
//! streaming server) and log reopening.
//!
//! Over 600 lines on purpose: one test binary per area (each binary is linked and started once,
//! its cases share one fixture image and the CRI helpers), as with tests/tests/wasm.rs.
//!
//! Recursive read-only volumes are not a CRI case: containerd 2.1 (as before 2.4, commit
//! fd7819bcb, backported to 2.2.7 and 2.3.4) introspects the OCI features of
//! `io.containerd.runc.v2` handlers only (2.1.9's internal/cri/server/service.go:403), so its
//! CRI refuses `recursiveReadOnly` for any other handler whatever the handler's `-info` says;
//! `mount_options.rs` checks `rro` through `ctr` on every version instead.
//! Every case also runs against runc's handler with `--ignored`.

use amphi_tests::cri::{busybox_sh, container_config, v1};
use amphi_tests::cri_case::{CriCase, Pod, BUSYBOX};
use amphi_tests::cri_e2e;
use amphi_tests::cri_env::AMPHI_HANDLER;
use amphi_tests::cri_stream::{self, WebSocket, CHANNEL_PROTOCOL};
use amphi_tests::mounts;
use anyhow::{Context, Result};
use nix::mount::{mount, MsFlags};
use std::path::{Path, PathBuf};
use std::time::Duration;
use v1::ContainerState::ContainerRunning as RUNNING;

const WAIT: Duration = Duration::from_secs(30);

fn pod_security(p: &mut v1::PodSandboxConfig) -> &mut v1::LinuxSandboxSecurityContext {
    p.linux
        .get_or_insert_with(Default::default)
        .security_context
        .get_or_insert_with(Default::default)
}

fn container_security(c: &mut v1::ContainerConfig) -> &mut v1::LinuxContainerSecurityContext {
    c.linux
        .get_or_insert_with(Default::default)
        .security_context
        .get_or_insert_with(Default::default)
}

/// A privileged pod (the sandbox must be, for privileged containers).
fn privileged_pod(c: &CriCase, name: &str) -> Result<Pod> {
    c.run_pod_edited(name, c.handler, |p| pod_security(p).privileged = true)
}

/// `sleep` in busybox, privileged when `privileged`, with `mounts`; started and running.
fn sleeper(
    c: &CriCase,
    pod: &Pod,
    name: &str,
    privileged: bool,
    edit: impl FnOnce(&mut v1::ContainerConfig),
) -> Result<String> {
    let mut cfg = container_config(name, BUSYBOX, &["sleep", "100000"], &[]);
    container_security(&mut cfg).privileged = privileged;
    edit(&mut cfg);
    let id = c.start_container(pod, &cfg)?;
    c.cri.wait_container_state(&id, RUNNING, WAIT)?;
    Ok(id)
}

fn sh(c: &CriCase, id: &str, script: &str) -> Result<String> {
    c.cri
        .exec_sync(id, &["sh", "-c", script], 20)?
        .ok()
        .with_context(|| format!("exec {script:?}"))
}

/// A line `Key:\tvalue` of this process's /proc/self/status.
fn host_status(key: &str) -> Result<String> {
    let s = std::fs::read_to_string("/proc/self/status")?;
    s.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .map(|v| v.trim().to_string())
        .with_context(|| format!("no {key} in /proc/self/status"))
}

/// A privileged container has the host's devices, every capability, no seccomp filter and
/// writable /sys and /proc/sys, and may set its (pod's) hostname.
fn privileged(c: &mut CriCase) -> Result<()> {
    let pod = privileged_pod(c, "priv")?;
    let id = sleeper(c, &pod, "priv", true, |_| {})?;
    let out = sh(
        c,
        &id,
        "grep -E '^(CapEff|Seccomp):' /proc/self/status; \
         awk '$2 == \"/sys\" { print \"sys\", $4 }' /proc/self/mounts; \
         echo 1 > /proc/sys/net/ipv4/ip_forward && echo sysctl-write=$(cat /proc/sys/net/ipv4/ip_forward); \
         hostname priv-renamed && echo hostname=$(hostname); \
         ls /dev | tr '\\n' ' '",
    )?;
    let caps = host_status("CapBnd")?;
    anyhow::ensure!(
        out.contains(&format!("CapEff:\t{caps}")),
        "a privileged container has every capability of the host ({caps}):\n{out}"
    );
    anyhow::ensure!(
        out.contains("Seccomp:\t0"),
        "seccomp filter in a privileged container:\n{out}"
    );
    // containerd 2.x mounts /sys read-write for a privileged container; 1.x keeps it read-only
    // (with runc too).
    anyhow::ensure!(
        out.contains("sys rw,") || !c.cd.version.is_v2(),
        "/sys is not writable:\n{out}"
    );
    anyhow::ensure!(
        out.contains("sysctl-write=1"),
        "/proc/sys is not writable:\n{out}"
    );
    anyhow::ensure!(
        out.contains("hostname=priv-renamed"),
        "sethostname refused:\n{out}"
    );
    // Host devices are there (the spec lists every one; the ones a default spec has not).
    let dev = out.lines().last().unwrap_or("");
    for d in ["kmsg", "loop-control", "mem", "ptmx"] {
        if Path::new("/dev").join(d).exists() {
            anyhow::ensure!(
                dev.split(' ').any(|x| x == d),
                "host device /dev/{d} missing in the container: {dev}"
            );
        }
    }
    // A container that is not privileged in the same pod: the default confinement.
    let plain = sleeper(c, &pod, "plain", false, |_| {})?;
    let out = sh(c, &plain, "ls /dev | tr '\\n' ' '")?;
    anyhow::ensure!(
        !out.split(' ').any(|d| d == "kmsg"),
        "host devices without privileged: {out}"
    );
    c.remove_pod(&pod)
}

/// Unmounts everything below a host directory the case mounted on, when dropped.
struct HostMounts(PathBuf);

impl Drop for HostMounts {
    fn drop(&mut self) {
        mounts::unmount_all_under(&self.0);
    }
}

fn tmpfs(target: &Path) -> Result<()> {
    std::fs::create_dir_all(target)?;
    mount(
        Some("tmpfs"),
        target,
        Some("tmpfs"),
        MsFlags::empty(),
        Some("size=1m"),
    )
    .with_context(|| format!("mount tmpfs on {}", target.display()))
}

/// A host directory that is a shared mount of its own (CRI requires one for bidirectional
/// propagation, and a shared or slave one for host-to-container).
fn shared_host_dir(c: &CriCase, name: &str) -> Result<(PathBuf, HostMounts)> {
    let dir = c.cd.dir.join(name);
    std::fs::create_dir_all(&dir)?;
    let guard = HostMounts(dir.clone());
    mount(
        Some(&dir),
        &dir,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .with_context(|| format!("bind {} on itself", dir.display()))?;
    mount(
        None::<&str>,
        &dir,
        None::<&str>,
        MsFlags::MS_SHARED | MsFlags::MS_REC,
        None::<&str>,
    )
    .with_context(|| format!("make {} rshared", dir.display()))?;
    Ok((dir, guard))
}

fn volume(host: &Path, dest: &str, propagation: v1::MountPropagation) -> v1::Mount {
    v1::Mount {
        container_path: dest.into(),
        host_path: host.display().to_string(),
        propagation: propagation as i32,
        ..Default::default()
    }
}

/// The optional fields (`shared:N`, `master:N`) of the root mount in a mountinfo text.
fn root_propagation(mountinfo: &str) -> String {
    mountinfo
        .lines()
        .find(|l| l.split(' ').nth(4) == Some("/"))
        .map(|l| {
            l.split(' ')
                .skip(6)
                .take_while(|f| *f != "-")
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

/// `rprivate`, `rslave` and `rshared` host volumes: a mount made on the host under the volume
/// reaches the rslave and rshared containers, one made in the rshared container reaches the
/// host, and nothing crosses an rprivate volume. The rshared container's root is shared
/// (`rootfsPropagation: rshared`, applied after pivot_root as runc does).
fn mount_propagation(c: &mut CriCase) -> Result<()> {
    use v1::MountPropagation::*;
    let (dir, _guard) = shared_host_dir(c, "propagation")?;
    let pod = privileged_pod(c, "prop")?;
    let mut ids = Vec::new();
    for (name, p) in [
        ("private", PropagationPrivate),
        ("slave", PropagationHostToContainer),
        ("shared", PropagationBidirectional),
    ] {
        let id = sleeper(c, &pod, name, true, |cfg| {
            cfg.mounts.push(volume(&dir, "/vol", p))
        })?;
        ids.push((name, id));
    }

    // Host -> containers.
    tmpfs(&dir.join("from-host"))?;
    std::fs::write(dir.join("from-host/marker"), "host-made")?;
    for (name, id) in &ids {
        let seen = c
            .cri
            .exec_sync(id, &["cat", "/vol/from-host/marker"], 10)?
            .stdout;
        let want = *name != "private";
        anyhow::ensure!(
            seen.contains("host-made") == want,
            "{name} volume: a host mount below it is {}visible in the container ({seen:?})",
            if want { "not " } else { "" }
        );
    }

    // Containers -> host.
    for (name, id) in &ids {
        sh(
            c,
            id,
            &format!(
                "mkdir -p /vol/from-{name} && mount -t tmpfs tmpfs /vol/from-{name} && \
                 echo {name}-made > /vol/from-{name}/marker"
            ),
        )?;
        let on_host =
            std::fs::read_to_string(dir.join(format!("from-{name}/marker"))).unwrap_or_default();
        let want = *name == "shared";
        anyhow::ensure!(
            on_host.contains(&format!("{name}-made")) == want,
            "{name} volume: a container mount below it is {}visible on the host",
            if want { "not " } else { "" }
        );
    }

    // runc re-applies a shared root propagation after pivot_root since 1.2; Debian 12's runc
    // 1.1.5 leaves the root private, so only amphi is held to it here.
    let shared = &ids[2].1;
    let info = sh(c, shared, "cat /proc/self/mountinfo")?;
    let root = root_propagation(&info);
    anyhow::ensure!(
        c.handler != AMPHI_HANDLER || root.contains("shared:"),
        "the root of a container with rootfsPropagation rshared is not shared ({root:?}):\n{info}"
    );
    c.remove_pod(&pod)
}

/// `readlink /proc/self/ns/<ns>` of the test (in the host's namespaces).
fn host_ns(ns: &str) -> Result<String> {
    Ok(std::fs::read_link(format!("/proc/self/ns/{ns}"))?
        .display()
        .to_string())
}

/// hostNetwork, hostPID and hostIPC: the pod's containers are in the host's namespaces (and,
/// with the host's network, its UTS namespace); a default pod is in none of them.
fn host_namespaces(c: &mut CriCase) -> Result<()> {
    use v1::NamespaceMode::{Node, Pod as PodNs};
    let host = |p: &mut v1::PodSandboxConfig| {
        // A pod on the host's network has the host's UTS namespace: no hostname of its own
        // (runc refuses one without a private UTS namespace).
        p.hostname.clear();
        pod_security(p).namespace_options = Some(v1::NamespaceOption {
            network: Node as i32,
            pid: Node as i32,
            ipc: Node as i32,
            ..Default::default()
        })
    };
    let script = "for n in net pid ipc uts; do readlink /proc/self/ns/$n; done";
    let pod = c.run_pod_edited("hostns", c.handler, host)?;
    let id = sleeper(c, &pod, "h", false, |cfg| {
        container_security(cfg).namespace_options = Some(v1::NamespaceOption {
            network: Node as i32,
            pid: Node as i32,
            ipc: Node as i32,
            ..Default::default()
        })
    })?;
    let seen = sh(c, &id, script)?;
    for ns in ["net", "pid", "ipc", "uts"] {
        let h = host_ns(ns)?;
        anyhow::ensure!(
            seen.lines().any(|l| l == h),
            "host {ns} namespace {h} not shared: {seen}"
        );
    }
    // The host's pid 1 is visible with hostPID.
    let comm = sh(c, &id, "cat /proc/1/comm")?;
    let host_comm = std::fs::read_to_string("/proc/1/comm")?;
    anyhow::ensure!(
        comm.trim() == host_comm.trim(),
        "pid 1 is {comm:?}, not the host's {host_comm:?}"
    );
    let _ = PodNs;
    let plain = c.run_pod("isolated")?;
    let id = sleeper(c, &plain, "i", false, |_| {})?;
    let seen = sh(c, &id, script)?;
    for ns in ["net", "pid", "ipc", "uts"] {
        let h = host_ns(ns)?;
        anyhow::ensure!(
            !seen.lines().any(|l| l == h),
            "a default pod shares the host's {ns} namespace: {seen}"
        );
    }
    c.remove_pod(&pod)?;
    c.remove_pod(&plain)
}

/// RunAsUser, RunAsGroup, SupplementalGroups, ReadOnlyRootfs and the pod's namespaced sysctls.
fn security_context(c: &mut CriCase) -> Result<()> {
    let pod = c.run_pod_edited("secctx", c.handler, |p| {
        let l = p.linux.get_or_insert_with(Default::default);
        l.sysctls
            .insert("kernel.shm_rmid_forced".into(), "1".into());
        l.sysctls
            .insert("net.ipv4.ip_local_port_range".into(), "20000 30000".into());
    })?;
    let id = sleeper(c, &pod, "user", false, |cfg| {
        let s = container_security(cfg);
        s.run_as_user = Some(v1::Int64Value { value: 1234 });
        s.run_as_group = Some(v1::Int64Value { value: 5678 });
        s.supplemental_groups = vec![1111, 2222];
        s.readonly_rootfs = true;
    })?;
    let out = sh(
        c,
        &id,
        "grep -E '^(Uid|Gid|Groups):' /proc/self/status; \
         touch /probe 2>&1; echo touch=$?; \
         cat /proc/sys/kernel/shm_rmid_forced /proc/sys/net/ipv4/ip_local_port_range",
    )?;
    anyhow::ensure!(
        out.contains("Uid:\t1234\t1234\t1234\t1234")
            && out.contains("Gid:\t5678\t5678\t5678\t5678"),
        "identity:\n{out}"
    );
    let groups: Vec<&str> = out
        .lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .unwrap_or("")
        .split_whitespace()
        .collect();
    for g in ["1111", "2222"] {
        anyhow::ensure!(
            groups.contains(&g),
            "supplemental group {g} missing: {groups:?}"
        );
    }
    anyhow::ensure!(
        out.contains("Read-only file system") && !out.contains("touch=0"),
        "the root filesystem is writable:\n{out}"
    );
    let mut lines = out.lines().rev();
    let range = lines.next().unwrap_or("");
    let rmid = lines.next().unwrap_or("");
    anyhow::ensure!(
        rmid.trim() == "1" && range.split_whitespace().collect::<Vec<_>>() == ["20000", "30000"],
        "sysctls not applied:\n{out}"
    );
    c.remove_pod(&pod)
}

/// Exec (with and without stdin), Attach and PortForward through containerd's streaming
/// server, as `kubectl exec/attach/port-forward` reach them.
fn streaming(c: &mut CriCase) -> Result<()> {
    let pod = c.run_pod("stream")?;
    let mut cfg = busybox_sh(
        "web",
        "mkdir -p /www && echo forwarded-ok > /www/index.html && httpd -p 8090 -h /www && \
         i=0; while true; do echo tick-$i; i=$((i+1)); sleep 0.2; done",
    );
    container_security(&mut cfg).privileged = false;
    let id = c.start_container(&pod, &cfg)?;
    c.cri.wait_container_state(&id, RUNNING, WAIT)?;
    c.wait_log(&pod, "web", "tick-")?;

    // Exec: both streams and the exit code in the final status.
    let url = c
        .cri
        .exec(&id, &["sh", "-c", "echo out; echo err >&2; exit 3"], false)?;
    let mut ws = WebSocket::connect(&url, CHANNEL_PROTOCOL, WAIT)?;
    let out = cri_stream::read_output(&mut ws, |o| o.status.is_some())?;
    ws.close();
    anyhow::ensure!(
        out.stdout == "out\n" && out.stderr == "err\n" && out.exit_code() == Some(3),
        "exec: {out:?}"
    );

    // Exec with stdin.
    let url = c.cri.exec(&id, &["head", "-n", "1"], true)?;
    let mut ws = WebSocket::connect(&url, CHANNEL_PROTOCOL, WAIT)?;
    ws.send(0, b"from-stdin\n")?;
    let out = cri_stream::read_output(&mut ws, |o| o.status.is_some())?;
    ws.close();
    anyhow::ensure!(
        out.stdout == "from-stdin\n" && out.exit_code() == Some(0),
        "exec with stdin: {out:?}"
    );

    // Attach: the running init's output.
    let url = c.cri.attach(&id)?;
    let mut ws = WebSocket::connect(&url, CHANNEL_PROTOCOL, WAIT)?;
    let out = cri_stream::read_output(&mut ws, |o| o.stdout.matches("tick-").count() >= 2)?;
    ws.close();
    anyhow::ensure!(out.stdout.contains("tick-"), "attach: {out:?}");

    // PortForward: an HTTP request to the pod's port 8090.
    let url = c.cri.port_forward(&pod.id, &[8090])?;
    let sep = if url.contains('?') { '&' } else { '?' };
    let mut ws = WebSocket::connect(&format!("{url}{sep}port=8090"), CHANNEL_PROTOCOL, WAIT)?;
    let response =
        cri_stream::forward_http_get(&mut ws, 8090, "/index.html", |r| r.contains("forwarded-ok"))?;
    ws.close();
    anyhow::ensure!(
        response.starts_with("HTTP/1.") && response.contains("forwarded-ok"),
        "port forward: {response:?}"
    );
    c.remove_pod(&pod)
}

/// ReopenContainerLog after the log file was rotated away: the container's output goes to a
/// new file at the log path.
fn reopen_log(c: &mut CriCase) -> Result<()> {
    let pod = c.run_pod("logs")?;
    let cfg = busybox_sh(
        "ticker",
        "i=0; while true; do echo line-$i; i=$((i+1)); sleep 0.1; done",
    );
    let id = c.start_container(&pod, &cfg)?;
    c.wait_log(&pod, "ticker", "line-1")?;
    let log = c.log_file(&pod, "ticker");
    let rotated = log.with_extension("log.1");
    std::fs::rename(&log, &rotated)?;
    c.cri.reopen_container_log(&id)?;
    let lines = c.wait_log(&pod, "ticker", "line-")?;
    let first: u64 = lines
        .first()
        .and_then(|l| l.content.strip_prefix("line-"))
        .and_then(|n| n.parse().ok())
        .context("first line of the reopened log")?;
    anyhow::ensure!(first > 0, "the new log starts at line-{first}");
    let old = std::fs::read_to_string(&rotated)?;
    anyhow::ensure!(
        old.contains("line-0"),
        "the rotated log lost its lines: {old:?}"
    );
    c.remove_pod(&pod)
}

/// The per-mount options (6th field) of the top mount at `dest` in a mountinfo text.
fn mount_options_at<'a>(mountinfo: &'a str, dest: &str) -> Option<&'a str> {
    mountinfo
        .lines()
        .rev()
        .find(|l| l.split_whitespace().nth(4) == Some(dest))
        .and_then(|l| l.split_whitespace().nth(5))
}

/// A user-namespaced pod (`hostUsers: false`: the pod maps 0:200000:65536 for uids and gids).
/// Root in the pod is uid 200000 on the host: the process's uid_map and status read on the
/// host, and a file it makes in a plain volume belongs to 200000 there. The image's files
/// keep their owners inside (idmapped layers). A volume with the pod's mappings is an idmapped
/// mount: the host's root-owned files show as root's, root's new files are stored as host
/// root's. containerd 2.1 hands the sandbox a pinned user namespace to join by path (the
/// intermediate of runtime-native/src/process/userns_join.rs); 1.7 has the sandbox create it and the
/// containers join the sandbox's, and refuses idmapped volumes itself ("idmap mounts not yet
/// supported"), so on 1.7 the pod has the plain volume only and the idmapped-volume checks
/// are 2.1's. 1.6's CRI server ignores `userns_options` (the field is in its CRI API, nothing
/// reads it): such a pod would run with the host's users, so the case is not instantiated there.
fn user_namespace(c: &mut CriCase) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mapping = vec![v1::IdMapping {
        host_id: 200_000,
        container_id: 0,
        length: 65536,
    }];
    let userns = v1::UserNamespace {
        mode: v1::NamespaceMode::Pod as i32,
        uids: mapping.clone(),
        gids: mapping.clone(),
    };
    let with_idmapped_volume = c.cd.version != amphi_tests::Version::V1_7;
    let idmapped = c.cd.dir.join("userns-idmapped");
    std::fs::create_dir_all(&idmapped)?;
    std::fs::write(idmapped.join("owned-by-root"), "host file")?;
    // World-writable, so that the pod's root (an unprivileged uid here) may make a file.
    let plain = c.cd.dir.join("userns-plain");
    std::fs::create_dir_all(&plain)?;
    std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o777))?;
    let pod_userns = userns.clone();
    let userns_for_shared_pid = userns.clone();
    let pod = c.run_pod_edited("userns", c.handler, move |p| {
        pod_security(p)
            .namespace_options
            .get_or_insert_with(Default::default)
            .userns_options = Some(pod_userns);
    })?;
    let id = sleeper(c, &pod, "u", false, |cfg| {
        container_security(cfg)
            .namespace_options
            .get_or_insert_with(Default::default)
            .userns_options = Some(userns);
        if with_idmapped_volume {
            let mut vol = volume(&idmapped, "/vol", v1::MountPropagation::PropagationPrivate);
            vol.uid_mappings = mapping.clone();
            vol.gid_mappings = mapping.clone();
            cfg.mounts.push(vol);
        }
        cfg.mounts.push(volume(
            &plain,
            "/plain",
            v1::MountPropagation::PropagationPrivate,
        ));
    })?;
    let mut script = "cat /proc/self/uid_map; stat -c image=%u:%g /bin/busybox; \
         touch /plain/made-inside && echo plain-write=ok; \
         touch /rootfs-write && echo rootfs-write=ok"
        .to_string();
    let mut wants = vec!["image=0:0", "plain-write=ok", "rootfs-write=ok"];
    if with_idmapped_volume {
        script += "; stat -c volume=%u:%g /vol/owned-by-root; \
                   touch /vol/made-inside && echo vol-write=ok";
        wants.extend(["volume=0:0", "vol-write=ok"]);
    }
    let out = sh(c, &id, &script)?;
    let map = amphi_tests::procs::first_id_mapping(&out);
    anyhow::ensure!(
        map == ["0", "200000", "65536"],
        "uid_map in the pod:\n{out}"
    );
    for want in wants {
        anyhow::ensure!(out.lines().any(|l| l == want), "{want} missing:\n{out}");
    }
    // Seen from the host.
    let pid = c.cri.container_pid(&id)?;
    for file in ["uid_map", "gid_map"] {
        let m = std::fs::read_to_string(format!("/proc/{pid}/{file}"))?;
        anyhow::ensure!(
            m.split_whitespace().collect::<Vec<_>>() == ["0", "200000", "65536"],
            "/proc/{pid}/{file} on the host: {m:?}"
        );
    }
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    anyhow::ensure!(
        status.contains("Uid:\t200000\t200000\t200000\t200000")
            && status.contains("Gid:\t200000\t200000\t200000\t200000"),
        "root in the pod is not host uid/gid 200000:\n{status}"
    );
    expect_host_owner(
        &plain.join("made-inside"),
        (200_000, 200_000),
        "in a plain volume",
    )?;
    if with_idmapped_volume {
        idmapped_volume_seen_from_host(pid, &idmapped)?;
    }
    c.remove_pod(&pod)?;
    shared_pid_user_namespace(c, userns_for_shared_pid)
}

/// Fails unless the file root made `place` (at `path` on the host) is owned by `want`
/// (uid, gid) on the host.
fn expect_host_owner(path: &Path, want: (u32, u32), place: &str) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let made = std::fs::metadata(path)?;
    let owner = (made.uid(), made.gid());
    anyhow::ensure!(
        owner == want,
        "a file root made {place} is owned by {owner:?} on the host, not {want:?}"
    );
    Ok(())
}

/// The idmapped volume `/vol` of the container `pid`, whose host directory is `dir`: root's
/// new file is stored as host root's, and mountinfo marks the mount idmapped (not `/plain`).
fn idmapped_volume_seen_from_host(pid: i32, dir: &Path) -> Result<()> {
    expect_host_owner(&dir.join("made-inside"), (0, 0), "in the idmapped volume")?;
    let mountinfo = std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))?;
    let idmapped_opts = mount_options_at(&mountinfo, "/vol").unwrap_or_default();
    let plain_opts = mount_options_at(&mountinfo, "/plain").unwrap_or_default();
    anyhow::ensure!(
        idmapped_opts.split(',').any(|o| o == "idmapped")
            && !plain_opts.split(',').any(|o| o == "idmapped"),
        "/vol is not an idmapped mount (or /plain is): /vol {idmapped_opts:?}, \
         /plain {plain_opts:?}\n{mountinfo}"
    );
    Ok(())
}

/// Namespace options (of a pod or of its container) for the pod's pid namespace, in the user
/// namespace `userns`.
fn share_pid_in_userns(ns: &mut Option<v1::NamespaceOption>, userns: v1::UserNamespace) {
    let ns = ns.get_or_insert_with(Default::default);
    ns.userns_options = Some(userns);
    ns.pid = v1::NamespaceMode::Pod as i32;
}

/// A user-namespaced pod that shares its pid namespace (`shareProcessNamespace`): the
/// container joins the sandbox's pid namespace by path together with the pod's user namespace,
/// sees the pause process as pid 1 and may still mount its /proc (both belong to the pod's
/// user namespace).
fn shared_pid_user_namespace(c: &mut CriCase, userns: v1::UserNamespace) -> Result<()> {
    let pod_userns = userns.clone();
    let pod = c.run_pod_edited("userns-pid", c.handler, move |p| {
        share_pid_in_userns(&mut pod_security(p).namespace_options, pod_userns)
    })?;
    let id = sleeper(c, &pod, "p", false, |cfg| {
        share_pid_in_userns(&mut container_security(cfg).namespace_options, userns)
    })?;
    let out = sh(
        c,
        &id,
        "cat /proc/self/uid_map; tr '\\0' ' ' < /proc/1/cmdline; echo",
    )?;
    let map = amphi_tests::procs::first_id_mapping(&out);
    let init = out.lines().nth(1).unwrap_or("");
    anyhow::ensure!(
        map == ["0", "200000", "65536"] && init.contains("pause"),
        "shared pid namespace in a user-namespaced pod:\n{out}"
    );
    let pid = c.cri.container_pid(&id)?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    anyhow::ensure!(
        status.contains("Uid:\t200000\t200000\t200000\t200000"),
        "root of the shared-pid pod is not host uid 200000:\n{status}"
    );
    c.remove_pod(&pod)
}

cri_e2e!(cri_privileged, privileged);
cri_e2e!(cri_mount_propagation, mount_propagation);
cri_e2e!(cri_host_namespaces, host_namespaces);
cri_e2e!(cri_security_context, security_context);
cri_e2e!(cri_streaming, streaming);
cri_e2e!(cri_reopen_log, reopen_log);
cri_e2e!(cri_user_namespace, user_namespace, since_1_7);
