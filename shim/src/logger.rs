//! The `log` facade's backend for the shim server: formatted lines into containerd's `log` fifo
//! in the bundle, which containerd copies into its own log.
//!
//! The fifo is written non-blocking: if containerd is not reading (e.g. it is restarting) and
//! the pipe is full, lines are dropped rather than stalling the shim. Each line is written with
//! one `write` of at most `PIPE_BUF` bytes, so lines never interleave.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use log::{Level, LevelFilter, Log, Metadata, Record};

/// Longest line written in one piece (PIPE_BUF on Linux).
const MAX_LINE: usize = 4096;

pub struct FifoLogger {
    out: Mutex<Option<File>>,
    level: LevelFilter,
    namespace: String,
    id: String,
}

/// Opens `path` (the bundle's `log` fifo) for writing without blocking: `O_WRONLY|O_NONBLOCK`
/// fails with ENXIO while nobody reads, so fall back to `O_RDWR`, which never blocks on a fifo.
pub fn open_fifo(path: &Path) -> std::io::Result<File> {
    let open = |rdwr: bool| {
        std::fs::OpenOptions::new()
            .read(rdwr)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(path)
    };
    match open(false) {
        Err(e) if e.raw_os_error() == Some(libc::ENXIO) => open(true),
        r => r,
    }
}

/// Installs the logger. `out` None discards everything (no fifo: run by hand).
pub fn init(out: Option<File>, debug: bool, namespace: &str, id: &str) {
    let level = if debug {
        LevelFilter::Debug
    } else {
        LevelFilter::Info
    };
    let logger = FifoLogger {
        out: Mutex::new(out),
        level,
        namespace: namespace.to_string(),
        id: id.to_string(),
    };
    if log::set_boxed_logger(Box::new(logger)).is_ok() {
        log::set_max_level(level);
    }
}

/// Crates whose debug output is about the compiler's internals (thousands of lines per module
/// compile): even with `-debug` they log warnings only, so they cannot flood the log fifo and
/// crowd out the shim's own lines.
const QUIET_TARGETS: &[&str] = &["cranelift", "wasmtime", "regalloc", "wasmparser"];

fn is_quiet(target: &str) -> bool {
    QUIET_TARGETS.iter().any(|q| target.starts_with(q))
}

impl Log for FifoLogger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        let level = if is_quiet(metadata.target()) {
            self.level.min(LevelFilter::Warn)
        } else {
            self.level
        };
        metadata.level() <= level
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let line = format_line(
            SystemTime::now(),
            record.level(),
            &record.args().to_string(),
            &self.namespace,
            &self.id,
        );
        if let Some(out) = self.out.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
            // EAGAIN (pipe full): drop the line.
            let _ = out.write(line.as_bytes());
        }
    }

    fn flush(&self) {}
}

/// `time="2024-05-01T10:00:00.123456789Z" level=info msg="..." runtime=io.containerd.amphi.v1
/// namespace=ns id=id`, the logrus text format containerd's own shims write.
pub fn format_line(now: SystemTime, level: Level, msg: &str, namespace: &str, id: &str) -> String {
    let level = match level {
        Level::Error => "error",
        Level::Warn => "warning",
        Level::Info => "info",
        Level::Debug => "debug",
        Level::Trace => "trace",
    };
    let mut line = format!(
        "time=\"{}\" level={level} msg={} runtime=io.containerd.amphi.v1 namespace={namespace} id={id}\n",
        rfc3339(now),
        quote(msg)
    );
    if line.len() > MAX_LINE {
        let mut cut = MAX_LINE - 5;
        while !line.is_char_boundary(cut) {
            cut -= 1;
        }
        line.truncate(cut);
        line.push_str("...\"\n");
    }
    line
}

fn quote(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len() + 2);
    out.push('"');
    for c in msg.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// UTC RFC 3339 with nanoseconds.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_nanos()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compiler_crates_stay_quiet_at_debug() {
        assert!(is_quiet("cranelift_codegen::timing"));
        assert!(is_quiet("wasmtime::runtime"));
        assert!(!is_quiet("amphi_shim::service"));
        assert!(!is_quiet("runtime_wasm"));
    }
    use std::io::Read;
    use std::time::Duration;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000000000Z");
        let t = UNIX_EPOCH + Duration::new(1_709_210_096, 5); // 2024-02-29 12:34:56 UTC
        assert_eq!(rfc3339(t), "2024-02-29T12:34:56.000000005Z");
        let t = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc3339(t), "2000-02-29T00:00:00.000000000Z");
    }

    #[test]
    fn line_format() {
        let l = format_line(UNIX_EPOCH, Level::Warn, "a \"b\"\nc", "ns", "t1");
        assert_eq!(
            l,
            "time=\"1970-01-01T00:00:00.000000000Z\" level=warning msg=\"a \\\"b\\\"\\nc\" runtime=io.containerd.amphi.v1 namespace=ns id=t1\n"
        );
        let long = "x".repeat(10_000);
        let l = format_line(UNIX_EPOCH, Level::Info, &long, "ns", "t1");
        assert!(l.len() <= MAX_LINE);
        assert!(l.ends_with("...\"\n"));
    }

    #[test]
    fn fifo_open_without_reader_and_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let mut w = open_fifo(&path).unwrap(); // no reader: O_RDWR fallback
        w.write_all(b"hello\n").unwrap();
        let mut r = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&path)
            .unwrap();
        let mut buf = [0u8; 16];
        let n = r.read(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"hello\n");
    }
}
