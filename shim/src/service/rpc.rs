//! The ttrpc face of the Task service: each RPC calls the matching method of `Inner`, and
//! every answer passes through one place (`done`) for the idle trim and the error mapping.

use async_trait::async_trait;
use containerd_shim_protos::api::{self, Empty};
use containerd_shim_protos::shim_async::Task;
use containerd_shim_protos::ttrpc::r#async::TtrpcContext;

use super::error::{ServiceError, ServiceResult};
use super::{Launcher, TaskService};

type TtrpcResult<T> = ttrpc::Result<T>;

fn done<T>(r: ServiceResult<T>, rpc: &str) -> TtrpcResult<T> {
    crate::idle::after_request();
    r.map_err(|e| {
        log::info!("{rpc}: {e}");
        e.into_ttrpc()
    })
}

#[async_trait]
impl<L: Launcher> Task for TaskService<L> {
    async fn state(
        &self,
        _: &TtrpcContext,
        req: api::StateRequest,
    ) -> TtrpcResult<api::StateResponse> {
        done(self.inner.state(&req), "state")
    }

    async fn create(
        &self,
        _: &TtrpcContext,
        req: api::CreateTaskRequest,
    ) -> TtrpcResult<api::CreateTaskResponse> {
        log::info!("create task {} in {}", req.id, req.bundle);
        done(self.inner.create(req).await, "create")
    }

    async fn start(
        &self,
        _: &TtrpcContext,
        req: api::StartRequest,
    ) -> TtrpcResult<api::StartResponse> {
        done(self.inner.start(req).await, "start")
    }

    async fn delete(
        &self,
        _: &TtrpcContext,
        req: api::DeleteRequest,
    ) -> TtrpcResult<api::DeleteResponse> {
        done(self.inner.delete(&req).await, "delete")
    }

    async fn pids(
        &self,
        _: &TtrpcContext,
        req: api::PidsRequest,
    ) -> TtrpcResult<api::PidsResponse> {
        done(self.inner.pids(&req.id).await, "pids")
    }

    async fn pause(&self, _: &TtrpcContext, req: api::PauseRequest) -> TtrpcResult<Empty> {
        done(
            self.inner.pause(&req.id, true).await.map(|_| Empty::new()),
            "pause",
        )
    }

    async fn resume(&self, _: &TtrpcContext, req: api::ResumeRequest) -> TtrpcResult<Empty> {
        done(
            self.inner.pause(&req.id, false).await.map(|_| Empty::new()),
            "resume",
        )
    }

    async fn checkpoint(
        &self,
        _: &TtrpcContext,
        req: api::CheckpointTaskRequest,
    ) -> TtrpcResult<Empty> {
        done(
            Err(ServiceError::Unimplemented(format!(
                "checkpoint of task {}: amphi does not implement checkpoint/restore",
                req.id
            ))),
            "checkpoint",
        )
    }

    async fn kill(&self, _: &TtrpcContext, req: api::KillRequest) -> TtrpcResult<Empty> {
        done(self.inner.kill(&req).await.map(|_| Empty::new()), "kill")
    }

    async fn exec(&self, _: &TtrpcContext, req: api::ExecProcessRequest) -> TtrpcResult<Empty> {
        done(self.inner.exec(req).map(|_| Empty::new()), "exec")
    }

    async fn resize_pty(&self, _: &TtrpcContext, req: api::ResizePtyRequest) -> TtrpcResult<Empty> {
        done(
            self.inner.resize_pty(&req).map(|_| Empty::new()),
            "resize_pty",
        )
    }

    async fn close_io(&self, _: &TtrpcContext, req: api::CloseIORequest) -> TtrpcResult<Empty> {
        done(self.inner.close_io(&req).map(|_| Empty::new()), "close_io")
    }

    async fn update(&self, _: &TtrpcContext, req: api::UpdateTaskRequest) -> TtrpcResult<Empty> {
        done(
            self.inner.update(&req).await.map(|_| Empty::new()),
            "update",
        )
    }

    async fn wait(
        &self,
        _: &TtrpcContext,
        req: api::WaitRequest,
    ) -> TtrpcResult<api::WaitResponse> {
        done(self.inner.wait(&req).await, "wait")
    }

    async fn stats(
        &self,
        _: &TtrpcContext,
        req: api::StatsRequest,
    ) -> TtrpcResult<api::StatsResponse> {
        done(self.inner.stats(&req.id).await, "stats")
    }

    async fn connect(
        &self,
        _: &TtrpcContext,
        req: api::ConnectRequest,
    ) -> TtrpcResult<api::ConnectResponse> {
        done(self.inner.connect(&req.id), "connect")
    }

    async fn shutdown(&self, _: &TtrpcContext, req: api::ShutdownRequest) -> TtrpcResult<Empty> {
        self.inner.shutdown(req.now);
        Ok(Empty::new())
    }
}
