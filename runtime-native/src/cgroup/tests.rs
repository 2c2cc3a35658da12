//! The cgroup over fake cgroupfs trees (plain directories and files): layout, resources,
//! stats, freeze and the on-disk form, for v1 and v2.

use super::*;
use oci_spec::runtime::{
    LinuxCpuBuilder, LinuxDeviceCgroupBuilder, LinuxMemoryBuilder, LinuxPidsBuilder,
    LinuxResourcesBuilder,
};

/// Writes a fake cgroupfs's files into `dir`: each (path below `dir`, content).
pub(super) fn fake_files(dir: &Path, files: &[(&str, &str)]) {
    for (name, text) in files {
        std::fs::write(dir.join(name), text).unwrap();
    }
}

/// Checks what the cgroup wrote: each (path below `dir`, content without the newline).
fn expect_files(dir: &Path, files: &[(&str, &str)]) {
    for (name, want) in files {
        assert_eq!(rd(dir.join(name)), *want, "{name}");
    }
}

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
    std::fs::create_dir_all(root.join("memory/default/c1")).unwrap();
    fake_files(
        root,
        &[
            ("cpuset/cpuset.cpus", "0-3\n"),
            ("cpuset/cpuset.mems", "0\n"),
            ("memory/default/c1/memory.memsw.limit_in_bytes", ""),
        ],
    );

    let cg = Cgroup::create_in(root, false, "c1", &spec(Some("/default/c1"), resources())).unwrap();
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
    let c = root.join("cpu,cpuacct/default/c1");
    expect_files(
        root,
        &[
            ("memory/default/c1/memory.limit_in_bytes", "268435456"),
            ("memory/default/c1/memory.memsw.limit_in_bytes", "536870912"),
            ("memory/default/c1/memory.soft_limit_in_bytes", "134217728"),
            ("cpu,cpuacct/default/c1/cpu.shares", "1024"),
            ("cpu,cpuacct/default/c1/cpu.cfs_quota_us", "50000"),
            ("cpu,cpuacct/default/c1/cpu.cfs_period_us", "100000"),
            // cpus copied down to the intermediate level, then set
            ("cpuset/default/cpuset.cpus", "0-3"),
            ("cpuset/default/c1/cpuset.cpus", "0-1"),
            ("cpuset/default/c1/cpuset.mems", "0"),
            ("pids/default/c1/pids.max", "100"),
            // the last write wins in a plain file: the last default allow rule
            ("devices/default/c1/devices.allow", "c 10:200 rwm"),
            ("devices/default/c1/devices.deny", "a"),
        ],
    );

    // stats
    fake_files(
        &c,
        &[
            ("cpuacct.usage", "123456789\n"),
            ("cpuacct.stat", "user 10\nsystem 5\n"),
            (
                "cpu.stat",
                "nr_periods 7\nnr_throttled 2\nthrottled_time 999\n",
            ),
        ],
    );
    fake_files(
        &m,
        &[
            ("memory.usage_in_bytes", "1000\n"),
            ("memory.max_usage_in_bytes", "2000\n"),
            ("memory.memsw.usage_in_bytes", "1500\n"),
            ("memory.stat", "cache 11\nrss 22\ntotal_rss 22\n"),
            (
                "memory.oom_control",
                "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n",
            ),
        ],
    );
    fake_files(root, &[("pids/default/c1/pids.current", "4\n")]);
    let s = cg.stats().unwrap();
    assert!(!s.v2);
    assert_eq!(
        (s.cpu_usage_ns, s.cpu_user_ns, s.cpu_system_ns),
        (123456789, 100_000_000, 50_000_000)
    );
    assert_eq!(
        (s.cpu_nr_periods, s.cpu_nr_throttled, s.cpu_throttled_ns),
        (7, 2, 999)
    );
    assert_eq!(
        (s.memory_usage, s.memory_limit, s.memory_max_usage),
        (1000, 268435456, 2000)
    );
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
    fake_files(
        root,
        &[
            ("cgroup.controllers", "cpuset cpu io memory pids\n"),
            ("cgroup.subtree_control", "memory\n"),
        ],
    );
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
    expect_files(
        &dir,
        &[
            ("memory.max", "268435456"),
            ("memory.low", "134217728"),
            ("memory.high", "200000000"),
            ("cpu.weight", "39"),
            ("cpu.max", "50000 100000"),
            ("cpuset.cpus", "0-1"),
            ("pids.max", "100"),
        ],
    );
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

    fake_files(
        &dir,
        &[
            (
                "cpu.stat",
                "usage_usec 5\nuser_usec 3\nsystem_usec 2\nnr_periods 1\nnr_throttled 1\n\
                 throttled_usec 4\n",
            ),
            ("memory.current", "4096\n"),
            ("memory.max", "max\n"),
            ("memory.stat", "anon 10\nfile 20\n"),
            ("memory.events", "low 0\nhigh 0\nmax 1\noom 1\noom_kill 2\n"),
            ("pids.current", "3\n"),
        ],
    );
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
fn destroy_missing_is_ok() {
    let cg = Cgroup {
        v2: false,
        root: PathBuf::from("/nonexistent"),
        rel: "amphi/x".into(),
        hierarchies: vec!["memory".into()],
    };
    cg.destroy().unwrap();
}
