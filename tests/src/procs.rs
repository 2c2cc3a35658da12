//! Reading /proc: processes, their command lines, environments, parents, states and memory.

use std::path::Path;

/// The first mapping of a `/proc/<pid>/uid_map` (or `gid_map`) text, as its three fields
/// (inside id, outside id, count); empty when the text has none.
pub fn first_id_mapping(map: &str) -> Vec<&str> {
    map.lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect()
}

#[derive(Debug, Clone)]
pub struct Proc {
    pub pid: i32,
    pub ppid: i32,
    /// One-letter state from /proc/PID/stat (R, S, Z, ...).
    pub state: char,
    pub comm: String,
    pub cmdline: Vec<String>,
}

impl Proc {
    pub fn read(pid: i32) -> Option<Proc> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // comm is in parentheses and may contain spaces: split at the last ')'.
        let open = stat.find('(')?;
        let close = stat.rfind(')')?;
        let comm = stat[open + 1..close].to_string();
        let mut rest = stat[close + 2..].split_whitespace();
        let state = rest.next()?.chars().next()?;
        let ppid = rest.next()?.parse().ok()?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|b| {
                b.split(|&c| c == 0)
                    .filter(|s| !s.is_empty())
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .collect()
            })
            .unwrap_or_default();
        Some(Proc {
            pid,
            ppid,
            state,
            comm,
            cmdline,
        })
    }

    /// Basename of argv[0].
    pub fn argv0_name(&self) -> String {
        self.cmdline
            .first()
            .map(|a| {
                Path::new(a)
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            })
            .unwrap_or_default()
    }

    pub fn cmdline_str(&self) -> String {
        self.cmdline.join(" ")
    }

    /// Raw environment (NUL separated), empty if unreadable.
    pub fn environ(&self) -> String {
        std::fs::read(format!("/proc/{}/environ", self.pid))
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Proportional set size in KiB from /proc/PID/smaps_rollup.
    pub fn pss_kib(&self) -> Option<u64> {
        pss_kib(self.pid)
    }
}

pub fn pss_kib(pid: i32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    s.lines()
        .find(|l| l.starts_with("Pss:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// Every process currently visible.
pub fn all() -> Vec<Proc> {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()))
        .filter_map(Proc::read)
        .collect()
}

/// Processes whose argv[0] basename is `name` and which belong to the daemon identified by
/// `marker` (its socket address in the cmdline, or its temp dir in the environment).
pub fn shim_processes(name: &str, markers: &[&str]) -> Vec<Proc> {
    all()
        .into_iter()
        .filter(|p| p.argv0_name() == name || p.comm == truncate_comm(name))
        .filter(|p| {
            let cl = p.cmdline_str();
            let env = p.environ();
            markers.iter().any(|m| cl.contains(m) || env.contains(m))
        })
        .collect()
}

/// Of `procs`, those whose parent is not itself in `procs` (the shim daemons, not their forks).
pub fn top_level(procs: &[Proc]) -> Vec<Proc> {
    procs
        .iter()
        .filter(|p| !procs.iter().any(|q| q.pid == p.ppid))
        .cloned()
        .collect()
}

/// Fails unless exactly one of `procs` is [`top_level`] (one shim daemon); the message lists
/// them all, with `what` naming the one expected.
pub fn expect_one_top_level(procs: &[Proc], what: &str) -> anyhow::Result<()> {
    let top = top_level(procs);
    anyhow::ensure!(
        top.len() == 1,
        "expected one {what}, found {}:\n{}",
        top.len(),
        procs
            .iter()
            .map(|p| format!("  pid {} ppid {}: {}", p.pid, p.ppid, p.cmdline_str()))
            .collect::<Vec<_>>()
            .join("\n")
    );
    Ok(())
}

/// comm is truncated to 15 bytes by the kernel.
pub fn truncate_comm(name: &str) -> &str {
    &name[..name.len().min(15)]
}

/// All descendants of `pid` (children, grandchildren, ...).
pub fn descendants(pid: i32) -> Vec<Proc> {
    let procs = all();
    let mut out: Vec<Proc> = Vec::new();
    let mut frontier = vec![pid];
    while let Some(p) = frontier.pop() {
        for c in procs.iter().filter(|c| c.ppid == p) {
            if !out.iter().any(|o| o.pid == c.pid) {
                out.push(c.clone());
                frontier.push(c.pid);
            }
        }
    }
    out
}
