//! The shim v2 Task service: every RPC containerd sends, with runc-shim semantics.
//!
//! RPC handlers are plain async methods returning `ServiceResult`, so they can be driven
//! without a ttrpc context; the `Task` trait impl at the bottom only adapts and maps errors in
//! one place (`error.rs`). Blocking work (spawning, cgroup files, mounts) runs on the blocking
//! pool, never on a tokio worker.

mod error;
mod exits;
mod logger;
mod reaper;
mod rpc;
mod setup;
mod state;
mod stats;
mod stdio;
mod workload;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use containerd_shim_protos::api;
use containerd_shim_protos::events::task as ev;
use containerd_shim_protos::protobuf::MessageField;
use containerd_shim_protos::topics;
use runtime_native::{rootfs, Cgroup, ExecRequest, Spawner};

use crate::events::Publisher;
use crate::record::ContainerRecord;
use crate::wasm_layers::LayerSource;
use error::{ServiceError, ServiceResult};
use reaper::ExitBook;
use setup::{create_container, teardown};
use state::{Container, Exit, Phase, Process};
use stdio::StdioPaths;

pub struct ServiceContext {
    pub namespace: String,
    pub id: String,
    /// containerd's gRPC socket (`-address`), asked for wasm modules carried as image layers.
    pub containerd_address: String,
    pub spawner: Arc<Spawner>,
    pub publisher: Publisher,
    pub state_root: PathBuf,
    pub shutdown: Arc<tokio::sync::Notify>,
}

pub struct TaskService {
    inner: Arc<Inner>,
}

struct Inner {
    ctx: ServiceContext,
    containers: Mutex<HashMap<String, Container>>,
    exits: ExitBook,
}

fn blocking_err(e: tokio::task::JoinError) -> ServiceError {
    ServiceError::Internal(format!("blocking task failed: {e}"))
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> ServiceResult<T> {
    tokio::task::spawn_blocking(f).await.map_err(blocking_err)
}

impl TaskService {
    /// Must be called inside the tokio runtime: starts the reaper.
    pub fn new(ctx: ServiceContext) -> TaskService {
        let inner = Arc::new(Inner {
            ctx,
            containers: Mutex::new(HashMap::new()),
            exits: ExitBook::default(),
        });
        log::info!(
            "task service of shim {} (namespace {}) ready",
            inner.ctx.id,
            inner.ctx.namespace
        );
        let rx = reaper::spawn();
        tokio::spawn(exits::dispatch(inner.clone(), rx));
        // OCI hooks run as children of the shim, so the reaper may collect their exit status
        // first; the hook runner then finds it in the exit book (runtime-native/src/hooks.rs).
        let book = inner.exits.clone();
        runtime_native::hooks::set_reaped_exit_lookup(move |pid| book.claim(pid).map(|c| c as i32));
        TaskService { inner }
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Container>> {
        self.containers.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn publish(
        &self,
        topic: &'static str,
        event: Box<dyn containerd_shim_protos::protobuf::MessageDyn>,
    ) {
        self.ctx.publisher.publish(topic, event);
    }

    fn with_container<T>(
        &self,
        id: &str,
        f: impl FnOnce(&mut Container) -> ServiceResult<T>,
    ) -> ServiceResult<T> {
        let mut g = self.lock();
        let c = g
            .get_mut(id)
            .ok_or_else(|| ServiceError::NotFound(format!("task {id}")))?;
        f(c)
    }

    fn with_process<T>(
        &self,
        id: &str,
        exec_id: &str,
        f: impl FnOnce(&mut Process, bool) -> ServiceResult<T>,
    ) -> ServiceResult<T> {
        self.with_container(id, |c| {
            let paused = c.paused;
            let p = c
                .process_mut(exec_id)
                .ok_or_else(|| ServiceError::NotFound(format!("exec {exec_id} of task {id}")))?;
            f(p, paused)
        })
    }

    /// Where a task's wasm layers are looked up (see `crate::wasm_layers`).
    fn layer_source(&self, id: &str) -> LayerSource {
        LayerSource {
            address: self.ctx.containerd_address.clone(),
            namespace: self.ctx.namespace.clone(),
            container_id: id.to_string(),
        }
    }

    fn cgroup_of(&self, id: &str) -> ServiceResult<Cgroup> {
        self.with_container(id, |c| Ok(c.cgroup.clone()))
    }

    // ---- Create -------------------------------------------------------------------------

    async fn create(
        self: &Arc<Self>,
        req: api::CreateTaskRequest,
    ) -> ServiceResult<api::CreateTaskResponse> {
        let id = req.id.clone();
        if self.lock().contains_key(&id) {
            return Err(ServiceError::AlreadyExists(format!("task {id}")));
        }
        if !req.checkpoint.is_empty() {
            return Err(ServiceError::Unimplemented(
                "checkpoint/restore is not supported by amphi".into(),
            ));
        }
        let bundle = PathBuf::from(&req.bundle);
        let mut record = ContainerRecord {
            id: id.clone(),
            namespace: self.ctx.namespace.clone(),
            bundle: bundle.clone(),
            mounted_rootfs: None,
            cgroup: None,
            init_pid: 0,
            init_start_time: 0,
            network: None,
        };
        let stdio = StdioPaths {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            terminal: req.terminal,
        };
        let mounts: Vec<rootfs::MountSpec> = req
            .rootfs
            .iter()
            .map(|m| rootfs::MountSpec {
                kind: m.type_.clone(),
                source: m.source.clone(),
                target: m.target.clone(),
                options: m.options.clone(),
            })
            .collect();
        let root = self.ctx.state_root.clone();
        let spawner = self.ctx.spawner.clone();
        let rec = record.clone();
        let net_opts = req.options.clone().into_option(); // amphi network
        let layers = self.layer_source(&id);
        let created = blocking(move || {
            create_container(rec, mounts, stdio, &spawner, &root, net_opts, &layers)
        })
        .await?;
        let (container, rec) = match created {
            Ok(v) => v,
            Err(e) => return Err(e),
        };
        record = rec;
        let pid = container.init.pid;
        let _ = record;
        let mut event = ev::TaskCreate {
            container_id: id.clone(),
            bundle: req.bundle.clone(),
            rootfs: req.rootfs.clone(),
            checkpoint: req.checkpoint.clone(),
            pid: pid as u32,
            ..Default::default()
        };
        event.io = MessageField::some(ev::TaskIO {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            terminal: req.terminal,
            ..Default::default()
        });
        {
            let mut g = self.lock();
            g.insert(id.clone(), container);
        }
        self.publish(topics::TASK_CREATE_EVENT_TOPIC, Box::new(event));
        exits::watch_oom(self, &id);
        Ok(api::CreateTaskResponse {
            pid: pid as u32,
            ..Default::default()
        })
    }

    // ---- Start --------------------------------------------------------------------------

    async fn start(self: &Arc<Self>, req: api::StartRequest) -> ServiceResult<api::StartResponse> {
        if req.exec_id.is_empty() {
            self.start_init(&req.id).await
        } else {
            self.start_exec(&req.id, &req.exec_id).await
        }
    }

    async fn start_init(self: &Arc<Self>, id: &str) -> ServiceResult<api::StartResponse> {
        let (pending, pid) = self.with_process(id, "", |p, _| {
            if p.phase != Phase::Created {
                return Err(ServiceError::FailedPrecondition(format!(
                    "task {id} cannot be started: it is {:?}",
                    p.status(false)
                )));
            }
            let pending = p.pending.take().ok_or_else(|| {
                ServiceError::FailedPrecondition(format!("task {id} is starting"))
            })?;
            p.starting = true;
            Ok((pending, p.pid))
        })?;
        let result = blocking(move || pending.start()).await?;
        // OCI poststart hooks (runtime-native/src/hooks.rs).
        let result = match result {
            Ok(()) => self.poststart_hooks(id, pid).await,
            Err(e) => Err(e),
        };
        self.finish_start(id, "", pid, result.map_err(ServiceError::from))
    }

    /// OCI `poststart` hooks, in the runtime once the init started. As runc does, a failing
    /// hook kills the init and fails Start with the hook's output.
    async fn poststart_hooks(&self, id: &str, pid: i32) -> Result<(), runtime_native::Error> {
        let found = self.with_container(id, |c| {
            Ok(runtime_native::hooks::has(&c.spec, "poststart")
                .then(|| (c.spec.clone(), c.bundle.clone(), c.init.signal_target())))
        });
        let Ok(Some((spec, bundle, init))) = found else {
            return Ok(());
        };
        let cid = id.to_string();
        let r = blocking(move || runtime_native::hooks::run_poststart(&spec, &cid, &bundle, pid))
            .await
            .map_err(|e| runtime_native::Error::Container(e.to_string()))?;
        if let Err(m) = r {
            let _ = init.signal(libc::SIGKILL);
            return Err(runtime_native::Error::Container(m));
        }
        Ok(())
    }

    /// Common tail of Start: publish the start event, then any exit that raced it.
    fn finish_start(
        self: &Arc<Self>,
        id: &str,
        exec_id: &str,
        pid: i32,
        result: ServiceResult<()>,
    ) -> ServiceResult<api::StartResponse> {
        let deferred = self.with_process(id, exec_id, |p, _| {
            p.starting = false;
            if result.is_ok() && p.phase == Phase::Created {
                p.phase = Phase::Running;
            }
            Ok(p.deferred_exit.take())
        })?;
        if result.is_ok() {
            if exec_id.is_empty() {
                self.publish(
                    topics::TASK_START_EVENT_TOPIC,
                    Box::new(ev::TaskStart {
                        container_id: id.to_string(),
                        pid: pid as u32,
                        ..Default::default()
                    }),
                );
            } else {
                self.publish(
                    topics::TASK_EXEC_STARTED_EVENT_TOPIC,
                    Box::new(ev::TaskExecStarted {
                        container_id: id.to_string(),
                        exec_id: exec_id.to_string(),
                        pid: pid as u32,
                        ..Default::default()
                    }),
                );
            }
        }
        if let Some(code) = deferred {
            exits::process_exited(self, id, exec_id, code);
        }

        result.map(|_| api::StartResponse {
            pid: pid as u32,
            ..Default::default()
        })
    }

    // ---- Exec ---------------------------------------------------------------------------

    fn exec(&self, req: api::ExecProcessRequest) -> ServiceResult<()> {
        let spec_json = req
            .spec
            .as_ref()
            .map(|a| a.value.clone())
            .unwrap_or_default();
        let process: oci_spec::runtime::Process =
            serde_json::from_slice(&spec_json).map_err(|e| {
                ServiceError::InvalidArgument(format!("exec {} process spec: {e}", req.exec_id))
            })?;
        self.with_container(&req.id, |c| {
            if !c.init.is_alive() || c.init.phase != Phase::Running {
                return Err(ServiceError::FailedPrecondition(format!(
                    "cannot exec in task {}: it is not running",
                    req.id
                )));
            }
            if c.execs.contains_key(&req.exec_id) {
                return Err(ServiceError::AlreadyExists(format!("exec {}", req.exec_id)));
            }
            let mut p = Process::new(
                &req.exec_id,
                StdioPaths {
                    stdin: req.stdin.clone(),
                    stdout: req.stdout.clone(),
                    stderr: req.stderr.clone(),
                    terminal: req.terminal,
                },
            );
            p.exec_spec = Some(process);
            c.execs.insert(req.exec_id.clone(), p);
            Ok(())
        })?;
        self.publish(
            topics::TASK_EXEC_ADDED_EVENT_TOPIC,
            Box::new(ev::TaskExecAdded {
                container_id: req.id.clone(),
                exec_id: req.exec_id.clone(),
                ..Default::default()
            }),
        );
        Ok(())
    }

    async fn start_exec(
        self: &Arc<Self>,
        id: &str,
        exec_id: &str,
    ) -> ServiceResult<api::StartResponse> {
        let (request, rootfs, limits, stdio_paths) = self.with_container(id, |c| {
            let init_pid = c.init.pid;
            let limits = c.limits;
            let spec = c.spec.clone();
            let procs = c.cgroup.procs_files();
            let rootfs = c.bundle.join("rootfs");
            let p = c
                .execs
                .get_mut(exec_id)
                .ok_or_else(|| ServiceError::NotFound(format!("exec {exec_id} of task {id}")))?;
            if p.phase != Phase::Registered {
                return Err(ServiceError::FailedPrecondition(format!(
                    "exec {exec_id} was already started"
                )));
            }
            let process = p.exec_spec.clone().unwrap_or_default();
            p.starting = true;
            Ok((
                ExecRequest {
                    container_id: id.to_string(),
                    exec_id: exec_id.to_string(),
                    init_pid,
                    process,
                    spec,
                    cgroup_procs: procs,
                    workload: runtime_native::Workload::Exec,
                },
                rootfs,
                limits,
                p.stdio.clone(),
            ))
        })?;
        Cgroup::warm_attach_lock(); // see create_container
        let spawner = self.ctx.spawner.clone();
        let paths = stdio_paths.clone();
        let owner = logger::Owner {
            container_id: id.to_string(),
            namespace: self.ctx.namespace.clone(),
        };
        let layers = self.layer_source(id);
        // On the blocking pool: planning may compile a module or ask containerd for a layer.
        let spawned = blocking(move || -> ServiceResult<_> {
            let mut request = request;
            let process = request.process.clone();
            // An exec has no runtime options of its own: the container's annotations apply.
            let settings = workload::SettingsSource {
                options: None,
                annotations: request.spec.annotations().clone(),
            };
            let what = format!(
                "plan of exec {} of task {}",
                request.exec_id, request.container_id
            );
            let plan = workload::bounded(&what, move || {
                let input = workload::PlanInput {
                    rootfs: &rootfs,
                    layers: Some(&layers),
                    limits,
                    settings,
                };
                workload::plan_exec(&input, &process)
            })?;
            request.workload = plan.workload;
            let (mut stdio, holders) = if paths.terminal {
                (runtime_native::Stdio::default(), Default::default())
            } else {
                stdio::open_direct(&paths, &owner)?
            };
            stdio.extra_fds = plan.extra_fds;
            let pending = spawner.spawn_exec(request, stdio)?;
            Ok((pending, holders))
        })
        .await?;
        let (mut pending, holders) = match spawned {
            Ok(v) => v,
            Err(e) => {
                let _ = self.with_process(id, exec_id, |p, _| {
                    p.starting = false;
                    Ok(())
                });
                return Err(e);
            }
        };
        let pid = pending.pid;
        let pidfd = pending.pidfd.take().map(std::sync::Arc::new);
        let master = pending.pty_master.take();
        let pty = match master {
            Some(m) => {
                let dup = m.try_clone().ok();
                let (done, pty_holders) = stdio::spawn_pty_copy(m, &stdio_paths)?;
                Some((dup, done, pty_holders))
            }
            None => None,
        };
        let already = self.with_process(id, exec_id, |p, _| {
            p.pid = pid;
            p.pidfd = pidfd;
            p.phase = Phase::Created;
            p.holders = holders;
            if let Some((dup, done, h)) = pty {
                p.pty_master = dup;
                p.io_done = Some(done);
                p.holders = h;
            }
            Ok(())
        });
        already?;
        if let Some(code) = self.exits.claim(pid) {
            let _ = self.with_process(id, exec_id, |p, _| {
                p.deferred_exit = Some(code);
                Ok(())
            });
        }
        let result = blocking(move || pending.start()).await?;
        self.finish_start(id, exec_id, pid, result.map_err(ServiceError::from))
    }

    // ---- State, Wait, Pids ----------------------------------------------------------------

    fn state(&self, req: &api::StateRequest) -> ServiceResult<api::StateResponse> {
        self.with_container(&req.id, |c| {
            let paused = c.paused;
            let bundle = c.bundle.display().to_string();
            let p = c.process(&req.exec_id).ok_or_else(|| {
                ServiceError::NotFound(format!("exec {} of task {}", req.exec_id, req.id))
            })?;
            let mut resp = api::StateResponse {
                id: req.id.clone(),
                exec_id: req.exec_id.clone(),
                bundle,
                pid: p.pid as u32,
                stdin: p.stdio.stdin.clone(),
                stdout: p.stdio.stdout.clone(),
                stderr: p.stdio.stderr.clone(),
                terminal: p.stdio.terminal,
                ..Default::default()
            };
            resp.status = p.status(paused).into();
            if let Some(exit) = &p.exit {
                resp.exit_status = exit.code;
                resp.exited_at = MessageField::some(exit.at.clone());
            }
            Ok(resp)
        })
    }

    async fn wait(&self, req: &api::WaitRequest) -> ServiceResult<api::WaitResponse> {
        let mut rx = self.with_process(&req.id, &req.exec_id, |p, _| Ok(p.exit_tx.subscribe()))?;
        let exit = loop {
            if let Some(exit) = rx.borrow_and_update().clone() {
                break exit;
            }
            if rx.changed().await.is_err() {
                return Err(ServiceError::NotFound(format!(
                    "task {} was deleted",
                    req.id
                )));
            }
        };
        Ok(api::WaitResponse {
            exit_status: exit.code,
            exited_at: MessageField::some(exit.at),
            ..Default::default()
        })
    }

    async fn pids(&self, id: &str) -> ServiceResult<api::PidsResponse> {
        let cg = self.cgroup_of(id)?;
        let pids = blocking(move || cg.pids()).await??;
        let processes = pids
            .into_iter()
            .map(|pid| api::ProcessInfo {
                pid: pid as u32,
                ..Default::default()
            })
            .collect();
        Ok(api::PidsResponse {
            processes,
            ..Default::default()
        })
    }

    // ---- Kill, Pause, Resume, Update, Stats ---------------------------------------------

    async fn kill(&self, req: &api::KillRequest) -> ServiceResult<()> {
        let signal = nix::sys::signal::Signal::try_from(req.signal as i32).map_err(|_| {
            ServiceError::InvalidArgument(format!(
                "kill task {}: invalid signal {}",
                req.id, req.signal
            ))
        })?;
        if req.all && req.exec_id.is_empty() {
            let (cg, paused) =
                self.with_container(&req.id, |c| Ok((c.cgroup.clone(), c.paused)))?;
            let sig = signal as i32;
            return blocking(move || -> ServiceResult<()> {
                cg.signal_all(sig)?;
                // A frozen cgroup would hold SIGKILL until thawed, as runc does.
                if paused && sig == libc::SIGKILL {
                    cg.thaw()?;
                }
                Ok(())
            })
            .await?;
        }
        let target = self.with_process(&req.id, &req.exec_id, |p, _| {
            if !p.is_alive() {
                return Err(ServiceError::NotFound(format!(
                    "process {} of task {} already finished",
                    if p.exec_id.is_empty() {
                        "init"
                    } else {
                        &p.exec_id
                    },
                    req.id
                )));
            }
            Ok(p.signal_target())
        })?;
        let pid = target.pid;
        target.signal(signal as i32).map_err(|e| match e {
            nix::errno::Errno::ESRCH => {
                ServiceError::NotFound(format!("process {pid} already finished"))
            }
            e => ServiceError::Internal(format!("kill {pid} with {signal}: {e}")),
        })
    }

    async fn pause(&self, id: &str, pause: bool) -> ServiceResult<()> {
        let cg = self.with_container(id, |c| {
            if c.init.phase != Phase::Running {
                return Err(ServiceError::FailedPrecondition(format!(
                    "task {id} is not running"
                )));
            }
            if c.paused == pause {
                return Err(ServiceError::FailedPrecondition(format!(
                    "task {id} is already {}",
                    if pause { "paused" } else { "running" }
                )));
            }
            Ok(c.cgroup.clone())
        })?;
        blocking(move || if pause { cg.freeze() } else { cg.thaw() }).await??;
        self.with_container(id, |c| {
            c.paused = pause;
            Ok(())
        })?;
        if pause {
            self.publish(
                topics::TASK_PAUSED_EVENT_TOPIC,
                Box::new(ev::TaskPaused {
                    container_id: id.to_string(),
                    ..Default::default()
                }),
            );
        } else {
            self.publish(
                topics::TASK_RESUMED_EVENT_TOPIC,
                Box::new(ev::TaskResumed {
                    container_id: id.to_string(),
                    ..Default::default()
                }),
            );
        }
        Ok(())
    }

    async fn update(&self, req: &api::UpdateTaskRequest) -> ServiceResult<()> {
        let data = req
            .resources
            .as_ref()
            .map(|a| a.value.clone())
            .unwrap_or_default();
        let resources: oci_spec::runtime::LinuxResources =
            serde_json::from_slice(&data).map_err(|e| {
                ServiceError::InvalidArgument(format!("update task {}: resources: {e}", req.id))
            })?;
        let cg = self.cgroup_of(&req.id)?;
        blocking(move || cg.update(&resources)).await??;
        Ok(())
    }

    async fn stats(&self, id: &str) -> ServiceResult<api::StatsResponse> {
        let cg = self.cgroup_of(id)?;
        let s = blocking(move || cg.stats()).await??;
        let any = stats::to_any(&s).map_err(ServiceError::Internal)?;
        Ok(api::StatsResponse {
            stats: MessageField::some(any),
            ..Default::default()
        })
    }

    // ---- ResizePty, CloseIO -------------------------------------------------------------

    fn resize_pty(&self, req: &api::ResizePtyRequest) -> ServiceResult<()> {
        self.with_process(&req.id, &req.exec_id, |p, _| match &p.pty_master {
            Some(m) => stdio::resize(m, req.width, req.height),
            None => Ok(()),
        })
    }

    fn close_io(&self, req: &api::CloseIORequest) -> ServiceResult<()> {
        self.with_process(&req.id, &req.exec_id, |p, _| {
            if req.stdin {
                p.holders.stdin_writer = None;
            }
            Ok(())
        })
    }

    // ---- Delete, Shutdown, Connect -------------------------------------------------------

    async fn delete(&self, req: &api::DeleteRequest) -> ServiceResult<api::DeleteResponse> {
        if !req.exec_id.is_empty() {
            let exit = self.with_container(&req.id, |c| {
                let p = c.execs.get(&req.exec_id).ok_or_else(|| {
                    ServiceError::NotFound(format!("exec {} of task {}", req.exec_id, req.id))
                })?;
                if p.is_alive() {
                    return Err(ServiceError::FailedPrecondition(format!(
                        "cannot delete exec {}: it is running",
                        req.exec_id
                    )));
                }
                let p = c.execs.remove(&req.exec_id).expect("checked above");
                Ok((p.pid, p.exit))
            })?;
            return Ok(delete_response(exit.0, exit.1));
        }
        let container = {
            let mut g = self.lock();
            let c = g
                .get(&req.id)
                .ok_or_else(|| ServiceError::NotFound(format!("task {}", req.id)))?;
            if c.init.phase == Phase::Running {
                return Err(ServiceError::FailedPrecondition(format!(
                    "cannot delete task {}: it is running",
                    req.id
                )));
            }
            g.remove(&req.id).expect("checked above")
        };
        let pid = container.init.pid;
        let exit = container
            .init
            .exit
            .clone()
            .unwrap_or_else(|| Exit::now(137));
        let root = self.ctx.state_root.clone();
        let ns = self.ctx.namespace.clone();
        let id = req.id.clone();
        // OCI poststop hooks (runtime-native/src/hooks.rs), after the teardown; a failure is
        // logged and Delete goes on, as the runtime spec says.
        let poststop = runtime_native::hooks::has(&container.spec, "poststop")
            .then(|| (container.spec.clone(), container.bundle.clone()));
        blocking(move || teardown(container, &root, &ns)).await?;
        if let Some((spec, bundle)) = poststop {
            let hid = id.clone();
            let r =
                blocking(move || runtime_native::hooks::run_poststop(&spec, &hid, &bundle)).await?;
            if let Err(e) = r {
                log::warn!("delete task {id}: {e}");
            }
        }
        self.publish(
            topics::TASK_DELETE_EVENT_TOPIC,
            Box::new(ev::TaskDelete {
                container_id: id.clone(),
                pid: pid as u32,
                exit_status: exit.code,
                exited_at: MessageField::some(exit.at.clone()),
                ..Default::default()
            }),
        );
        Ok(delete_response(pid, Some(exit)))
    }

    fn shutdown(&self, now: bool) {
        if now || self.lock().is_empty() {
            self.ctx.shutdown.notify_one();
        }
    }

    fn connect(&self, id: &str) -> ServiceResult<api::ConnectResponse> {
        let task_pid = self.lock().get(id).map(|c| c.init.pid).unwrap_or(0);
        Ok(api::ConnectResponse {
            shim_pid: std::process::id(),
            task_pid: task_pid as u32,
            version: env!("CARGO_PKG_VERSION").to_string(),
            ..Default::default()
        })
    }
}

fn delete_response(pid: i32, exit: Option<Exit>) -> api::DeleteResponse {
    let exit = exit.unwrap_or_else(|| Exit::now(0));
    api::DeleteResponse {
        pid: pid as u32,
        exit_status: exit.code,
        exited_at: MessageField::some(exit.at),
        ..Default::default()
    }
}
