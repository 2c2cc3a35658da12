//! The Task service without root: a recording [`Launcher`] stands in for runtime-native and the
//! in-memory [`Publisher`] collects the events, so the task state machine and every rule of
//! `exits.rs` are checked here. Exits are fed in as the reaper would (`Inner::reaped`).
//!
//! Over 600 lines on purpose: the recording launcher and one test per state transition and
//! per rule of `exits.rs`; the double lives next to the tests that use it.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use containerd_shim_protos::api::{self, Status};
use containerd_shim_protos::events::task as ev;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::shim::event::Envelope;
use oci_spec::runtime::{LinuxResources, Spec};
use runtime_native::CgroupStats;
use tokio::sync::oneshot;

use super::error::{ServiceError, ServiceResult};
use super::launcher::{
    CreateTask, ExecTask, Launched, LaunchedProcess, Launcher, ProcessIo, Removed, SignalTarget,
    TaskCgroup,
};
use super::reaper::ExitBook;
use super::{Inner, ServiceContext};
use crate::events::Publisher;

/// What the service asked of the launcher, in order.
#[derive(Debug, Clone, PartialEq)]
enum Call {
    Create(String),
    Exec { exec_id: String, rootfs: PathBuf },
    Start(i32),
    Signal(i32, nix::sys::signal::Signal),
    Delete(String),
}

/// Holds a launcher call until the test lets it go.
struct Gate {
    entered: Option<oneshot::Sender<()>>,
    release: std::sync::mpsc::Receiver<()>,
}

impl Gate {
    fn pass(slot: &Mutex<Option<Gate>>) {
        let gate = slot.lock().unwrap().take();
        if let Some(mut g) = gate {
            let _ = g.entered.take().map(|t| t.send(()));
            let _ = g.release.recv();
        }
    }
}

#[derive(Clone, Default)]
struct FakeCgroup {
    oom_kills: Arc<AtomicU64>,
    signals: Arc<Mutex<Vec<i32>>>,
}

impl TaskCgroup for FakeCgroup {
    fn signal_all(&self, signal: i32) -> ServiceResult<()> {
        self.signals.lock().unwrap().push(signal);
        Ok(())
    }
    fn freeze(&self) -> ServiceResult<()> {
        Ok(())
    }
    fn thaw(&self) -> ServiceResult<()> {
        Ok(())
    }
    fn pids(&self) -> ServiceResult<Vec<i32>> {
        Ok(vec![])
    }
    fn update(&self, _: &LinuxResources) -> ServiceResult<()> {
        Ok(())
    }
    fn stats(&self) -> ServiceResult<CgroupStats> {
        Ok(CgroupStats::default())
    }
    fn oom_kills(&self) -> ServiceResult<u64> {
        Ok(self.oom_kills.load(Ordering::SeqCst))
    }
    fn oom_notifier(&self) -> ServiceResult<Option<OwnedFd>> {
        Ok(None)
    }
}

#[derive(Default)]
struct Recorder {
    calls: Mutex<Vec<Call>>,
    next_pid: AtomicI32,
    cgroup: FakeCgroup,
    /// The exit book of the service, to park an exit as the reaper would.
    book: OnceLock<ExitBook>,
    /// The next created init exits at once with this code, before Create returns.
    exit_in_create: Mutex<Option<u32>>,
    fail_create: AtomicBool,
    shared_pid_ns: AtomicBool,
    create_gate: Mutex<Option<Gate>>,
    start_gate: Mutex<Option<Gate>>,
    /// The next process gets a terminal whose output drains when the test says so.
    next_io_done: Mutex<Option<oneshot::Receiver<()>>>,
}

impl Recorder {
    fn record(&self, c: Call) {
        self.calls.lock().unwrap().push(c);
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    fn process(&self) -> LaunchedProcess<i32> {
        let pid = 100 + self.next_pid.fetch_add(1, Ordering::SeqCst);
        LaunchedProcess {
            pid,
            pidfd: None,
            pending: pid,
            io: ProcessIo {
                io_done: self.next_io_done.lock().unwrap().take(),
                ..Default::default()
            },
        }
    }
}

fn arm(slot: &Mutex<Option<Gate>>) -> (oneshot::Receiver<()>, std::sync::mpsc::Sender<()>) {
    let (entered, entered_rx) = oneshot::channel();
    let (release_tx, release) = std::sync::mpsc::channel();
    *slot.lock().unwrap() = Some(Gate {
        entered: Some(entered),
        release,
    });
    (entered_rx, release_tx)
}

/// Runs `call` on a clone of `s` in the background and waits until it is held inside the
/// launcher at `gate`; returns the running call and the sender that lets the launcher go on.
async fn held<F>(
    s: &Service,
    gate: &Mutex<Option<Gate>>,
    call: impl FnOnce(Service) -> F,
) -> (
    tokio::task::JoinHandle<F::Output>,
    std::sync::mpsc::Sender<()>,
)
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let (entered, release) = arm(gate);
    let running = tokio::spawn(call(s.clone()));
    entered.await.unwrap();
    (running, release)
}

impl Launcher for Recorder {
    type Pending = i32;
    type Cgroup = FakeCgroup;

    fn create(&self, req: CreateTask) -> ServiceResult<Launched<i32, FakeCgroup>> {
        self.record(Call::Create(req.id.clone()));
        Gate::pass(&self.create_gate);
        if self.fail_create.swap(false, Ordering::SeqCst) {
            return Err(ServiceError::InvalidArgument(format!(
                "bad task {}",
                req.id
            )));
        }
        let init = self.process();
        if let Some(code) = self.exit_in_create.lock().unwrap().take() {
            // The reaper saw the exit before the service knew the pid: it parks it.
            self.book.get().unwrap().park_exit(init.pid, code);
        }
        Ok(Launched {
            spec: Spec::default(),
            // As a spec whose root.path is "merged" names it.
            rootfs: req.bundle.join("merged"),
            cgroup: self.cgroup.clone(),
            mounted_rootfs: None,
            own_pid_ns: !self.shared_pid_ns.load(Ordering::SeqCst),
            limits: Default::default(),
            init,
        })
    }

    fn exec(&self, req: ExecTask<FakeCgroup>) -> ServiceResult<LaunchedProcess<i32>> {
        self.record(Call::Exec {
            exec_id: req.exec_id,
            rootfs: req.rootfs,
        });
        Ok(self.process())
    }

    fn start(&self, pid: i32) -> ServiceResult<()> {
        self.record(Call::Start(pid));
        Gate::pass(&self.start_gate);
        Ok(())
    }

    fn poststart(&self, _: &Spec, _: &str, _: &Path, _: &SignalTarget) -> ServiceResult<()> {
        Ok(())
    }

    fn signal(&self, target: &SignalTarget, signal: nix::sys::signal::Signal) -> ServiceResult<()> {
        self.record(Call::Signal(target.pid, signal));
        Ok(())
    }

    fn delete(&self, c: Removed<FakeCgroup>) {
        self.record(Call::Delete(c.id));
    }
}

type Service = Arc<Inner<Recorder>>;

fn service() -> (Service, Arc<Mutex<Vec<Envelope>>>) {
    let (publisher, events) = Publisher::in_memory("test".into());
    let ctx = ServiceContext {
        namespace: "test".into(),
        id: "shim".into(),
        publisher,
        shutdown: Arc::new(tokio::sync::Notify::new()),
    };
    let inner = Inner::new(ctx, Recorder::default());
    inner.launcher.book.set(inner.exits.clone()).ok().unwrap();
    (inner, events)
}

/// The events published so far, as `topic` or `topic:process` for exits.
async fn events(s: &Service, store: &Mutex<Vec<Envelope>>) -> Vec<String> {
    // Let spawned exit tasks run up to wherever they wait.
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
    s.ctx.publisher.flush().await;
    store
        .lock()
        .unwrap()
        .iter()
        .map(|e| match e.topic.as_str() {
            "/tasks/exit" => {
                let x = ev::TaskExit::parse_from_bytes(&e.event.value).unwrap();
                format!("/tasks/exit:{}={}", x.id, x.exit_status)
            }
            t => t.to_string(),
        })
        .collect()
}

/// The exit events published so far, as [`events`] writes them.
async fn exits(s: &Service, store: &Mutex<Vec<Envelope>>) -> Vec<String> {
    let mut all = events(s, store).await;
    all.retain(|e| e.starts_with("/tasks/exit"));
    all
}

/// Asserts that the events published so far ([`events`]) are `want`.
async fn assert_events<W>(s: &Service, store: &Mutex<Vec<Envelope>>, want: W)
where
    Vec<String>: PartialEq<W>,
    W: std::fmt::Debug,
{
    assert_eq!(events(s, store).await, want);
}

/// The events of a created and started task, then `rest`.
fn with_task_started(rest: &[&str]) -> Vec<String> {
    ["/tasks/create", "/tasks/start"]
        .iter()
        .chain(rest)
        .map(|e| e.to_string())
        .collect()
}

/// The events of a running task with one started exec, then `rest`.
fn with_exec_started(rest: &[&str]) -> Vec<String> {
    let exec = ["/tasks/exec-added", "/tasks/exec-started"];
    with_task_started(&[&exec[..], rest].concat())
}

fn create_req(id: &str) -> api::CreateTaskRequest {
    api::CreateTaskRequest {
        id: id.into(),
        bundle: format!("/run/bundles/{id}"),
        ..Default::default()
    }
}

/// A request addressed to one process of a task: its init (`exec_id` "") or an exec.
trait ProcessRequest: Default {
    fn address(&mut self, id: &str, exec_id: &str);
}

macro_rules! process_requests {
    ($($t:ty),*) => {$(
        impl ProcessRequest for $t {
            fn address(&mut self, id: &str, exec_id: &str) {
                self.id = id.into();
                self.exec_id = exec_id.into();
            }
        }
    )*};
}

process_requests!(
    api::StartRequest,
    api::StateRequest,
    api::WaitRequest,
    api::KillRequest,
    api::DeleteRequest,
    api::ExecProcessRequest
);

/// A request to process `exec_id` of task `id`, its other fields at their defaults.
fn req<R: ProcessRequest>(id: &str, exec_id: &str) -> R {
    let mut r = R::default();
    r.address(id, exec_id);
    r
}

fn exec_req(id: &str, exec_id: &str, terminal: bool) -> api::ExecProcessRequest {
    let mut spec = Any::new();
    spec.value = serde_json::to_vec(&oci_spec::runtime::Process::default()).unwrap();
    api::ExecProcessRequest {
        terminal,
        spec: Some(spec).into(),
        ..req(id, exec_id)
    }
}

fn state(s: &Service, id: &str, exec_id: &str) -> ServiceResult<api::StateResponse> {
    s.state(&req(id, exec_id))
}

fn status(s: &Service, id: &str, exec_id: &str) -> Status {
    state(s, id, exec_id).unwrap().status.enum_value().unwrap()
}

/// Wait, with a bound so that a lost exit fails the test instead of hanging it.
async fn wait(s: &Service, id: &str, exec_id: &str) -> u32 {
    tokio::time::timeout(Duration::from_secs(60), s.wait(&req(id, exec_id)))
        .await
        .unwrap_or_else(|_| panic!("Wait for {id}/{exec_id} never returned"))
        .unwrap()
        .exit_status
}

/// Creates task `id`; returns its init's pid.
async fn created(s: &Service, id: &str) -> i32 {
    s.create(create_req(id)).await.unwrap().pid as i32
}

/// Creates and starts task `id`; returns its init's pid.
async fn running(s: &Service, id: &str) -> i32 {
    let pid = created(s, id).await;
    s.start(req(id, "")).await.unwrap();
    pid
}

async fn exec_running(s: &Service, id: &str, exec_id: &str) -> i32 {
    s.exec(exec_req(id, exec_id, false)).unwrap();
    s.start(req(id, exec_id)).await.unwrap().pid as i32
}

fn kill_req(id: &str, exec_id: &str, signal: u32) -> api::KillRequest {
    api::KillRequest {
        signal,
        ..req(id, exec_id)
    }
}

fn is<T>(r: ServiceResult<T>, code: ttrpc::Code) -> bool {
    matches!(r, Err(e) if e.code() == code)
}

#[tokio::test]
async fn a_task_walks_created_running_paused_stopped_deleted() {
    let (s, store) = service();
    let pid = created(&s, "t1").await;
    assert_eq!(status(&s, "t1", ""), Status::CREATED);
    assert!(is(
        s.pause("t1", true).await,
        ttrpc::Code::FAILED_PRECONDITION
    ));
    s.start(req("t1", "")).await.unwrap();
    assert_eq!(status(&s, "t1", ""), Status::RUNNING);
    assert!(is(
        s.start(req("t1", "")).await,
        ttrpc::Code::FAILED_PRECONDITION
    ));
    s.pause("t1", true).await.unwrap();
    assert_eq!(status(&s, "t1", ""), Status::PAUSED);
    assert!(is(
        s.pause("t1", true).await,
        ttrpc::Code::FAILED_PRECONDITION
    ));
    s.pause("t1", false).await.unwrap();
    assert!(is(
        s.delete(&req("t1", "")).await,
        ttrpc::Code::FAILED_PRECONDITION
    ));

    s.kill(&kill_req("t1", "", 15)).await.unwrap();
    s.reaped(pid, 143);
    assert_eq!(wait(&s, "t1", "").await, 143);
    let st = state(&s, "t1", "").unwrap();
    assert_eq!(
        (st.status.enum_value().unwrap(), st.exit_status),
        (Status::STOPPED, 143)
    );
    assert!(is(
        s.kill(&kill_req("t1", "", 15)).await,
        ttrpc::Code::NOT_FOUND
    ));
    // A Wait after the exit still sees it.
    assert_eq!(wait(&s, "t1", "").await, 143);

    let d = s.delete(&req("t1", "")).await.unwrap();
    assert_eq!((d.pid as i32, d.exit_status), (pid, 143));
    assert!(is(state(&s, "t1", ""), ttrpc::Code::NOT_FOUND));
    assert_eq!(
        s.launcher.calls(),
        [
            Call::Create("t1".into()),
            Call::Start(pid),
            Call::Signal(pid, nix::sys::signal::Signal::SIGTERM),
            Call::Delete("t1".into()),
        ]
    );
    assert_events(
        &s,
        &store,
        [
            "/tasks/create",
            "/tasks/start",
            "/tasks/paused",
            "/tasks/resumed",
            "/tasks/exit:t1=143",
            "/tasks/delete",
        ],
    )
    .await;
}

#[tokio::test]
async fn execs_register_start_in_the_specs_root_and_stop() {
    let (s, store) = service();
    s.create(create_req("t1")).await.unwrap();
    assert!(is(
        s.exec(exec_req("t1", "e1", false)),
        ttrpc::Code::FAILED_PRECONDITION
    ));
    s.start(req("t1", "")).await.unwrap();
    s.exec(exec_req("t1", "e1", false)).unwrap();
    assert!(is(
        s.exec(exec_req("t1", "e1", false)),
        ttrpc::Code::ALREADY_EXISTS
    ));
    assert_eq!(status(&s, "t1", "e1"), Status::CREATED);
    let pid = s.start(req("t1", "e1")).await.unwrap().pid as i32;
    assert_eq!(status(&s, "t1", "e1"), Status::RUNNING);
    assert!(is(
        s.start(req("t1", "e1")).await,
        ttrpc::Code::FAILED_PRECONDITION
    ));
    // The exec's entrypoint is looked up where Create looked up the init's: the spec's
    // root, not bundle/rootfs.
    assert!(s.launcher.calls().contains(&Call::Exec {
        exec_id: "e1".into(),
        rootfs: PathBuf::from("/run/bundles/t1/merged"),
    }));
    assert!(is(
        s.delete(&req("t1", "e1")).await,
        ttrpc::Code::FAILED_PRECONDITION
    ));
    s.reaped(pid, 3);
    assert_eq!(wait(&s, "t1", "e1").await, 3);
    assert_eq!(status(&s, "t1", ""), Status::RUNNING, "the init lives on");
    let d = s.delete(&req("t1", "e1")).await.unwrap();
    assert_eq!((d.pid as i32, d.exit_status), (pid, 3));
    assert!(is(state(&s, "t1", "e1"), ttrpc::Code::NOT_FOUND));
    assert_events(&s, &store, with_exec_started(&["/tasks/exit:e1=3"])).await;
}

#[tokio::test]
async fn an_exit_during_start_is_published_after_the_start_event() {
    let (s, store) = service();
    let pid = created(&s, "t1").await;
    let (starting, release) = held(&s, &s.launcher.start_gate, |s| async move {
        s.start(req("t1", "")).await
    })
    .await;
    s.reaped(pid, 7); // the process ran and exited before Start returned
    assert_eq!(status(&s, "t1", ""), Status::CREATED);
    release.send(()).unwrap();
    starting.await.unwrap().unwrap();
    assert_eq!(wait(&s, "t1", "").await, 7);
    assert_events(&s, &store, with_task_started(&["/tasks/exit:t1=7"])).await;

    // The same for an exec.
    let (s, store) = service();
    running(&s, "t2").await;
    s.exec(exec_req("t2", "e1", false)).unwrap();
    let (starting, release) = held(&s, &s.launcher.start_gate, |s| async move {
        s.start(req("t2", "e1")).await
    })
    .await;
    let pid = state(&s, "t2", "e1").unwrap().pid as i32;
    s.reaped(pid, 9);
    release.send(()).unwrap();
    starting.await.unwrap().unwrap();
    assert_eq!(wait(&s, "t2", "e1").await, 9);
    assert_events(&s, &store, with_exec_started(&["/tasks/exit:e1=9"])).await;
}

#[tokio::test]
async fn an_exit_reaped_before_create_returned_is_not_lost() {
    let (s, store) = service();
    *s.launcher.exit_in_create.lock().unwrap() = Some(5);
    s.create(create_req("t1")).await.unwrap();
    assert_eq!(wait(&s, "t1", "").await, 5);
    assert_eq!(status(&s, "t1", ""), Status::STOPPED);
    assert_events(&s, &store, ["/tasks/create", "/tasks/exit:t1=5"]).await;
}

#[tokio::test]
async fn two_creates_of_one_id_build_one_container() {
    let (s, _) = service();
    let (first, release) = held(&s, &s.launcher.create_gate, |s| async move {
        s.create(create_req("t1")).await
    })
    .await;
    // The first is still in the launcher: the second is refused, not built.
    assert!(is(
        s.create(create_req("t1")).await,
        ttrpc::Code::ALREADY_EXISTS
    ));
    release.send(()).unwrap();
    first.await.unwrap().unwrap();
    assert!(is(
        s.create(create_req("t1")).await,
        ttrpc::Code::ALREADY_EXISTS
    ));
    let creates = |s: &Service| {
        s.launcher
            .calls()
            .iter()
            .filter(|c| matches!(c, Call::Create(_)))
            .count()
    };
    assert_eq!(creates(&s), 1);

    // A failed Create gives its id back.
    s.launcher.fail_create.store(true, Ordering::SeqCst);
    assert!(is(
        s.create(create_req("t2")).await,
        ttrpc::Code::INVALID_ARGUMENT
    ));
    s.create(create_req("t2")).await.unwrap();
    assert_eq!(creates(&s), 3);
}

#[tokio::test]
async fn the_inits_exit_waits_for_its_execs_exits() {
    // The init dies first: its exit waits for the exec's.
    let (s, store) = service();
    let init = running(&s, "t1").await;
    let exec = exec_running(&s, "t1", "e1").await;
    s.reaped(init, 0);
    assert_eq!(exits(&s, &store).await, Vec::<String>::new(), "no exit yet");
    assert_eq!(status(&s, "t1", ""), Status::RUNNING);
    s.reaped(exec, 137);
    assert_eq!(wait(&s, "t1", "").await, 0);
    assert_eq!(
        exits(&s, &store).await,
        ["/tasks/exit:e1=137", "/tasks/exit:t1=0"]
    );

    // The exec dies first but its terminal output drains late, and the init dies meanwhile:
    // the init's exit still goes after the exec's.
    let (s, store) = service();
    let init = running(&s, "t2").await;
    let (drained, io_done) = oneshot::channel();
    *s.launcher.next_io_done.lock().unwrap() = Some(io_done);
    s.exec(exec_req("t2", "e1", true)).unwrap();
    let exec = s.start(req("t2", "e1")).await.unwrap().pid as i32;
    s.reaped(exec, 1);
    s.reaped(init, 2);
    assert_eq!(exits(&s, &store).await, Vec::<String>::new(), "no exit yet");
    drained.send(()).unwrap();
    assert_eq!(wait(&s, "t2", "").await, 2);
    assert_eq!(
        exits(&s, &store).await,
        ["/tasks/exit:e1=1", "/tasks/exit:t2=2"]
    );
}

#[tokio::test]
async fn a_terminal_processs_exit_waits_for_its_output() {
    let (s, store) = service();
    let (drained, io_done) = oneshot::channel();
    *s.launcher.next_io_done.lock().unwrap() = Some(io_done);
    let pid = running(&s, "t1").await;
    s.reaped(pid, 0);
    assert_events(&s, &store, with_task_started(&[])).await;
    assert_eq!(status(&s, "t1", ""), Status::RUNNING);
    drained.send(()).unwrap();
    assert_eq!(wait(&s, "t1", "").await, 0);
    assert_events(&s, &store, with_task_started(&["/tasks/exit:t1=0"])).await;
}

#[tokio::test]
async fn an_oom_is_published_before_the_exit_it_caused() {
    let (s, store) = service();
    let init = running(&s, "t1").await;
    let exec = exec_running(&s, "t1", "e1").await;
    // The kernel counted the kill; its notification has not arrived.
    s.launcher.cgroup.oom_kills.store(1, Ordering::SeqCst);
    s.reaped(exec, 137);
    assert_eq!(wait(&s, "t1", "e1").await, 137);
    s.reaped(init, 0);
    assert_eq!(wait(&s, "t1", "").await, 0);
    assert_eq!(
        events(&s, &store).await,
        with_exec_started(&["/tasks/oom", "/tasks/exit:e1=137", "/tasks/exit:t1=0"]),
        "one OOM, once, before the exit"
    );
}

#[tokio::test]
async fn without_its_own_pid_namespace_the_rest_dies_with_the_init() {
    let (s, _) = service();
    s.launcher.shared_pid_ns.store(true, Ordering::SeqCst);
    let init = running(&s, "t1").await;
    s.reaped(init, 0);
    assert_eq!(wait(&s, "t1", "").await, 0);
    // The kill runs on the blocking pool; poll for it (no time bound asserted).
    for _ in 0..10_000 {
        if !s.launcher.cgroup.signals.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(*s.launcher.cgroup.signals.lock().unwrap(), [libc::SIGKILL]);
}

#[tokio::test]
async fn unknown_tasks_and_execs_are_not_found() {
    let (s, _) = service();
    assert!(is(s.start(req("nope", "")).await, ttrpc::Code::NOT_FOUND));
    assert!(is(state(&s, "nope", ""), ttrpc::Code::NOT_FOUND));
    running(&s, "t1").await;
    assert!(is(s.start(req("t1", "nope")).await, ttrpc::Code::NOT_FOUND));
    assert!(is(
        s.delete(&req("t1", "nope")).await,
        ttrpc::Code::NOT_FOUND
    ));
    assert!(is(
        s.kill(&kill_req("t1", "", 9999)).await,
        ttrpc::Code::INVALID_ARGUMENT
    ));
    // An exit of a pid nobody owns is parked, not misrouted.
    s.reaped(4242, 1);
    assert_eq!(status(&s, "t1", ""), Status::RUNNING);
    assert_eq!(s.exits.claim(4242), Some(1));
}
