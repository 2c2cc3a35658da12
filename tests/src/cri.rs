//! A blocking CRI client (the `k8s-cri` v1 bindings over tonic on containerd's unix socket),
//! used the way kubelet uses the runtime: RunPodSandbox, CreateContainer, ExecSync, ...
//!
//! Each call runs on a private current-thread tokio runtime, so tests stay synchronous.
//! Errors carry the RPC name and the gRPC status message containerd returned.

use anyhow::{Context, Result};
use hyper_util::rt::TokioIo;
use k8s_cri::v1 as cri;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tonic::transport::{Channel, Endpoint, Uri};

pub use k8s_cri::v1;

/// Deadline of one RPC (ExecSync adds its own timeout on top).
pub const RPC_TIMEOUT: Duration = Duration::from_secs(60);

/// A pod sandbox as CreateContainer names it: its id and the config it was run with (the CRI
/// wants both, and they must belong together).
#[derive(Clone, Copy)]
pub struct Sandbox<'a> {
    pub id: &'a str,
    pub config: &'a cri::PodSandboxConfig,
}

pub struct CriClient {
    rt: tokio::runtime::Runtime,
    runtime: RuntimeServiceClient<Channel>,
    images: ImageServiceClient<Channel>,
}

/// `status.message()` with the RPC name, as an anyhow error.
fn rpc_err(name: &str, s: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("CRI {name} failed: {:?}: {}", s.code(), s.message())
}

macro_rules! call {
    ($self:ident, $svc:ident, $method:ident, $name:literal, $req:expr) => {{
        let mut c = $self.$svc.clone();
        let req = $req;
        $self
            .rt
            .block_on(async move { tokio::time::timeout(RPC_TIMEOUT, c.$method(req)).await })
            .map_err(|_| anyhow::anyhow!("CRI {} timed out after {:?}", $name, RPC_TIMEOUT))?
            .map(|r| r.into_inner())
            .map_err(|s| rpc_err($name, s))
    }};
}

impl CriClient {
    /// Connects to the CRI service on `socket` (containerd's gRPC address).
    pub fn connect(socket: &Path) -> Result<CriClient> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let path: PathBuf = socket.to_path_buf();
        let channel = rt
            .block_on(async move {
                Endpoint::try_from("http://[::]:50051")?
                    .connect_timeout(Duration::from_secs(10))
                    .connect_with_connector(tower::service_fn(move |_: Uri| {
                        let path = path.clone();
                        async move {
                            Ok::<_, std::io::Error>(TokioIo::new(
                                tokio::net::UnixStream::connect(path).await?,
                            ))
                        }
                    }))
                    .await
            })
            .with_context(|| format!("connecting to the CRI socket {}", socket.display()))?;
        Ok(CriClient {
            rt,
            runtime: RuntimeServiceClient::new(channel.clone()).max_decoding_message_size(64 << 20),
            images: ImageServiceClient::new(channel).max_decoding_message_size(64 << 20),
        })
    }

    pub fn version(&self) -> Result<cri::VersionResponse> {
        call!(
            self,
            runtime,
            version,
            "Version",
            cri::VersionRequest {
                version: "v1".into()
            }
        )
    }

    /// Status: the runtime's conditions and each runtime handler's features (containerd 2.x
    /// reads them from the handler's `-info`).
    pub fn status(&self) -> Result<cri::StatusResponse> {
        call!(
            self,
            runtime,
            status,
            "Status",
            cri::StatusRequest { verbose: false }
        )
    }

    /// RunPodSandbox with `handler` (the RuntimeClass handler); returns the sandbox id.
    pub fn run_pod_sandbox(&self, config: &cri::PodSandboxConfig, handler: &str) -> Result<String> {
        let req = cri::RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: handler.into(),
        };
        Ok(call!(self, runtime, run_pod_sandbox, "RunPodSandbox", req)?.pod_sandbox_id)
    }

    pub fn pod_sandbox_status(&self, id: &str) -> Result<cri::PodSandboxStatusResponse> {
        let req = cri::PodSandboxStatusRequest {
            pod_sandbox_id: id.into(),
            verbose: true,
        };
        call!(self, runtime, pod_sandbox_status, "PodSandboxStatus", req)
    }

    pub fn stop_pod_sandbox(&self, id: &str) -> Result<()> {
        call!(
            self,
            runtime,
            stop_pod_sandbox,
            "StopPodSandbox",
            cri::StopPodSandboxRequest {
                pod_sandbox_id: id.into()
            }
        )?;
        Ok(())
    }

    pub fn remove_pod_sandbox(&self, id: &str) -> Result<()> {
        call!(
            self,
            runtime,
            remove_pod_sandbox,
            "RemovePodSandbox",
            cri::RemovePodSandboxRequest {
                pod_sandbox_id: id.into()
            }
        )?;
        Ok(())
    }

    pub fn list_pod_sandboxes(&self) -> Result<Vec<cri::PodSandbox>> {
        Ok(call!(
            self,
            runtime,
            list_pod_sandbox,
            "ListPodSandbox",
            cri::ListPodSandboxRequest { filter: None }
        )?
        .items)
    }

    /// CreateContainer in `sandbox`; returns the container id.
    pub fn create_container(
        &self,
        sandbox: Sandbox,
        config: &cri::ContainerConfig,
    ) -> Result<String> {
        let req = cri::CreateContainerRequest {
            pod_sandbox_id: sandbox.id.into(),
            config: Some(config.clone()),
            sandbox_config: Some(sandbox.config.clone()),
        };
        Ok(call!(self, runtime, create_container, "CreateContainer", req)?.container_id)
    }

    /// CreateContainer in `sandbox` + StartContainer; returns the container id. Errors name
    /// the container by its metadata name.
    pub fn create_and_start(
        &self,
        sandbox: Sandbox,
        config: &cri::ContainerConfig,
    ) -> Result<String> {
        let name = container_name(config);
        let id = self
            .create_container(sandbox, config)
            .with_context(|| format!("CreateContainer {name}"))?;
        self.start_container(&id)
            .with_context(|| format!("StartContainer {name} ({id})"))?;
        Ok(id)
    }

    pub fn start_container(&self, id: &str) -> Result<()> {
        call!(
            self,
            runtime,
            start_container,
            "StartContainer",
            cri::StartContainerRequest {
                container_id: id.into()
            }
        )?;
        Ok(())
    }

    /// StopContainer with a grace period of `timeout` seconds (SIGTERM, then SIGKILL).
    pub fn stop_container(&self, id: &str, timeout: i64) -> Result<()> {
        call!(
            self,
            runtime,
            stop_container,
            "StopContainer",
            cri::StopContainerRequest {
                container_id: id.into(),
                timeout
            }
        )?;
        Ok(())
    }

    pub fn remove_container(&self, id: &str) -> Result<()> {
        call!(
            self,
            runtime,
            remove_container,
            "RemoveContainer",
            cri::RemoveContainerRequest {
                container_id: id.into()
            }
        )?;
        Ok(())
    }

    /// The pid of a running container's init, from ContainerStatus' verbose info.
    pub fn container_pid(&self, id: &str) -> Result<i32> {
        let req = cri::ContainerStatusRequest {
            container_id: id.into(),
            verbose: true,
        };
        let r = call!(self, runtime, container_status, "ContainerStatus", req)?;
        info_pid(&r.info).with_context(|| format!("pid of container {id}"))
    }

    /// The pid of a pod's sandbox (pause) process, from PodSandboxStatus' verbose info.
    pub fn sandbox_pid(&self, id: &str) -> Result<i32> {
        let r = self.pod_sandbox_status(id)?;
        info_pid(&r.info).with_context(|| format!("pid of sandbox {id}"))
    }

    pub fn container_status(&self, id: &str) -> Result<cri::ContainerStatus> {
        let req = cri::ContainerStatusRequest {
            container_id: id.into(),
            verbose: true,
        };
        call!(self, runtime, container_status, "ContainerStatus", req)?
            .status
            .ok_or_else(|| anyhow::anyhow!("ContainerStatus of {id}: no status in the reply"))
    }

    pub fn list_containers(&self, sandbox: Option<&str>) -> Result<Vec<cri::Container>> {
        let filter = sandbox.map(|s| cri::ContainerFilter {
            pod_sandbox_id: s.into(),
            ..Default::default()
        });
        Ok(call!(
            self,
            runtime,
            list_containers,
            "ListContainers",
            cri::ListContainersRequest { filter }
        )?
        .containers)
    }

    /// ExecSync with a timeout in seconds (0 = none).
    pub fn exec_sync(&self, id: &str, cmd: &[&str], timeout: i64) -> Result<ExecResult> {
        let req = cri::ExecSyncRequest {
            container_id: id.into(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            timeout,
        };
        let mut c = self.runtime.clone();
        let deadline = RPC_TIMEOUT + Duration::from_secs(timeout.max(0) as u64);
        let r = self
            .rt
            .block_on(async move { tokio::time::timeout(deadline, c.exec_sync(req)).await })
            .map_err(|_| anyhow::anyhow!("CRI ExecSync {cmd:?} in {id} timed out"))?
            .map_err(|s| rpc_err("ExecSync", s))?
            .into_inner();
        Ok(ExecResult {
            stdout: String::from_utf8_lossy(&r.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&r.stderr).into_owned(),
            exit_code: r.exit_code,
        })
    }

    /// Exec: the streaming URL for `cmd` in container `id` (stdout and stderr, and stdin
    /// when `stdin`); see [`crate::cri_stream`].
    pub fn exec(&self, id: &str, cmd: &[&str], stdin: bool) -> Result<String> {
        let req = cri::ExecRequest {
            container_id: id.into(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            tty: false,
            stdin,
            stdout: true,
            stderr: true,
        };
        Ok(call!(self, runtime, exec, "Exec", req)?.url)
    }

    /// Attach: the streaming URL for the output of container `id`'s init.
    pub fn attach(&self, id: &str) -> Result<String> {
        let req = cri::AttachRequest {
            container_id: id.into(),
            stdin: false,
            tty: false,
            stdout: true,
            stderr: true,
        };
        Ok(call!(self, runtime, attach, "Attach", req)?.url)
    }

    /// PortForward: the streaming URL for `ports` of pod `sandbox`.
    pub fn port_forward(&self, sandbox: &str, ports: &[i32]) -> Result<String> {
        let req = cri::PortForwardRequest {
            pod_sandbox_id: sandbox.into(),
            port: ports.to_vec(),
        };
        Ok(call!(self, runtime, port_forward, "PortForward", req)?.url)
    }

    /// ReopenContainerLog: the container's log file is opened anew (after a rotation).
    pub fn reopen_container_log(&self, id: &str) -> Result<()> {
        call!(
            self,
            runtime,
            reopen_container_log,
            "ReopenContainerLog",
            cri::ReopenContainerLogRequest {
                container_id: id.into()
            }
        )?;
        Ok(())
    }

    /// ContainerStats of `id` (read its counters with [`counter`]).
    pub fn container_stats(&self, id: &str) -> Result<cri::ContainerStats> {
        call!(
            self,
            runtime,
            container_stats,
            "ContainerStats",
            cri::ContainerStatsRequest {
                container_id: id.into()
            }
        )?
        .stats
        .ok_or_else(|| anyhow::anyhow!("ContainerStats of {id}: no stats in the reply"))
    }

    pub fn update_container_resources(
        &self,
        id: &str,
        res: &cri::LinuxContainerResources,
    ) -> Result<()> {
        let req = cri::UpdateContainerResourcesRequest {
            container_id: id.into(),
            linux: Some(res.clone()),
            windows: None,
            annotations: HashMap::new(),
        };
        call!(
            self,
            runtime,
            update_container_resources,
            "UpdateContainerResources",
            req
        )?;
        Ok(())
    }

    /// The image's id if the CRI image service knows `image`.
    pub fn image_status(&self, image: &str) -> Result<Option<String>> {
        let req = cri::ImageStatusRequest {
            image: Some(image_spec(image)),
            verbose: false,
        };
        Ok(call!(self, images, image_status, "ImageStatus", req)?
            .image
            .map(|i| i.id))
    }

    /// Polls ContainerStatus until its state is `state`; returns that status.
    pub fn wait_container_state(
        &self,
        id: &str,
        state: cri::ContainerState,
        timeout: Duration,
    ) -> Result<cri::ContainerStatus> {
        crate::cmd::wait_for(timeout, &format!("container {id} to be {state:?}"), || {
            let st = self.container_status(id)?;
            Ok((st.state == state as i32).then_some(st))
        })
    }
}

/// `pid` from the JSON under `info` in a verbose status reply.
fn info_pid(info: &HashMap<String, String>) -> Result<i32> {
    let text = info
        .get("info")
        .ok_or_else(|| anyhow::anyhow!("no \"info\" in the verbose reply"))?;
    let v: serde_json::Value = serde_json::from_str(text).context("verbose info is not JSON")?;
    let pid = v.get("pid").and_then(|p| p.as_i64()).unwrap_or(0);
    anyhow::ensure!(pid > 0, "no pid in the verbose info: {text}");
    Ok(pid as i32)
}

/// Waits until the CRI image service knows `image` (its store follows containerd's image
/// events, so an image imported with `ctr` shows up shortly after).
pub fn wait_image(cri: &CriClient, image: &str) -> Result<()> {
    crate::cmd::wait_for(
        Duration::from_secs(20),
        &format!("CRI to see image {image}"),
        || Ok(cri.image_status(image)?.map(|_| ())),
    )
}

#[derive(Debug, Clone)]
pub struct ExecResult {
    pub stdout: String,
    pub stderr: String,
    pub exit_code: i32,
}

impl ExecResult {
    /// Ok(stdout) when the command exited 0.
    pub fn ok(self) -> Result<String> {
        anyhow::ensure!(
            self.exit_code == 0,
            "exec exited {}: stdout {:?} stderr {:?}",
            self.exit_code,
            self.stdout,
            self.stderr
        );
        Ok(self.stdout)
    }
}

pub fn image_spec(image: &str) -> cri::ImageSpec {
    cri::ImageSpec {
        image: image.into(),
        ..Default::default()
    }
}

/// A pod config as kubelet would send it: metadata, hostname, log dir, cgroup parent, and
/// the pod-level security context (no host namespaces).
pub fn pod_config(
    name: &str,
    uid: &str,
    log_dir: &Path,
    cgroup_parent: &str,
) -> cri::PodSandboxConfig {
    let mut labels = HashMap::new();
    labels.insert("io.kubernetes.pod.name".to_string(), name.to_string());
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: name.into(),
            uid: uid.into(),
            namespace: "default".into(),
            attempt: 0,
        }),
        hostname: name.into(),
        log_directory: log_dir.display().to_string(),
        labels,
        linux: Some(cri::LinuxPodSandboxConfig {
            cgroup_parent: cgroup_parent.into(),
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(pod_namespaces()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The namespaces of a pod's sandbox and of its containers: network and IPC of the pod, a pid
/// namespace of the container's own.
fn pod_namespaces() -> cri::NamespaceOption {
    cri::NamespaceOption {
        network: cri::NamespaceMode::Pod as i32,
        pid: cri::NamespaceMode::Container as i32,
        ipc: cri::NamespaceMode::Pod as i32,
        ..Default::default()
    }
}

/// The metadata name of a container config ("" without metadata).
pub fn container_name(config: &cri::ContainerConfig) -> String {
    config
        .metadata
        .as_ref()
        .map(|m| m.name.clone())
        .unwrap_or_default()
}

/// A container config: `image`, `command` (entrypoint override; empty keeps the image's),
/// `args`, the log file `<name>.log` relative to the pod's log dir.
pub fn container_config(
    name: &str,
    image: &str,
    command: &[&str],
    args: &[&str],
) -> cri::ContainerConfig {
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(image_spec(image)),
        command: command.iter().map(|s| s.to_string()).collect(),
        args: args.iter().map(|s| s.to_string()).collect(),
        log_path: format!("{name}.log"),
        linux: Some(cri::LinuxContainerConfig {
            resources: Some(cri::LinuxContainerResources::default()),
            security_context: Some(cri::LinuxContainerSecurityContext {
                namespace_options: Some(pod_namespaces()),
                ..Default::default()
            }),
        }),
        ..Default::default()
    }
}

/// A busybox container named `name` that runs `sh -c script`.
pub fn busybox_sh(name: &str, script: &str) -> cri::ContainerConfig {
    container_config(name, crate::images::BUSYBOX, &["sh", "-c"], &[script])
}

/// One line of a CRI log file: `<RFC3339Nano time> <stdout|stderr> <F|P> <content>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub time: String,
    pub stream: String,
    pub tag: String,
    pub content: String,
}

/// Parses a CRI-format log file; fails on any line not in that format.
pub fn parse_cri_log(text: &str) -> Result<Vec<LogLine>> {
    text.lines()
        .map(|l| {
            let mut it = l.splitn(4, ' ');
            let (time, stream, tag) = (
                it.next().unwrap_or(""),
                it.next().unwrap_or(""),
                it.next().unwrap_or(""),
            );
            let content = it.next().unwrap_or("");
            anyhow::ensure!(
                time.len() >= 20 && time.as_bytes()[4] == b'-' && time.contains('T'),
                "not a CRI log line (time {time:?}): {l:?}"
            );
            anyhow::ensure!(
                stream == "stdout" || stream == "stderr",
                "not a CRI log line (stream {stream:?}): {l:?}"
            );
            anyhow::ensure!(
                tag == "F" || tag == "P",
                "not a CRI log line (tag {tag:?}): {l:?}"
            );
            Ok(LogLine {
                time: time.into(),
                stream: stream.into(),
                tag: tag.into(),
                content: content.into(),
            })
        })
        .collect()
}

/// A counter of ContainerStats (`UInt64Value`, absent when the runtime reports none), 0 when
/// absent: `st.memory.as_ref().map_or(0, |m| counter(&m.usage_bytes))`.
pub fn counter(v: &Option<cri::UInt64Value>) -> u64 {
    v.as_ref().map_or(0, |v| v.value)
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_cri_log_lines() {
        let t = "2026-11-29T12:00:00.123456789Z stdout F hello world\n2026-11-29T12:00:00.2Z stderr P part\n";
        let v = super::parse_cri_log(t).unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].content, "hello world");
        assert_eq!(v[1].stream, "stderr");
        assert!(super::parse_cri_log("hello\n").is_err());
    }
}
