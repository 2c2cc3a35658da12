//! OCI hooks: `prestart` (deprecated), `createRuntime`, `createContainer`, `startContainer`,
//! `poststart`, `poststop`.
//!
//! Each hook is run with the container's state JSON on stdin (`ociVersion`, `id`, `status`,
//! `pid`, `bundle`, `annotations`), exactly its `env` (the runtime's environment when the spec
//! gives none, as runc does), `args` (`args[0]` is argv[0]) and `timeout` (seconds; the hook is
//! killed when it expires). A hook that fails or times out fails the operation; the error
//! names the hook and carries the tail of its output.
//!
//! Where each kind runs (as runc does):
//! - `prestart` and `createRuntime`: in the runtime's namespaces, once the container process
//!   has its namespaces and mounts but before `pivot_root`. The container process asks its
//!   caller over the sync socket ([`crate::sync::ChildMsg::RuntimeHooks`]); the caller
//!   ([`crate::Spawner`], i.e. the shim or amphi-oci) runs them and answers `HooksDone`. No
//!   round trip happens when the spec has none of these hooks.
//! - `createContainer`: in the container process (its namespaces), right after those, still
//!   before `pivot_root`: the hook's path resolves in the runtime's mount tree.
//! - `startContainer`: in the container process after Start, right before `execve` (or the
//!   custom workload): the path resolves inside the container.
//! - `poststart` and `poststop`: in the runtime, by the caller after Start and after Delete:
//!   [`run_poststart`] and [`run_poststop`].
//!
//! Hooks never run for an exec'd process.

use std::io::{Seek, SeekFrom, Write};
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use oci_spec::runtime::{Hook, Spec};
use serde::{Deserialize, Serialize};

/// Where a status the caller's reaper collected is found (see [`crate::child_wait`]).
pub use crate::child_wait::set_reaped_exit_lookup;
use crate::child_wait::{output_file as memfd, wait_child};
use crate::sync::{self, ChildMsg, ParentMsg};

/// Why a hook failed: which one (its kind, its place in the list, its path) and how, with
/// the tail of its output. Inside the container process it is reported to the caller as text
/// over the sync socket (child.rs).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{kind} hook #{index} {source}")]
    Hook {
        kind: String,
        index: usize,
        #[source]
        source: Box<Error>,
    },
    #[error("encode state: {0}")]
    EncodeState(#[source] serde_json::Error),
    #[error("{}: the path is not absolute", hook.display())]
    NotAbsolute { hook: PathBuf },
    #[error("{}: invalid timeout {timeout} (must be > 0)", hook.display())]
    InvalidTimeout { hook: PathBuf, timeout: i64 },
    #[error("{}: {what}: {source}", hook.display())]
    Io {
        hook: PathBuf,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {source}", hook.display())]
    Helper {
        hook: PathBuf,
        #[source]
        source: crate::child_wait::Error,
    },
    #[error("{} timed out after {seconds}s (killed); output: {output}", hook.display())]
    TimedOut {
        hook: PathBuf,
        seconds: u64,
        output: String,
    },
    #[error("{} failed ({exit}): {output}", hook.display())]
    Failed {
        hook: PathBuf,
        exit: crate::child_wait::ChildExit,
        output: String,
    },
    /// The container process's round trip to the caller for the runtime hooks.
    #[error("runtime hooks: {0}")]
    Sync(#[source] crate::sync::Error),
}

type R<T = ()> = std::result::Result<T, Error>;

/// How much of a failing hook's output goes into the error.
const OUTPUT_TAIL: usize = 2048;

fn tail(out: &mut std::fs::File) -> String {
    crate::child_wait::output_tail(out, OUTPUT_TAIL)
}

/// The OCI state a hook reads on stdin.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct State {
    #[serde(rename = "ociVersion")]
    pub oci_version: String,
    pub id: String,
    /// "creating", "created", "running" or "stopped".
    pub status: String,
    /// The container process as the runtime sees it; absent once it is gone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    pub bundle: PathBuf,
    pub annotations: std::collections::HashMap<String, String>,
}

impl State {
    pub fn new(spec: &Spec, id: &str, bundle: &Path, status: &str, pid: Option<i32>) -> State {
        State {
            oci_version: spec.version().clone(),
            id: id.to_string(),
            status: status.to_string(),
            pid: pid.filter(|p| *p > 0),
            bundle: bundle.to_path_buf(),
            annotations: spec.annotations().clone().unwrap_or_default(),
        }
    }
}

/// The hook kinds, as the spec names them (every one is run: see the module docs).
pub const KINDS: [&str; 6] = [
    "prestart",
    "createRuntime",
    "createContainer",
    "startContainer",
    "poststart",
    "poststop",
];

/// Which hooks of the spec: `kind` as the spec names it.
fn hooks_of<'a>(spec: &'a Spec, kind: &str) -> &'a [Hook] {
    let Some(h) = spec.hooks().as_ref() else {
        return &[];
    };
    #[allow(deprecated)]
    let v = match kind {
        "prestart" => h.prestart(),
        "createRuntime" => h.create_runtime(),
        "createContainer" => h.create_container(),
        "startContainer" => h.start_container(),
        "poststart" => h.poststart(),
        "poststop" => h.poststop(),
        _ => &None,
    };
    v.as_deref().unwrap_or(&[])
}

/// Whether the spec has hooks of `kind`.
pub fn has(spec: &Spec, kind: &str) -> bool {
    !hooks_of(spec, kind).is_empty()
}

/// Runs every hook of `kind` in the spec, in order, with `state` on stdin; stops at the first
/// that fails.
pub fn run_kind(spec: &Spec, kind: &str, state: &State) -> R {
    let hooks = hooks_of(spec, kind);
    if hooks.is_empty() {
        return Ok(());
    }
    let json = serde_json::to_vec(state).map_err(Error::EncodeState)?;
    for (index, h) in hooks.iter().enumerate() {
        run_hook(h, &json).map_err(|e| Error::Hook {
            kind: kind.to_string(),
            index,
            source: Box::new(e),
        })?;
    }
    Ok(())
}

/// `prestart` then `createRuntime` hooks, in the runtime's namespaces (status "creating").
pub fn run_create_runtime(spec: &Spec, state: &State) -> R {
    run_kind(spec, "prestart", state)?;
    run_kind(spec, "createRuntime", state)
}

/// `poststart` hooks, by the caller once Start returned (status "running").
pub fn run_poststart(spec: &Spec, id: &str, bundle: &Path, pid: i32) -> R {
    run_kind(
        spec,
        "poststart",
        &State::new(spec, id, bundle, "running", Some(pid)),
    )
}

/// `poststop` hooks, by the caller after the container was deleted (status "stopped").
pub fn run_poststop(spec: &Spec, id: &str, bundle: &Path) -> R {
    run_kind(
        spec,
        "poststop",
        &State::new(spec, id, bundle, "stopped", None),
    )
}

/// Runs one hook with `state` on stdin; the error says what went wrong, with its output.
pub fn run_hook(h: &Hook, state: &[u8]) -> R {
    let path = h.path();
    let hook = || path.clone();
    if !path.is_absolute() {
        return Err(Error::NotAbsolute { hook: hook() });
    }
    let timeout = match h.timeout() {
        None => None,
        Some(t) if t > 0 => Some(Duration::from_secs(t as u64)),
        Some(t) => {
            return Err(Error::InvalidTimeout {
                hook: hook(),
                timeout: t,
            })
        }
    };
    let io = |what| {
        move |source| Error::Io {
            hook: hook(),
            what,
            source,
        }
    };
    let helper = |source| Error::Helper {
        hook: hook(),
        source,
    };
    let mut stdin = memfd(c"hook-state").map_err(helper)?;
    stdin
        .write_all(state)
        .and_then(|_| stdin.seek(SeekFrom::Start(0)).map(|_| ()))
        .map_err(io("write state"))?;
    let mut out = memfd(c"hook-output").map_err(helper)?;
    let out2 = out.try_clone().map_err(io("dup output"))?;
    let mut cmd = std::process::Command::new(path);
    let args = h.args().clone().unwrap_or_default();
    if let Some((a0, rest)) = args.split_first() {
        cmd.arg0(a0).args(rest);
    }
    if let Some(env) = h.env() {
        cmd.env_clear();
        for kv in env {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            cmd.env(k, v);
        }
    }
    cmd.stdin(stdin)
        .stdout(out2.try_clone().map_err(io("dup output"))?)
        .stderr(out2)
        .current_dir("/");
    let mut child = cmd.spawn().map_err(io("start"))?;
    let exit = match wait_child(&mut child, timeout) {
        Ok(Some(exit)) => exit,
        Ok(None) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(Error::TimedOut {
                hook: hook(),
                seconds: timeout.map(|t| t.as_secs()).unwrap_or(0),
                output: tail(&mut out),
            });
        }
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(helper(e));
        }
    };
    if exit.success() {
        return Ok(());
    }
    Err(Error::Failed {
        hook: hook(),
        exit,
        output: tail(&mut out),
    })
}

// ---- the container process's side (child.rs) ----------------------------------------------

/// What the container process needs to run and request hooks; `None` when the spec has no
/// hooks that involve it (so the common case costs nothing).
pub(crate) struct ChildHooks {
    of: Container,
    runtime: bool,
    /// This process's pid as the runtime sees it (read while /proc is still the runtime's).
    host_pid: i32,
}

/// The container an init request's hooks are run for.
struct Container {
    spec: Spec,
    id: String,
    bundle: PathBuf,
}

impl Container {
    /// An init's container when its spec has hooks of one of `kinds` (hooks never run for
    /// an exec).
    fn of(req: &crate::request::Request, kinds: &[&str]) -> Option<Container> {
        let crate::request::Request::Init(r) = req else {
            return None;
        };
        kinds.iter().any(|k| has(&r.spec, k)).then(|| Container {
            spec: r.spec.clone(),
            id: r.id.clone(),
            bundle: r.bundle.clone(),
        })
    }

    fn state(&self, status: &str, pid: i32) -> State {
        State::new(&self.spec, &self.id, &self.bundle, status, Some(pid))
    }
}

/// The kinds the caller runs when the container process asks (`RuntimeHooks`).
const RUNTIME_KINDS: [&str; 2] = ["prestart", "createRuntime"];

impl ChildHooks {
    pub(crate) fn for_request(req: &crate::request::Request) -> Option<ChildHooks> {
        let kinds = [
            RUNTIME_KINDS[0],
            RUNTIME_KINDS[1],
            "createContainer",
            "startContainer",
        ];
        let of = Container::of(req, &kinds)?;
        Some(ChildHooks {
            runtime: RUNTIME_KINDS.iter().any(|k| has(&of.spec, k)),
            of,
            host_pid: crate::seccomp::host_pid(),
        })
    }

    fn state(&self, status: &str) -> State {
        self.of.state(status, self.host_pid)
    }

    /// Before pivot_root: the caller runs `prestart`/`createRuntime`, then this process runs
    /// `createContainer`.
    pub(crate) fn before_pivot(&self, sync_fd: std::os::fd::RawFd) -> R {
        // SAFETY: the sync socket stays open for the whole setup.
        let sock = unsafe { std::os::fd::BorrowedFd::borrow_raw(sync_fd) };
        if self.runtime {
            sync::send(&sock, &ChildMsg::RuntimeHooks, &[]).map_err(Error::Sync)?;
            match sync::recv::<ParentMsg>(&sock).map_err(Error::Sync)? {
                Some((ParentMsg::HooksDone, _)) => {}
                // The caller reports the hook's failure and gives up on this process.
                _ => unsafe { libc::_exit(1) },
            }
        }
        run_kind(&self.of.spec, "createContainer", &self.state("creating"))
    }

    /// After Start, before the workload: `startContainer`.
    pub(crate) fn start_container(&self) -> R {
        run_kind(&self.of.spec, "startContainer", &self.state("created"))
    }
}

// ---- the caller's side (spawner/mod.rs) ------------------------------------------------------

/// What the caller keeps of an init request to answer `RuntimeHooks`.
pub(crate) struct RuntimeHooks(Container);

impl RuntimeHooks {
    pub(crate) fn for_request(req: &crate::request::Request) -> Option<RuntimeHooks> {
        Container::of(req, &RUNTIME_KINDS).map(RuntimeHooks)
    }
}

/// The caller's answer to `RuntimeHooks` from container process `pid`: runs the hooks and lets
/// the process go on, or returns the failure (the caller then drops the sync socket, and the
/// process exits).
pub(crate) fn answer_runtime_hooks(
    sock: &OwnedFd,
    hooks: Option<&RuntimeHooks>,
    pid: i32,
) -> crate::Result<()> {
    if let Some(RuntimeHooks(c)) = hooks {
        run_create_runtime(&c.spec, &c.state("creating", pid))?;
    }
    sync::send(sock, &ParentMsg::HooksDone, &[]).map_err(|source| crate::Error::ContainerSync {
        step: "run the runtime hooks of",
        pid,
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::HookBuilder;
    use std::os::unix::fs::PermissionsExt;
    use std::time::Instant;

    fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    fn spec_with(kind: &str, hooks: Vec<Hook>) -> Spec {
        let mut h = oci_spec::runtime::Hooks::default();
        match kind {
            "createRuntime" => h.set_create_runtime(Some(hooks)),
            "poststart" => h.set_poststart(Some(hooks)),
            "poststop" => h.set_poststop(Some(hooks)),
            _ => unreachable!(),
        };
        let mut s = Spec::default();
        s.set_hooks(Some(h));
        s.set_annotations(Some([("k".to_string(), "v".to_string())].into()));
        s
    }

    #[test]
    fn hook_gets_state_env_and_args() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("out");
        let p = script(
            d.path(),
            "h",
            &format!(
                "cat > {o}.state; echo \"$# $1 $2 $FOO ${{HOME:-nohome}}\" > {o}.args",
                o = out.display()
            ),
        );
        let h = HookBuilder::default()
            .path(p)
            .args(vec!["myhook".to_string(), "a".into(), "b".into()])
            .env(vec!["FOO=bar".to_string()])
            .timeout(5)
            .build()
            .unwrap();
        let spec = spec_with("poststart", vec![h]);
        run_poststart(&spec, "c1", Path::new("/bundle"), 1234).unwrap();
        let st: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(d.path().join("out.state")).unwrap())
                .unwrap();
        assert_eq!(st["id"], "c1");
        assert_eq!(st["status"], "running");
        assert_eq!(st["pid"], 1234);
        assert_eq!(st["bundle"], "/bundle");
        assert_eq!(st["annotations"]["k"], "v");
        assert!(st["ociVersion"].is_string());
        let args = std::fs::read_to_string(d.path().join("out.args")).unwrap();
        // argv[0] is the hook's args[0] (a script sees its path as $0); env is exactly the hook's.
        assert_eq!(args, "2 a b bar nohome\n");

        // poststop: no pid.
        let spec = spec_with(
            "poststop",
            vec![HookBuilder::default()
                .path(script(
                    d.path(),
                    "h2",
                    &format!("cat > {}", d.path().join("stop").display()),
                ))
                .build()
                .unwrap()],
        );
        run_poststop(&spec, "c1", Path::new("/bundle")).unwrap();
        let st: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(d.path().join("stop")).unwrap()).unwrap();
        assert_eq!(st["status"], "stopped");
        assert!(st.get("pid").is_none());
    }

    #[test]
    fn failure_carries_output() {
        let d = tempfile::tempdir().unwrap();
        let p = script(
            d.path(),
            "bad",
            "echo to-stdout; echo boom-on-stderr >&2; exit 3",
        );
        let spec = spec_with(
            "createRuntime",
            vec![HookBuilder::default().path(p).build().unwrap()],
        );
        let st = State::new(&spec, "c", Path::new("/b"), "creating", Some(1));
        let e = run_create_runtime(&spec, &st).unwrap_err().to_string();
        assert!(e.starts_with("createRuntime hook #0 "), "{e}");
        assert!(e.contains("exit status: 3"), "{e}");
        assert!(
            e.contains("to-stdout") && e.contains("boom-on-stderr"),
            "{e}"
        );

        let e = run_hook(
            &HookBuilder::default()
                .path("/no/such/hook")
                .build()
                .unwrap(),
            b"{}",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("/no/such/hook") && e.contains("start"), "{e}");
        let e = run_hook(
            &HookBuilder::default().path("rel/hook").build().unwrap(),
            b"{}",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("not absolute"), "{e}");
    }

    #[test]
    fn timeout_kills_the_hook() {
        let d = tempfile::tempdir().unwrap();
        let p = script(d.path(), "slow", "echo started; exec sleep 30");
        let h = HookBuilder::default().path(p).timeout(1).build().unwrap();
        let t = Instant::now();
        let e = run_hook(&h, b"{}").unwrap_err().to_string();
        assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
        assert!(
            e.contains("timed out after 1s") && e.contains("started"),
            "{e}"
        );
        let h = HookBuilder::default()
            .path("/bin/true")
            .timeout(0)
            .build()
            .unwrap();
        assert!(run_hook(&h, b"{}")
            .unwrap_err()
            .to_string()
            .contains("invalid timeout"));
    }
}
