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

/// The Task trait's methods, one line each: the RPC, its request and answer, and the call on
/// `Inner` that answers it (`$inner` is bound to `Inner`, or `_`; `$req` to the request).
/// Every method logs the error it returns and passes through `done`; writing them out would be
/// sixteen copies of one eight-line shape. `shutdown` answers without `done`: the server is
/// going away, there is nothing to trim.
macro_rules! task_rpcs {
    ($($rpc:ident($req_ty:ident) -> $resp:ty = |$inner:tt, $req:ident| $answer:expr;)*) => {
        #[async_trait]
        impl<L: Launcher> Task for TaskService<L> {
            $(
                async fn $rpc(&self, _: &TtrpcContext, $req: api::$req_ty) -> TtrpcResult<$resp> {
                    let $inner = &self.inner;
                    done($answer, stringify!($rpc))
                }
            )*

            async fn shutdown(
                &self,
                _: &TtrpcContext,
                req: api::ShutdownRequest,
            ) -> TtrpcResult<Empty> {
                self.inner.shutdown(req.now);
                Ok(Empty::new())
            }
        }
    };
}

/// An answer that carries nothing but success.
fn empty<E>(r: Result<(), E>) -> Result<Empty, E> {
    r.map(|()| Empty::new())
}

task_rpcs! {
    state(StateRequest) -> api::StateResponse = |inner, req| inner.state(&req);
    create(CreateTaskRequest) -> api::CreateTaskResponse = |inner, req| {
        log::info!("create task {} in {}", req.id, req.bundle);
        inner.create(req).await
    };
    start(StartRequest) -> api::StartResponse = |inner, req| inner.start(req).await;
    delete(DeleteRequest) -> api::DeleteResponse = |inner, req| inner.delete(&req).await;
    pids(PidsRequest) -> api::PidsResponse = |inner, req| inner.pids(&req.id).await;
    pause(PauseRequest) -> Empty = |inner, req| empty(inner.pause(&req.id, true).await);
    resume(ResumeRequest) -> Empty = |inner, req| empty(inner.pause(&req.id, false).await);
    checkpoint(CheckpointTaskRequest) -> Empty = |_, req| {
        Err(ServiceError::Unimplemented(format!(
            "checkpoint of task {}: amphi does not implement checkpoint/restore",
            req.id
        )))
    };
    kill(KillRequest) -> Empty = |inner, req| empty(inner.kill(&req).await);
    exec(ExecProcessRequest) -> Empty = |inner, req| empty(inner.exec(req));
    resize_pty(ResizePtyRequest) -> Empty = |inner, req| empty(inner.resize_pty(&req));
    close_io(CloseIORequest) -> Empty = |inner, req| empty(inner.close_io(&req));
    update(UpdateTaskRequest) -> Empty = |inner, req| empty(inner.update(&req).await);
    wait(WaitRequest) -> api::WaitResponse = |inner, req| inner.wait(&req).await;
    stats(StatsRequest) -> api::StatsResponse = |inner, req| inner.stats(&req.id).await;
    connect(ConnectRequest) -> api::ConnectResponse = |inner, req| inner.connect(&req.id);
}
