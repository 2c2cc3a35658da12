//! The Task RPCs that act on a task that exists: State, Wait, Pids, Kill, Pause/Resume,
//! Update, Stats, ResizePty, CloseIO, Delete, Shutdown, Connect.

use containerd_shim_protos::api;
use containerd_shim_protos::events::task as ev;
use containerd_shim_protos::protobuf::MessageField;

use super::error::{ServiceError, ServiceResult};
use super::launcher::{Launcher, TaskCgroup};
use super::state::Exit;
use super::{blocking, from_any_json, stats, stdio, Inner};

impl<L: Launcher> Inner<L> {
    // ---- State, Wait, Pids ----------------------------------------------------------------

    pub(super) fn state(&self, req: &api::StateRequest) -> ServiceResult<api::StateResponse> {
        self.with_container(&req.id, |c| {
            let paused = c.paused();
            let bundle = c.bundle().display().to_string();
            let p = c.process(&req.exec_id).ok_or_else(|| {
                ServiceError::NotFound(format!("exec {} of task {}", req.exec_id, req.id))
            })?;
            let mut resp = api::StateResponse {
                id: req.id.clone(),
                exec_id: req.exec_id.clone(),
                bundle,
                pid: p.pid() as u32,
                stdin: p.stdio().stdin.clone(),
                stdout: p.stdio().stdout.clone(),
                stderr: p.stdio().stderr.clone(),
                terminal: p.stdio().terminal,
                ..Default::default()
            };
            resp.status = p.status(paused).into();
            if let Some(exit) = p.exit() {
                resp.exit_status = exit.code;
                resp.exited_at = MessageField::some(exit.at.clone());
            }
            Ok(resp)
        })
    }

    pub(super) async fn wait(&self, req: &api::WaitRequest) -> ServiceResult<api::WaitResponse> {
        let mut rx = self.with_process(&req.id, &req.exec_id, |p, _| Ok(p.subscribe_exit()))?;
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

    pub(super) async fn pids(&self, id: &str) -> ServiceResult<api::PidsResponse> {
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

    pub(super) async fn kill(&self, req: &api::KillRequest) -> ServiceResult<()> {
        let signal = nix::sys::signal::Signal::try_from(req.signal as i32).map_err(|_| {
            ServiceError::InvalidArgument(format!(
                "kill task {}: invalid signal {}",
                req.id, req.signal
            ))
        })?;
        if req.all && req.exec_id.is_empty() {
            let (cg, paused) =
                self.with_container(&req.id, |c| Ok((c.cgroup().clone(), c.paused())))?;
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
                    p.name(),
                    req.id
                )));
            }
            Ok(p.signal_target())
        })?;
        self.launcher.signal(&target, signal)
    }

    pub(super) async fn pause(&self, id: &str, pause: bool) -> ServiceResult<()> {
        let cg = self.with_container(id, |c| {
            c.check_pause(pause)?;
            Ok(c.cgroup().clone())
        })?;
        blocking(move || if pause { cg.freeze() } else { cg.thaw() }).await??;
        self.with_container(id, |c| {
            c.set_paused(pause);
            Ok(())
        })?;
        if pause {
            self.publish(ev::TaskPaused {
                container_id: id.to_string(),
                ..Default::default()
            });
        } else {
            self.publish(ev::TaskResumed {
                container_id: id.to_string(),
                ..Default::default()
            });
        }
        Ok(())
    }

    pub(super) async fn update(&self, req: &api::UpdateTaskRequest) -> ServiceResult<()> {
        let what = format!("update task {}: resources", req.id);
        let resources: oci_spec::runtime::LinuxResources = from_any_json(&req.resources, &what)?;
        let cg = self.cgroup_of(&req.id)?;
        blocking(move || cg.update(&resources)).await??;
        Ok(())
    }

    pub(super) async fn stats(&self, id: &str) -> ServiceResult<api::StatsResponse> {
        let cg = self.cgroup_of(id)?;
        let s = blocking(move || cg.stats()).await??;
        let any = stats::to_any(&s).map_err(ServiceError::Metrics)?;
        Ok(api::StatsResponse {
            stats: MessageField::some(any),
            ..Default::default()
        })
    }

    // ---- ResizePty, CloseIO -------------------------------------------------------------

    pub(super) fn resize_pty(&self, req: &api::ResizePtyRequest) -> ServiceResult<()> {
        self.with_process(&req.id, &req.exec_id, |p, _| match p.pty_master() {
            Some(m) => stdio::resize(m, req.width, req.height),
            None => Ok(()),
        })
    }

    pub(super) fn close_io(&self, req: &api::CloseIORequest) -> ServiceResult<()> {
        self.with_process(&req.id, &req.exec_id, |p, _| {
            if req.stdin {
                p.close_stdin();
            }
            Ok(())
        })
    }

    // ---- Delete, Shutdown, Connect -------------------------------------------------------

    pub(super) async fn delete(
        &self,
        req: &api::DeleteRequest,
    ) -> ServiceResult<api::DeleteResponse> {
        if !req.exec_id.is_empty() {
            let (pid, exit) = self.with_container(&req.id, |c| c.remove_exec(&req.exec_id))?;
            return Ok(delete_response(pid, exit));
        }
        let container = {
            let mut g = self.lock();
            let c = g
                .containers
                .get(&req.id)
                .ok_or_else(|| ServiceError::NotFound(format!("task {}", req.id)))?;
            c.check_delete()?;
            g.containers.remove(&req.id).expect("checked above")
        };
        let (removed, pid, exit) = container.into_removed();
        let exit = exit.unwrap_or_else(|| Exit::now(137));
        let launcher = self.launcher.clone();
        blocking(move || launcher.delete(removed)).await?;
        self.publish(ev::TaskDelete {
            container_id: req.id.clone(),
            pid: pid as u32,
            exit_status: exit.code,
            exited_at: MessageField::some(exit.at.clone()),
            ..Default::default()
        });
        Ok(delete_response(pid, Some(exit)))
    }

    pub(super) fn shutdown(&self, now: bool) {
        let idle = {
            let g = self.lock();
            g.containers.is_empty() && g.creating.is_empty()
        };
        if now || idle {
            self.ctx.shutdown.notify_one();
        }
    }

    pub(super) fn connect(&self, id: &str) -> ServiceResult<api::ConnectResponse> {
        let task_pid = self
            .lock()
            .containers
            .get(id)
            .map(|c| c.init().pid())
            .unwrap_or(0);
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
