//! A program loaded in the container process, and what every way of running it shares: its
//! store setup and how a result becomes the process's exit code.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::{InstancePre, Store, UpdateDeadline};
use wasmtime_wasi::p2::bindings::CommandPre;
use wasmtime_wasi::I32Exit;
use wasmtime_wasi_http::p2::bindings::ProxyPre;

use crate::context::{CompState, CoreState, RunContext};
use crate::signals::{Interrupter, Shared};
use crate::WasmKind;

/// Exit code after a trap (like SIGABRT).
pub const EXIT_TRAP: i32 = 134;

/// How often the epoch moves for a command with a time limit.
const TIME_LIMIT_TICK: Duration = Duration::from_millis(10);

/// What a loaded artifact runs: a core module's entry, a `wasi:cli/run` command, or an HTTP
/// proxy, each pre-instantiated.
pub(crate) enum Program {
    Core {
        pre: InstancePre<CoreState>,
        entry: String,
    },
    Command {
        pre: CommandPre<CompState>,
    },
    Http {
        pre: ProxyPre<CompState>,
    },
}

/// A program loaded in the container process, imports checked, ready to run.
pub struct Loaded {
    pub(crate) name: String,
    pub(crate) kind: WasmKind,
    pub(crate) program: Program,
    pub(crate) shared: Arc<Shared>,
    pub(crate) settings: crate::WasmSettings,
    /// Called once the runner's threads have been idle for [`IDLE_QUIET`] (see [`IdleWatch`]).
    pub(crate) idle_hook: Option<fn()>,
}

/// Quiet time (no wake-up of the runner's runtime) before the idle hook runs.
pub(crate) const IDLE_QUIET: Duration = Duration::from_secs(1);

/// Calls a hook once per quiet period of the runtimes it is attached to: each wake-up of one
/// of their threads counts as activity, and a small watcher thread calls the hook when a whole
/// [`IDLE_QUIET`] passed without one (and not again until the next activity). So a guest that
/// sleeps for good is trimmed within two periods of falling asleep, and a server under load is
/// never trimmed (a trim there would fault its hot text back in at every call). The watcher
/// ends when the watch and every runtime attached to it are dropped.
pub(crate) struct IdleWatch(Arc<AtomicU64>);

impl IdleWatch {
    pub(crate) fn start(hook: impl Fn() + Send + 'static) -> IdleWatch {
        let activity = Arc::new(AtomicU64::new(0));
        let watched = Arc::downgrade(&activity);
        let spawned = std::thread::Builder::new()
            .name("amphi-idle".into())
            .stack_size(64 << 10)
            .spawn(move || {
                let mut seen = u64::MAX;
                let mut trimmed = false;
                loop {
                    std::thread::sleep(IDLE_QUIET);
                    let Some(activity) = watched.upgrade() else {
                        return;
                    };
                    let now = activity.load(Ordering::Relaxed);
                    if now != seen {
                        (seen, trimmed) = (now, false);
                    } else if !trimmed {
                        hook();
                        trimmed = true;
                    }
                }
            });
        if let Err(e) = spawned {
            log::warn!("wasm: cannot start the idle watcher: {e}");
        }
        IdleWatch(activity)
    }

    /// Counts the wake-ups of the runtime `b` builds.
    pub(crate) fn attach(&self, b: &mut tokio::runtime::Builder) {
        let activity = self.0.clone();
        b.on_thread_unpark(move || {
            activity.fetch_add(1, Ordering::Relaxed);
        });
    }
}

impl Loaded {
    pub fn kind(&self) -> WasmKind {
        self.kind
    }

    /// `hook` runs when the guest waits (its threads park), at most every few seconds: the
    /// shim passes the trimming of the binary's unused text mappings, so a sleeping guest's
    /// process holds little more than its own memory.
    pub fn set_idle_hook(&mut self, hook: fn()) {
        self.idle_hook = Some(hook);
    }

    /// A handle to interrupt `run` from another thread (what the signal thread uses).
    pub fn interrupter(&self) -> Interrupter {
        Interrupter(self.shared.clone())
    }

    /// A store for a command's one run: its fuel, and an epoch deadline that ends the guest
    /// when a signal arrived or its time limit passed. The epoch moves when a signal arrives
    /// and, with a time limit, every [`TIME_LIMIT_TICK`].
    pub(crate) fn new_store<T: Send + 'static>(&self, data: T) -> wasmtime::Result<Store<T>> {
        let mut store = Store::new(&self.shared.engine, data);
        if let Some(f) = self.settings.fuel {
            store.set_fuel(f)?;
        }
        store.set_epoch_deadline(1);
        let shared = self.shared.clone();
        let limit = self.settings.time_limit_ms.map(Duration::from_millis);
        let deadline = limit.map(|l| Instant::now() + l);
        store.epoch_deadline_callback(move |_| {
            if shared.signal.load(Ordering::SeqCst) != 0 {
                return Ok(UpdateDeadline::Interrupt);
            }
            match (deadline, limit) {
                (Some(d), Some(l)) if Instant::now() >= d => Err(wasmtime::format_err!(
                    "time limit of {} ms exceeded",
                    l.as_millis()
                )),
                _ => Ok(UpdateDeadline::Continue(1)),
            }
        });
        if limit.is_some() {
            let engine = self.shared.engine.clone();
            let _ = std::thread::Builder::new()
                .name("amphi-epoch".into())
                .spawn(move || loop {
                    std::thread::sleep(TIME_LIMIT_TICK);
                    engine.increment_epoch();
                });
        }
        Ok(store)
    }

    /// Runs a command's guest future on a current-thread runtime until it ends or a
    /// SIGTERM/SIGINT arrives. A guest waiting in a host call (a sleep, a socket or stdin read)
    /// is a pending future: it is dropped at once, which unwinds the guest's stack, and the
    /// result is the signal's. A guest computing is stopped by the epoch (see `new_store`).
    pub(crate) fn run_until_signal(
        &self,
        guest: impl std::future::Future<Output = wasmtime::Result<i32>>,
    ) -> wasmtime::Result<i32> {
        let mut b = tokio::runtime::Builder::new_current_thread();
        if let Some(hook) = self.idle_hook {
            IdleWatch::start(hook).attach(&mut b);
        }
        let rt = b
            .enable_all()
            .build()
            .map_err(|e| wasmtime::format_err!("tokio runtime: {e}"))?;
        let mut stop = self.shared.drain.subscribe();
        rt.block_on(async move {
            tokio::select! {
                r = guest => r,
                _ = stop.wait_for(|s| *s) => Err(wasmtime::format_err!("interrupted by a signal")),
            }
        })
    }

    pub(crate) fn setup_failed(&self, ctx: &RunContext, msg: &str) -> i32 {
        ctx.report(&format!("amphi: wasm module {}: {msg}", self.name));
        EXIT_TRAP
    }

    pub(crate) fn signal(&self) -> i32 {
        self.shared.signal.load(Ordering::SeqCst)
    }

    pub(crate) fn exit_code(&self, ctx: &RunContext, result: wasmtime::Result<i32>) -> i32 {
        match result {
            Ok(code) => code,
            Err(e) => {
                if let Some(exit) = e.downcast_ref::<I32Exit>() {
                    return exit.0;
                }
                let sig = self.signal();
                if sig != 0 {
                    return 128 + sig;
                }
                ctx.report(&format!(
                    "amphi: wasm module {} {}",
                    self.name,
                    describe_failure(&e)
                ));
                EXIT_TRAP
            }
        }
    }
}

/// "trapped: <trap>\n<wasm backtrace>" without the host backtrace that wasmtime's error
/// captures when RUST_BACKTRACE is set in the environment.
pub(crate) fn describe_failure(e: &wasmtime::Error) -> String {
    match (
        e.downcast_ref::<wasmtime::Trap>(),
        e.downcast_ref::<wasmtime::WasmBacktrace>(),
    ) {
        (Some(trap), Some(bt)) => format!("trapped: {trap}\n{bt}"),
        (Some(trap), None) => format!("trapped: {trap}"),
        _ => format!("failed: {}", crate::chain(e)),
    }
}
