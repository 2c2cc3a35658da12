//! One end-to-end case: a private daemon with the busybox image, helpers to drive containers
//! through `ctr`, and the leak check at the end.

use crate::cmd::{self, Output, Running};
use crate::containerd::Containerd;
use crate::images::{self, BUSYBOX};
use crate::leaks;
use crate::paths;
use crate::versions::Version;
use anyhow::{Context, Result};
use std::cell::RefCell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    /// `io.containerd.amphi.v1`, the shim under test.
    Amphi,
    /// `io.containerd.runc.v2`, to validate the tests themselves.
    Runc,
}

impl Runtime {
    pub fn name(self) -> &'static str {
        match self {
            Runtime::Amphi => "io.containerd.amphi.v1",
            Runtime::Runc => "io.containerd.runc.v2",
        }
    }
    /// The shim binary containerd starts for this runtime.
    pub fn shim_binary(self) -> &'static str {
        match self {
            Runtime::Amphi => paths::SHIM_BINARY,
            Runtime::Runc => "containerd-shim-runc-v2",
        }
    }
}

pub struct Case {
    pub cd: Containerd,
    pub runtime: Runtime,
    name: String,
    ids: RefCell<Vec<String>>,
}

/// `ctr run` of one image in a [`Case`] ([`Case::with_image`]); the case's own `run_*` helpers
/// are these for busybox.
pub struct ImageRuns<'c> {
    case: &'c Case,
    image: &'c str,
}

impl ImageRuns<'_> {
    /// `ctr run --rm --runtime R OPTS IMAGE ID CMD...` to completion.
    pub fn run_rm(&self, opts: &[&str], id: &str, cmd: &[&str]) -> Result<Output> {
        let c = self.case;
        c.cd.ctr(&c.run_args(&["--rm"], opts, self.image, id, cmd))
    }

    /// `ctr run --rm ...` in the background (ctr's exit code is the task's); returns once the
    /// task is RUNNING.
    pub fn run_bg(&self, opts: &[&str], id: &str, cmd: &[&str]) -> Result<Running> {
        let c = self.case;
        let mut bg = Running::spawn(
            c.cd.ctr_command(&c.run_args(&["--rm"], opts, self.image, id, cmd)),
            None,
        )?;
        if let Err(e) = c.wait_status(id, "RUNNING", Duration::from_secs(30)) {
            if bg.exited() {
                let out = bg.wait(Duration::from_secs(1))?;
                return Err(e).context(format!("ctr run exited: {}", out.describe()));
            }
            return Err(e);
        }
        Ok(bg)
    }

    /// `ctr run -d ...`; returns once the task is RUNNING.
    pub fn run_detached(&self, opts: &[&str], id: &str, cmd: &[&str]) -> Result<()> {
        let c = self.case;
        c.cd.ctr(&c.run_args(&["-d"], opts, self.image, id, cmd))?
            .ok()?;
        c.wait_status(id, "RUNNING", Duration::from_secs(30))
    }
}

/// Runs `f` as one case against `version` with `runtime`, then the leak check. Panics (fails
/// the test) with the error chain and the tail of the containerd log on any failure.
pub fn run_case(
    version: Version,
    runtime: Runtime,
    name: &str,
    f: impl FnOnce(&mut Case) -> Result<()>,
) {
    let label = format!(
        "{name} [containerd {} / {}]",
        version.label(),
        runtime.name()
    );
    let setup = (|| -> Result<Case> {
        if runtime == Runtime::Amphi {
            paths::shim_binary()?;
        }
        let cd = Containerd::start(version)?;
        images::import_busybox(&cd)?;
        Ok(Case {
            cd,
            runtime,
            name: name.replace('_', "-"),
            ids: RefCell::new(Vec::new()),
        })
    })();
    run_checked(&label, setup, f, Case::check_leaks, |c| &c.cd, 200);
}

/// Runs `f` on the case `setup` made (`setup` failing fails at once), then `check_leaks`.
/// Panics (fails the test) with `label`, the error chain (a panic of `f` included) and the
/// last `log_lines` lines of the case's containerd log on any failure.
pub(crate) fn run_checked<C>(
    label: &str,
    setup: Result<C>,
    f: impl FnOnce(&mut C) -> Result<()>,
    check_leaks: impl FnOnce(&C) -> Result<()>,
    containerd: impl FnOnce(&C) -> &Containerd,
    log_lines: usize,
) {
    let mut case = match setup {
        Ok(c) => c,
        Err(e) => panic!("{label}: setup failed: {e:#}"),
    };
    let result = match catch_unwind(AssertUnwindSafe(|| f(&mut case))) {
        Ok(Ok(())) => check_leaks(&case).context("after the case"),
        Ok(Err(e)) => Err(e),
        Err(p) => Err(anyhow::anyhow!("panicked: {}", panic_message(&*p))),
    };
    if let Err(e) = result {
        let log = containerd(&case).log_tail(log_lines);
        drop(case);
        panic!("{label} FAILED: {e:#}\n===== containerd log (last {log_lines} lines) =====\n{log}\n===== end of log =====");
    }
}

/// The text a panicking case gave (`panic!` with a String or a &str), for the failure message.
pub(crate) fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

impl Case {
    /// A fresh container id for this case (registered for the leak check).
    pub fn id(&self, suffix: &str) -> String {
        let mut id = format!("{}-{suffix}", self.name);
        id.truncate(64);
        self.ids.borrow_mut().push(id.clone());
        id
    }

    pub fn image(&self) -> &'static str {
        BUSYBOX
    }

    pub fn ctr(&self, args: &[&str]) -> Result<Output> {
        self.cd.ctr(args)
    }

    /// The `ctr run MODE --runtime R OPTS busybox ID CMD...` command, not started.
    pub fn run_command(
        &self,
        mode: &[&str],
        opts: &[&str],
        id: &str,
        cmd: &[&str],
    ) -> std::process::Command {
        self.cd
            .ctr_command(&self.run_args(mode, opts, self.image(), id, cmd))
    }

    /// `run MODE --runtime R OPTS IMAGE ID CMD...`, ctr's arguments.
    fn run_args<'a>(
        &'a self,
        mode: &[&'a str],
        opts: &[&'a str],
        image: &'a str,
        id: &'a str,
        cmd: &[&'a str],
    ) -> Vec<&'a str> {
        let mut a = vec!["run"];
        a.extend_from_slice(mode);
        a.extend_from_slice(&["--runtime", self.runtime.name()]);
        a.extend_from_slice(opts);
        a.push(image);
        a.push(id);
        a.extend_from_slice(cmd);
        a
    }

    /// The `run_*` helpers for `image` instead of busybox.
    pub fn with_image<'c>(&'c self, image: &'c str) -> ImageRuns<'c> {
        ImageRuns { case: self, image }
    }

    /// `ctr run --rm --runtime R OPTS busybox ID CMD...` to completion.
    pub fn run_rm(&self, opts: &[&str], id: &str, cmd: &[&str]) -> Result<Output> {
        self.with_image(self.image()).run_rm(opts, id, cmd)
    }

    /// `ctr run --rm ...` of busybox in the background (ctr's exit code is the task's); returns
    /// once the task is RUNNING.
    pub fn run_bg(&self, opts: &[&str], id: &str, cmd: &[&str]) -> Result<Running> {
        self.with_image(self.image()).run_bg(opts, id, cmd)
    }

    /// `ctr run -d ...` of busybox; returns once the task is RUNNING.
    pub fn run_detached(&self, opts: &[&str], id: &str, cmd: &[&str]) -> Result<()> {
        self.with_image(self.image()).run_detached(opts, id, cmd)
    }

    /// Sends `ctr task kill KILL_ARGS` every 500ms until `bg` (a `ctr run`/`ctr task exec`)
    /// exits, for at most 20s: the first signal may arrive before the container's shell
    /// installed its trap or forked its child, or before the runtime installed its handler (an
    /// init ignores an unhandled SIGTERM). Returns `bg`'s output.
    pub fn kill_until_exit(&self, mut bg: Running, kill_args: &[&str]) -> Result<Output> {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !bg.exited() {
            anyhow::ensure!(
                Instant::now() < deadline,
                "ctr still running 20s after `ctr task kill {}`",
                kill_args.join(" ")
            );
            let mut args = vec!["task", "kill"];
            args.extend_from_slice(kill_args);
            let out = self.ctr(&args)?;
            if !out.success() && !bg.exited() {
                anyhow::bail!("kill failed while the task still runs: {}", out.describe());
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        bg.wait(Duration::from_secs(5))
    }

    /// The rootfs dir of [`Case::spec_file`]'s spec for `id`.
    pub fn spec_rootfs(&self, id: &str) -> std::path::PathBuf {
        self.cd.dir.join(format!("{id}-rootfs"))
    }

    /// A spec from `ctr oci spec` over a minimal busybox rootfs dir ([`Case::spec_rootfs`]:
    /// busybox as sh, cat and true), edited by `edit`, written to the daemon's dir; returns its
    /// path. (`ctr run --config` takes no image: the spec names its rootfs.)
    pub fn spec_file(&self, id: &str, edit: impl FnOnce(&mut serde_json::Value)) -> Result<String> {
        let out = self.ctr(&["oci", "spec"])?.ok()?;
        let mut spec: serde_json::Value = serde_json::from_str(&out.stdout)?;
        let rootfs = self.spec_rootfs(id);
        for d in ["bin", "proc", "dev", "sys", "tmp", "etc"] {
            std::fs::create_dir_all(rootfs.join(d))?;
        }
        std::fs::copy("/bin/busybox", rootfs.join("bin/busybox"))?;
        for l in ["sh", "cat", "true"] {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(l))?;
        }
        spec["linux"]["cgroupsPath"] = format!("/{}/{id}", self.cd.namespace).into();
        spec["root"]["path"] = rootfs.display().to_string().into();
        spec["root"]["readonly"] = true.into();
        edit(&mut spec);
        let path = self.cd.dir.join(format!("{id}.json"));
        std::fs::write(&path, serde_json::to_vec_pretty(&spec)?)?;
        Ok(path.display().to_string())
    }

    /// `ctr run --rm --runtime R --config SPEC ID` to completion.
    pub fn run_config(&self, spec: &str, id: &str) -> Result<Output> {
        self.ctr(&[
            "run",
            "--rm",
            "--runtime",
            self.runtime.name(),
            "--config",
            spec,
            id,
        ])
    }

    /// (pid, status) of a task from `ctr task ls`, None when there is no such task.
    pub fn task(&self, id: &str) -> Result<Option<(u32, String)>> {
        let out = self.ctr(&["task", "ls"])?.ok()?;
        Ok(parse_task_ls(&out.stdout, id))
    }

    /// Fails unless task `id` is listed and RUNNING; `after` says after what, for the message.
    pub fn expect_running(&self, id: &str, after: &str) -> Result<()> {
        let (_, st) = self
            .task(id)?
            .ok_or_else(|| anyhow::anyhow!("task {id} gone {after}"))?;
        anyhow::ensure!(st == "RUNNING", "task {id} is {st} {after}, not RUNNING");
        Ok(())
    }

    pub fn wait_status(&self, id: &str, status: &str, timeout: Duration) -> Result<()> {
        cmd::wait_for(timeout, &format!("task {id} to be {status}"), || {
            Ok(self.task(id)?.filter(|(_, s)| s == status).map(|_| ()))
        })
        .with_context(|| format!("task ls: {:?}", self.task(id).ok().flatten()))
    }

    /// Kills (SIGKILL, all processes), deletes the task and the container. Tolerates either
    /// being gone already; fails if the container is still listed afterwards.
    pub fn remove(&self, id: &str) -> Result<()> {
        if let Some((_, status)) = self.task(id)? {
            if status != "STOPPED" {
                let _ = self.ctr(&["task", "kill", "-a", "-s", "SIGKILL", id]);
                self.wait_status(id, "STOPPED", Duration::from_secs(20))?;
            }
            self.ctr(&["task", "delete", id])?;
        }
        if self.containers()?.iter().any(|c| c == id) {
            self.ctr(&["containers", "delete", id])?.ok()?;
        }
        Ok(())
    }

    /// Processes of this case's runtime's shim started for our daemon (shims and their forks).
    pub fn shim_processes(&self) -> Vec<crate::procs::Proc> {
        let m = self.cd.markers();
        let m: Vec<&str> = m.iter().map(String::as_str).collect();
        crate::procs::shim_processes(self.runtime.shim_binary(), &m)
    }

    /// Pids listed by `ctr task ps ID`.
    pub fn task_pids(&self, id: &str) -> Result<Vec<u32>> {
        let out = self.ctr(&["task", "ps", id])?.ok()?;
        Ok(out
            .stdout
            .lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().next()?.parse().ok())
            .collect())
    }

    /// Container ids in our namespace.
    pub fn containers(&self) -> Result<Vec<String>> {
        let out = self.ctr(&["containers", "ls", "-q"])?.ok()?;
        Ok(out
            .stdout
            .lines()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect())
    }

    /// Every container this case made must be gone, and nothing left behind.
    pub fn check_leaks(&self) -> Result<()> {
        let left = self.containers()?;
        let ids = self.ids.borrow().clone();
        let still: Vec<&String> = ids.iter().filter(|i| left.contains(i)).collect();
        anyhow::ensure!(
            still.is_empty(),
            "containers not removed by the case: {still:?}"
        );
        leaks::check(
            &self.cd,
            &ids,
            self.runtime.shim_binary(),
            Duration::from_secs(5),
        )
    }
}

/// Finds `id` in `ctr task ls` output (`TASK PID STATUS` columns).
pub fn parse_task_ls(out: &str, id: &str) -> Option<(u32, String)> {
    out.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() >= 3 && f[0] == id).then(|| (f[1].parse().unwrap_or(0), f[2].to_string()))
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_task_ls() {
        let out =
            "TASK    PID      STATUS    \nab      1234     RUNNING\nabc     0        STOPPED\n";
        assert_eq!(
            super::parse_task_ls(out, "ab"),
            Some((1234, "RUNNING".into()))
        );
        assert_eq!(
            super::parse_task_ls(out, "abc"),
            Some((0, "STOPPED".into()))
        );
        assert_eq!(super::parse_task_ls(out, "x"), None);
    }
}
