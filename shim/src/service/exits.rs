//! Turning reaped exits into task state and `/tasks/exit` events. Every rule about when an
//! exit may be published lives here:
//! - a process's exit goes after its start event: an exit seen during Start is held by the
//!   process ([`super::state::Process::see_exit`]) and routed by Start once its event is out;
//! - the init's exit goes after the exits of all its execs: it waits while any exec is alive,
//!   and each exec's published exit looks at the init again;
//! - a terminal process's exit goes after its output drained (bounded by `PTY_DRAIN_LIMIT`);
//! - an OOM event goes before the exit it caused: the cgroup's OOM counter is read just before
//!   every exit event, whichever notification the kernel delivered first.
//!
//! An exit reaped before its pid is known (between the clone and the insert of the process)
//! is parked in the exit book and claimed by Create or Exec Start.

use std::sync::Arc;
use std::time::Duration;

use containerd_shim_protos::events::task as ev;
use containerd_shim_protos::protobuf::MessageField;
use tokio::sync::{mpsc, oneshot};

use super::launcher::{Launcher, TaskCgroup};
use super::Inner;

/// How long an exit waits for a pty's output: a grandchild holding the pty must not hold the
/// exit forever.
const PTY_DRAIN_LIMIT: Duration = Duration::from_secs(2);

/// Receives every reaped (pid, status) and routes it.
pub(super) async fn dispatch<L: Launcher>(
    inner: Arc<Inner<L>>,
    mut rx: mpsc::UnboundedReceiver<(i32, u32)>,
) {
    while let Some((pid, code)) = rx.recv().await {
        inner.reaped(pid, code);
    }
}

impl<L: Launcher> Inner<L> {
    /// A reaped exit: to its process, or parked when no live process has that pid (yet).
    pub(super) fn reaped(self: &Arc<Self>, pid: i32, code: u32) {
        let owner = {
            let g = self.lock();
            let found = g
                .containers
                .values()
                .find_map(|c| c.owner_of(pid).map(|exec| (c.id().to_string(), exec)));
            if found.is_none() {
                // Parked under the containers lock: Create and Exec Start claim under it too,
                // so an exit is either found here or claimed there, never lost between.
                self.exits.park_exit(pid, code);
            }
            found
        };
        if let Some((id, exec_id)) = owner {
            self.process_exited(&id, &exec_id, code);
        }
    }

    /// A process of task `id` exited with `code`.
    pub(super) fn process_exited(self: &Arc<Self>, id: &str, exec_id: &str, code: u32) {
        let routed = self
            .with_process(id, exec_id, |p, _| Ok(p.see_exit(code)))
            .unwrap_or(false);
        if routed {
            self.exit_routed(id, exec_id);
        }
    }

    /// An exit reached its process outside Start (or Start just published its event).
    pub(super) fn exit_routed(self: &Arc<Self>, id: &str, exec_id: &str) {
        if exec_id.is_empty() {
            // Without its own pid namespace nothing else dies with the init: do what runc's
            // shim does and kill the rest of the container.
            let rest = self
                .with_container(id, |c| Ok((!c.own_pid_ns()).then(|| c.cgroup().clone())))
                .ok()
                .flatten();
            if let Some(cg) = rest {
                tokio::task::spawn_blocking(move || {
                    let _ = cg.signal_all(libc::SIGKILL);
                });
            }
        }
        self.publish_ready_exits(id);
    }

    /// Sends on their way the exits of task `id` that may go now: each exec's once seen, the
    /// init's once no exec is alive.
    fn publish_ready_exits(self: &Arc<Self>, id: &str) {
        let ready = {
            let mut g = self.lock();
            let Some(c) = g.containers.get_mut(id) else {
                return;
            };
            let mut ready = Vec::new();
            for exec_id in c.execs_with_exit_waiting() {
                if let Some(p) = c.process_mut(&exec_id) {
                    ready.push((exec_id, p.begin_publish()));
                }
            }
            if c.init().exit_waiting() && c.running_execs() == 0 {
                ready.push((String::new(), c.init_mut().begin_publish()));
            }
            ready
        };
        for (exec_id, io_done) in ready {
            self.spawn_publish(id.to_string(), exec_id, io_done);
        }
    }

    /// Publishes one exit once the process's terminal output drained; an exec's exit then
    /// lets the init's go, if it was waiting for it.
    fn spawn_publish(
        self: &Arc<Self>,
        id: String,
        exec_id: String,
        io_done: Option<oneshot::Receiver<()>>,
    ) {
        let inner = self.clone();
        tokio::spawn(async move {
            if let Some(done) = io_done {
                let _ = tokio::time::timeout(PTY_DRAIN_LIMIT, done).await;
            }
            inner.report_new_oom(&id);
            let event = inner.with_process(&id, &exec_id, |p, _| {
                Ok(p.stop().map(|exit| ev::TaskExit {
                    container_id: id.clone(),
                    id: if exec_id.is_empty() {
                        id.clone()
                    } else {
                        exec_id.clone()
                    },
                    pid: p.pid() as u32,
                    exit_status: exit.code,
                    exited_at: MessageField::some(exit.at),
                    ..Default::default()
                }))
            });
            if let Ok(Some(event)) = event {
                inner.publish(event);
            }
            if !exec_id.is_empty() {
                inner.publish_ready_exits(&id);
            }
        });
    }

    /// Publishes `/tasks/oom` if the container's cgroup counted an OOM kill not reported yet.
    /// One small cgroupfs file, read in place: a trip through the blocking pool would delay
    /// every exit event (and so `ctr run`'s Wait) by a thread wake-up.
    fn report_new_oom(&self, id: &str) {
        let Ok(cg) = self.cgroup_of(id) else { return };
        let Ok(kills) = cg.oom_kills() else { return };
        let new = self
            .with_container(id, |c| Ok(c.note_oom_kills(kills)))
            .unwrap_or(false);
        if new {
            self.publish(ev::TaskOOM {
                container_id: id.to_string(),
                ..Default::default()
            });
        }
    }

    /// Watches the container's cgroup for OOM kills (eventfd on v1, inotify on memory.events
    /// on v2) until the cgroup goes away.
    pub(super) fn watch_oom(self: &Arc<Self>, id: &str) {
        let Ok(cg) = self.cgroup_of(id) else { return };
        let fd = match cg.oom_notifier() {
            Ok(Some(fd)) => fd,
            Ok(None) => return,
            Err(e) => {
                log::warn!("task {id}: cannot watch for OOM kills: {e}");
                return;
            }
        };
        let inner = self.clone();
        let id = id.to_string();
        tokio::spawn(async move {
            let Some(afd) = super::stdio::register(fd) else {
                return;
            };
            loop {
                let Ok(mut guard) = afd.readable().await else {
                    return;
                };
                let mut buf = [0u8; 4096];
                // Drain the eventfd / inotify record; the counter says what happened.
                let n = nix::unistd::read(guard.get_inner(), &mut buf);
                guard.clear_ready();
                if matches!(n, Ok(0)) || inner.cgroup_of(&id).is_err() {
                    return; // the container was deleted
                }
                inner.report_new_oom(&id);
            }
        });
    }
}
