//! One request: a store and a fresh instance from the serving engine's pool (or an instance
//! kept from an earlier request, [`super::warm`]), within the limits of `[wasm.http]`:
//! - at most `max_instances` run at once (the pool's size); more wait for a slot;
//! - a body larger than `max_body_bytes` answers 413 (at once when Content-Length says so,
//!   else when the stream passes the limit);
//! - a guest still running after `request_timeout_ms` is stopped: 503 if it had not answered,
//!   else its response stream is cut. Its future is dropped (a guest blocked in a host call
//!   unwinds there) and a guest computing traps at the next epoch tick;
//! - a trap or an error from the guest answers 500, and the server goes on.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use tokio::sync::Semaphore;
use wasmtime::component::ResourceTable;
use wasmtime::{Store, UpdateDeadline};
use wasmtime_wasi::filesystem::WasiFilesystemCtx;
use wasmtime_wasi_http::p2::bindings::http::types::{ErrorCode, Scheme};
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpView};

use super::access_log::AccessLog;
use super::body::LimitedBody;
use super::warm::{Warm, WarmInstances};
use crate::context::{CompState, RunContext};
use crate::settings::WasmSettings;

pub(crate) struct Server {
    name: String,
    pre: ProxyPre<CompState>,
    ctx: RunContext,
    /// The preopened directories, opened once and shared by every request's context.
    preopens: WasiFilesystemCtx,
    slots: Arc<Semaphore>,
    max_body: u64,
    timeout: Option<Duration>,
    fuel: Option<u64>,
    /// Guest tasks running (drain waits for 0; the epoch ticker only ticks above 0).
    inflight: Arc<AtomicUsize>,
    access_log: Option<AccessLog>,
    warm: Arc<WarmInstances>,
}

/// How a guest task ended.
enum GuestEnd {
    Done(wasmtime::Result<()>),
    TimedOut,
}

/// Decrements the in-flight count however the guest task ends (also when it is dropped).
struct InflightGuard(Arc<AtomicUsize>);

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn text_response(status: StatusCode, msg: &str) -> Response<HyperOutgoingBody> {
    let body = Full::new(Bytes::from(msg.to_string()))
        .map_err(|never: Infallible| match never {})
        .boxed_unsync();
    let mut r = Response::new(body);
    *r.status_mut() = status;
    r
}

impl Server {
    pub(crate) fn new(
        name: String,
        pre: ProxyPre<CompState>,
        ctx: RunContext,
        settings: &WasmSettings,
        access_log: Option<AccessLog>,
        preopens: WasiFilesystemCtx,
    ) -> Server {
        let h = &settings.http;
        Server {
            name,
            pre,
            ctx,
            preopens,
            slots: Arc::new(Semaphore::new(h.max_instances as usize)),
            max_body: h.max_body_bytes,
            timeout: (h.request_timeout_ms > 0)
                .then(|| Duration::from_millis(h.request_timeout_ms)),
            fuel: settings.fuel,
            inflight: Arc::new(AtomicUsize::new(0)),
            access_log,
            warm: Arc::new(WarmInstances::new(h.instance_reuse)),
        }
    }

    /// The instances kept between requests (the idle watcher empties them).
    pub(crate) fn warm(&self) -> &Arc<WarmInstances> {
        &self.warm
    }

    /// The count of guest tasks running, for the epoch ticker.
    pub(crate) fn inflight_counter(&self) -> Arc<AtomicUsize> {
        self.inflight.clone()
    }

    /// Guest tasks running now.
    pub(crate) fn inflight(&self) -> usize {
        self.inflight.load(Ordering::SeqCst)
    }

    pub(crate) fn report(&self, msg: &str) {
        self.ctx
            .report(&format!("amphi: wasm http {}: {msg}", self.name));
    }

    pub(crate) async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
    ) -> Response<HyperOutgoingBody> {
        let start = Instant::now();
        let log = self
            .access_log
            .as_ref()
            .map(|_| (req.method().to_string(), req.uri().to_string()));
        let resp = self.clone().respond(req).await;
        if let (Some(l), Some((method, path))) = (&self.access_log, log) {
            l.record(&method, &path, resp.status().as_u16(), start.elapsed());
        }
        resp
    }

    async fn respond(self: Arc<Self>, req: Request<Incoming>) -> Response<HyperOutgoingBody> {
        let declared = req
            .headers()
            .get(hyper::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.max_body) {
            return text_response(StatusCode::PAYLOAD_TOO_LARGE, "request body too large\n");
        }
        let Ok(permit) = self.slots.clone().acquire_owned().await else {
            return text_response(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n");
        };
        let exceeded = Arc::new(AtomicBool::new(false));
        let req = req.map(|b| LimitedBody::new(b, self.max_body, exceeded.clone()));
        let outcome = self.run_guest(req, permit).await;
        if exceeded.load(Ordering::Relaxed) {
            return text_response(StatusCode::PAYLOAD_TOO_LARGE, "request body too large\n");
        }
        match outcome {
            Ok(resp) => resp,
            Err((status, msg)) => {
                if status == StatusCode::INTERNAL_SERVER_ERROR {
                    self.report(&format!("request {msg}"));
                }
                let text = match status {
                    StatusCode::SERVICE_UNAVAILABLE => "guest run time limit exceeded\n",
                    StatusCode::PAYLOAD_TOO_LARGE => "request body too large\n",
                    _ => "internal error\n",
                };
                text_response(status, text)
            }
        }
    }

    fn new_store(&self) -> wasmtime::Result<Store<CompState>> {
        let mut wasi = self
            .ctx
            .wasi_builder_with(false)
            .map_err(|e| wasmtime::format_err!("{e}"))?
            .build();
        *wasi.filesystem() = self.preopens.clone();
        let state = CompState {
            wasi,
            table: ResourceTable::new(),
            http: WasiHttpCtx::new(),
            limits: self.ctx.limits(),
        };
        let mut store = Store::new(self.pre.engine(), state);
        store.limiter(|s| &mut s.limits);
        Ok(store)
    }

    /// A request's fuel and run-time limit, set on a fresh store or a kept one alike.
    fn arm(&self, store: &mut Store<CompState>) -> wasmtime::Result<()> {
        if let Some(f) = self.fuel {
            store.set_fuel(f)?;
        }
        store.set_epoch_deadline(1);
        match self.timeout {
            // The epoch moves only while requests run (and only with a limit): at each tick a
            // computing guest yields its worker, and traps once its time is up.
            Some(limit) => {
                let deadline = Instant::now() + limit;
                store.epoch_deadline_callback(move |_| {
                    Ok(if Instant::now() >= deadline {
                        UpdateDeadline::Interrupt
                    } else {
                        UpdateDeadline::Yield(1)
                    })
                });
            }
            None => store.epoch_deadline_trap(),
        }
        Ok(())
    }

    /// Runs the guest on its own task; returns its response head, or the status to answer.
    async fn run_guest(
        &self,
        req: Request<LimitedBody>,
        permit: tokio::sync::OwnedSemaphorePermit,
    ) -> Result<Response<HyperOutgoingBody>, (StatusCode, String)> {
        let internal = |e: wasmtime::Error| {
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("failed: {}", crate::chain(&e)),
            )
        };
        let (mut store, kept, served) = match self.warm.take() {
            Some(w) => (w.store, Some(w.proxy), w.served),
            None => (self.new_store().map_err(internal)?, None, 0),
        };
        self.arm(&mut store).map_err(internal)?;
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let req = store
            .data_mut()
            .http()
            .new_incoming_request(Scheme::Http, req)
            .map_err(internal)?;
        let out = store
            .data_mut()
            .http()
            .new_response_outparam(sender)
            .map_err(internal)?;
        let pre = self.pre.clone();
        self.inflight.fetch_add(1, Ordering::SeqCst);
        let guard = InflightGuard(self.inflight.clone());
        let timeout = self.timeout;
        let warm = self.warm.clone();
        let task = tokio::task::spawn(async move {
            let _guard = guard;
            let _permit = permit;
            let guest = async move {
                let proxy = match kept {
                    Some(p) => p,
                    None => pre.instantiate_async(&mut store).await?,
                };
                proxy
                    .wasi_http_incoming_handler()
                    .call_handle(&mut store, req, out)
                    .await?;
                if warm.enabled() {
                    warm.put_back(Warm {
                        store,
                        proxy,
                        served,
                    });
                }
                Ok(())
            };
            match timeout {
                // Dropping the guest's future unwinds it wherever it waits.
                Some(t) => match tokio::time::timeout(t, guest).await {
                    Ok(r) => GuestEnd::Done(r),
                    Err(_) => GuestEnd::TimedOut,
                },
                None => GuestEnd::Done(guest.await),
            }
        });
        match receiver.await {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(ErrorCode::HttpRequestBodySize(_))) => {
                Err((StatusCode::PAYLOAD_TOO_LARGE, String::new()))
            }
            Ok(Err(code)) => Err((
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("failed: guest returned error code {code:?}"),
            )),
            Err(_) => Err(match task.await {
                Ok(GuestEnd::TimedOut) => (StatusCode::SERVICE_UNAVAILABLE, String::new()),
                Ok(GuestEnd::Done(Ok(()))) => (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "failed: guest never invoked `response-outparam::set`".into(),
                ),
                Ok(GuestEnd::Done(Err(e))) => {
                    if e.downcast_ref::<wasmtime::Trap>() == Some(&wasmtime::Trap::Interrupt) {
                        (StatusCode::SERVICE_UNAVAILABLE, String::new())
                    } else {
                        (
                            StatusCode::INTERNAL_SERVER_ERROR,
                            crate::loaded::describe_failure(&e),
                        )
                    }
                }
                Err(e) => (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("failed: guest task: {e}"),
                ),
            }),
        }
    }
}
