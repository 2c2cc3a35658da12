//! `wasi:http/incoming-handler` components served over HTTP/1.1 with hyper.
//!
//! Port from `PORT` in the container env (default 8080), bound on 0.0.0.0. Every request gets
//! a fresh instance from the `ProxyPre`, in a slot of the serving engine's pooling allocator
//! (`crate::engine::serving_config`), unless `[wasm.http] instance_reuse` lets it take one an
//! earlier request left ([`warm`]); what one request may use is in [`request`]. On
//! SIGTERM/SIGINT: stop accepting, let in-flight requests and their guest tasks finish, exit 0.

mod access_log;
mod body;
mod request;
mod warm;

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use wasmtime_wasi_http::p2::bindings::ProxyPre;

use crate::context::{CompState, RunContext};
use crate::loaded::{IdleWatch, Loaded};
use access_log::AccessLog;
use request::Server;

pub const DEFAULT_PORT: u16 = 8080;

/// How often the epoch moves while requests run: the resolution of the guest run-time limit,
/// and how often a guest computing without host calls yields its worker to others.
const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Connections each worker's socket queues before it accepts them.
const LISTEN_BACKLOG: u32 = 1024;

/// A client that sends no complete request head within this time is disconnected.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Server threads ([`Worker`]s): the setting, else the CPUs this process may use.
/// `available_parallelism` reads the cgroup CPU quota and the affinity mask, so a container
/// limited to one CPU gets one worker instead of fighting its own threads for the quota.
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
    let access_log = if settings.http.access_log {
        match AccessLog::start(&ctx) {
            Ok(l) => Some(l),
            Err(e) => return fail(&ctx, format!("access log: {e}")),
        }
    } else {
        None
    };
    // Opened once: a request's context shares these handles instead of opening the
    // directories again (an openat per preopen per request).
    let preopens = match ctx.wasi_builder() {
        Ok(mut b) => b.build().filesystem().clone(),
        Err(e) => return fail(&ctx, e.to_string()),
    };
    let server = Arc::new(Server::new(
        loaded.name.clone(),
        pre,
        ctx,
        &settings,
        access_log,
        preopens,
    ));
    if settings.http.request_timeout_ms > 0 {
        start_epoch_ticker(loaded.shared.engine.clone(), server.inflight_counter());
    }
    let warm = server.warm();
    let idle = (warm.enabled() || loaded.idle_hook.is_some()).then(|| {
        // Kept instances go first, so that the trim after them finds their memory free.
        let (warm, trim) = (warm.clone(), loaded.idle_hook);
        IdleWatch::start(move || {
            warm.clear();
            if let Some(trim) = trim {
                trim();
            }
        })
    });
    // Every worker binds its own socket before any serves, so a port in use fails the start.
    let workers = worker_count(settings.http.workers);
    if workers > 1 {
        // SO_REUSEPORT would let our sockets join another server's on the port (one of the
        // same user that set it too: another container of the pod, another hostNetwork pod)
        // and share its connections without a word. A plain bind first fails there, as any
        // server's start does when its port is taken.
        if let Err(e) = std::net::TcpListener::bind(("0.0.0.0", port)) {
            server.report(&format!("bind 0.0.0.0:{port}: {e}"));
            return 1;
        }
    }
    let mut built = Vec::with_capacity(workers);
    for _ in 0..workers {
        match Worker::new(port, workers > 1, &server, loaded, idle.as_ref()) {
            Ok(w) => built.push(w),
            Err(e) => {
                server.report(&e.to_string());
                return 1;
            }
        }
    }
    server.report(&format!(
        "serving wasi:http/incoming-handler on http://0.0.0.0:{port}"
    ));
    // The calling thread is worker 0.
    let first = built.remove(0);
    let mut threads = Vec::with_capacity(built.len());
    for (i, worker) in built.into_iter().enumerate() {
        let spawned = std::thread::Builder::new()
            .name(format!("amphi-http-{}", i + 1))
            .spawn(move || worker.run());
        match spawned {
            Ok(t) => threads.push(t),
            // Its socket closes with it: the kernel spreads connections over the others.
            Err(e) => log::warn!("wasm http: cannot start worker {}: {e}", i + 1),
        }
    }
    first.run();
    let mut code = 0;
    for t in threads {
        if t.join().is_err() {
            server.report("a server thread panicked");
            code = 1;
        }
    }
    code
}

/// One server thread: a current-thread runtime with its own listening socket on the port
/// (`SO_REUSEPORT`), running the connections it accepted and their guests. A request never
/// leaves the thread that read it, so no wake-up crosses threads (on a multi-threaded runtime,
/// handing the guest task and its response between workers cost a futex wake and a context
/// switch per request). The kernel spreads new connections over the sockets by their address
/// hash; with one socket shared by all workers, whichever woke first took them (46 of wrk's 50
/// connections on one worker in one measured run), and its queue set the tail latency.
struct Worker {
    rt: tokio::runtime::Runtime,
    listener: tokio::net::TcpListener,
    server: Arc<Server>,
    shared: Arc<crate::signals::Shared>,
}

impl Worker {
    fn new(
        port: u16,
        reuse_port: bool,
        server: &Arc<Server>,
        loaded: &Loaded,
        idle: Option<&IdleWatch>,
    ) -> Result<Worker, WorkerError> {
        let mut b = tokio::runtime::Builder::new_current_thread();
        if let Some(idle) = idle {
            idle.attach(&mut b);
        }
        let rt = b.enable_all().build().map_err(WorkerError::Runtime)?;
        // Registered with this worker's runtime, which alone polls it.
        let listener = {
            let _in_rt = rt.enter();
            listen(port, reuse_port).map_err(|source| WorkerError::Bind { port, source })?
        };
        Ok(Worker {
            rt,
            listener,
            server: server.clone(),
            shared: loaded.shared.clone(),
        })
    }

    /// Accepts until the drain signal, then waits for its connections and for every guest task
    /// of the server (some may run on this runtime) to finish.
    fn run(self) {
        let Worker {
            rt,
            listener,
            server,
            shared,
        } = self;
        // `wait_for` sees a drain that came before it was called, so subscribing here is soon
        // enough.
        let mut drain = shared.drain.subscribe();
        rt.block_on(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    _ = drain.wait_for(|d| *d) => break,
                    accepted = listener.accept() => match accepted {
                        Ok((stream, _)) => {
                            conns.spawn(serve_connection(stream, server.clone(), shared.drain.subscribe()));
                        }
                        Err(e) => {
                            // EMFILE and friends: back off instead of spinning.
                            log::warn!("wasm http: accept: {e}");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    },
                }
            }
            drop(listener);
            while conns.join_next().await.is_some() {}
            // Guest tasks that outlive their connection (a response still streaming when the
            // client went away) finish too.
            while server.inflight() > 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    }
}

/// Why a server thread could not start.
#[derive(Debug, thiserror::Error)]
enum WorkerError {
    #[error("tokio runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("bind 0.0.0.0:{port}: {source}")]
    Bind {
        port: u16,
        #[source]
        source: std::io::Error,
    },
}

/// A listening socket on 0.0.0.0:`port`, shared with the other workers' sockets
/// (`SO_REUSEPORT`) when `reuse_port`. Within a runtime context.
fn listen(port: u16, reuse_port: bool) -> std::io::Result<tokio::net::TcpListener> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(reuse_port)?;
    socket.bind((std::net::Ipv4Addr::UNSPECIFIED, port).into())?;
    socket.listen(LISTEN_BACKLOG)
}

/// HTTP/1.1 with keep-alive on one accepted connection, until it closes or the server drains.
async fn serve_connection(
    stream: tokio::net::TcpStream,
    server: Arc<Server>,
    mut drain: tokio::sync::watch::Receiver<bool>,
) {
    // Responses are written as head + body chunks: without NODELAY a small second write waits
    // for the client's delayed ACK.
    let _ = stream.set_nodelay(true);
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
