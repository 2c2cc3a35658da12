//! The container's cgroup: create at the spec's `cgroupsPath`, apply resources, stats, freeze,
//! update, kill-all, delete. cgroup v1 (one directory per controller) and v2 (unified).
//! Paths are taken from `linux.cgroupsPath`, either a path (`/default/ctr-id`) or the systemd
//! form `slice:prefix:name` (mapped to `slice/prefix-name.scope` in the cgroupfs tree).

use std::io::ErrorKind;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use oci_spec::runtime::{LinuxResources, Spec};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

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

mod stats;
pub use stats::{CgroupStats, IoUsage};

fn cg_err(path: impl AsRef<Path>, reason: impl std::fmt::Display) -> Error {
    Error::Cgroup {
        path: path.as_ref().display().to_string(),
        reason: reason.to_string(),
    }
}

/// `a-b-c.slice` -> `a.slice/a-b.slice/a-b-c.slice`; `-.slice` -> ``.
pub(crate) fn expand_slice(slice: &str) -> std::result::Result<String, String> {
    let name = slice
        .strip_suffix(".slice")
        .ok_or_else(|| format!("invalid slice name {slice:?}: must end in .slice"))?;
    if name == "-" {
        return Ok(String::new());
    }
    if name.is_empty()
        || name.contains('/')
        || name.starts_with('-')
        || name.ends_with('-')
        || name.contains("--")
    {
        return Err(format!("invalid slice name {slice:?}"));
    }
    let mut out = Vec::new();
    let mut prefix = String::new();
    for part in name.split('-') {
        if !prefix.is_empty() {
            prefix.push('-');
        }
        prefix.push_str(part);
        out.push(format!("{prefix}.slice"));
    }
    Ok(out.join("/"))
}

/// The cgroup path below the hierarchy roots for `linux.cgroupsPath`.
pub(crate) fn rel_path(
    id: &str,
    cgroups_path: Option<&Path>,
) -> std::result::Result<String, String> {
    let raw = cgroups_path
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    if raw.is_empty() {
        return Ok(format!("amphi/{id}"));
    }
    let parts: Vec<&str> = raw.split(':').collect();
    if parts.len() == 3 && !raw.starts_with('/') {
        // systemd: slice:prefix:name
        let slice = if parts[0].is_empty() {
            "system.slice"
        } else {
            parts[0]
        };
        let (prefix, name) = (parts[1], parts[2]);
        if name.is_empty() {
            return Err(format!("invalid systemd cgroupsPath {raw:?}: empty name"));
        }
        let base = expand_slice(slice)?;
        let unit = if name.ends_with(".slice") {
            return expand_slice(name);
        } else if prefix.is_empty() {
            format!("{name}.scope")
        } else {
            format!("{prefix}-{name}.scope")
        };
        return Ok(if base.is_empty() {
            unit
        } else {
            format!("{base}/{unit}")
        });
    }
    let mut comps: Vec<&str> = Vec::new();
    for c in raw.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                comps.pop();
            }
            c => comps.push(c),
        }
    }
    if comps.is_empty() {
        return Err(format!("invalid cgroupsPath {raw:?}"));
    }
    Ok(comps.join("/"))
}

fn is_v2(root: &Path) -> bool {
    nix::sys::statfs::statfs(root)
        .map(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
        .unwrap_or(false)
}

fn v1_hierarchies(root: &Path) -> Result<Vec<String>> {
    let mut v = Vec::new();
    let rd = std::fs::read_dir(root).map_err(|e| cg_err(root, e))?;
    for e in rd.flatten() {
        let Ok(ft) = e.file_type() else { continue };
        let Some(name) = e.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if !ft.is_dir() || name == "unified" || name.starts_with('.') {
            continue;
        }
        v.push(name);
    }
    v.sort();
    Ok(v)
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

/// v1 `cpu.shares` to v2 `cpu.weight` (the kernel's/runc's conversion).
pub(crate) fn shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 0;
    }
    1 + ((shares.clamp(2, 262144) - 2) * 9999) / 262142
}

impl Cgroup {
    /// Starts, on a short-lived thread, a no-op cgroup migration: this process into the cgroup
    /// it already is in (one cgroup v1 hierarchy). Call it first thing in Create (or exec).
    ///
    /// Why: moving a process into a cgroup takes the kernel's global `cgroup_threadgroup_rwsem`
    /// for writing, and the first writer after a quiet period waits for a full RCU grace period
    /// (rcu_sync) — 5 to 20 ms on a busy host, the largest single cost of a container start on
    /// cgroup v1. Writers that come within about one grace period of another share its wait. The
    /// no-op migration starts that grace period at the beginning of Create, so it has passed, or
    /// is well under way, when the spawner moves the new container process into its cgroup a few
    /// ms later. Nothing changes for any process; failures are ignored. cgroup v2 needs none of
    /// this: the container process is cloned straight into its cgroup (CLONE_INTO_CGROUP).
    pub fn warm_attach_lock() {
        warm_attach_lock_in(Path::new(CGROUP_ROOT))
    }
}

fn warm_attach_lock_in(root: &Path) {
    if is_v2(root) {
        return;
    }
    let Ok(text) = std::fs::read_to_string("/proc/self/cgroup") else {
        return;
    };
    let Some(procs) = own_procs_file(root, &text) else {
        return;
    };
    let _ = std::thread::Builder::new()
        .name("amphi-cgwarm".into())
        .spawn(move || {
            let _ = std::fs::write(&procs, std::process::id().to_string());
        });
}

/// The `cgroup.procs` of the cgroup this process is in, in the first v1 hierarchy of
/// `/proc/self/cgroup` (`self_cgroup`) mounted under `root`.
pub(crate) fn own_procs_file(root: &Path, self_cgroup: &str) -> Option<PathBuf> {
    self_cgroup.lines().find_map(|line| {
        let mut it = line.splitn(3, ':');
        let (_, ctrls, path) = (it.next()?, it.next()?, it.next()?);
        if ctrls.is_empty() {
            return None; // the v2 line of a hybrid host
        }
        let name = ctrls.strip_prefix("name=").unwrap_or(ctrls);
        let dir = root.join(name).join(path.trim_start_matches('/'));
        dir.is_dir().then(|| dir.join("cgroup.procs"))
    })
}

/// Device rules every container needs (runc's allowed defaults): mknod of any node (opening
/// one is still decided by the rules), then the standard character devices.
const DEFAULT_DEVICE_RULES: [&str; 12] = [
    "c *:* m",
    "b *:* m",
    "c 1:3 rwm",
    "c 1:5 rwm",
    "c 1:7 rwm",
    "c 1:8 rwm",
    "c 1:9 rwm",
    "c 5:0 rwm",
    "c 5:1 rwm",
    "c 5:2 rwm",
    "c 136:* rwm",
    "c 10:200 rwm",
];

/// One of [`DEFAULT_DEVICE_RULES`] (`c 1:3 rwm`, `c 136:* rwm`) as an allowing OCI rule.
fn device_rule(line: &str) -> oci_spec::runtime::LinuxDeviceCgroup {
    use oci_spec::runtime::LinuxDeviceType;
    let mut it = line.split_whitespace();
    let typ = match it.next() {
        Some("b") => LinuxDeviceType::B,
        Some("c") => LinuxDeviceType::C,
        _ => LinuxDeviceType::A,
    };
    let (major, minor) = it
        .next()
        .and_then(|n| n.split_once(':'))
        .unwrap_or(("*", "*"));
    let mut r = oci_spec::runtime::LinuxDeviceCgroup::default();
    r.set_allow(true);
    r.set_typ(Some(typ));
    r.set_major(major.parse().ok());
    r.set_minor(minor.parse().ok());
    r.set_access(Some(it.next().unwrap_or("rwm").to_string()));
    r
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
        let rel = rel_path(id, linux.cgroups_path().as_deref()).map_err(|e| cg_err(root, e))?;
        let hierarchies = if v2 {
            Vec::new()
        } else {
            v1_hierarchies(root)?
        };
        Ok(Cgroup {
            v2,
            root: root.to_path_buf(),
            rel,
            hierarchies,
        })
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

    /// Every directory of this cgroup (one per v1 hierarchy, or the v2 one).
    fn dirs(&self) -> Vec<PathBuf> {
        if self.v2 {
            vec![self.root.join(&self.rel)]
        } else {
            self.hierarchies
                .iter()
                .map(|h| self.root.join(h).join(&self.rel))
                .collect()
        }
    }

    /// The directory holding `ctrl`'s files.
    fn dir(&self, ctrl: &str) -> Option<PathBuf> {
        if self.v2 {
            return Some(self.root.join(&self.rel));
        }
        self.hierarchies
            .iter()
            .find(|h| {
                h.split(',')
                    .any(|c| c == ctrl || c.strip_prefix("name=") == Some(ctrl))
            })
            .map(|h| self.root.join(h).join(&self.rel))
    }

    fn make_dirs(&self) -> Result<()> {
        if self.v2 {
            // Enable the controllers down to the parent of our cgroup.
            let mut cur = self.root.clone();
            for comp in self.rel.split('/') {
                let avail = read_str(&cur.join("cgroup.controllers")).unwrap_or_default();
                let enabled = read_str(&cur.join("cgroup.subtree_control")).unwrap_or_default();
                for c in avail.split_whitespace() {
                    if !enabled.split_whitespace().any(|e| e == c) {
                        if let Err(e) =
                            std::fs::write(cur.join("cgroup.subtree_control"), format!("+{c}"))
                        {
                            log::debug!("enable controller {c} in {}: {e}", cur.display());
                        }
                    }
                }
                cur.push(comp);
                match std::fs::create_dir(&cur) {
                    Ok(()) => {}
                    Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(cg_err(&cur, format!("create: {e}"))),
                }
            }
            return Ok(());
        }
        for h in &self.hierarchies {
            let hroot = self.root.join(h);
            let dir = hroot.join(&self.rel);
            std::fs::create_dir_all(&dir).map_err(|e| cg_err(&dir, format!("create: {e}")))?;
            if h.split(',').any(|c| c == "cpuset") {
                // A new v1 cpuset is empty: nothing can join it until cpus/mems are set.
                let mut cur = hroot.clone();
                for comp in self.rel.split('/') {
                    let parent = cur.clone();
                    cur.push(comp);
                    for f in ["cpuset.cpus", "cpuset.mems"] {
                        let mine = read_str(&cur.join(f)).unwrap_or_default();
                        if mine.trim().is_empty() {
                            if let Some(v) = read_str(&parent.join(f)) {
                                let _ = std::fs::write(cur.join(f), v.trim());
                            }
                        }
                    }
                }
            }
        }
        Ok(())
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

    fn apply(&self, res: &LinuxResources) -> Result<()> {
        if self.v2 {
            self.apply_v2(res)
        } else {
            self.apply_v1(res)
        }
    }

    fn apply_v1(&self, res: &LinuxResources) -> Result<()> {
        if let Some(m) = res.memory() {
            let limit = m.limit().filter(|l| *l != 0);
            let swap = m.swap().filter(|s| *s != 0);
            if let Some(l) = limit {
                if let Err(e) = self.write("memory", "memory.limit_in_bytes", &l.to_string()) {
                    // Raising the limit above memsw needs memsw first.
                    match swap {
                        Some(s) => {
                            self.write_opt(
                                "memory",
                                "memory.memsw.limit_in_bytes",
                                &s.to_string(),
                            )?;
                            self.write("memory", "memory.limit_in_bytes", &l.to_string())?;
                        }
                        None => return Err(e),
                    }
                }
            }
            if let Some(s) = swap {
                self.write_opt("memory", "memory.memsw.limit_in_bytes", &s.to_string())?;
            }
            if let Some(r) = m.reservation().filter(|r| *r != 0) {
                self.write("memory", "memory.soft_limit_in_bytes", &r.to_string())?;
            }
            if let Some(sw) = m.swappiness().filter(|s| *s <= 100) {
                self.write_opt("memory", "memory.swappiness", &sw.to_string())?;
            }
            if m.disable_oom_killer() == Some(true) {
                self.write("memory", "memory.oom_control", "1")?;
            }
        }
        if let Some(c) = res.cpu() {
            if let Some(s) = c.shares().filter(|s| *s != 0) {
                self.write("cpu", "cpu.shares", &s.to_string())?;
            }
            if let Some(p) = c.period().filter(|p| *p != 0) {
                self.write("cpu", "cpu.cfs_period_us", &p.to_string())?;
            }
            if let Some(q) = c.quota().filter(|q| *q != 0) {
                self.write("cpu", "cpu.cfs_quota_us", &q.to_string())?;
            }
            if let Some(p) = c.realtime_period().filter(|p| *p != 0) {
                self.write_opt("cpu", "cpu.rt_period_us", &p.to_string())?;
            }
            if let Some(r) = c.realtime_runtime().filter(|r| *r != 0) {
                self.write_opt("cpu", "cpu.rt_runtime_us", &r.to_string())?;
            }
            self.apply_cpuset(c)?;
        }
        self.apply_pids(res)?;
        if let Some(b) = res.block_io() {
            if let Some(w) = b.weight() {
                self.write_opt("blkio", "blkio.weight", &w.to_string())?;
            }
        }
        for h in res.hugepage_limits().iter().flatten() {
            self.write_opt(
                "hugetlb",
                &format!("hugetlb.{}.limit_in_bytes", h.page_size()),
                &h.limit().to_string(),
            )?;
        }
        if let Some(rules) = res.devices() {
            if self.dir("devices").is_some() && !rules.is_empty() {
                for r in rules {
                    let typ = r
                        .typ()
                        .map(|t| t.as_str().to_string())
                        .unwrap_or("a".into());
                    let num = |n: Option<i64>| n.map(|n| n.to_string()).unwrap_or("*".into());
                    let access = r.access().clone().unwrap_or_else(|| "rwm".into());
                    let line = if typ == "a" {
                        "a".to_string()
                    } else {
                        format!("{typ} {}:{} {access}", num(r.major()), num(r.minor()))
                    };
                    let file = if r.allow() {
                        "devices.allow"
                    } else {
                        "devices.deny"
                    };
                    self.write("devices", file, &line)?;
                }
                for line in DEFAULT_DEVICE_RULES {
                    self.write("devices", "devices.allow", line)?;
                }
            }
        }
        Ok(())
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

    fn apply_v2(&self, res: &LinuxResources) -> Result<()> {
        if let Some(m) = res.memory() {
            let limit = m.limit().filter(|l| *l != 0);
            if let Some(l) = limit {
                let v = if l < 0 { "max".into() } else { l.to_string() };
                self.write("memory", "memory.max", &v)?;
            }
            if let Some(r) = m.reservation().filter(|r| *r != 0) {
                self.write("memory", "memory.low", &r.to_string())?;
            }
            if let Some(s) = m.swap().filter(|s| *s != 0) {
                // v1 semantics: swap is memory+swap.
                let v = match (s, limit) {
                    (s, _) if s < 0 => "max".to_string(),
                    (s, Some(l)) if l > 0 => (s - l).max(0).to_string(),
                    (s, _) => s.to_string(),
                };
                self.write_opt("memory", "memory.swap.max", &v)?;
            }
            if m.disable_oom_killer() == Some(true) {
                log::warn!(
                    "cgroup {}: disableOOMKiller is not supported on cgroup v2",
                    self.rel
                );
            }
        }
        if let Some(c) = res.cpu() {
            if let Some(s) = c.shares().filter(|s| *s != 0) {
                self.write("cpu", "cpu.weight", &shares_to_weight(s).to_string())?;
            }
            let quota = c.quota().filter(|q| *q != 0);
            let period = c.period().filter(|p| *p != 0);
            if quota.is_some() || period.is_some() {
                let q = match quota {
                    Some(q) if q > 0 => q.to_string(),
                    _ => "max".into(),
                };
                let p = period.unwrap_or(100_000);
                self.write("cpu", "cpu.max", &format!("{q} {p}"))?;
            }
            if let Some(i) = c.idle().filter(|i| *i != 0) {
                self.write_opt("cpu", "cpu.idle", &i.to_string())?;
            }
            self.apply_cpuset(c)?;
        }
        self.apply_pids(res)?;
        if let Some(b) = res.block_io() {
            if let Some(w) = b.weight() {
                // blkio weight 10..1000 -> io weight 1..10000
                let v = 1 + (u64::from(w).saturating_sub(10) * 9999) / 990;
                self.write_opt("io", "io.weight", &v.to_string())?;
            }
        }
        for h in res.hugepage_limits().iter().flatten() {
            self.write_opt(
                "hugetlb",
                &format!("hugetlb.{}.max", h.page_size()),
                &h.limit().to_string(),
            )?;
        }
        if let Some(rules) = res.devices().as_ref().filter(|r| !r.is_empty()) {
            // No devices controller on v2: the same list (spec rules, then the defaults, as on
            // v1) becomes an eBPF program attached to the cgroup.
            let mut all = rules.clone();
            all.extend(DEFAULT_DEVICE_RULES.iter().map(|l| device_rule(l)));
            crate::devices_bpf::apply(&self.root.join(&self.rel), &all)?;
        }
        if let Some(u) = res.unified() {
            let mut keys: Vec<_> = u.iter().collect();
            keys.sort();
            for (k, v) in keys {
                if k.contains('/') || k.starts_with('.') {
                    return Err(cg_err(&self.rel, format!("invalid unified key {k:?}")));
                }
                self.write("unified", k, v)?;
            }
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
        if self.v2 {
            let d = self.root.join(&self.rel);
            if !d.exists() {
                return Err(cg_err(&d, "does not exist"));
            }
            return Ok(stats::read_v2(&d));
        }
        if self.dirs().iter().all(|d| !d.exists()) {
            return Err(cg_err(&self.rel, "does not exist"));
        }
        Ok(stats::read_v1(|ctrl| self.dir(ctrl)))
    }

    /// The OOM kills the cgroup counted (the `oom_kill` of v1 `memory.oom_control` or v2
    /// `memory.events`, as in [`Cgroup::stats`]): one small file, cheap enough to read before
    /// every exit event.
    pub fn oom_kills(&self) -> Result<u64> {
        let Some(d) = self.dir("memory") else {
            return Ok(0);
        };
        let p = d.join(if self.v2 {
            "memory.events"
        } else {
            "memory.oom_control"
        });
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
        if self.v2 {
            self.write("freezer", "cgroup.freeze", "1")?;
            let ev = self.root.join(&self.rel).join("cgroup.events");
            if !ev.exists() {
                return Ok(());
            }
            return self.wait_for(
                "freeze",
                || read_str(&ev).is_some_and(|s| s.lines().any(|l| l.trim() == "frozen 1")),
                || {},
            );
        }
        self.write("freezer", "freezer.state", "FROZEN")?;
        let p = self.dir("freezer").unwrap().join("freezer.state");
        let r = self.wait_for(
            "freeze",
            || read_str(&p).is_some_and(|s| s.trim() == "FROZEN"),
            || {
                let _ = std::fs::write(&p, "FROZEN");
            },
        );
        if r.is_err() {
            let _ = self.thaw();
        }
        r
    }

    pub fn thaw(&self) -> Result<()> {
        if self.v2 {
            return self.write("freezer", "cgroup.freeze", "0");
        }
        self.write("freezer", "freezer.state", "THAWED")?;
        let p = self.dir("freezer").unwrap().join("freezer.state");
        self.wait_for(
            "thaw",
            || read_str(&p).is_some_and(|s| s.trim() == "THAWED"),
            || {
                let _ = std::fs::write(&p, "THAWED");
            },
        )
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
        if self.v2 {
            let k = self.root.join(&self.rel).join("cgroup.kill");
            if k.exists() {
                let _ = std::fs::write(&k, "1");
            }
        }
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
        let Some(d) = self.dir("memory") else {
            return Ok(None);
        };
        if self.v2 {
            let ev = d.join("memory.events");
            if !ev.exists() {
                return Ok(None);
            }
            // SAFETY: plain syscall.
            let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC | libc::IN_NONBLOCK) };
            if fd < 0 {
                return Err(cg_err(
                    &ev,
                    format!("inotify: {}", nix::errno::Errno::last()),
                ));
            }
            // SAFETY: fd is ours.
            let owned = unsafe { OwnedFd::from_raw_fd(fd) };
            let c = std::ffi::CString::new(ev.as_os_str().as_encoded_bytes()).unwrap();
            // SAFETY: valid C string.
            if unsafe { libc::inotify_add_watch(fd, c.as_ptr(), libc::IN_MODIFY) } < 0 {
                return Err(cg_err(
                    &ev,
                    format!("inotify watch: {}", nix::errno::Errno::last()),
                ));
            }
            return Ok(Some(owned));
        }
        let oc = d.join("memory.oom_control");
        let ctl = d.join("cgroup.event_control");
        if !oc.exists() || !ctl.exists() {
            return Ok(None);
        }
        let ocf = std::fs::File::open(&oc).map_err(|e| cg_err(&oc, format!("open: {e}")))?;
        // SAFETY: plain syscall.
        let efd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        if efd < 0 {
            return Err(cg_err(
                &oc,
                format!("eventfd: {}", nix::errno::Errno::last()),
            ));
        }
        // SAFETY: efd is ours.
        let owned = unsafe { OwnedFd::from_raw_fd(efd) };
        use std::os::fd::AsRawFd;
        std::fs::write(&ctl, format!("{} {}", efd, ocf.as_raw_fd()))
            .map_err(|e| cg_err(&ctl, format!("register oom event: {e}")))?;
        Ok(Some(owned))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_procs_file_picks_a_mounted_v1_hierarchy() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        std::fs::create_dir_all(root.join("cpu,cpuacct/system.slice/containerd.service")).unwrap();
        std::fs::create_dir_all(root.join("systemd/system.slice/containerd.service")).unwrap();
        let text = "12:blkio:/system.slice\n\
                    4:cpu,cpuacct:/system.slice/containerd.service\n\
                    1:name=systemd:/system.slice/containerd.service\n\
                    0::/system.slice/containerd.service\n";
        // blkio is not mounted in the fake tree: the next hierarchy is used.
        assert_eq!(
            own_procs_file(root, text),
            Some(root.join("cpu,cpuacct/system.slice/containerd.service/cgroup.procs"))
        );
        assert_eq!(
            own_procs_file(root, "1:name=systemd:/system.slice/containerd.service\n"),
            Some(root.join("systemd/system.slice/containerd.service/cgroup.procs"))
        );
        // Pure v2 (only the 0:: line): nothing to warm.
        assert_eq!(own_procs_file(root, "0::/user.slice\n"), None);
    }
    use oci_spec::runtime::{
        LinuxCpuBuilder, LinuxDeviceCgroupBuilder, LinuxMemoryBuilder, LinuxPidsBuilder,
        LinuxResourcesBuilder,
    };

    fn spec(path: Option<&str>, res: LinuxResources) -> Spec {
        let mut s = Spec::default();
        let mut l = s.linux().clone().unwrap();
        l.set_cgroups_path(path.map(PathBuf::from));
        l.set_resources(Some(res));
        s.set_linux(Some(l));
        s
    }

    fn resources() -> LinuxResources {
        LinuxResourcesBuilder::default()
            .memory(
                LinuxMemoryBuilder::default()
                    .limit(256i64 << 20)
                    .swap(512i64 << 20)
                    .reservation(128i64 << 20)
                    .build()
                    .unwrap(),
            )
            .cpu(
                LinuxCpuBuilder::default()
                    .shares(1024u64)
                    .quota(50_000i64)
                    .period(100_000u64)
                    .cpus("0-1")
                    .build()
                    .unwrap(),
            )
            .pids(LinuxPidsBuilder::default().limit(100i64).build().unwrap())
            .devices(vec![LinuxDeviceCgroupBuilder::default()
                .allow(false)
                .access("rwm")
                .build()
                .unwrap()])
            .build()
            .unwrap()
    }

    fn rd(p: PathBuf) -> String {
        std::fs::read_to_string(&p)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            .trim()
            .to_string()
    }

    #[test]
    fn paths() {
        assert_eq!(rel_path("c1", None).unwrap(), "amphi/c1");
        assert_eq!(
            rel_path("c1", Some(Path::new("/default/c1"))).unwrap(),
            "default/c1"
        );
        assert_eq!(rel_path("c1", Some(Path::new("/a/../../b"))).unwrap(), "b");
        assert_eq!(
            rel_path("c1", Some(Path::new("system.slice:docker:abc"))).unwrap(),
            "system.slice/docker-abc.scope"
        );
        assert_eq!(
            rel_path(
                "c1",
                Some(Path::new("kubepods-besteffort-pod12.slice:cri-containerd:abc"))
            )
            .unwrap(),
            "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod12.slice/cri-containerd-abc.scope"
        );
        assert_eq!(
            rel_path("c1", Some(Path::new(":amphi:x"))).unwrap(),
            "system.slice/amphi-x.scope"
        );
        assert_eq!(
            rel_path("c1", Some(Path::new("-.slice::x"))).unwrap(),
            "x.scope"
        );
        assert!(expand_slice("a--b.slice").is_err());
        assert!(expand_slice("nosuffix").is_err());
    }

    #[test]
    fn v1_layout_and_resources() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        for h in [
            "cpu,cpuacct",
            "cpuset",
            "memory",
            "pids",
            "devices",
            "freezer",
            "systemd",
            "unified",
        ] {
            std::fs::create_dir(root.join(h)).unwrap();
        }
        std::os::unix::fs::symlink("cpu,cpuacct", root.join("cpu")).unwrap();
        std::fs::write(root.join("cpuset/cpuset.cpus"), "0-3\n").unwrap();
        std::fs::write(root.join("cpuset/cpuset.mems"), "0\n").unwrap();
        std::fs::create_dir_all(root.join("memory/default/c1")).unwrap();
        std::fs::write(
            root.join("memory/default/c1/memory.memsw.limit_in_bytes"),
            "",
        )
        .unwrap();

        let cg =
            Cgroup::create_in(root, false, "c1", &spec(Some("/default/c1"), resources())).unwrap();
        assert_eq!(
            cg.hierarchies,
            vec![
                "cpu,cpuacct",
                "cpuset",
                "devices",
                "freezer",
                "memory",
                "pids",
                "systemd"
            ]
        );
        assert_eq!(cg.procs_files().len(), 7);
        assert!(cg
            .procs_files()
            .contains(&root.join("memory/default/c1/cgroup.procs")));
        let m = root.join("memory/default/c1");
        assert_eq!(rd(m.join("memory.limit_in_bytes")), "268435456");
        assert_eq!(rd(m.join("memory.memsw.limit_in_bytes")), "536870912");
        assert_eq!(rd(m.join("memory.soft_limit_in_bytes")), "134217728");
        let c = root.join("cpu,cpuacct/default/c1");
        assert_eq!(rd(c.join("cpu.shares")), "1024");
        assert_eq!(rd(c.join("cpu.cfs_quota_us")), "50000");
        assert_eq!(rd(c.join("cpu.cfs_period_us")), "100000");
        // cpus copied down to the intermediate level, then set
        assert_eq!(rd(root.join("cpuset/default/cpuset.cpus")), "0-3");
        assert_eq!(rd(root.join("cpuset/default/c1/cpuset.cpus")), "0-1");
        assert_eq!(rd(root.join("cpuset/default/c1/cpuset.mems")), "0");
        assert_eq!(rd(root.join("pids/default/c1/pids.max")), "100");
        // the last write wins in a plain file: the last default allow rule
        assert_eq!(
            rd(root.join("devices/default/c1/devices.allow")),
            "c 10:200 rwm"
        );
        assert_eq!(rd(root.join("devices/default/c1/devices.deny")), "a");

        // stats
        std::fs::write(c.join("cpuacct.usage"), "123456789\n").unwrap();
        std::fs::write(c.join("cpuacct.stat"), "user 10\nsystem 5\n").unwrap();
        std::fs::write(
            c.join("cpu.stat"),
            "nr_periods 7\nnr_throttled 2\nthrottled_time 999\n",
        )
        .unwrap();
        std::fs::write(m.join("memory.usage_in_bytes"), "1000\n").unwrap();
        std::fs::write(m.join("memory.max_usage_in_bytes"), "2000\n").unwrap();
        std::fs::write(m.join("memory.memsw.usage_in_bytes"), "1500\n").unwrap();
        std::fs::write(m.join("memory.stat"), "cache 11\nrss 22\ntotal_rss 22\n").unwrap();
        std::fs::write(
            m.join("memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n",
        )
        .unwrap();
        std::fs::write(root.join("pids/default/c1/pids.current"), "4\n").unwrap();
        let s = cg.stats().unwrap();
        assert!(!s.v2);
        assert_eq!(s.cpu_usage_ns, 123456789);
        assert_eq!(s.cpu_user_ns, 100_000_000);
        assert_eq!(s.cpu_system_ns, 50_000_000);
        assert_eq!(
            (s.cpu_nr_periods, s.cpu_nr_throttled, s.cpu_throttled_ns),
            (7, 2, 999)
        );
        assert_eq!(s.memory_usage, 1000);
        assert_eq!(s.memory_limit, 268435456);
        assert_eq!(s.memory_max_usage, 2000);
        assert_eq!(s.memory_swap_usage, 500);
        assert_eq!(
            (s.memory_cache, s.memory_rss, s.memory_oom_kill),
            (11, 22, 3)
        );
        assert_eq!(cg.oom_kills().unwrap(), 3);
        assert_eq!((s.pids_current, s.pids_limit), (4, 100));
        assert_eq!(s.memory_stat.len(), 3);

        // freeze/thaw over plain files
        cg.freeze().unwrap();
        assert_eq!(rd(root.join("freezer/default/c1/freezer.state")), "FROZEN");
        cg.thaw().unwrap();
        assert_eq!(rd(root.join("freezer/default/c1/freezer.state")), "THAWED");

        // pids and serialization
        std::fs::write(root.join("pids/default/c1/cgroup.procs"), "12\n34\n").unwrap();
        assert_eq!(cg.pids().unwrap(), vec![12, 34]);
        let json = serde_json::to_string(&cg).unwrap();
        let back: Cgroup = serde_json::from_str(&json).unwrap();
        assert_eq!(back, cg);
    }

    #[test]
    fn v2_layout_and_resources() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        std::fs::write(
            root.join("cgroup.controllers"),
            "cpuset cpu io memory pids\n",
        )
        .unwrap();
        std::fs::write(root.join("cgroup.subtree_control"), "memory\n").unwrap();
        let mut res = resources();
        // Device rules need a real cgroup v2 directory (v2_device_rules_need_a_real_cgroup).
        res.set_devices(None);
        let mut u = std::collections::HashMap::new();
        u.insert("memory.high".to_string(), "200000000".to_string());
        res.set_unified(Some(u));
        let cg = Cgroup::create_in(root, true, "c2", &spec(None, res)).unwrap();
        let dir = root.join("amphi/c2");
        assert_eq!(cg.procs_files(), vec![dir.join("cgroup.procs")]);
        // controllers enabled in the root (the fake file keeps the last write)
        assert_eq!(rd(root.join("cgroup.subtree_control")), "+pids");
        assert_eq!(rd(dir.join("memory.max")), "268435456");
        assert_eq!(rd(dir.join("memory.low")), "134217728");
        assert_eq!(rd(dir.join("memory.high")), "200000000");
        assert_eq!(rd(dir.join("cpu.weight")), "39");
        assert_eq!(rd(dir.join("cpu.max")), "50000 100000");
        assert_eq!(rd(dir.join("cpuset.cpus")), "0-1");
        assert_eq!(rd(dir.join("pids.max")), "100");
        // swap.max not present in the fake tree: skipped, not an error
        assert!(!dir.join("memory.swap.max").exists());

        std::fs::write(dir.join("memory.swap.max"), "").unwrap();
        let upd = LinuxResourcesBuilder::default()
            .memory(
                LinuxMemoryBuilder::default()
                    .limit(100i64)
                    .swap(300i64)
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap();
        cg.update(&upd).unwrap();
        assert_eq!(rd(dir.join("memory.swap.max")), "200");

        std::fs::write(dir.join("cpu.stat"), "usage_usec 5\nuser_usec 3\nsystem_usec 2\nnr_periods 1\nnr_throttled 1\nthrottled_usec 4\n").unwrap();
        std::fs::write(dir.join("memory.current"), "4096\n").unwrap();
        std::fs::write(dir.join("memory.max"), "max\n").unwrap();
        std::fs::write(dir.join("memory.stat"), "anon 10\nfile 20\n").unwrap();
        std::fs::write(
            dir.join("memory.events"),
            "low 0\nhigh 0\nmax 1\noom 1\noom_kill 2\n",
        )
        .unwrap();
        std::fs::write(dir.join("pids.current"), "3\n").unwrap();
        let s = cg.stats().unwrap();
        assert!(s.v2);
        assert_eq!(
            (s.cpu_usage_ns, s.cpu_user_ns, s.cpu_system_ns),
            (5000, 3000, 2000)
        );
        assert_eq!(s.cpu_throttled_ns, 4000);
        assert_eq!((s.memory_usage, s.memory_limit), (4096, u64::MAX));
        assert_eq!(
            (s.memory_rss, s.memory_cache, s.memory_oom_kill),
            (10, 20, 2)
        );
        assert_eq!(cg.oom_kills().unwrap(), 2);
        assert_eq!((s.pids_current, s.pids_limit), (3, 100));

        cg.freeze().unwrap();
        assert_eq!(rd(dir.join("cgroup.freeze")), "1");
        cg.thaw().unwrap();
        assert_eq!(rd(dir.join("cgroup.freeze")), "0");
        assert!(cg.oom_notifier().unwrap().is_some());
    }

    #[test]
    fn v2_device_rules_need_a_real_cgroup() {
        // The fake tree is no cgroup: the device program cannot be attached there (nor loaded
        // without privileges), and creating the cgroup fails naming the directory.
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        std::fs::write(root.join("cgroup.controllers"), "").unwrap();
        let res = LinuxResourcesBuilder::default()
            .devices(resources().devices().clone().unwrap())
            .build()
            .unwrap();
        let e = Cgroup::create_in(root, true, "c3", &spec(None, res))
            .unwrap_err()
            .to_string();
        let dir = root.join("amphi/c3");
        assert!(e.contains(&dir.display().to_string()), "{e}");
        assert!(e.contains("BPF_"), "{e}");
    }

    #[test]
    fn default_device_rules_parse() {
        // mknod of anything, as runc allows it (open is decided by the other rules).
        let r = device_rule("b *:* m");
        assert_eq!(r.typ(), Some(oci_spec::runtime::LinuxDeviceType::B));
        assert_eq!((r.major(), r.minor()), (None, None));
        assert_eq!(r.access().as_deref(), Some("m"));
        let r = device_rule("c 136:* rwm");
        assert!(r.allow());
        assert_eq!(r.typ(), Some(oci_spec::runtime::LinuxDeviceType::C));
        assert_eq!((r.major(), r.minor()), (Some(136), None));
        assert_eq!(r.access().as_deref(), Some("rwm"));
        let r = device_rule("c 10:200 rwm");
        assert_eq!((r.major(), r.minor()), (Some(10), Some(200)));
    }

    #[test]
    fn weight_conversion() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(262144), 10000);
    }

    #[test]
    fn destroy_missing_is_ok() {
        let cg = Cgroup {
            v2: false,
            root: PathBuf::from("/nonexistent"),
            rel: "amphi/x".into(),
            hierarchies: vec!["memory".into()],
        };
        cg.destroy().unwrap();
    }
}
