//! Turning reaped exits into task state and `/tasks/exit` events, in the order containerd
//! needs: a process's exit after its start event, the init's exit after its execs' exits, and
//! a terminal process's exit after its output has drained. Also OOM watching.

use std::sync::Arc;
use std::time::Duration;

use containerd_shim_protos::events::task as ev;
use containerd_shim_protos::protobuf::MessageField;
use containerd_shim_protos::topics;
use tokio::sync::mpsc;

use super::state::{Exit, Phase};
use super::Inner;

/// Receives every reaped (pid, status) and routes it to its process, or parks it.
pub(super) async fn dispatch(inner: Arc<Inner>, mut rx: mpsc::UnboundedReceiver<(i32, u32)>) {
    while let Some((pid, code)) = rx.recv().await {
        let owner = {
            let g = inner.lock();
            let found = g
                .values()
                .find_map(|c| c.owner_of(pid).map(|exec| (c.id.clone(), exec)));
            if found.is_none() {
                // Not (yet) ours: a process whose pid Start has not recorded, or an orphan.
                inner.exits.park_exit(pid, code);
            }
            found
        };
        if let Some((id, exec_id)) = owner {
            process_exited(&inner, &id, &exec_id, code);
        }
    }
}

/// A process of task `id` exited with `code`. Decides whether the exit can be published now.
pub(super) fn process_exited(inner: &Arc<Inner>, id: &str, exec_id: &str, code: u32) {
    let mut finalize_init = false;
    let mut finalize_exec = false;
    let mut kill_rest: Option<runtime_native::Cgroup> = None;
    {
        let mut g = inner.lock();
        let Some(c) = g.get_mut(id) else { return };
        let own_pid_ns = c.own_pid_ns;
        let cgroup = c.cgroup.clone();
        let running_execs = c.running_execs();
        let Some(p) = c.process_mut(exec_id) else {
            return;
        };
        if p.starting {
            // Start has not published its event yet; it will call us again.
            p.deferred_exit = Some(code);
            return;
        }
        if exec_id.is_empty() {
            p.deferred_exit = Some(code);
            if !own_pid_ns {
                // Without its own pid namespace nothing else dies with the init: do what
                // runc's shim does and kill the rest of the container.
                kill_rest = Some(cgroup);
            }
            finalize_init = running_execs == 0;
        } else {
            p.deferred_exit = Some(code);
            finalize_exec = true;
        }
    }
    if let Some(cg) = kill_rest {
        tokio::task::spawn_blocking(move || {
            let _ = cg.signal_all(libc::SIGKILL);
        });
    }
    if finalize_exec {
        finalize(inner.clone(), id.to_string(), exec_id.to_string());
        // The init may have been waiting for this last exec.
        let init_waiting = {
            let g = inner.lock();
            g.get(id)
                .map(|c| {
                    c.init.deferred_exit.is_some() && c.init.is_alive() && c.running_execs() <= 1
                })
                .unwrap_or(false)
        };
        if init_waiting {
            finalize(inner.clone(), id.to_string(), String::new());
        }
    } else if finalize_init {
        finalize(inner.clone(), id.to_string(), String::new());
    }
}

/// Marks the process stopped and publishes its exit, once its terminal output has drained.
fn finalize(inner: Arc<Inner>, id: String, exec_id: String) {
    let io_done = {
        let mut g = inner.lock();
        let Some(c) = g.get_mut(&id) else { return };
        let Some(p) = c.process_mut(&exec_id) else {
            return;
        };
        p.io_done.take()
    };
    tokio::spawn(async move {
        if let Some(done) = io_done {
            // Bounded: a grandchild holding the pty must not hold the exit forever.
            let _ = tokio::time::timeout(Duration::from_secs(2), done).await;
        }
        report_new_oom(&inner, &id).await;
        let event = {
            let mut g = inner.lock();
            let Some(c) = g.get_mut(&id) else { return };
            let Some(p) = c.process_mut(&exec_id) else {
                return;
            };
            let Some(code) = p.deferred_exit.take() else {
                return;
            };
            if p.phase == Phase::Stopped {
                return;
            }
            let exit = Exit::now(code);
            p.phase = Phase::Stopped;
            p.pending = None;
            p.pty_master = None;
            std::mem::take(&mut p.holders).release();
            p.record_exit(exit.clone());
            ev::TaskExit {
                container_id: id.clone(),
                id: if exec_id.is_empty() {
                    id.clone()
                } else {
                    exec_id.clone()
                },
                pid: p.pid as u32,
                exit_status: exit.code,
                exited_at: MessageField::some(exit.at),
                ..Default::default()
            }
        };
        inner.publish(topics::TASK_EXIT_EVENT_TOPIC, Box::new(event));
        if !exec_id.is_empty() {
            // The init may have exited while this exec's exit was on its way here
            // (process_exited then still counted the exec as running and deferred the init):
            // its exit follows now, after the exec's. Seen with `kill --all` on cgroup v2.
            let init_waiting = {
                let g = inner.lock();
                g.get(&id)
                    .map(|c| {
                        c.init.deferred_exit.is_some()
                            && c.init.is_alive()
                            && c.running_execs() == 0
                    })
                    .unwrap_or(false)
            };
            if init_waiting {
                finalize(inner.clone(), id, String::new());
            }
        }
    });
}

/// Publishes `/tasks/oom` if the container's cgroup counted an OOM kill not reported yet.
/// Called by the OOM watcher and before every exit event, so an OOM always precedes the exit
/// it caused, whichever of the two notifications the kernel delivered first.
async fn report_new_oom(inner: &Inner, id: &str) {
    let Ok(cg) = inner.cgroup_of(id) else { return };
    // One small cgroupfs file, read in place: a trip through the blocking pool would delay
    // every exit event (and so `ctr run`'s Wait) by a thread wake-up.
    let Ok(kills) = cg.oom_kills() else { return };
    let new = inner
        .with_container(id, |c| {
            let new = kills > c.oom_kills;
            c.oom_kills = c.oom_kills.max(kills);
            Ok(new)
        })
        .unwrap_or(false);
    if new {
        inner.publish(
            topics::TASK_OOM_EVENT_TOPIC,
            Box::new(ev::TaskOOM {
                container_id: id.to_string(),
                ..Default::default()
            }),
        );
    }
}

/// Watches the container's cgroup for OOM kills (eventfd on v1, inotify on memory.events on
/// v2) until the cgroup goes away.
pub(super) fn watch_oom(inner: &Arc<Inner>, id: &str) {
    let Ok(cg) = inner.cgroup_of(id) else { return };
    let fd = match cg.oom_notifier() {
        Ok(Some(fd)) => fd,
        Ok(None) => return,
        Err(e) => {
            log::warn!("task {id}: cannot watch for OOM kills: {e}");
            return;
        }
    };
    let inner = inner.clone();
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
            report_new_oom(&inner, &id).await;
        }
    });
}
