//! The in-memory model of the tasks one shim serves: containers, their init and exec processes,
//! and the status machine containerd expects (CREATED -> RUNNING -> STOPPED, PAUSED in between).

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::path::PathBuf;

use containerd_shim_protos::api::Status;
use containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp;
use runtime_native::{Cgroup, PendingProcess};
use tokio::sync::{oneshot, watch};

use super::stdio::{StdioHolders, StdioPaths};

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

/// One process of a container: its init (exec id "") or an exec.
pub struct Process {
    pub exec_id: String,
    pub pid: i32,
    pub phase: Phase,
    pub stdio: StdioPaths,
    pub holders: StdioHolders,
    pub pending: Option<PendingProcess>,
    pub pty_master: Option<OwnedFd>,
    /// Fires when the pty output has drained (terminal processes only).
    pub io_done: Option<oneshot::Receiver<()>>,
    /// Start is in progress: an exit seen now waits until the start event is out.
    pub starting: bool,
    /// An exit that arrived while starting, or while execs of the container were still running.
    pub deferred_exit: Option<u32>,
    pub exit: Option<Exit>,
    pub exit_tx: watch::Sender<Option<Exit>>,
    /// The exec's process spec (JSON of an OCI Process), until Start.
    pub exec_spec: Option<oci_spec::runtime::Process>,
    /// The process's pidfd from the spawner's clone: signals go through it, so one sent
    /// after the reaper took the exit never reaches a process that reused the pid.
    pub pidfd: Option<std::sync::Arc<std::os::fd::OwnedFd>>,
}

/// Where a signal goes: the pidfd when the kernel gave one, else the pid.
#[derive(Debug, Clone)]
pub struct SignalTarget {
    pub pid: i32,
    pidfd: Option<std::sync::Arc<std::os::fd::OwnedFd>>,
}

impl SignalTarget {
    /// `ESRCH` once the process has exited (with a pidfd: even if the pid is in use again).
    pub fn signal(&self, signal: i32) -> Result<(), nix::errno::Errno> {
        match &self.pidfd {
            Some(fd) => runtime_native::identity::pidfd_signal(&**fd, signal)
                .map_err(|e| nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))),
            None => {
                let sig = nix::sys::signal::Signal::try_from(signal)?;
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid), sig)
            }
        }
    }
}

impl Process {
    pub fn new(exec_id: &str, stdio: StdioPaths) -> Process {
        let (exit_tx, _) = watch::channel(None);
        Process {
            exec_id: exec_id.to_string(),
            pid: 0,
            phase: Phase::Registered,
            stdio,
            holders: StdioHolders::default(),
            pending: None,
            pty_master: None,
            io_done: None,
            starting: false,
            deferred_exit: None,
            exit: None,
            exit_tx,
            exec_spec: None,
            pidfd: None,
        }
    }

    pub fn signal_target(&self) -> SignalTarget {
        SignalTarget {
            pid: self.pid,
            pidfd: self.pidfd.clone(),
        }
    }

    /// Records the exit and wakes every Wait. Stored even when no Wait is subscribed yet
    /// (`send` would drop it then): containerd's Wait RPC may arrive after a fast process
    /// (`true`) has already exited, and must still see the exit instead of blocking forever.
    pub fn record_exit(&mut self, exit: Exit) {
        self.exit = Some(exit.clone());
        self.exit_tx.send_replace(Some(exit));
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
}

pub struct Container {
    pub id: String,
    pub bundle: PathBuf,
    pub spec: oci_spec::runtime::Spec,
    pub cgroup: Cgroup,
    pub mounted_rootfs: Option<PathBuf>,
    pub init: Process,
    pub execs: HashMap<String, Process>,
    pub paused: bool,
    /// The container has its own pid namespace: when its init dies the kernel kills the rest.
    pub own_pid_ns: bool,
    /// OOM kills seen so far (to tell a new one from an old one).
    pub oom_kills: u64,
    /// Bounds on what the shim reads of this container's files (from the runtime options).
    pub limits: runtime_native::tenant_file::Limits,
}

impl Container {
    pub fn process(&self, exec_id: &str) -> Option<&Process> {
        if exec_id.is_empty() {
            Some(&self.init)
        } else {
            self.execs.get(exec_id)
        }
    }

    pub fn process_mut(&mut self, exec_id: &str) -> Option<&mut Process> {
        if exec_id.is_empty() {
            Some(&mut self.init)
        } else {
            self.execs.get_mut(exec_id)
        }
    }

    pub fn running_execs(&self) -> usize {
        self.execs.values().filter(|p| p.is_alive()).count()
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_recorded_before_any_wait_is_seen_by_a_later_wait() {
        let mut p = Process::new("", StdioPaths::default());
        // No receiver exists yet (Wait not called).
        p.record_exit(Exit::now(3));
        let rx = p.exit_tx.subscribe();
        assert_eq!(rx.borrow().as_ref().map(|e| e.code), Some(3));
        assert_eq!(p.exit.as_ref().map(|e| e.code), Some(3));
    }
}
