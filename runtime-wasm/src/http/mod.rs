//! `wasi:http/incoming-handler` components served over HTTP/1.1 with hyper.
//!
//! Port from `PORT` in the container env (default 8080), bound on 0.0.0.0. Every request gets
//! a fresh instance from the `ProxyPre`, in a slot of the serving engine's pooling allocator
//! (`crate::engine::serving_config`); what one request may use is in [`request`]. On
//! SIGTERM/SIGINT: stop accepting, let in-flight requests and their guest tasks finish, exit 0.

mod access_log;
mod body;
mod request;

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use wasmtime_wasi_http::p2::bindings::ProxyPre;

use crate::context::{CompState, RunContext};
use crate::loaded::Loaded;
use access_log::AccessLog;
use request::Server;

pub const DEFAULT_PORT: u16 = 8080;

/// How often the epoch moves while requests run: the resolution of the guest run-time limit,
/// and how often a guest computing without host calls yields its worker to others.
const EPOCH_TICK: Duration = Duration::from_millis(10);

/// A client that sends no complete request head within this time is disconnected.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Tokio workers: the setting, else the CPUs this process may use. `available_parallelism`
/// reads the cgroup CPU quota and the affinity mask, so a container limited to one CPU gets one
/// worker instead of fighting its own threads for the quota.
fn worker_count(setting: u32) -> usize {
    if setting > 0 {
        return setting as usize;
    }
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

pub(crate) fn serve(loaded: &Loaded, pre: ProxyPre<CompState>, ctx: RunContext) -> i32 {
    let fail = |ctx: &RunContext, msg: String| {
        ctx.report(&format!("amphi: wasm http {}: {msg}", loaded.name));
        1
    };
    let port = match ctx.env_var("PORT") {
        None => DEFAULT_PORT,
        Some(p) => match p.parse::<u16>() {
            Ok(p) => p,
            Err(_) => return fail(&ctx, format!("invalid PORT {p:?}")),
        },
    };
    let settings = loaded.settings.clone();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(hook) = loaded.idle_hook {
        crate::loaded::watch_idle(&mut builder, hook);
    }
    let rt = match builder
        .worker_threads(worker_count(settings.http.workers))
        .thread_name("amphi-http")
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&ctx, format!("tokio runtime: {e}")),
    };
    let access_log = if settings.http.access_log {
        match AccessLog::start(&ctx) {
            Ok(l) => Some(l),
            Err(e) => return fail(&ctx, format!("access log: {e}")),
        }
    } else {
        None
    };
    let shared = loaded.shared.clone();
    let inflight = Arc::new(AtomicUsize::new(0));
    if settings.http.request_timeout_ms > 0 {
        start_epoch_ticker(loaded.shared.engine.clone(), inflight.clone());
    }
    // Opened once: a request's context shares these handles instead of opening the
    // directories again (an openat per preopen per request).
    let preopens = match ctx.wasi_builder() {
        Ok(mut b) => b.build().filesystem().clone(),
        Err(e) => return fail(&ctx, e),
    };
    let server = Arc::new(Server::new(
        loaded.name.clone(),
        pre,
        ctx,
        &settings,
        inflight.clone(),
        access_log,
        preopens,
    ));
    let mut drain = shared.drain.subscribe();
    rt.block_on(async move {
        let listener = match tokio::net::TcpListener::bind(("0.0.0.0", port)).await {
            Ok(l) => l,
            Err(e) => {
                server.report(&format!("bind 0.0.0.0:{port}: {e}"));
                return 1;
            }
        };
        server.report(&format!(
            "serving wasi:http/incoming-handler on http://0.0.0.0:{port}"
        ));
        let mut conns = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                _ = drain.wait_for(|d| *d) => break,
                accepted = listener.accept() => {
                    let (stream, _) = match accepted {
                        Ok(a) => a,
                        Err(e) => {
                            // EMFILE and friends: back off instead of spinning.
                            log::warn!("wasm http: accept: {e}");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    // Responses are written as head + body chunks: without NODELAY a small
                    // second write waits for the client's delayed ACK.
                    let _ = stream.set_nodelay(true);
                    let server = server.clone();
                    let mut drain = shared.drain.subscribe();
                    conns.spawn(async move {
                        let svc = hyper::service::service_fn(move |req| {
                            let server = server.clone();
                            async move { Ok::<_, Infallible>(server.handle(req).await) }
                        });
                        let conn = http1::Builder::new()
                            .keep_alive(true)
                            .timer(TokioTimer::new())
                            .header_read_timeout(HEADER_READ_TIMEOUT)
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
        // Guest tasks that outlive their connection (a response still streaming when the
        // client went away) finish too.
        while inflight.load(Ordering::SeqCst) > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        0
    })
}

/// Moves the epoch every [`EPOCH_TICK`] while a request runs; each request's store decides at
/// each tick (its deadline callback) whether its time is up.
fn start_epoch_ticker(engine: wasmtime::Engine, inflight: Arc<AtomicUsize>) {
    let spawned = std::thread::Builder::new()
        .name("amphi-epoch".into())
        .spawn(move || loop {
            std::thread::sleep(EPOCH_TICK);
            if inflight.load(Ordering::Relaxed) > 0 {
                engine.increment_epoch();
            }
        });
    if let Err(e) = spawned {
        log::warn!("wasm http: cannot start the epoch thread: {e}");
    }
}
