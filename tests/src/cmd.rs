//! Running external commands with a deadline, capturing their output.

use anyhow::{Context, Result};
use std::io::{Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What a finished command left behind.
#[derive(Debug, Clone)]
pub struct Output {
    /// The command line, for messages.
    pub cmdline: String,
    /// Exit code, or `None` when it was killed by a signal.
    pub code: Option<i32>,
    /// Terminating signal, if any.
    pub signal: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    /// True when we killed it because the deadline passed.
    pub timed_out: bool,
}

impl Output {
    pub fn success(&self) -> bool {
        self.code == Some(0) && !self.timed_out
    }

    /// Returns self when the exit code is 0, else an error carrying everything it printed.
    pub fn ok(self) -> Result<Self> {
        if self.success() {
            Ok(self)
        } else {
            anyhow::bail!("command failed: {}", self.describe())
        }
    }

    /// Returns self when the command failed (non-zero or signalled), else an error.
    pub fn failed(self) -> Result<Self> {
        if self.success() {
            anyhow::bail!("command unexpectedly succeeded: {}", self.describe())
        }
        Ok(self)
    }

    /// Expects a particular exit code.
    pub fn expect_code(self, code: i32) -> Result<Self> {
        if self.code != Some(code) || self.timed_out {
            anyhow::bail!("expected exit code {code}: {}", self.describe())
        }
        Ok(self)
    }

    /// stdout and stderr together (ctr prints errors on stderr, logs on either).
    pub fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }

    /// Fails with `what` and everything printed unless stdout contains `needle`.
    pub fn expect_stdout(&self, needle: &str, what: &str) -> Result<&Self> {
        self.expect_in(&self.stdout, needle, what)
    }

    /// Fails with `what` and everything printed unless stderr contains `needle`.
    pub fn expect_stderr(&self, needle: &str, what: &str) -> Result<&Self> {
        self.expect_in(&self.stderr, needle, what)
    }

    /// Fails with `what` and everything printed unless stdout or stderr contains `needle`
    /// (as [`Output::all`] does).
    pub fn expect_output(&self, needle: &str, what: &str) -> Result<&Self> {
        self.expect_in(&self.all(), needle, what)
    }

    fn expect_in(&self, text: &str, needle: &str, what: &str) -> Result<&Self> {
        anyhow::ensure!(text.contains(needle), "{what}: {}", self.describe());
        Ok(self)
    }

    pub fn describe(&self) -> String {
        format!(
            "`{}` -> code {:?}, signal {:?}{}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.cmdline,
            self.code,
            self.signal,
            if self.timed_out {
                " (TIMED OUT, killed)"
            } else {
                ""
            },
            self.stdout.trim_end(),
            self.stderr.trim_end()
        )
    }
}

pub fn cmdline(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// A command running in the background whose output is being collected.
pub struct Running {
    child: Option<Child>,
    cmdline: String,
    out: Option<JoinHandle<Vec<u8>>>,
    err: Option<JoinHandle<Vec<u8>>>,
}

fn reader<R: Read + Send + 'static>(r: Option<R>) -> Option<JoinHandle<Vec<u8>>> {
    r.map(|mut r| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            buf
        })
    })
}

impl Running {
    /// Starts `cmd` with piped stdout/stderr and `stdin` written then closed (or /dev/null).
    pub fn spawn(mut cmd: Command, stdin: Option<Vec<u8>>) -> Result<Self> {
        let cmdline = cmdline(&cmd);
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        cmd.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        let mut child = cmd
            .spawn()
            .with_context(|| format!("spawning `{cmdline}`"))?;
        if let (Some(data), Some(mut pipe)) = (stdin, child.stdin.take()) {
            std::thread::spawn(move || {
                let _ = pipe.write_all(&data);
            });
        }
        let out = reader(child.stdout.take());
        let err = reader(child.stderr.take());
        Ok(Running {
            child: Some(child),
            cmdline,
            out,
            err,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Has it exited yet? (Does not reap output.)
    pub fn exited(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(Some(_))))
    }

    /// Waits up to `timeout`; kills it (SIGKILL) when the deadline passes.
    pub fn wait(mut self, timeout: Duration) -> Result<Output> {
        let mut child = self.child.take().expect("child present");
        let deadline = Instant::now() + timeout;
        let mut timed_out = false;
        let status: ExitStatus = loop {
            if let Some(st) = child.try_wait().context("waiting for child")? {
                break st;
            }
            if Instant::now() >= deadline {
                timed_out = true;
                let _ = child.kill();
                break child.wait().context("waiting for killed child")?;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let stdout = self
            .out
            .take()
            .map(|h| h.join().unwrap_or_default())
            .unwrap_or_default();
        let stderr = self
            .err
            .take()
            .map(|h| h.join().unwrap_or_default())
            .unwrap_or_default();
        Ok(Output {
            cmdline: self.cmdline.clone(),
            code: status.code(),
            signal: status.signal(),
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
            timed_out,
        })
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Runs `cmd` to completion (killing it after `timeout`).
pub fn run(cmd: Command, timeout: Duration) -> Result<Output> {
    Running::spawn(cmd, None)?.wait(timeout)
}

/// Polls `f` every 100ms until it returns `Some`, or fails after `timeout` with `what`.
pub fn wait_for<T>(
    timeout: Duration,
    what: &str,
    mut f: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    let mut last_err = None;
    loop {
        match f() {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last_err = Some(e),
        }
        if Instant::now() >= deadline {
            match last_err {
                Some(e) => {
                    return Err(e.context(format!("timed out after {timeout:?} waiting for {what}")))
                }
                None => anyhow::bail!("timed out after {timeout:?} waiting for {what}"),
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
