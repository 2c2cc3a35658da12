//! The in-memory model of the tasks one shim serves: containers, their init and exec processes,
//! and the status machine containerd expects (CREATED -> RUNNING -> STOPPED, PAUSED in between).
//!
//! Fields are private: every change of state is a method here that checks the transition, so
//! the rules can be read in one place. A process's exit goes through three steps: *seen*
//! (reaped, [`Process::see_exit`]), *publishing* (its exit event is on the way, waiting for
//! output to drain; [`Process::begin_publish`]) and *stopped* (recorded, [`Process::stop`]).
//! When an exit may move from seen to publishing is decided in `exits.rs`.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use containerd_shim_protos::api::Status;
use containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp;
use oci_spec::runtime::Spec;
use tokio::sync::{oneshot, watch};

use super::error::{ServiceError, ServiceResult};
use super::launcher::{ExecTask, Launched, LaunchedProcess, ProcessIo, Removed, SignalTarget};
use super::stdio::StdioPaths;

/// How a process ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Exit {
    pub code: u32,
    pub at: Timestamp,
}

impl Exit {
    pub fn now(code: u32) -> Exit {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let mut at = Timestamp::new();
        at.seconds = d.as_secs() as i64;
        at.nanos = d.subsec_nanos() as i32;
        Exit { code, at }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Exec registered, not started yet (no pid).
    Registered,
    /// Cloned and set up, waiting for Start.
    Created,
    Running,
    Stopped,
}

/// One process of a container: its init (exec id "") or an exec. `P` is the launcher's
/// handle on a process waiting for Start.
pub struct Process<P> {
    exec_id: String,
    pid: i32,
    phase: Phase,
    stdio: StdioPaths,
    io: ProcessIo,
    pending: Option<P>,
    /// Start is in progress: an exit seen now waits until the start event is out.
    starting: bool,
    /// The exit status reaped and not yet published.
    seen_exit: Option<u32>,
    /// The exit event is on its way (see `exits::publish`).
    publishing: bool,
    exit: Option<Exit>,
    exit_tx: watch::Sender<Option<Exit>>,
    /// The exec's process spec, until Start.
    exec_spec: Option<oci_spec::runtime::Process>,
    /// The process's pidfd from the clone: signals go through it ([`SignalTarget`]).
    pidfd: Option<std::sync::Arc<OwnedFd>>,
}

impl<P> Process<P> {
    fn new(exec_id: &str, stdio: StdioPaths) -> Process<P> {
        let (exit_tx, _) = watch::channel(None);
        Process {
            exec_id: exec_id.to_string(),
            pid: 0,
            phase: Phase::Registered,
            stdio,
            io: ProcessIo::default(),
            pending: None,
            starting: false,
            seen_exit: None,
            publishing: false,
            exit: None,
            exit_tx,
            exec_spec: None,
            pidfd: None,
        }
    }

    /// A container's init, cloned by Create and waiting for Start.
    pub fn init(stdio: StdioPaths, launched: LaunchedProcess<P>) -> Process<P> {
        let mut p = Process::new("", stdio);
        let pending = p.created(launched);
        p.pending = Some(pending);
        p
    }

    /// An exec as Exec registers it: no process yet.
    pub fn exec(exec_id: &str, stdio: StdioPaths, spec: oci_spec::runtime::Process) -> Process<P> {
        let mut p = Process::new(exec_id, stdio);
        p.exec_spec = Some(spec);
        p
    }

    fn created(&mut self, launched: LaunchedProcess<P>) -> P {
        self.pid = launched.pid;
        self.pidfd = launched.pidfd;
        self.phase = Phase::Created;
        self.io = launched.io;
        launched.pending
    }

    /// "init" or the exec id, for messages.
    pub fn name(&self) -> &str {
        if self.exec_id.is_empty() {
            "init"
        } else {
            &self.exec_id
        }
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Where a signal to this process goes.
    pub fn signal_target(&self) -> SignalTarget {
        SignalTarget {
            pid: self.pid,
            pidfd: self.pidfd.clone(),
        }
    }

    pub fn stdio(&self) -> &StdioPaths {
        &self.stdio
    }

    pub fn exit(&self) -> Option<&Exit> {
        self.exit.as_ref()
    }

    pub fn pty_master(&self) -> Option<&OwnedFd> {
        self.io.pty_master.as_ref()
    }

    pub fn is_alive(&self) -> bool {
        matches!(self.phase, Phase::Created | Phase::Running)
    }

    pub fn status(&self, paused: bool) -> Status {
        match self.phase {
            Phase::Registered | Phase::Created => Status::CREATED,
            Phase::Running if paused => Status::PAUSED,
            Phase::Running => Status::RUNNING,
            Phase::Stopped => Status::STOPPED,
        }
    }

    /// Every Wait subscribes here; the exit is there even if it came first.
    pub fn subscribe_exit(&self) -> watch::Receiver<Option<Exit>> {
        self.exit_tx.subscribe()
    }

    /// Start of a created process: hands out its pending handle. `task` names it in errors.
    pub fn begin_start(&mut self, task: &str) -> ServiceResult<P> {
        if self.phase != Phase::Created {
            return Err(ServiceError::FailedPrecondition(format!(
                "task {task} cannot be started: it is {:?}",
                self.status(false)
            )));
        }
        let pending = self
            .pending
            .take()
            .ok_or_else(|| ServiceError::FailedPrecondition(format!("task {task} is starting")))?;
        self.starting = true;
        Ok(pending)
    }

    /// Start of a registered exec: hands out its process spec; the launcher clones it next.
    pub fn begin_exec_start(&mut self) -> ServiceResult<oci_spec::runtime::Process> {
        if self.phase != Phase::Registered || self.starting {
            return Err(ServiceError::FailedPrecondition(format!(
                "exec {} was already started",
                self.exec_id
            )));
        }
        self.starting = true;
        Ok(self.exec_spec.clone().unwrap_or_default())
    }

    /// The exec was cloned: it has a pid now and waits to be let run.
    pub fn exec_created(&mut self, launched: LaunchedProcess<P>) -> P {
        self.exec_spec = None;
        self.created(launched)
    }

    /// Start failed before the process existed: the exec is registered again.
    pub fn abort_start(&mut self) {
        self.starting = false;
    }

    /// Start is over (`ok`: the workload began). Returns whether an exit was seen meanwhile,
    /// which the caller must now route (it was held back for the start event).
    pub fn end_start(&mut self, ok: bool) -> bool {
        self.starting = false;
        if ok && self.phase == Phase::Created {
            self.phase = Phase::Running;
        }
        self.seen_exit.is_some()
    }

    /// The reaper collected this process's exit. Returns false while Start is in progress:
    /// the exit is held until [`Process::end_start`].
    pub fn see_exit(&mut self, code: u32) -> bool {
        if self.phase != Phase::Stopped && !self.publishing {
            self.seen_exit = Some(code);
        }
        !self.starting
    }

    /// Whether an exit was seen that is not on its way yet.
    pub fn exit_waiting(&self) -> bool {
        self.seen_exit.is_some() && !self.starting && !self.publishing && self.is_alive()
    }

    /// Its exit event goes out next: returns what to wait for first (the pty draining).
    pub fn begin_publish(&mut self) -> Option<oneshot::Receiver<()>> {
        self.publishing = true;
        self.io.io_done.take()
    }

    /// The process stopped: records its exit (waking every Wait), lets go of its stdio.
    /// `None` when there is nothing to publish.
    pub fn stop(&mut self) -> Option<Exit> {
        let code = self.seen_exit.take()?;
        if self.phase == Phase::Stopped {
            return None;
        }
        self.phase = Phase::Stopped;
        self.publishing = false;
        self.pending = None;
        let io = std::mem::take(&mut self.io);
        io.holders.release();
        let exit = Exit::now(code);
        self.record_exit(exit.clone());
        Some(exit)
    }

    /// Stored even when no Wait is subscribed yet (`send` would drop it then): containerd's
    /// Wait RPC may arrive after a fast process (`true`) has already exited, and must still
    /// see the exit instead of blocking forever.
    fn record_exit(&mut self, exit: Exit) {
        self.exit = Some(exit.clone());
        self.exit_tx.send_replace(Some(exit));
    }

    /// CloseIO: the shim's stdin writer goes, so the process reads EOF.
    pub fn close_stdin(&mut self) {
        self.io.holders.stdin_writer = None;
    }
}

/// One container: its init, its execs, and what the launcher made for it.
pub struct Container<P, C> {
    id: String,
    bundle: PathBuf,
    spec: Spec,
    rootfs: PathBuf,
    cgroup: C,
    mounted_rootfs: Option<PathBuf>,
    init: Process<P>,
    execs: HashMap<String, Process<P>>,
    paused: bool,
    own_pid_ns: bool,
    /// OOM kills seen so far (to tell a new one from an old one).
    oom_kills: u64,
    limits: runtime_native::fs::tenant_file::Limits,
}

impl<P, C: Clone> Container<P, C> {
    pub fn new(
        id: &str,
        bundle: PathBuf,
        stdio: StdioPaths,
        launched: Launched<P, C>,
    ) -> Container<P, C> {
        Container {
            id: id.to_string(),
            bundle,
            spec: launched.spec,
            rootfs: launched.rootfs,
            cgroup: launched.cgroup,
            mounted_rootfs: launched.mounted_rootfs,
            init: Process::init(stdio, launched.init),
            execs: HashMap::new(),
            paused: false,
            own_pid_ns: launched.own_pid_ns,
            oom_kills: 0,
            limits: launched.limits,
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn bundle(&self) -> &Path {
        &self.bundle
    }

    pub fn spec(&self) -> &Spec {
        &self.spec
    }

    pub fn cgroup(&self) -> &C {
        &self.cgroup
    }

    pub fn init(&self) -> &Process<P> {
        &self.init
    }

    pub fn init_mut(&mut self) -> &mut Process<P> {
        &mut self.init
    }

    pub fn paused(&self) -> bool {
        self.paused
    }

    pub fn own_pid_ns(&self) -> bool {
        self.own_pid_ns
    }

    pub fn process(&self, exec_id: &str) -> Option<&Process<P>> {
        if exec_id.is_empty() {
            Some(&self.init)
        } else {
            self.execs.get(exec_id)
        }
    }

    pub fn process_mut(&mut self, exec_id: &str) -> Option<&mut Process<P>> {
        if exec_id.is_empty() {
            Some(&mut self.init)
        } else {
            self.execs.get_mut(exec_id)
        }
    }

    /// Execs that were cloned and whose exit is not published yet.
    pub fn running_execs(&self) -> usize {
        self.execs.values().filter(|p| p.is_alive()).count()
    }

    /// Execs whose seen exit may be published now.
    pub fn execs_with_exit_waiting(&self) -> Vec<String> {
        self.execs
            .values()
            .filter(|p| p.exit_waiting())
            .map(|p| p.exec_id.clone())
            .collect()
    }

    /// The process (exec id) a reaped pid belongs to, if it is one of ours and still alive.
    pub fn owner_of(&self, pid: i32) -> Option<String> {
        if self.init.pid == pid && self.init.is_alive() {
            return Some(String::new());
        }
        self.execs
            .iter()
            .find(|(_, p)| p.pid == pid && p.is_alive())
            .map(|(id, _)| id.clone())
    }

    /// Exec: registers a new process in the running container.
    pub fn add_exec(
        &mut self,
        exec_id: &str,
        stdio: StdioPaths,
        spec: oci_spec::runtime::Process,
    ) -> ServiceResult<()> {
        if !self.init.is_alive() || self.init.phase != Phase::Running {
            return Err(ServiceError::FailedPrecondition(format!(
                "cannot exec in task {}: it is not running",
                self.id
            )));
        }
        if self.execs.contains_key(exec_id) {
            return Err(ServiceError::AlreadyExists(format!("exec {exec_id}")));
        }
        self.execs
            .insert(exec_id.to_string(), Process::exec(exec_id, stdio, spec));
        Ok(())
    }

    /// Exec Start: the request the launcher needs to clone the exec.
    pub fn begin_exec_start(&mut self, exec_id: &str) -> ServiceResult<ExecTask<C>> {
        let (init_pid, init_pidfd, spec, cgroup, rootfs) = (
            self.init.pid,
            self.init.pidfd.clone(),
            self.spec.clone(),
            self.cgroup.clone(),
            self.rootfs.clone(),
        );
        let id = self.id.clone();
        let p = self
            .execs
            .get_mut(exec_id)
            .ok_or_else(|| ServiceError::NotFound(format!("exec {exec_id} of task {id}")))?;
        let process = p.begin_exec_start()?;
        Ok(ExecTask {
            container_id: id,
            exec_id: exec_id.to_string(),
            init_pid,
            init_pidfd,
            process,
            spec,
            cgroup,
            rootfs,
            limits: self.limits,
            stdio: p.stdio.clone(),
        })
    }

    /// Delete of an exec: only once it stopped (or never ran). Returns its pid and exit.
    pub fn remove_exec(&mut self, exec_id: &str) -> ServiceResult<(i32, Option<Exit>)> {
        let p = self
            .execs
            .get(exec_id)
            .ok_or_else(|| ServiceError::NotFound(format!("exec {exec_id} of task {}", self.id)))?;
        if p.is_alive() {
            return Err(ServiceError::FailedPrecondition(format!(
                "cannot delete exec {exec_id}: it is running"
            )));
        }
        let p = self.execs.remove(exec_id).expect("checked above");
        Ok((p.pid, p.exit))
    }

    /// Pause/Resume may change the state: only of a running task, and only to the other one.
    pub fn check_pause(&self, pause: bool) -> ServiceResult<()> {
        if self.init.phase != Phase::Running {
            return Err(ServiceError::FailedPrecondition(format!(
                "task {} is not running",
                self.id
            )));
        }
        if self.paused == pause {
            return Err(ServiceError::FailedPrecondition(format!(
                "task {} is already {}",
                self.id,
                if pause { "paused" } else { "running" }
            )));
        }
        Ok(())
    }

    /// The cgroup was frozen (`true`) or thawed.
    pub fn set_paused(&mut self, paused: bool) {
        self.paused = paused;
    }

    /// Delete may remove the container once its init is not running.
    pub fn check_delete(&self) -> ServiceResult<()> {
        if self.init.phase == Phase::Running {
            return Err(ServiceError::FailedPrecondition(format!(
                "cannot delete task {}: it is running",
                self.id
            )));
        }
        Ok(())
    }

    /// The kernel's OOM counter read `kills`: whether that is a kill not reported yet.
    pub fn note_oom_kills(&mut self, kills: u64) -> bool {
        let new = kills > self.oom_kills;
        self.oom_kills = self.oom_kills.max(kills);
        new
    }

    /// What the launcher needs to tear the container down.
    pub fn into_removed(self) -> (Removed<C>, i32, Option<Exit>) {
        let live = (self.init.is_alive() && self.init.pid > 0).then(|| self.init.signal_target());
        let pid = self.init.pid;
        let exit = self.init.exit;
        (
            Removed {
                id: self.id,
                bundle: self.bundle,
                spec: self.spec,
                cgroup: self.cgroup,
                mounted_rootfs: self.mounted_rootfs,
                live,
            },
            pid,
            exit,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn launched(pid: i32) -> LaunchedProcess<()> {
        LaunchedProcess {
            pid,
            pidfd: None,
            pending: (),
            io: ProcessIo::default(),
        }
    }

    #[test]
    fn exit_recorded_before_any_wait_is_seen_by_a_later_wait() {
        let mut p: Process<()> = Process::init(StdioPaths::default(), launched(7));
        // No receiver exists yet (Wait not called).
        assert!(p.see_exit(3));
        assert_eq!(p.stop().map(|e| e.code), Some(3));
        let rx = p.subscribe_exit();
        assert_eq!(rx.borrow().as_ref().map(|e| e.code), Some(3));
        assert_eq!(p.exit().map(|e| e.code), Some(3));
    }

    #[test]
    fn a_process_walks_created_running_stopped() {
        let mut p: Process<()> = Process::init(StdioPaths::default(), launched(7));
        assert_eq!(
            (p.phase, p.status(false)),
            (Phase::Created, Status::CREATED)
        );
        p.begin_start("t").unwrap();
        assert!(p.begin_start("t").is_err(), "a second Start while starting");
        assert!(!p.end_start(true));
        assert_eq!(p.status(false), Status::RUNNING);
        assert_eq!(p.status(true), Status::PAUSED);
        let again = p.begin_start("t").err().unwrap().to_string();
        assert_eq!(again, "task t cannot be started: it is RUNNING");
        assert!(p.see_exit(0));
        assert!(p.exit_waiting());
        assert!(p.begin_publish().is_none());
        assert!(!p.exit_waiting(), "publishing already");
        assert!(p.stop().is_some());
        assert_eq!(p.status(false), Status::STOPPED);
        assert!(p.stop().is_none(), "an exit is recorded once");
        p.see_exit(1); // a late duplicate changes nothing
        assert!(!p.exit_waiting());
        assert_eq!(p.exit().map(|e| e.code), Some(0));
    }

    #[test]
    fn an_exit_during_start_is_held_for_the_start_event() {
        let mut p: Process<()> = Process::init(StdioPaths::default(), launched(7));
        p.begin_start("t").unwrap();
        assert!(!p.see_exit(2), "held while starting");
        assert!(!p.exit_waiting());
        assert!(p.end_start(true), "Start must route it");
        assert!(p.exit_waiting());
    }

    #[test]
    fn an_exec_registers_then_starts_once() {
        let mut p: Process<()> = Process::exec(
            "e1",
            StdioPaths::default(),
            oci_spec::runtime::Process::default(),
        );
        assert_eq!(p.status(false), Status::CREATED);
        assert!(!p.is_alive());
        p.begin_exec_start().unwrap();
        assert!(p.begin_exec_start().is_err());
        p.abort_start();
        p.begin_exec_start().unwrap();
        p.exec_created(launched(9));
        assert_eq!((p.pid(), p.phase), (9, Phase::Created));
        assert!(p.begin_exec_start().is_err(), "already cloned");
    }
}
