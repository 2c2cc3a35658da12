//! The container's cgroup: create at the spec's `cgroupsPath` (`path`), apply resources, stats,
//! freeze, update, kill-all, delete. What v1 (one directory per controller, `v1`) and v2
//! (unified, `v2`) do differently sits behind [`Version`]; everything else here is shared.

use std::io::ErrorKind;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use oci_spec::runtime::{LinuxResources, Spec};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

mod device_rules;
pub mod path;
mod stats;
#[cfg(test)]
mod tests;
mod v1;
mod v2;

pub use stats::{CgroupStats, IoUsage};

const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// A container's cgroup. Serializable, so `delete` can clean it up from on-disk state alone.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Cgroup {
    /// Unified hierarchy (v2) rather than one directory per v1 controller.
    v2: bool,
    /// The cgroupfs root, `/sys/fs/cgroup` (another directory in unit tests).
    root: PathBuf,
    /// The cgroup's path below every hierarchy root, e.g. `default/ctr-id`.
    rel: String,
    /// v1: the hierarchy directories (`memory`, `cpu,cpuacct`, `systemd`...); v2: empty.
    hierarchies: Vec<String>,
}

/// What cgroup v1 and v2 do differently. [`Cgroup`] picks one ([`Cgroup::version`]) and does
/// the rest the same way for both.
trait Version {
    /// Every directory of the cgroup (one per v1 hierarchy, or the v2 one).
    fn dirs(&self, cg: &Cgroup) -> Vec<PathBuf>;
    /// The directory holding `ctrl`'s files.
    fn dir(&self, cg: &Cgroup, ctrl: &str) -> Option<PathBuf>;
    /// Creates the cgroup's directories (and what they need to accept processes).
    fn make_dirs(&self, cg: &Cgroup) -> Result<()>;
    /// Writes the OCI resources whose files differ between the versions (memory, cpu, block
    /// I/O, hugetlb, devices, and v2's unified map, last so that it overrides).
    fn apply(&self, cg: &Cgroup, res: &LinuxResources) -> Result<()>;
    fn stats(&self, cg: &Cgroup) -> Result<CgroupStats>;
    /// The memory controller's file whose `oom_kill` line counts OOM kills.
    fn oom_events_file(&self) -> &'static str;
    fn freeze(&self, cg: &Cgroup) -> Result<()>;
    fn thaw(&self, cg: &Cgroup) -> Result<()>;
    /// Kills every process at once where the kernel can; `destroy` signals what is left.
    fn kill_all(&self, cg: &Cgroup);
    /// An fd that becomes readable on an OOM kill in `memory_dir`; `None` if unsupported.
    fn oom_notifier(&self, memory_dir: &Path) -> Result<Option<OwnedFd>>;
}

fn cg_err(path: impl AsRef<Path>, reason: impl std::fmt::Display) -> Error {
    Error::Cgroup {
        path: path.as_ref().display().to_string(),
        reason: reason.to_string(),
    }
}

fn is_v2(root: &Path) -> bool {
    nix::sys::statfs::statfs(root)
        .map(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
        .unwrap_or(false)
}

fn read_str(p: &Path) -> Option<String> {
    std::fs::read_to_string(p).ok()
}

fn read_u64(p: &Path) -> Option<u64> {
    read_str(p)?.trim().parse().ok()
}

/// `key value` lines (cpu.stat, memory.stat, memory.events...).
pub(crate) fn parse_kv(text: &str) -> Vec<(String, u64)> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let k = it.next()?;
            let v = it.next()?.parse().ok()?;
            Some((k.to_string(), v))
        })
        .collect()
}

fn kv(list: &[(String, u64)], key: &str) -> u64 {
    list.iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| *v)
        .unwrap_or(0)
}

impl Cgroup {
    /// Creates the cgroup for `spec.linux.cgroupsPath` (default `/amphi/<id>` when unset) and
    /// applies `spec.linux.resources`.
    pub fn create(id: &str, spec: &Spec) -> Result<Cgroup> {
        let root = Path::new(CGROUP_ROOT);
        Self::create_in(root, is_v2(root), id, spec)
    }

    pub(crate) fn create_in(root: &Path, v2: bool, id: &str, spec: &Spec) -> Result<Cgroup> {
        let cg = Self::plan_in(root, v2, id, spec)?;
        cg.make(spec)?;
        Ok(cg)
    }

    /// The cgroup [`Cgroup::create`] would make, without touching anything: what a caller
    /// records (for cleanup after a crash) before creating it with [`Cgroup::make`].
    pub fn plan(id: &str, spec: &Spec) -> Result<Cgroup> {
        let root = Path::new(CGROUP_ROOT);
        Self::plan_in(root, is_v2(root), id, spec)
    }

    pub(crate) fn plan_in(root: &Path, v2: bool, id: &str, spec: &Spec) -> Result<Cgroup> {
        let linux = spec.linux().clone().unwrap_or_default();
        let rel = path::rel_path(id, linux.cgroups_path().as_deref()).map_err(|source| {
            Error::CgroupPath {
                root: root.to_path_buf(),
                source,
            }
        })?;
        let hierarchies = if v2 {
            Vec::new()
        } else {
            v1::hierarchies(root)?
        };
        Ok(Cgroup {
            v2,
            root: root.to_path_buf(),
            rel,
            hierarchies,
        })
    }

    /// The one place that tells v1 from v2.
    fn version(&self) -> &'static dyn Version {
        if self.v2 {
            &v2::V2
        } else {
            &v1::V1
        }
    }

    /// Creates a planned cgroup and applies `spec.linux.resources` (removing it again when
    /// they cannot be applied).
    pub fn make(&self, spec: &Spec) -> Result<()> {
        self.make_dirs()?;
        if let Some(res) = spec.linux().as_ref().and_then(|l| l.resources().as_ref()) {
            if let Err(e) = self.apply(res) {
                let _ = self.destroy();
                return Err(e);
            }
        }
        Ok(())
    }

    fn dirs(&self) -> Vec<PathBuf> {
        self.version().dirs(self)
    }

    fn dir(&self, ctrl: &str) -> Option<PathBuf> {
        self.version().dir(self, ctrl)
    }

    fn make_dirs(&self) -> Result<()> {
        self.version().make_dirs(self)
    }

    fn write(&self, ctrl: &str, file: &str, value: &str) -> Result<()> {
        let dir = self
            .dir(ctrl)
            .ok_or_else(|| cg_err(&self.rel, format!("controller {ctrl} is not available")))?;
        let p = dir.join(file);
        std::fs::write(&p, value).map_err(|e| cg_err(&p, format!("write {value:?}: {e}")))
    }

    /// Writes if the file exists; logs and skips otherwise (optional kernel features).
    fn write_opt(&self, ctrl: &str, file: &str, value: &str) -> Result<()> {
        match self.dir(ctrl) {
            Some(d) if d.join(file).exists() => self.write(ctrl, file, value),
            _ => {
                log::warn!(
                    "cgroup {}: {file} not supported, {value:?} not applied",
                    self.rel
                );
                Ok(())
            }
        }
    }

    /// The resources whose files have the same names and formats on v1 and v2 first (cpuset,
    /// pids), then the version's own.
    fn apply(&self, res: &LinuxResources) -> Result<()> {
        if let Some(c) = res.cpu() {
            self.apply_cpuset(c)?;
        }
        self.apply_pids(res)?;
        self.version().apply(self, res)
    }

    /// cpuset files have the same names and formats on v1 and v2.
    fn apply_cpuset(&self, c: &oci_spec::runtime::LinuxCpu) -> Result<()> {
        if let Some(cpus) = c.cpus().as_deref().filter(|s| !s.is_empty()) {
            self.write("cpuset", "cpuset.cpus", cpus)?;
        }
        if let Some(mems) = c.mems().as_deref().filter(|s| !s.is_empty()) {
            self.write("cpuset", "cpuset.mems", mems)?;
        }
        Ok(())
    }

    /// `pids.max` is the same file on v1 and v2; a limit of 0 or less means no limit.
    fn apply_pids(&self, res: &LinuxResources) -> Result<()> {
        if let Some(p) = res.pids() {
            let v = if p.limit() > 0 {
                p.limit().to_string()
            } else {
                "max".into()
            };
            self.write("pids", "pids.max", &v)?;
        }
        Ok(())
    }

    /// The hugetlb limits: `hugetlb.<pagesize>.<limit_file>`, where v1 names the limit file
    /// `limit_in_bytes` and v2 `max`; skipped where the kernel has no such page size.
    fn apply_hugetlb(&self, res: &LinuxResources, limit_file: &str) -> Result<()> {
        for h in res.hugepage_limits().iter().flatten() {
            let file = format!("hugetlb.{}.{limit_file}", h.page_size());
            self.write_opt("hugetlb", &file, &h.limit().to_string())?;
        }
        Ok(())
    }

    /// The `cgroup.procs` files a process writes itself into to join.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs()
            .into_iter()
            .map(|d| d.join("cgroup.procs"))
            .collect()
    }

    fn procs_dir(&self) -> PathBuf {
        self.dir("pids")
            .or_else(|| self.dir("memory"))
            .or_else(|| self.dirs().into_iter().next())
            .unwrap_or_else(|| self.root.join(&self.rel))
    }

    pub fn pids(&self) -> Result<Vec<i32>> {
        let p = self.procs_dir().join("cgroup.procs");
        match std::fs::read_to_string(&p) {
            Ok(s) => Ok(s.lines().filter_map(|l| l.trim().parse().ok()).collect()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(cg_err(&p, format!("read: {e}"))),
        }
    }

    /// Usage counters and limits ([`stats`](self::stats) has the rules for each reading).
    pub fn stats(&self) -> Result<CgroupStats> {
        self.version().stats(self)
    }

    /// The OOM kills the cgroup counted (the `oom_kill` of v1 `memory.oom_control` or v2
    /// `memory.events`, as in [`Cgroup::stats`]): one small file, cheap enough to read before
    /// every exit event.
    pub fn oom_kills(&self) -> Result<u64> {
        let Some(d) = self.dir("memory") else {
            return Ok(0);
        };
        let p = d.join(self.version().oom_events_file());
        let text = std::fs::read_to_string(&p).map_err(|e| cg_err(&p, format!("read: {e}")))?;
        Ok(kv(&parse_kv(&text), "oom_kill"))
    }

    fn wait_for(&self, what: &str, mut done: impl FnMut() -> bool, retry: impl Fn()) -> Result<()> {
        let start = Instant::now();
        let mut n = 0u32;
        while !done() {
            if start.elapsed() > Duration::from_secs(5) {
                return Err(cg_err(&self.rel, format!("timed out waiting to {what}")));
            }
            n += 1;
            if n == 100 {
                n = 0;
                retry();
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    }

    pub fn freeze(&self) -> Result<()> {
        self.version().freeze(self)
    }

    pub fn thaw(&self) -> Result<()> {
        self.version().thaw(self)
    }

    /// Applies new resources (Update RPC).
    pub fn update(&self, resources: &LinuxResources) -> Result<()> {
        self.apply(resources)
    }

    /// Sends `signal` to every process in the cgroup.
    pub fn signal_all(&self, signal: i32) -> Result<()> {
        for pid in self.pids()? {
            // SAFETY: kill with plain integers.
            if unsafe { libc::kill(pid, signal) } != 0 {
                let e = nix::errno::Errno::last();
                if e != nix::errno::Errno::ESRCH {
                    return Err(cg_err(&self.rel, format!("kill {pid} with {signal}: {e}")));
                }
            }
        }
        Ok(())
    }

    /// Kills what is left (SIGKILL, thawing first if frozen), waits briefly for the cgroup to
    /// empty, and removes it. Idempotent: a missing cgroup is success.
    pub fn destroy(&self) -> Result<()> {
        let dirs: Vec<PathBuf> = self.dirs().into_iter().filter(|d| d.exists()).collect();
        if dirs.is_empty() {
            return Ok(());
        }
        if self.dir("freezer").is_some_and(|d| d.exists()) {
            let _ = self.thaw();
        }
        self.version().kill_all(self);
        let start = Instant::now();
        loop {
            let pids = self.pids().unwrap_or_default();
            if pids.is_empty() || start.elapsed() > Duration::from_secs(1) {
                break;
            }
            let _ = self.signal_all(libc::SIGKILL);
            std::thread::sleep(Duration::from_millis(10));
        }
        let mut last = None;
        for d in dirs {
            let start = Instant::now();
            loop {
                match std::fs::remove_dir(&d) {
                    Ok(()) => break,
                    Err(e) if e.kind() == ErrorKind::NotFound => break,
                    Err(e)
                        if start.elapsed() < Duration::from_secs(1)
                            && e.raw_os_error() == Some(libc::EBUSY) =>
                    {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    Err(e) => {
                        last = Some(cg_err(&d, format!("remove: {e}")));
                        break;
                    }
                }
            }
        }
        match last {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// An fd that becomes readable when the cgroup sees an OOM kill (v1: eventfd on
    /// memory.oom_control; v2: inotify on memory.events). `None` if not supported.
    pub fn oom_notifier(&self) -> Result<Option<OwnedFd>> {
        match self.dir("memory") {
            Some(d) => self.version().oom_notifier(&d),
            None => Ok(None),
        }
    }
}
