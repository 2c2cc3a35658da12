//! The long-running shim server: serves the Task API on the listener `start` handed over as
//! fd 3, until the service asks it to exit (`shutdown` notified).
//!
//! The Task service is registered under both `containerd.task.v2.Task` (containerd 1.6 - 2.x
//! with a version 2 reply) and `containerd.task.v3.Task` (version 3 reply): the two APIs have
//! the same messages, only the package name differs.
//!
//! The server does not depend on containerd being up: containerd may restart at any time; it
//! reconnects to our socket, and the event publisher reconnects to containerd.

use std::collections::HashMap;
use std::os::fd::FromRawFd;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use containerd_shim_protos::shim_async::{create_task, Task};
use containerd_shim_protos::ttrpc::r#async::{transport::Listener, Server, Service};
use tokio::sync::Notify;

use crate::args::Flags;
use crate::error::{Result, ShimError};
use crate::events::Publisher;
use crate::service::{NativeLauncher, ServiceContext, TaskService};
use crate::start::LISTENER_FD;

const TASK_V3: &str = "containerd.task.v3.Task";
const TASK_V2: &str = "containerd.task.v2.Task";
/// Budget for sending the last events (e.g. the final `/tasks/exit`) before exiting.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(3);
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(2);

/// Runs the server; returns when the shim should exit. Called after the spawner is forked and
/// the subreaper is set, while the process is still single-threaded.
pub fn run(flags: Flags, spawner: runtime_native::Spawner) -> Result<()> {
    // Writing to a closed fifo/socket must be an error, not death.
    // SAFETY: setting a signal disposition to SIG_IGN.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
    let bundle = crate::start::bundle_dir(&flags)?;
    let log = crate::logger::open_fifo(&bundle.join("log")).ok();
    crate::logger::init(log, flags.debug, &flags.namespace, &flags.id);
    // stderr is /dev/null: make panics (in any task) visible in containerd's log.
    std::panic::set_hook(Box::new(|info| {
        let thread = std::thread::current();
        log::error!(
            "panic in thread {}: {info}",
            thread.name().unwrap_or("<unnamed>")
        );
    }));

    let listener = take_listener()?;
    let ttrpc_address = std::env::var("TTRPC_ADDRESS")
        .ok()
        .filter(|a| !a.is_empty())
        .ok_or_else(|| ShimError::Args("TTRPC_ADDRESS is not set".into()))?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("amphi-shim")
        .build()
        .map_err(ShimError::io("build tokio runtime", ""))?;
    let result = runtime.block_on(serve(flags, spawner, listener, ttrpc_address));
    runtime.shutdown_timeout(Duration::from_secs(1));
    if let Err(e) = &result {
        log::error!("shim server: {e}");
    }
    result
}

async fn serve(
    flags: Flags,
    spawner: runtime_native::Spawner,
    listener: UnixListener,
    ttrpc_address: String,
) -> Result<()> {
    let socket = PathBuf::from(&flags.socket);
    log::info!(
        "amphi shim {} starting: namespace {} id {} socket {}",
        env!("CARGO_PKG_VERSION"),
        flags.namespace,
        flags.id,
        socket.display()
    );
    let publisher = Publisher::new(ttrpc_address, flags.namespace.clone());
    let shutdown = Arc::new(Notify::new());
    let launcher = NativeLauncher::new(
        spawner,
        crate::record::state_root(),
        flags.namespace.clone(),
        flags.address.clone(),
    );
    let service = Arc::new(TaskService::new(
        ServiceContext {
            namespace: flags.namespace.clone(),
            id: flags.id.clone(),
            publisher: publisher.clone(),
            shutdown: shutdown.clone(),
        },
        launcher,
    ));

    let listener =
        Listener::try_from(listener).map_err(ShimError::io("register listener", &socket))?;
    let mut server = Server::new()
        .add_listener(listener)
        .register_service(task_services(service));
    server.start().await?;
    log::info!("serving the Task API on {}", socket.display());
    crate::idle::after_request();

    tokio::spawn(log_signals());
    shutdown.notified().await;
    log::info!("shutting down");

    if tokio::time::timeout(FLUSH_TIMEOUT, publisher.flush())
        .await
        .is_err()
    {
        log::warn!("some events were not delivered to containerd before exit");
    }
    if tokio::time::timeout(SHUTDOWN_TIMEOUT, server.shutdown())
        .await
        .is_err()
    {
        log::warn!("ttrpc server did not shut down in time");
    }
    remove_socket(&socket);
    log::info!("exit");
    Ok(())
}

/// The Task service under both API names (see the module doc).
fn task_services<T: Task + Send + Sync + 'static>(service: Arc<T>) -> HashMap<String, Service> {
    let mut services = create_task(service.clone());
    let v2: HashMap<String, Service> = create_task(service)
        .into_iter()
        .filter(|(name, _)| name == TASK_V3)
        .map(|(_, s)| (TASK_V2.to_string(), s))
        .collect();
    services.extend(v2);
    services
}

/// The listener `start` passed as fd 3.
fn take_listener() -> Result<UnixListener> {
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat on a raw fd number with a valid out pointer.
    let ok = unsafe { libc::fstat(LISTENER_FD, &mut st) } == 0;
    if !ok || st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return Err(ShimError::Args(
            "no listening socket on fd 3 (the server is started by the start action)".into(),
        ));
    }
    // SAFETY: fd 3 is a socket handed to us by `start`; we take sole ownership.
    let listener = unsafe { UnixListener::from_raw_fd(LISTENER_FD) };
    // Container processes must not inherit it.
    // SAFETY: plain fcntl on an fd we own.
    unsafe { libc::fcntl(LISTENER_FD, libc::F_SETFD, libc::FD_CLOEXEC) };
    Ok(listener)
}

fn remove_socket(path: &Path) {
    if path.as_os_str().is_empty() {
        return;
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            log::warn!("remove socket {}: {e}", path.display())
        }
        _ => {}
    }
}

/// containerd does not normally signal the shim; log it if someone does, and keep serving.
async fn log_signals() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        log::warn!("cannot install SIGTERM/SIGINT handlers");
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => log::info!("received SIGTERM, ignored (containerd shuts the shim down through the Task API)"),
            _ = int.recv() => log::info!("received SIGINT, ignored"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_trait::async_trait;
    use containerd_shim_protos::api::{StateRequest, StateResponse};
    use containerd_shim_protos::protobuf::Message;
    use containerd_shim_protos::ttrpc::r#async::{Client, TtrpcContext};

    struct Fake;

    #[async_trait]
    impl Task for Fake {
        async fn state(&self, _: &TtrpcContext, req: StateRequest) -> ttrpc::Result<StateResponse> {
            Ok(StateResponse {
                id: req.id,
                pid: 42,
                ..Default::default()
            })
        }
    }

    async fn call(client: &Client, service: &str) -> StateResponse {
        let req = ttrpc::Request {
            service: service.into(),
            method: "State".into(),
            payload: StateRequest {
                id: "c1".into(),
                ..Default::default()
            }
            .write_to_bytes()
            .unwrap(),
            timeout_nano: 5_000_000_000,
            ..Default::default()
        };
        let resp = client.request(req).await.unwrap();
        StateResponse::parse_from_bytes(&resp.payload).unwrap()
    }

    #[tokio::test]
    async fn task_service_answers_under_v2_and_v3_names() {
        let services = task_services(Arc::new(Fake));
        let mut names: Vec<_> = services.keys().cloned().collect();
        names.sort();
        assert_eq!(names, [TASK_V2, TASK_V3]);

        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("s");
        let listener = UnixListener::bind(&sock).unwrap();
        let mut server = Server::new()
            .add_listener(Listener::try_from(listener).unwrap())
            .register_service(services);
        server.start().await.unwrap();
        let client = Client::connect(&format!("unix://{}", sock.display()))
            .await
            .unwrap();
        for name in [TASK_V2, TASK_V3] {
            let r = call(&client, name).await;
            assert_eq!((r.id.as_str(), r.pid), ("c1", 42), "{name}");
        }
        server.shutdown().await.unwrap();
    }
}
