//! `--log FILE` / `--log-format json|text` / `--debug`, the way runc (logrus) writes them:
//! text `time="..." level=error msg="..."`, json `{"level":"error","msg":"...","time":"..."}`.
//! containerd's runc shim passes `--log <bundle>/log.json --log-format json` and reads the
//! last error from there.

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Mutex;

use crate::args::{Global, LogFormat};

struct Logger {
    out: Mutex<Option<File>>,
    fd: RawFd,
    json: bool,
    level: log::LevelFilter,
}

static LOGGER: std::sync::OnceLock<Logger> = std::sync::OnceLock::new();

pub fn format_line(json: bool, level: log::Level, msg: &str, time: &str) -> String {
    let lvl = match level {
        log::Level::Error => "error",
        log::Level::Warn => "warning",
        log::Level::Info => "info",
        log::Level::Debug => "debug",
        log::Level::Trace => "trace",
    };
    if json {
        let v = serde_json::json!({"level": lvl, "msg": msg, "time": time});
        format!("{v}\n")
    } else {
        let m = serde_json::to_string(msg).unwrap_or_default();
        format!("time=\"{time}\" level={lvl} msg={m}\n")
    }
}

impl log::Log for Logger {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= self.level
    }
    fn log(&self, r: &log::Record) {
        if !self.enabled(r.metadata()) {
            return;
        }
        let line = format_line(
            self.json,
            r.level(),
            &r.args().to_string(),
            &crate::state::rfc3339_now(),
        );
        let mut g = self.out.lock().unwrap_or_else(|e| e.into_inner());
        match g.as_mut() {
            Some(f) => {
                let _ = f.write_all(line.as_bytes());
            }
            None => {
                let _ = std::io::stderr().write_all(line.as_bytes());
            }
        }
    }
    fn flush(&self) {}
}

/// Installs the logger (to `--log`, else stderr).
pub fn init(g: &Global) {
    let file = g.log.as_ref().and_then(|p| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .ok()
    });
    // On stderr only what the user must see (runc prints no setup warnings there); the log
    // file also gets warnings, and everything with --debug.
    let level = match (g.debug, file.is_some()) {
        (true, _) => log::LevelFilter::Debug,
        (false, true) => log::LevelFilter::Warn,
        (false, false) => log::LevelFilter::Error,
    };
    let fd = file.as_ref().map(|f| f.as_raw_fd()).unwrap_or(-1);
    let logger = LOGGER.get_or_init(|| Logger {
        out: Mutex::new(file),
        fd,
        json: g.log_format == LogFormat::Json,
        level,
    });
    if log::set_logger(logger).is_ok() {
        log::set_max_level(level);
    }
}

/// Whether errors go to a log file (then the caller also prints them on stderr).
pub fn has_file() -> bool {
    LOGGER.get().is_some_and(|l| l.fd >= 0)
}

/// The log file's fd, kept open across the monitor's fd cleanup.
pub fn file_fd() -> Option<RawFd> {
    LOGGER.get().map(|l| l.fd).filter(|fd| *fd >= 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines() {
        let j = format_line(
            true,
            log::Level::Error,
            "container \"x\" does not exist",
            "T",
        );
        let v: serde_json::Value = serde_json::from_str(j.trim()).unwrap();
        assert_eq!(v["level"], "error");
        assert_eq!(v["msg"], "container \"x\" does not exist");
        assert_eq!(v["time"], "T");
        let t = format_line(false, log::Level::Warn, "a \"b\"", "T");
        assert_eq!(t, "time=\"T\" level=warning msg=\"a \\\"b\\\"\"\n");
    }
}
