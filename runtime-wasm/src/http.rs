//! `wasi:http/incoming-handler` components served over HTTP/1.1 with hyper.
//!
//! Port from `PORT` in the container env (default 8080), bound on 0.0.0.0. Every
//! request gets a fresh instance from the `ProxyPre`. On SIGTERM/SIGINT: stop
//! accepting, let in-flight requests and their guest tasks finish, exit 0.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use wasmtime::component::ResourceTable;
use wasmtime::Store;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpView};

use crate::context::{CompState, RunContext};
use crate::loaded::Loaded;

pub const DEFAULT_PORT: u16 = 8080;

struct Server {
    name: String,
    pre: ProxyPre<CompState>,
    ctx: RunContext,
    /// One clone per running guest task; drain waits for the count to drop to 1.
    inflight: Arc<()>,
}

pub(crate) fn serve(loaded: &Loaded, pre: ProxyPre<CompState>, ctx: RunContext) -> i32 {
    let port = match ctx.env_var("PORT") {
        None => DEFAULT_PORT,
        Some(p) => match p.parse::<u16>() {
            Ok(p) => p,
            Err(_) => {
                ctx.report(&format!(
                    "amphi: wasm http {}: invalid PORT {p:?}",
                    loaded.name
                ));
                return 1;
            }
        },
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            ctx.report(&format!(
                "amphi: wasm http {}: tokio runtime: {e}",
                loaded.name
            ));
            return 1;
        }
    };
    let shared = loaded.shared.clone();
    let mut drain = shared.drain.subscribe();
    let server = Arc::new(Server {
        name: loaded.name.clone(),
        pre,
        ctx,
        inflight: Arc::new(()),
    });
    rt.block_on(async move {
        let listener = match tokio::net::TcpListener::bind(("0.0.0.0", port)).await {
            Ok(l) => l,
            Err(e) => {
                server.ctx.report(&format!(
                    "amphi: wasm http {}: bind 0.0.0.0:{port}: {e}",
                    server.name
                ));
                return 1;
            }
        };
        server.ctx.report(&format!(
            "amphi: {}: serving wasi:http/incoming-handler on http://0.0.0.0:{port}",
            server.name
        ));
        let mut conns = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                _ = drain.wait_for(|d| *d) => break,
                accepted = listener.accept() => {
                    let (stream, _) = match accepted {
                        Ok(a) => a,
                        Err(e) => {
                            log::warn!("wasm http: accept: {e}");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let server = server.clone();
                    let mut drain = shared.drain.subscribe();
                    conns.spawn(async move {
                        let svc = hyper::service::service_fn(move |req| {
                            let server = server.clone();
                            async move { Ok::<_, Infallible>(server.handle(req).await) }
                        });
                        let conn = http1::Builder::new()
                            .keep_alive(true)
                            .serve_connection(TokioIo::new(stream), svc);
                        tokio::pin!(conn);
                        tokio::select! {
                            _ = conn.as_mut() => return,
                            _ = drain.wait_for(|d| *d) => conn.as_mut().graceful_shutdown(),
                        }
                        let _ = conn.await;
                    });
                }
            }
        }
        drop(listener);
        while conns.join_next().await.is_some() {}
        while Arc::strong_count(&server.inflight) > 1 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        0
    })
}

fn error_response(status: StatusCode, msg: String) -> Response<HyperOutgoingBody> {
    let body = Full::new(Bytes::from(msg))
        .map_err(|never: Infallible| match never {})
        .boxed_unsync();
    let mut r = Response::new(body);
    *r.status_mut() = status;
    r
}

impl Server {
    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<HyperOutgoingBody> {
        match self.clone().handle_inner(req).await {
            Ok(r) => r,
            Err(e) => {
                self.ctx.report(&format!(
                    "amphi: wasm http {}: request {}",
                    self.name,
                    crate::loaded::describe_failure(&e)
                ));
                error_response(StatusCode::INTERNAL_SERVER_ERROR, "internal error\n".into())
            }
        }
    }

    async fn handle_inner(
        self: Arc<Self>,
        req: Request<Incoming>,
    ) -> wasmtime::Result<Response<HyperOutgoingBody>> {
        let wasi = self
            .ctx
            .wasi_builder()
            .map_err(|e| wasmtime::format_err!("{e}"))?
            .build();
        let state = CompState {
            wasi,
            table: ResourceTable::new(),
            http: WasiHttpCtx::new(),
            limits: self.ctx.limits(),
        };
        let mut store = Store::new(self.pre.engine(), state);
        store.limiter(|s| &mut s.limits);
        store.set_epoch_deadline(1);
        store.epoch_deadline_trap();
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let req = store
            .data_mut()
            .http()
            .new_incoming_request(Scheme::Http, req)?;
        let out = store.data_mut().http().new_response_outparam(sender)?;
        let pre = self.pre.clone();
        let token = self.inflight.clone();
        let task = tokio::task::spawn(async move {
            let _token = token;
            let proxy = pre.instantiate_async(&mut store).await?;
            proxy
                .wasi_http_incoming_handler()
                .call_handle(&mut store, req, out)
                .await
        });
        match receiver.await {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(code)) => Err(wasmtime::format_err!("guest returned error code {code:?}")),
            Err(_) => {
                let e = match task.await {
                    Ok(Ok(())) => {
                        wasmtime::format_err!("guest never invoked `response-outparam::set`")
                    }
                    Ok(Err(e)) => e,
                    Err(e) => wasmtime::format_err!("guest task: {e}"),
                };
                Err(e)
            }
        }
    }
}
