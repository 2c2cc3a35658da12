//! The state directory `<root>/<id>/`: `state.json` (our own format), the monitor's socket
//! and lock. The OCI state that `state` prints is derived from it.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use runtime_native::Cgroup;
use serde::{Deserialize, Serialize};

use crate::Error;

pub const STATE_FILE: &str = "state.json";
pub const MONITOR_SOCK: &str = "monitor.sock";
pub const MONITOR_LOCK: &str = "monitor.lock";

/// What we remember about a container.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct State {
    pub id: String,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    /// Host pid of the container's init (0 before it exists).
    pub pid: i32,
    /// `starttime` of that pid in /proc/<pid>/stat, to tell a reused pid from ours.
    pub pid_start: u64,
    /// The monitor process holding the container (0 for a foreground `run`).
    pub monitor_pid: i32,
    /// RFC 3339 UTC with nanoseconds, as runc prints it.
    pub created: String,
    pub owner: String,
    /// `start` released the process.
    pub started: bool,
    pub paused: bool,
    /// Set once the init's exit was reaped (exit code, or 128+signal).
    pub exit_code: Option<i32>,
    pub cgroup: Option<Cgroup>,
    pub annotations: BTreeMap<String, String>,
    pub spec: oci_spec::runtime::Spec,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Creating,
    Created,
    Running,
    Paused,
    Stopped,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        }
    }
}

/// The OCI runtime state, field order and names as runc prints them.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct OciState {
    #[serde(rename = "ociVersion")]
    pub oci_version: String,
    pub id: String,
    pub pid: i32,
    pub status: String,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    pub created: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    pub owner: String,
}

/// `/proc/<pid>/stat`: (state letter, starttime).
pub fn proc_stat(pid: i32) -> Option<(char, u64)> {
    if pid <= 0 {
        return None;
    }
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&s)
}

pub fn parse_stat(s: &str) -> Option<(char, u64)> {
    // The command name is in parentheses and may contain anything; fields follow the last ')'.
    let rest = &s[s.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state); starttime is field 22.
    let state = fields.first()?.chars().next()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((state, start))
}

impl State {
    pub fn new(id: &str, bundle: &Path, rootfs: &Path, spec: oci_spec::runtime::Spec) -> State {
        State {
            id: id.to_string(),
            bundle: bundle.to_path_buf(),
            rootfs: rootfs.to_path_buf(),
            pid: 0,
            pid_start: 0,
            monitor_pid: 0,
            created: rfc3339_now(),
            owner: String::new(),
            started: false,
            paused: false,
            exit_code: None,
            cgroup: None,
            annotations: spec
                .annotations()
                .clone()
                .map(|a| a.into_iter().collect())
                .unwrap_or_default(),
            spec,
        }
    }

    /// Records the init pid and its start time.
    pub fn set_pid(&mut self, pid: i32) {
        self.pid = pid;
        self.pid_start = proc_stat(pid).map(|(_, s)| s).unwrap_or(0);
    }

    /// Whether our init process still exists (not reaped, not a zombie, not a reused pid).
    pub fn init_alive(&self) -> bool {
        match proc_stat(self.pid) {
            Some((st, start)) => {
                st != 'Z' && st != 'X' && (self.pid_start == 0 || start == self.pid_start)
            }
            None => false,
        }
    }

    pub fn status(&self) -> Status {
        self.status_with(self.init_alive())
    }

    pub fn status_with(&self, alive: bool) -> Status {
        if self.pid == 0 {
            return Status::Creating;
        }
        if self.exit_code.is_some() || !alive {
            return Status::Stopped;
        }
        if self.paused {
            return Status::Paused;
        }
        if self.started {
            Status::Running
        } else {
            Status::Created
        }
    }

    /// The spec's `poststart` hooks, once the container started. If one fails, the container
    /// is killed and the error returned (as runc and the shim do).
    pub fn poststart(&self) -> Result<(), Error> {
        runtime_native::hooks::run_poststart(&self.spec, &self.id, &self.bundle, self.pid).map_err(
            |m| {
                // SAFETY: kill with plain integers.
                unsafe { libc::kill(self.pid, libc::SIGKILL) };
                runtime_native::Error::Hook(m).into()
            },
        )
    }

    /// The spec's `poststop` hooks, once the container is deleted; a failure is a warning.
    pub fn poststop(&self) {
        if let Err(e) = runtime_native::hooks::run_poststop(&self.spec, &self.id, &self.bundle) {
            log::warn!("container {}: {e}", self.id);
        }
    }

    pub fn oci(&self, status: Status) -> OciState {
        OciState {
            oci_version: self.spec.version().clone(),
            id: self.id.clone(),
            pid: if status == Status::Stopped {
                0
            } else {
                self.pid
            },
            status: status.as_str().to_string(),
            bundle: self.bundle.clone(),
            rootfs: self.rootfs.clone(),
            created: self.created.clone(),
            annotations: self.annotations.clone(),
            owner: self.owner.clone(),
        }
    }

    /// Reads `dir/state.json`.
    pub fn load(dir: &Path) -> Result<State, Error> {
        let p = dir.join(STATE_FILE);
        let data = std::fs::read(&p).map_err(|e| Error::io("read", &p, e))?;
        serde_json::from_slice(&data)
            .map_err(|e| Error::Other(format!("invalid state file {}: {e}", p.display())))
    }

    /// Writes `dir/state.json` atomically (temp file + rename).
    pub fn save(&self, dir: &Path) -> Result<(), Error> {
        let data =
            serde_json::to_vec(self).map_err(|e| Error::Other(format!("encode state: {e}")))?;
        write_atomic(&dir.join(STATE_FILE), &data)
    }

    /// Read-modify-write of `dir/state.json` under an exclusive lock of the directory.
    pub fn update(dir: &Path, f: impl FnOnce(&mut State)) -> Result<State, Error> {
        let d = std::fs::File::open(dir).map_err(|e| Error::io("open", dir, e))?;
        // SAFETY: flock on an fd we own; released when `d` is closed.
        if unsafe { libc::flock(d.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(Error::io("lock", dir, std::io::Error::last_os_error()));
        }
        let mut s = State::load(dir)?;
        f(&mut s);
        s.save(dir)?;
        Ok(s)
    }
}

/// Writes `path` through a temporary file in the same directory and a rename.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<(), Error> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let res = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(data)?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = res {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io("write", path, e));
    }
    Ok(())
}

/// The pid file as runc writes it: the number, no newline.
pub fn write_pid_file(path: &Path, pid: i32) -> Result<(), Error> {
    let path = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|e| Error::io("resolve", path, e))?
            .join(path)
    };
    write_atomic(&path, pid.to_string().as_bytes())
}

/// runc's rule for ids: `^[\w+-\.]+$`, and not `.` or `..`.
pub fn validate_id(id: &str) -> Result<(), Error> {
    let ok = !id.is_empty()
        && id != "."
        && id != ".."
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '+' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(Error::Other(format!("invalid container id format: {id}")))
    }
}

/// Days since 1970-01-01 -> (year, month, day) (Howard Hinnant's civil_from_days).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// `2024-01-02T03:04:05.123456789Z` (Go's RFC3339Nano trims trailing zeros; so do we).
pub fn rfc3339(secs: i64, nanos: u32) -> String {
    let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
    let t = secs.rem_euclid(86_400);
    let mut s = format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}",
        t / 3600,
        t % 3600 / 60,
        t % 60
    );
    if nanos > 0 {
        let frac = format!("{nanos:09}");
        s.push('.');
        s.push_str(frac.trim_end_matches('0'));
    }
    s.push('Z');
    s
}

pub fn rfc3339_now() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    rfc3339(now.as_secs() as i64, now.subsec_nanos())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> State {
        let mut spec = oci_spec::runtime::Spec::default();
        let mut ann = std::collections::HashMap::new();
        ann.insert("k".to_string(), "v".to_string());
        spec.set_annotations(Some(ann));
        State::new("c1", Path::new("/b"), Path::new("/b/rootfs"), spec)
    }

    #[test]
    fn roundtrip_and_update() {
        let d = tempfile::tempdir().unwrap();
        let mut s = sample();
        s.pid = 42;
        s.save(d.path()).unwrap();
        assert_eq!(State::load(d.path()).unwrap(), s);
        let u = State::update(d.path(), |s| s.exit_code = Some(3)).unwrap();
        assert_eq!(u.exit_code, Some(3));
        assert_eq!(State::load(d.path()).unwrap().exit_code, Some(3));
        // No temp files are left behind.
        let names: Vec<_> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from(STATE_FILE)]);
        assert!(State::load(&d.path().join("nope")).is_err());
        std::fs::write(d.path().join(STATE_FILE), "{").unwrap();
        assert!(State::load(d.path())
            .unwrap_err()
            .to_string()
            .contains("invalid state file"));
    }

    #[test]
    fn statuses() {
        let mut s = sample();
        assert_eq!(s.status_with(false), Status::Creating);
        s.pid = 10;
        assert_eq!(s.status_with(true), Status::Created);
        s.started = true;
        assert_eq!(s.status_with(true), Status::Running);
        s.paused = true;
        assert_eq!(s.status_with(true), Status::Paused);
        assert_eq!(s.status_with(false), Status::Stopped);
        s.paused = false;
        s.exit_code = Some(0);
        assert_eq!(s.status_with(true), Status::Stopped);
    }

    #[test]
    fn oci_state_json() {
        let mut s = sample();
        s.pid = 7;
        s.started = true;
        let v = serde_json::to_value(s.oci(Status::Running)).unwrap();
        assert_eq!(v["ociVersion"], s.spec.version().as_str());
        assert_eq!(v["id"], "c1");
        assert_eq!(v["pid"], 7);
        assert_eq!(v["status"], "running");
        assert_eq!(v["bundle"], "/b");
        assert_eq!(v["rootfs"], "/b/rootfs");
        assert_eq!(v["annotations"]["k"], "v");
        let v = serde_json::to_value(s.oci(Status::Stopped)).unwrap();
        assert_eq!(v["pid"], 0);
        assert_eq!(v["status"], "stopped");
    }

    #[test]
    fn live_pid() {
        let mut s = sample();
        s.set_pid(std::process::id() as i32);
        assert!(s.pid_start > 0);
        assert!(s.init_alive());
        s.pid_start += 1;
        assert!(!s.init_alive(), "a reused pid is not ours");
        s.pid = i32::MAX;
        assert!(!s.init_alive());
    }

    #[test]
    fn stat_parsing() {
        let line = "123 (a b) c) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 98765 19 20";
        assert_eq!(parse_stat(line), Some(('S', 98765)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn times() {
        assert_eq!(rfc3339(0, 0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400, 0), "2000-02-29T00:00:00Z");
        assert_eq!(
            rfc3339(1_700_000_000, 123_400_000),
            "2023-11-14T22:13:20.1234Z"
        );
        assert!(rfc3339_now().ends_with('Z'));
    }

    #[test]
    fn ids_and_pid_file() {
        validate_id("abc-1.2_x+y").unwrap();
        for bad in ["", ".", "..", "a/b", "a b", "ä"] {
            assert!(validate_id(bad).is_err(), "{bad:?}");
        }
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("pid");
        write_pid_file(&p, 1234).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "1234");
    }
}
