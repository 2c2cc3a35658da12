//! The shim v2 Task service: every RPC containerd sends, with runc-shim semantics.
//!
//! RPC handlers are plain async methods of [`Inner`] returning `ServiceResult`, so they can be
//! driven without a ttrpc context; `rpc.rs` only adapts and maps errors in one place
//! (`error.rs`). The service keeps the task state (`state.rs`) and orders the events
//! (`exits.rs`); everything it does to the host goes through a [`Launcher`] (`launcher.rs`):
//! runtime-native's spawner in the binary (`native.rs`), a recording double in the unit tests
//! (`tests.rs`). Launcher calls block, so they run on the blocking pool, never on a worker.

mod control;
pub(crate) mod error;
mod exits;
mod launcher;
pub(crate) mod logger;
mod native;
mod reaper;
mod rpc;
mod state;
mod stats;
mod stdio;
#[cfg(test)]
mod tests;
mod workload;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use containerd_shim_protos::api;
use containerd_shim_protos::events::task as ev;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::MessageField;
use runtime_native::rootfs;

use crate::events::{Publisher, TaskEvent};
use error::{ServiceError, ServiceResult};
use launcher::CreateTask;
pub use launcher::Launcher;
pub use native::NativeLauncher;
use reaper::ExitBook;
use state::{Container, Process};
use stdio::StdioPaths;

/// What the service needs of its shim: who it is and where events go.
pub struct ServiceContext {
    pub namespace: String,
    pub id: String,
    pub publisher: Publisher,
    pub shutdown: Arc<tokio::sync::Notify>,
}

pub struct TaskService<L: Launcher = NativeLauncher> {
    inner: Arc<Inner<L>>,
}

/// A container as the service holds it.
type Task<L> = Container<<L as Launcher>::Pending, <L as Launcher>::Cgroup>;

struct Tasks<L: Launcher> {
    containers: HashMap<String, Task<L>>,
    /// Ids whose Create is under way: a second Create of one of them is refused at once.
    creating: HashSet<String>,
}

struct Inner<L: Launcher> {
    ctx: ServiceContext,
    launcher: Arc<L>,
    tasks: Mutex<Tasks<L>>,
    exits: ExitBook,
}

/// Runs a launcher call (or any blocking work) on the blocking pool.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> ServiceResult<T> {
    Ok(tokio::task::spawn_blocking(f).await?)
}

/// The JSON document a request carries in an `Any` (containerd sends OCI structs that way),
/// or InvalidArgument with `what` before the parse error. An absent field is empty input and
/// fails the same way.
fn from_any_json<T: serde::de::DeserializeOwned>(
    any: &MessageField<Any>,
    what: &str,
) -> ServiceResult<T> {
    let data = any.as_ref().map(|a| a.value.as_slice()).unwrap_or_default();
    serde_json::from_slice(data).map_err(|e| ServiceError::InvalidArgument(format!("{what}: {e}")))
}

impl TaskService<NativeLauncher> {
    /// Must be called inside the tokio runtime: starts the reaper.
    pub fn new(ctx: ServiceContext, launcher: NativeLauncher) -> TaskService<NativeLauncher> {
        let inner = Inner::new(ctx, launcher);
        log::info!(
            "task service of shim {} (namespace {}) ready",
            inner.ctx.id,
            inner.ctx.namespace
        );
        let rx = reaper::spawn();
        tokio::spawn(exits::dispatch(inner.clone(), rx));
        // OCI hooks and compile helpers run as children of the shim, so the reaper may collect
        // their exit status first; their waiter then finds it in the exit book
        // (runtime-native/src/process/child_wait.rs).
        let book = inner.exits.clone();
        runtime_native::child_wait::set_reaped_exit_lookup(move |pid| {
            book.claim(pid).map(|c| c as i32)
        });
        TaskService { inner }
    }
}

/// A Create in progress: its id is taken until the container is inserted or Create failed.
struct Reserved<'a, L: Launcher> {
    inner: &'a Inner<L>,
    id: String,
}

impl<L: Launcher> Drop for Reserved<'_, L> {
    fn drop(&mut self) {
        self.inner.lock().creating.remove(&self.id);
    }
}

impl<L: Launcher> Inner<L> {
    fn new(ctx: ServiceContext, launcher: L) -> Arc<Inner<L>> {
        Arc::new(Inner {
            ctx,
            launcher: Arc::new(launcher),
            tasks: Mutex::new(Tasks {
                containers: HashMap::new(),
                creating: HashSet::new(),
            }),
            exits: ExitBook::default(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Tasks<L>> {
        self.tasks.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn publish<E: TaskEvent>(&self, event: E) {
        self.ctx.publisher.task_event(event);
    }

    fn with_container<T>(
        &self,
        id: &str,
        f: impl FnOnce(&mut Task<L>) -> ServiceResult<T>,
    ) -> ServiceResult<T> {
        let mut g = self.lock();
        let c = g
            .containers
            .get_mut(id)
            .ok_or_else(|| ServiceError::NotFound(format!("task {id}")))?;
        f(c)
    }

    fn with_process<T>(
        &self,
        id: &str,
        exec_id: &str,
        f: impl FnOnce(&mut Process<L::Pending>, bool) -> ServiceResult<T>,
    ) -> ServiceResult<T> {
        self.with_container(id, |c| {
            let paused = c.paused();
            let p = c
                .process_mut(exec_id)
                .ok_or_else(|| ServiceError::NotFound(format!("exec {exec_id} of task {id}")))?;
            f(p, paused)
        })
    }

    fn cgroup_of(&self, id: &str) -> ServiceResult<L::Cgroup> {
        self.with_container(id, |c| Ok(c.cgroup().clone()))
    }

    /// Takes `id` for a Create, in the same critical section as the check: two Creates of one
    /// id cannot both go on to build a container.
    fn reserve(&self, id: &str) -> ServiceResult<Reserved<'_, L>> {
        let mut g = self.lock();
        if g.containers.contains_key(id) || !g.creating.insert(id.to_string()) {
            return Err(ServiceError::AlreadyExists(format!("task {id}")));
        }
        Ok(Reserved {
            inner: self,
            id: id.to_string(),
        })
    }

    // ---- Create -------------------------------------------------------------------------

    async fn create(
        self: &Arc<Self>,
        req: api::CreateTaskRequest,
    ) -> ServiceResult<api::CreateTaskResponse> {
        let id = req.id.clone();
        let reserved = self.reserve(&id)?;
        if !req.checkpoint.is_empty() {
            return Err(ServiceError::Unimplemented(
                "checkpoint/restore is not supported by amphi".into(),
            ));
        }
        let bundle = PathBuf::from(&req.bundle);
        let stdio = StdioPaths {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            terminal: req.terminal,
        };
        let task = CreateTask {
            id: id.clone(),
            bundle: bundle.clone(),
            mounts: req
                .rootfs
                .iter()
                .map(|m| rootfs::MountSpec {
                    kind: m.type_.clone(),
                    source: m.source.clone(),
                    target: m.target.clone(),
                    options: m.options.clone(),
                })
                .collect(),
            stdio: stdio.clone(),
            options: req.options.clone().into_option(), // amphi network
        };
        let launcher = self.launcher.clone();
        let launched = blocking(move || launcher.create(task)).await??;
        let pid = launched.init.pid;
        // The insert, the end of the reservation and the claim of an exit the reaper parked
        // while the init had no owner yet, all under one lock (see `Inner::reaped`).
        let exited = {
            let mut g = self.lock();
            let mut container = Container::new(&id, bundle, stdio, launched);
            let exited = self
                .exits
                .claim(pid)
                .is_some_and(|code| container.init_mut().see_exit(code));
            g.containers.insert(id.clone(), container);
            g.creating.remove(&id);
            exited
        };
        drop(reserved);
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
        self.publish(event);
        self.watch_oom(&id);
        if exited {
            // Died before Create returned: as if the exit had come right after the insert.
            self.exit_routed(&id, "");
        }
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
        let (pending, pid) = self.with_process(id, "", |p, _| Ok((p.begin_start(id)?, p.pid())))?;
        let launcher = self.launcher.clone();
        let mut result = blocking(move || launcher.start(pending))
            .await
            .and_then(|r| r);
        if result.is_ok() {
            result = self.poststart_hooks(id, pid).await;
        }
        self.finish_start(id, "", pid, result)
    }

    /// OCI `poststart` hooks, in the runtime once the init started (runtime-native/src/process/hooks.rs).
    async fn poststart_hooks(&self, id: &str, pid: i32) -> ServiceResult<()> {
        let found = self.with_container(id, |c| {
            Ok(runtime_native::hooks::has(c.spec(), "poststart").then(|| {
                (
                    c.spec().clone(),
                    c.bundle().to_path_buf(),
                    c.init().signal_target(),
                )
            }))
        });
        let Ok(Some((spec, bundle, init))) = found else {
            return Ok(());
        };
        debug_assert_eq!(init.pid, pid);
        let (launcher, cid) = (self.launcher.clone(), id.to_string());
        blocking(move || launcher.poststart(&spec, &cid, &bundle, &init)).await?
    }

    /// Common tail of Start: publish the start event, then any exit that raced it.
    fn finish_start(
        self: &Arc<Self>,
        id: &str,
        exec_id: &str,
        pid: i32,
        result: ServiceResult<()>,
    ) -> ServiceResult<api::StartResponse> {
        let exited = self.with_process(id, exec_id, |p, _| Ok(p.end_start(result.is_ok())))?;
        if result.is_ok() {
            if exec_id.is_empty() {
                self.publish(ev::TaskStart {
                    container_id: id.to_string(),
                    pid: pid as u32,
                    ..Default::default()
                });
            } else {
                self.publish(ev::TaskExecStarted {
                    container_id: id.to_string(),
                    exec_id: exec_id.to_string(),
                    pid: pid as u32,
                    ..Default::default()
                });
            }
        }
        if exited {
            self.exit_routed(id, exec_id);
        }
        result.map(|_| api::StartResponse {
            pid: pid as u32,
            ..Default::default()
        })
    }

    // ---- Exec ---------------------------------------------------------------------------

    fn exec(&self, req: api::ExecProcessRequest) -> ServiceResult<()> {
        let what = format!("exec {} process spec", req.exec_id);
        let process: oci_spec::runtime::Process = from_any_json(&req.spec, &what)?;
        let stdio = StdioPaths {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            terminal: req.terminal,
        };
        self.with_container(&req.id, |c| c.add_exec(&req.exec_id, stdio, process))?;
        self.publish(ev::TaskExecAdded {
            container_id: req.id.clone(),
            exec_id: req.exec_id.clone(),
            ..Default::default()
        });
        Ok(())
    }

    async fn start_exec(
        self: &Arc<Self>,
        id: &str,
        exec_id: &str,
    ) -> ServiceResult<api::StartResponse> {
        let task = self.with_container(id, |c| c.begin_exec_start(exec_id))?;
        let launcher = self.launcher.clone();
        // On the blocking pool: planning may compile a module or ask containerd for a layer.
        let launched = match blocking(move || launcher.exec(task)).await.and_then(|r| r) {
            Ok(l) => l,
            Err(e) => {
                let _ = self.with_process(id, exec_id, |p, _| {
                    p.abort_start();
                    Ok(())
                });
                return Err(e);
            }
        };
        let pid = launched.pid;
        // The pid, and an exit the reaper parked before it was known, under one lock.
        let pending = self.with_process(id, exec_id, |p, _| {
            let pending = p.exec_created(launched);
            if let Some(code) = self.exits.claim(pid) {
                p.see_exit(code); // held for the start event
            }
            Ok(pending)
        })?;
        let launcher = self.launcher.clone();
        let result = blocking(move || launcher.start(pending))
            .await
            .and_then(|r| r);
        self.finish_start(id, exec_id, pid, result)
    }
}
