//! A cgroup's usage counters and limits, read from cgroupfs files into [`CgroupStats`] (the
//! runtime's own shape; the shim turns it into containerd's metrics protobufs).
//!
//! Values follow what containerd's cgroups library reports for runc, so `ctr task metrics` and
//! the CRI plugin see the same numbers with either runtime. On v2 a limit that reads `max`
//! (`pids.max`, `memory.max`, `memory.swap.max`) is `u64::MAX`, as runc reports it; on v1 an
//! unlimited `pids.max` stays 0, as containerd's v1 code reports it. A file the kernel does not
//! offer (no swap accounting, no io controller) reads as zero or as no entries.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{kv, parse_kv, read_str, read_u64};

/// Resource usage, independent of containerd's protobufs (the shim converts).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CgroupStats {
    pub v2: bool,
    pub pids_current: u64,
    /// `pids.max`; v2 `max` is `u64::MAX`, v1 `max` is 0 (containerd's readings).
    pub pids_limit: u64,
    pub cpu_usage_ns: u64,
    pub cpu_user_ns: u64,
    pub cpu_system_ns: u64,
    pub cpu_nr_periods: u64,
    pub cpu_nr_throttled: u64,
    pub cpu_throttled_ns: u64,
    pub memory_usage: u64,
    pub memory_limit: u64,
    pub memory_max_usage: u64,
    /// v2 `memory.swap.current`; v1 the swap part of `memory.memsw.usage_in_bytes`.
    pub memory_swap_usage: u64,
    /// v2 `memory.swap.max` (`max` is `u64::MAX`); 0 where the kernel has no swap accounting.
    #[serde(default)]
    pub memory_swap_limit: u64,
    /// v2 `memory.swap.peak` (kernels from 6.5 on).
    #[serde(default)]
    pub memory_swap_max_usage: u64,
    pub memory_cache: u64,
    pub memory_rss: u64,
    pub memory_oom_kill: u64,
    /// Raw `memory.stat` keys (v1 or v2 names).
    pub memory_stat: Vec<(String, u64)>,
    /// Raw v2 `memory.events` keys (`low`, `high`, `max`, `oom`, `oom_kill`, ...).
    #[serde(default)]
    pub memory_events: Vec<(String, u64)>,
    /// v2 `io.stat`, one entry per device the cgroup did I/O on.
    #[serde(default)]
    pub io: Vec<IoUsage>,
}

/// One device's line of v2 `io.stat`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IoUsage {
    pub major: u64,
    pub minor: u64,
    pub rbytes: u64,
    pub wbytes: u64,
    pub rios: u64,
    pub wios: u64,
}

/// A v2 limit file: a number, or `max` for none (`u64::MAX`, what runc reports).
fn read_v2_limit(p: &Path) -> Option<u64> {
    let text = read_str(p)?;
    match text.trim() {
        "max" => Some(u64::MAX),
        v => v.parse().ok(),
    }
}

/// `io.stat`: `MAJ:MIN rbytes=N wbytes=N rios=N wios=N dbytes=N dios=N` per line; unknown keys
/// are skipped, a line without a device number is ignored.
pub(crate) fn parse_io_stat(text: &str) -> Vec<IoUsage> {
    text.lines()
        .filter_map(|line| {
            let mut it = line.split_whitespace();
            let (major, minor) = it.next()?.split_once(':')?;
            let mut e = IoUsage {
                major: major.parse().ok()?,
                minor: minor.parse().ok()?,
                ..Default::default()
            };
            for field in it {
                let Some((k, v)) = field.split_once('=') else {
                    continue;
                };
                let v = v.parse().unwrap_or(0);
                match k {
                    "rbytes" => e.rbytes = v,
                    "wbytes" => e.wbytes = v,
                    "rios" => e.rios = v,
                    "wios" => e.wios = v,
                    _ => {}
                }
            }
            Some(e)
        })
        .collect()
}

/// The counters of the v2 cgroup directory `d`.
pub(super) fn read_v2(d: &Path) -> CgroupStats {
    let file = |name: &str| parse_kv(&read_str(&d.join(name)).unwrap_or_default());
    let mut s = CgroupStats {
        v2: true,
        ..Default::default()
    };
    let cpu = file("cpu.stat");
    s.cpu_usage_ns = kv(&cpu, "usage_usec") * 1000;
    s.cpu_user_ns = kv(&cpu, "user_usec") * 1000;
    s.cpu_system_ns = kv(&cpu, "system_usec") * 1000;
    s.cpu_nr_periods = kv(&cpu, "nr_periods");
    s.cpu_nr_throttled = kv(&cpu, "nr_throttled");
    s.cpu_throttled_ns = kv(&cpu, "throttled_usec") * 1000;
    s.memory_usage = read_u64(&d.join("memory.current")).unwrap_or(0);
    s.memory_limit = read_v2_limit(&d.join("memory.max")).unwrap_or(0);
    s.memory_max_usage = read_u64(&d.join("memory.peak")).unwrap_or(0);
    s.memory_swap_usage = read_u64(&d.join("memory.swap.current")).unwrap_or(0);
    s.memory_swap_limit = read_v2_limit(&d.join("memory.swap.max")).unwrap_or(0);
    s.memory_swap_max_usage = read_u64(&d.join("memory.swap.peak")).unwrap_or(0);
    let stat = file("memory.stat");
    s.memory_cache = kv(&stat, "file");
    s.memory_rss = kv(&stat, "anon");
    s.memory_stat = stat;
    s.memory_events = file("memory.events");
    s.memory_oom_kill = kv(&s.memory_events, "oom_kill");
    s.pids_current = read_u64(&d.join("pids.current")).unwrap_or(0);
    s.pids_limit = read_v2_limit(&d.join("pids.max")).unwrap_or(0);
    s.io = parse_io_stat(&read_str(&d.join("io.stat")).unwrap_or_default());
    s
}

/// The counters of a v1 cgroup; `dir(controller)` is its directory in that controller's
/// hierarchy, if mounted.
pub(super) fn read_v1(dir: impl Fn(&str) -> Option<PathBuf>) -> CgroupStats {
    let mut s = CgroupStats::default();
    if let Some(d) = dir("cpuacct") {
        s.cpu_usage_ns = read_u64(&d.join("cpuacct.usage")).unwrap_or(0);
        let st = parse_kv(&read_str(&d.join("cpuacct.stat")).unwrap_or_default());
        // USER_HZ ticks
        let hz = 100u64;
        s.cpu_user_ns = kv(&st, "user") * (1_000_000_000 / hz);
        s.cpu_system_ns = kv(&st, "system") * (1_000_000_000 / hz);
    }
    if let Some(d) = dir("cpu") {
        let st = parse_kv(&read_str(&d.join("cpu.stat")).unwrap_or_default());
        s.cpu_nr_periods = kv(&st, "nr_periods");
        s.cpu_nr_throttled = kv(&st, "nr_throttled");
        s.cpu_throttled_ns = kv(&st, "throttled_time");
    }
    if let Some(d) = dir("memory") {
        s.memory_usage = read_u64(&d.join("memory.usage_in_bytes")).unwrap_or(0);
        s.memory_limit = read_u64(&d.join("memory.limit_in_bytes")).unwrap_or(0);
        s.memory_max_usage = read_u64(&d.join("memory.max_usage_in_bytes")).unwrap_or(0);
        if let Some(memsw) = read_u64(&d.join("memory.memsw.usage_in_bytes")) {
            s.memory_swap_usage = memsw.saturating_sub(s.memory_usage);
        }
        let stat = parse_kv(&read_str(&d.join("memory.stat")).unwrap_or_default());
        s.memory_cache = kv(&stat, "cache");
        s.memory_rss = kv(&stat, "rss");
        s.memory_stat = stat;
        let oom = parse_kv(&read_str(&d.join("memory.oom_control")).unwrap_or_default());
        s.memory_oom_kill = kv(&oom, "oom_kill");
    }
    if let Some(d) = dir("pids") {
        s.pids_current = read_u64(&d.join("pids.current")).unwrap_or(0);
        // v1 `max` does not parse: 0, as containerd's v1 pids reading reports it.
        s.pids_limit = read_u64(&d.join("pids.max")).unwrap_or(0);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroup::tests::fake_files;

    /// The v2 stats of a cgroup directory holding `files` (name, content).
    fn v2_stats_of(files: &[(&str, &str)]) -> CgroupStats {
        let d = tempfile::tempdir().unwrap();
        fake_files(d.path(), files);
        read_v2(d.path())
    }

    /// A v2 directory as the kernel shows it for a container without limits: every limit
    /// `max`, swap accounting present, I/O on two devices.
    #[test]
    fn v2_unlimited_limits_read_as_u64_max() {
        let s = v2_stats_of(&[
            ("pids.current", "2\n"),
            ("pids.max", "max\n"),
            ("memory.current", "8192\n"),
            ("memory.max", "max\n"),
            ("memory.swap.current", "0\n"),
            ("memory.swap.max", "max\n"),
            (
                "io.stat",
                "254:0 rbytes=4096 wbytes=8388608 rios=1 wios=64 dbytes=0 dios=0\n\
                 7:1 rbytes=512 wbytes=0 rios=2 wios=0 dbytes=0 dios=0\n",
            ),
        ]);
        assert!(s.v2);
        assert_eq!((s.pids_current, s.pids_limit), (2, u64::MAX));
        assert_eq!(s.pids_limit, 18446744073709551615);
        assert_eq!((s.memory_usage, s.memory_limit), (8192, u64::MAX));
        assert_eq!((s.memory_swap_usage, s.memory_swap_limit), (0, u64::MAX));
        assert_eq!(
            s.io,
            vec![
                IoUsage {
                    major: 254,
                    minor: 0,
                    rbytes: 4096,
                    wbytes: 8388608,
                    rios: 1,
                    wios: 64
                },
                IoUsage {
                    major: 7,
                    minor: 1,
                    rbytes: 512,
                    rios: 2,
                    ..Default::default()
                },
            ]
        );
    }

    #[test]
    fn v2_set_limits_read_as_numbers() {
        let s = v2_stats_of(&[
            ("pids.max", "64\n"),
            ("memory.max", "67108864\n"),
            ("memory.swap.max", "0\n"),
            ("memory.swap.peak", "4096\n"),
            ("memory.events", "low 0\nhigh 1\nmax 5\noom 2\noom_kill 1\n"),
        ]);
        assert_eq!(s.pids_limit, 64);
        assert_eq!(s.memory_limit, 64 << 20);
        assert_eq!((s.memory_swap_limit, s.memory_swap_max_usage), (0, 4096));
        assert_eq!(s.memory_oom_kill, 1);
        assert_eq!(super::kv(&s.memory_events, "max"), 5);
        assert!(s.io.is_empty());
    }

    /// No swap accounting, no io controller, no pids controller: zeros, not errors.
    #[test]
    fn v2_missing_files_read_as_zero() {
        let s = v2_stats_of(&[]);
        assert_eq!(
            (s.pids_limit, s.memory_swap_limit, s.memory_limit),
            (0, 0, 0)
        );
        assert!(s.io.is_empty() && s.memory_events.is_empty());
    }

    #[test]
    fn v1_unlimited_pids_read_as_zero() {
        let d = tempfile::tempdir().unwrap();
        fake_files(d.path(), &[("pids.current", "3\n"), ("pids.max", "max\n")]);
        let dir = d.path().to_path_buf();
        let s = read_v1(|c| (c == "pids").then(|| dir.clone()));
        assert!(!s.v2);
        assert_eq!((s.pids_current, s.pids_limit), (3, 0));
    }

    #[test]
    fn io_stat_lines_without_a_device_are_skipped() {
        let e = parse_io_stat("garbage\n8:16 rbytes=x wbytes=10 newkey=3\n\n");
        assert_eq!(
            e,
            vec![IoUsage {
                major: 8,
                minor: 16,
                wbytes: 10,
                ..Default::default()
            }]
        );
    }
}
