//! cgroup v1: one directory per controller hierarchy (`memory/`, `cpu,cpuacct/`, `name=systemd`
//! as `systemd/`...), each holding the container's cgroup at the same relative path.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use oci_spec::runtime::LinuxResources;

use super::{cg_err, read_str, stats, Cgroup, CgroupStats, Version};
use crate::Result;

/// The v1 half of [`Version`]; the hierarchies themselves are in [`Cgroup`] (serialized).
pub(super) struct V1;

/// The hierarchy directories mounted under `root` (`unified`, the v2 mount of a hybrid host,
/// is not one).
pub(super) fn hierarchies(root: &Path) -> Result<Vec<String>> {
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

impl Version for V1 {
    fn dirs(&self, cg: &Cgroup) -> Vec<PathBuf> {
        cg.hierarchies
            .iter()
            .map(|h| cg.root.join(h).join(&cg.rel))
            .collect()
    }

    fn dir(&self, cg: &Cgroup, ctrl: &str) -> Option<PathBuf> {
        cg.hierarchies
            .iter()
            .find(|h| {
                h.split(',')
                    .any(|c| c == ctrl || c.strip_prefix("name=") == Some(ctrl))
            })
            .map(|h| cg.root.join(h).join(&cg.rel))
    }

    fn make_dirs(&self, cg: &Cgroup) -> Result<()> {
        for h in &cg.hierarchies {
            let hroot = cg.root.join(h);
            let dir = hroot.join(&cg.rel);
            std::fs::create_dir_all(&dir).map_err(|e| cg_err(&dir, format!("create: {e}")))?;
            if h.split(',').any(|c| c == "cpuset") {
                // A new v1 cpuset is empty: nothing can join it until cpus/mems are set.
                let mut cur = hroot.clone();
                for comp in cg.rel.split('/') {
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

    fn apply(&self, cg: &Cgroup, res: &LinuxResources) -> Result<()> {
        if let Some(m) = res.memory() {
            let limit = m.limit().filter(|l| *l != 0);
            let swap = m.swap().filter(|s| *s != 0);
            if let Some(l) = limit {
                if let Err(e) = cg.write("memory", "memory.limit_in_bytes", &l.to_string()) {
                    // Raising the limit above memsw needs memsw first.
                    match swap {
                        Some(s) => {
                            cg.write_opt("memory", "memory.memsw.limit_in_bytes", &s.to_string())?;
                            cg.write("memory", "memory.limit_in_bytes", &l.to_string())?;
                        }
                        None => return Err(e),
                    }
                }
            }
            if let Some(s) = swap {
                cg.write_opt("memory", "memory.memsw.limit_in_bytes", &s.to_string())?;
            }
            if let Some(r) = m.reservation().filter(|r| *r != 0) {
                cg.write("memory", "memory.soft_limit_in_bytes", &r.to_string())?;
            }
            if let Some(sw) = m.swappiness().filter(|s| *s <= 100) {
                cg.write_opt("memory", "memory.swappiness", &sw.to_string())?;
            }
            if m.disable_oom_killer() == Some(true) {
                cg.write("memory", "memory.oom_control", "1")?;
            }
        }
        if let Some(c) = res.cpu() {
            if let Some(s) = c.shares().filter(|s| *s != 0) {
                cg.write("cpu", "cpu.shares", &s.to_string())?;
            }
            if let Some(p) = c.period().filter(|p| *p != 0) {
                cg.write("cpu", "cpu.cfs_period_us", &p.to_string())?;
            }
            if let Some(q) = c.quota().filter(|q| *q != 0) {
                cg.write("cpu", "cpu.cfs_quota_us", &q.to_string())?;
            }
            if let Some(p) = c.realtime_period().filter(|p| *p != 0) {
                cg.write_opt("cpu", "cpu.rt_period_us", &p.to_string())?;
            }
            if let Some(r) = c.realtime_runtime().filter(|r| *r != 0) {
                cg.write_opt("cpu", "cpu.rt_runtime_us", &r.to_string())?;
            }
        }
        if let Some(b) = res.block_io() {
            if let Some(w) = b.weight() {
                cg.write_opt("blkio", "blkio.weight", &w.to_string())?;
            }
        }
        cg.apply_hugetlb(res, "limit_in_bytes")?;
        if let Some(rules) = res.devices() {
            if cg.dir("devices").is_some() && !rules.is_empty() {
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
                    cg.write("devices", file, &line)?;
                }
                for line in super::device_rules::DEFAULT_DEVICE_RULES {
                    cg.write("devices", "devices.allow", line)?;
                }
            }
        }
        Ok(())
    }

    fn stats(&self, cg: &Cgroup) -> Result<CgroupStats> {
        if self.dirs(cg).iter().all(|d| !d.exists()) {
            return Err(cg_err(&cg.rel, "does not exist"));
        }
        Ok(stats::read_v1(|ctrl| self.dir(cg, ctrl)))
    }

    fn oom_events_file(&self) -> &'static str {
        "memory.oom_control"
    }

    fn freeze(&self, cg: &Cgroup) -> Result<()> {
        let p = self.state_file(cg)?;
        cg.write("freezer", "freezer.state", "FROZEN")?;
        let r = cg.wait_for(
            "freeze",
            || read_str(&p).is_some_and(|s| s.trim() == "FROZEN"),
            || {
                let _ = std::fs::write(&p, "FROZEN");
            },
        );
        if r.is_err() {
            let _ = self.thaw(cg);
        }
        r
    }

    fn thaw(&self, cg: &Cgroup) -> Result<()> {
        let p = self.state_file(cg)?;
        cg.write("freezer", "freezer.state", "THAWED")?;
        cg.wait_for(
            "thaw",
            || read_str(&p).is_some_and(|s| s.trim() == "THAWED"),
            || {
                let _ = std::fs::write(&p, "THAWED");
            },
        )
    }

    fn kill_all(&self, _cg: &Cgroup) {
        // v1 has no cgroup.kill: `destroy` signals the processes one by one.
    }

    /// An eventfd registered on `memory.oom_control` through `cgroup.event_control`.
    fn oom_notifier(&self, memory_dir: &Path) -> Result<Option<OwnedFd>> {
        let oc = memory_dir.join("memory.oom_control");
        let ctl = memory_dir.join("cgroup.event_control");
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
        std::fs::write(&ctl, format!("{} {}", efd, ocf.as_raw_fd()))
            .map_err(|e| cg_err(&ctl, format!("register oom event: {e}")))?;
        Ok(Some(owned))
    }
}

impl V1 {
    /// `freezer.state` of the cgroup; an error naming the cgroup when there is no freezer.
    fn state_file(&self, cg: &Cgroup) -> Result<PathBuf> {
        self.dir(cg, "freezer")
            .map(|d| d.join("freezer.state"))
            .ok_or_else(|| cg_err(&cg.rel, "controller freezer is not available"))
    }
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
        warm_attach_lock_in(Path::new(super::CGROUP_ROOT))
    }
}

fn warm_attach_lock_in(root: &Path) {
    if super::is_v2(root) {
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
fn own_procs_file(root: &Path, self_cgroup: &str) -> Option<PathBuf> {
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
}
