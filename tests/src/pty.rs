//! Running a command on a pseudo-terminal (for `ctr run -t`): read what it prints, type into
//! it, resize it.

use anyhow::{Context, Result};
use nix::pty::{openpty, Winsize};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct Pty {
    master: std::fs::File,
    child: Option<Child>,
    output: Arc<Mutex<Vec<u8>>>,
}

fn winsize(rows: u16, cols: u16) -> Winsize {
    Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    }
}

impl Pty {
    /// Starts `cmd` as a session leader with the pty's slave as its controlling terminal and
    /// stdin/stdout/stderr, the window being `rows` x `cols`.
    pub fn spawn(mut cmd: Command, rows: u16, cols: u16) -> Result<Pty> {
        let pair = openpty(Some(&winsize(rows, cols)), None).context("openpty")?;
        let slave: OwnedFd = pair.slave;
        let slave_fd = slave.as_raw_fd();
        cmd.stdin(Stdio::from(slave.try_clone()?))
            .stdout(Stdio::from(slave.try_clone()?))
            .stderr(Stdio::from(slave.try_clone()?));
        unsafe {
            cmd.pre_exec(move || {
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::ioctl(slave_fd, libc::TIOCSCTTY as _, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().context("spawning on a pty")?;
        drop(slave);
        let master = std::fs::File::from(pair.master);
        let output = Arc::new(Mutex::new(Vec::new()));
        let mut reader = master.try_clone()?;
        let sink = output.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                match reader.read(&mut buf) {
                    Ok(0) | Err(_) => break, // EIO once every slave fd is closed
                    Ok(n) => sink.lock().unwrap().extend_from_slice(&buf[..n]),
                }
            }
        });
        Ok(Pty {
            master,
            child: Some(child),
            output,
        })
    }

    /// Everything printed so far (lossy UTF-8, CRs removed).
    pub fn output(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().unwrap()).replace('\r', "")
    }

    pub fn write(&mut self, s: &str) -> Result<()> {
        self.master
            .write_all(s.as_bytes())
            .context("writing to the pty")
    }

    /// Sets the window size (the kernel sends SIGWINCH to the foreground process group).
    pub fn resize(&self, rows: u16, cols: u16) -> Result<()> {
        let ws = winsize(rows, cols);
        let r = unsafe { libc::ioctl(self.master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
        anyhow::ensure!(r == 0, "TIOCSWINSZ: {}", std::io::Error::last_os_error());
        Ok(())
    }

    /// Waits until the output contains `needle`.
    pub fn expect(&self, needle: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.output().contains(needle) {
                return Ok(());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "pty: {needle:?} not seen within {timeout:?}; output so far:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for the command to exit; returns its exit code (None if signalled). Kills it after
    /// `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> Result<Option<i32>> {
        let mut child = self.child.take().context("already waited")?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = child.try_wait()? {
                return Ok(st.code());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                anyhow::bail!(
                    "command on the pty did not exit within {timeout:?}; output:\n{}",
                    self.output()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Pty {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
