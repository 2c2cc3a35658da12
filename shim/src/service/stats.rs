//! Converting runtime-native's cgroup statistics into the protobuf metrics containerd decodes
//! (`io.containerd.cgroups.v1.Metrics` / `io.containerd.cgroups.v2.Metrics`, which is what
//! `ctr task metrics` and the CRI plugin unpack by type URL).

use containerd_shim_protos::cgroups::metrics as v1;
use containerd_shim_protos::cgroups_v2::metrics as v2;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::{Message, MessageField};
use runtime_native::CgroupStats;

pub const V1_TYPE_URL: &str = "io.containerd.cgroups.v1.Metrics";
pub const V2_TYPE_URL: &str = "io.containerd.cgroups.v2.Metrics";

/// The value of `key` in a `key value` list, 0 when absent.
fn lookup(list: &[(String, u64)], key: &str) -> u64 {
    list.iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| *v)
        .unwrap_or(0)
}

fn stat(stats: &CgroupStats, key: &str) -> u64 {
    lookup(&stats.memory_stat, key)
}

pub fn to_v1(s: &CgroupStats) -> v1::Metrics {
    let mut m = v1::Metrics::new();
    m.pids = MessageField::some(v1::PidsStat {
        current: s.pids_current,
        limit: s.pids_limit,
        ..Default::default()
    });
    m.cpu = MessageField::some(v1::CPUStat {
        usage: MessageField::some(v1::CPUUsage {
            total: s.cpu_usage_ns,
            kernel: s.cpu_system_ns,
            user: s.cpu_user_ns,
            ..Default::default()
        }),
        throttling: MessageField::some(v1::Throttle {
            periods: s.cpu_nr_periods,
            throttled_periods: s.cpu_nr_throttled,
            throttled_time: s.cpu_throttled_ns,
            ..Default::default()
        }),
        ..Default::default()
    });
    m.memory = MessageField::some(v1::MemoryStat {
        cache: s.memory_cache,
        rss: s.memory_rss,
        rss_huge: stat(s, "rss_huge"),
        mapped_file: stat(s, "mapped_file"),
        dirty: stat(s, "dirty"),
        writeback: stat(s, "writeback"),
        pg_fault: stat(s, "pgfault"),
        pg_maj_fault: stat(s, "pgmajfault"),
        inactive_anon: stat(s, "inactive_anon"),
        active_anon: stat(s, "active_anon"),
        inactive_file: stat(s, "inactive_file"),
        active_file: stat(s, "active_file"),
        unevictable: stat(s, "unevictable"),
        hierarchical_memory_limit: stat(s, "hierarchical_memory_limit"),
        total_cache: stat(s, "total_cache"),
        total_rss: stat(s, "total_rss"),
        usage: MessageField::some(v1::MemoryEntry {
            limit: s.memory_limit,
            usage: s.memory_usage,
            max: s.memory_max_usage,
            ..Default::default()
        }),
        swap: MessageField::some(v1::MemoryEntry {
            usage: s.memory_swap_usage,
            ..Default::default()
        }),
        ..Default::default()
    });
    m.memory_oom_control = MessageField::some(v1::MemoryOomControl {
        oom_kill: s.memory_oom_kill,
        ..Default::default()
    });
    m
}

fn event(stats: &CgroupStats, key: &str) -> u64 {
    lookup(&stats.memory_events, key)
}

/// v2 metrics with every field containerd's cgroups library fills for runc: all of
/// `memory.stat` it names, the limits (`u64::MAX` for `max`), `memory.events`, and `io.stat`.
pub fn to_v2(s: &CgroupStats) -> v2::Metrics {
    let mut m = v2::Metrics::new();
    m.pids = MessageField::some(v2::PidsStat {
        current: s.pids_current,
        limit: s.pids_limit,
        ..Default::default()
    });
    m.cpu = MessageField::some(v2::CPUStat {
        usage_usec: s.cpu_usage_ns / 1000,
        user_usec: s.cpu_user_ns / 1000,
        system_usec: s.cpu_system_ns / 1000,
        nr_periods: s.cpu_nr_periods,
        nr_throttled: s.cpu_nr_throttled,
        throttled_usec: s.cpu_throttled_ns / 1000,
        ..Default::default()
    });
    m.memory = MessageField::some(v2::MemoryStat {
        anon: stat(s, "anon"),
        file: stat(s, "file"),
        kernel_stack: stat(s, "kernel_stack"),
        slab: stat(s, "slab"),
        sock: stat(s, "sock"),
        shmem: stat(s, "shmem"),
        file_mapped: stat(s, "file_mapped"),
        file_dirty: stat(s, "file_dirty"),
        file_writeback: stat(s, "file_writeback"),
        anon_thp: stat(s, "anon_thp"),
        inactive_anon: stat(s, "inactive_anon"),
        active_anon: stat(s, "active_anon"),
        inactive_file: stat(s, "inactive_file"),
        active_file: stat(s, "active_file"),
        unevictable: stat(s, "unevictable"),
        slab_reclaimable: stat(s, "slab_reclaimable"),
        slab_unreclaimable: stat(s, "slab_unreclaimable"),
        pgfault: stat(s, "pgfault"),
        pgmajfault: stat(s, "pgmajfault"),
        workingset_refault: stat(s, "workingset_refault"),
        workingset_activate: stat(s, "workingset_activate"),
        workingset_nodereclaim: stat(s, "workingset_nodereclaim"),
        pgrefill: stat(s, "pgrefill"),
        pgscan: stat(s, "pgscan"),
        pgsteal: stat(s, "pgsteal"),
        pgactivate: stat(s, "pgactivate"),
        pgdeactivate: stat(s, "pgdeactivate"),
        pglazyfree: stat(s, "pglazyfree"),
        pglazyfreed: stat(s, "pglazyfreed"),
        thp_fault_alloc: stat(s, "thp_fault_alloc"),
        thp_collapse_alloc: stat(s, "thp_collapse_alloc"),
        usage: s.memory_usage,
        usage_limit: s.memory_limit,
        swap_usage: s.memory_swap_usage,
        swap_limit: s.memory_swap_limit,
        max_usage: s.memory_max_usage,
        swap_max_usage: s.memory_swap_max_usage,
        ..Default::default()
    });
    m.memory_events = MessageField::some(v2::MemoryEvents {
        low: event(s, "low"),
        high: event(s, "high"),
        max: event(s, "max"),
        oom: event(s, "oom"),
        oom_kill: s.memory_oom_kill,
        oom_group_kill: event(s, "oom_group_kill"),
        ..Default::default()
    });
    m.io = MessageField::some(v2::IOStat {
        usage: s
            .io
            .iter()
            .map(|e| v2::IOEntry {
                major: e.major,
                minor: e.minor,
                rbytes: e.rbytes,
                wbytes: e.wbytes,
                rios: e.rios,
                wios: e.wios,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    });
    m
}

/// The metrics as the `Any` a StatsResponse carries.
pub fn to_any(s: &CgroupStats) -> Result<Any, containerd_shim_protos::protobuf::Error> {
    let (type_url, value) = if s.v2 {
        (V2_TYPE_URL, to_v2(s).write_to_bytes())
    } else {
        (V1_TYPE_URL, to_v1(s).write_to_bytes())
    };
    let value = value?;
    let mut any = Any::new();
    any.type_url = type_url.to_string();
    any.value = value;
    Ok(any)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(v2: bool) -> CgroupStats {
        CgroupStats {
            v2,
            pids_current: 3,
            pids_limit: 100,
            cpu_usage_ns: 5_000_000,
            memory_usage: 4096,
            memory_limit: 1 << 20,
            memory_oom_kill: 1,
            memory_stat: vec![("anon".into(), 11), ("pgfault".into(), 7)],
            ..Default::default()
        }
    }

    #[test]
    fn v1_metrics_round_trip_through_any() {
        let any = to_any(&sample(false)).unwrap();
        assert_eq!(any.type_url, V1_TYPE_URL);
        let m = v1::Metrics::parse_from_bytes(&any.value).unwrap();
        assert_eq!(m.pids.current, 3);
        assert_eq!(m.cpu.usage.total, 5_000_000);
        assert_eq!(m.memory.usage.usage, 4096);
        assert_eq!(m.memory.usage.limit, 1 << 20);
        assert_eq!(m.memory.pg_fault, 7);
        assert_eq!(m.memory_oom_control.oom_kill, 1);
    }

    #[test]
    fn v2_metrics_use_microseconds_and_v2_names() {
        let any = to_any(&sample(true)).unwrap();
        assert_eq!(any.type_url, V2_TYPE_URL);
        let m = v2::Metrics::parse_from_bytes(&any.value).unwrap();
        assert_eq!(m.cpu.usage_usec, 5000);
        assert_eq!(m.memory.anon, 11);
        assert_eq!(m.memory.usage_limit, 1 << 20);
        assert_eq!(m.memory_events.oom_kill, 1);
    }

    /// What runc reports for a container without pids or swap limits on a v2 host, and the
    /// io.stat devices.
    #[test]
    fn v2_metrics_carry_unlimited_limits_swap_and_io() {
        let s = CgroupStats {
            v2: true,
            pids_limit: u64::MAX,
            memory_limit: u64::MAX,
            memory_swap_usage: 4096,
            memory_swap_limit: u64::MAX,
            memory_swap_max_usage: 8192,
            memory_events: vec![("max".into(), 4), ("oom".into(), 2)],
            memory_oom_kill: 1,
            memory_stat: vec![("file_dirty".into(), 5), ("slab_reclaimable".into(), 6)],
            io: vec![runtime_native::cgroup::IoUsage {
                major: 254,
                minor: 0,
                rbytes: 1,
                wbytes: 2,
                rios: 3,
                wios: 4,
            }],
            ..Default::default()
        };
        let any = to_any(&s).unwrap();
        let m = v2::Metrics::parse_from_bytes(&any.value).unwrap();
        assert_eq!(m.pids.limit, 18446744073709551615);
        assert_eq!(m.memory.usage_limit, u64::MAX);
        assert_eq!(
            (
                m.memory.swap_usage,
                m.memory.swap_limit,
                m.memory.swap_max_usage
            ),
            (4096, u64::MAX, 8192)
        );
        assert_eq!((m.memory.file_dirty, m.memory.slab_reclaimable), (5, 6));
        assert_eq!(
            (
                m.memory_events.max,
                m.memory_events.oom,
                m.memory_events.oom_kill
            ),
            (4, 2, 1)
        );
        let io: Vec<_> =
            m.io.usage
                .iter()
                .map(|e| (e.major, e.minor, e.rbytes, e.wbytes, e.rios, e.wios))
                .collect();
        assert_eq!(io, vec![(254, 0, 1, 2, 3, 4)]);
    }
}
