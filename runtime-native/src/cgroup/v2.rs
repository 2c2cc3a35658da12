//! cgroup v2: one unified directory, controllers enabled from the root down through
//! `cgroup.subtree_control`, devices as an eBPF program, `cgroup.kill` and `cgroup.freeze`.

use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use oci_spec::runtime::LinuxResources;

use super::device_rules::{device_rule, DEFAULT_DEVICE_RULES};
use super::{cg_err, read_str, stats, Cgroup, CgroupStats, Version};
use crate::Result;

/// The v2 half of [`Version`].
pub(super) struct V2;

impl Version for V2 {
    fn dirs(&self, cg: &Cgroup) -> Vec<PathBuf> {
        vec![cg.root.join(&cg.rel)]
    }

    fn dir(&self, cg: &Cgroup, _ctrl: &str) -> Option<PathBuf> {
        Some(cg.root.join(&cg.rel))
    }

    fn make_dirs(&self, cg: &Cgroup) -> Result<()> {
        // Enable the controllers down to the parent of our cgroup.
        let mut cur = cg.root.clone();
        for comp in cg.rel.split('/') {
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
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(cg_err(&cur, format!("create: {e}"))),
            }
        }
        Ok(())
    }

    fn apply(&self, cg: &Cgroup, res: &LinuxResources) -> Result<()> {
        if let Some(m) = res.memory() {
            let limit = m.limit().filter(|l| *l != 0);
            if let Some(l) = limit {
                let v = if l < 0 { "max".into() } else { l.to_string() };
                cg.write("memory", "memory.max", &v)?;
            }
            if let Some(r) = m.reservation().filter(|r| *r != 0) {
                cg.write("memory", "memory.low", &r.to_string())?;
            }
            if let Some(s) = m.swap().filter(|s| *s != 0) {
                // v1 semantics: swap is memory+swap.
                let v = match (s, limit) {
                    (s, _) if s < 0 => "max".to_string(),
                    (s, Some(l)) if l > 0 => (s - l).max(0).to_string(),
                    (s, _) => s.to_string(),
                };
                cg.write_opt("memory", "memory.swap.max", &v)?;
            }
            if m.disable_oom_killer() == Some(true) {
                log::warn!(
                    "cgroup {}: disableOOMKiller is not supported on cgroup v2",
                    cg.rel
                );
            }
        }
        if let Some(c) = res.cpu() {
            if let Some(s) = c.shares().filter(|s| *s != 0) {
                cg.write("cpu", "cpu.weight", &shares_to_weight(s).to_string())?;
            }
            let quota = c.quota().filter(|q| *q != 0);
            let period = c.period().filter(|p| *p != 0);
            if quota.is_some() || period.is_some() {
                let q = match quota {
                    Some(q) if q > 0 => q.to_string(),
                    _ => "max".into(),
                };
                let p = period.unwrap_or(100_000);
                cg.write("cpu", "cpu.max", &format!("{q} {p}"))?;
            }
            if let Some(i) = c.idle().filter(|i| *i != 0) {
                cg.write_opt("cpu", "cpu.idle", &i.to_string())?;
            }
        }
        if let Some(b) = res.block_io() {
            if let Some(w) = b.weight() {
                // blkio weight 10..1000 -> io weight 1..10000
                let v = 1 + (u64::from(w).saturating_sub(10) * 9999) / 990;
                cg.write_opt("io", "io.weight", &v.to_string())?;
            }
        }
        cg.apply_hugetlb(res, "max")?;
        if let Some(rules) = res.devices().as_ref().filter(|r| !r.is_empty()) {
            // No devices controller on v2: the same list (spec rules, then the defaults, as on
            // v1) becomes an eBPF program attached to the cgroup.
            let mut all = rules.clone();
            all.extend(DEFAULT_DEVICE_RULES.iter().map(|l| device_rule(l)));
            crate::devices_bpf::apply(&cg.root.join(&cg.rel), &all)?;
        }
        if let Some(u) = res.unified() {
            let mut keys: Vec<_> = u.iter().collect();
            keys.sort();
            for (k, v) in keys {
                if k.contains('/') || k.starts_with('.') {
                    return Err(cg_err(&cg.rel, format!("invalid unified key {k:?}")));
                }
                cg.write("unified", k, v)?;
            }
        }
        Ok(())
    }

    fn stats(&self, cg: &Cgroup) -> Result<CgroupStats> {
        let d = cg.root.join(&cg.rel);
        if !d.exists() {
            return Err(cg_err(&d, "does not exist"));
        }
        Ok(stats::read_v2(&d))
    }

    fn oom_events_file(&self) -> &'static str {
        "memory.events"
    }

    fn freeze(&self, cg: &Cgroup) -> Result<()> {
        cg.write("freezer", "cgroup.freeze", "1")?;
        let ev = cg.root.join(&cg.rel).join("cgroup.events");
        if !ev.exists() {
            return Ok(());
        }
        cg.wait_for(
            "freeze",
            || read_str(&ev).is_some_and(|s| s.lines().any(|l| l.trim() == "frozen 1")),
            || {},
        )
    }

    fn thaw(&self, cg: &Cgroup) -> Result<()> {
        cg.write("freezer", "cgroup.freeze", "0")
    }

    fn kill_all(&self, cg: &Cgroup) {
        let k = cg.root.join(&cg.rel).join("cgroup.kill");
        if k.exists() {
            let _ = std::fs::write(&k, "1");
        }
    }

    /// An inotify fd watching `memory.events` (its `oom_kill` line changes on a kill).
    fn oom_notifier(&self, memory_dir: &Path) -> Result<Option<OwnedFd>> {
        let ev = memory_dir.join("memory.events");
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
        let c = std::ffi::CString::new(ev.as_os_str().as_encoded_bytes())
            .map_err(|e| cg_err(&ev, e))?;
        // SAFETY: valid C string.
        if unsafe { libc::inotify_add_watch(fd, c.as_ptr(), libc::IN_MODIFY) } < 0 {
            return Err(cg_err(
                &ev,
                format!("inotify watch: {}", nix::errno::Errno::last()),
            ));
        }
        Ok(Some(owned))
    }
}

/// v1 `cpu.shares` to v2 `cpu.weight` (the kernel's/runc's conversion).
fn shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 0;
    }
    1 + ((shares.clamp(2, 262144) - 2) * 9999) / 262142
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weight_conversion() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(262144), 10000);
    }
}
