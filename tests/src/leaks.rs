//! What a finished case must not leave behind: mounts under the daemon's dirs, the container's
//! cgroups, shim processes, zombies.

use crate::containerd::Containerd;
use crate::{cgroups, mounts, paths, procs};
use anyhow::Result;
use std::time::{Duration, Instant};

/// Checks everything, after giving exiting processes `grace` to go. `ids` are the containers
/// the case created (all must already be deleted). `shim_name` is the shim binary's name
/// (`containerd-shim-amphi-v1` or `containerd-shim-runc-v2`).
pub fn check(cd: &Containerd, ids: &[String], shim_name: &str, grace: Duration) -> Result<()> {
    let deadline = Instant::now() + grace;
    loop {
        let problems = find(cd, ids, shim_name);
        if problems.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            anyhow::bail!("leak check failed:\n  - {}", problems.join("\n  - "));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Every leak found right now, one line each.
pub fn find(cd: &Containerd, ids: &[String], shim_name: &str) -> Vec<String> {
    let mut out = Vec::new();
    for m in mounts::mounts_under(&cd.dir) {
        out.push(format!("mount left: {m}"));
    }
    for id in ids {
        for cg in cgroups::existing(&format!("{}/{id}", cd.namespace)) {
            out.push(format!("cgroup left: {}", cg.display()));
        }
    }
    let markers = cd.markers();
    let m: Vec<&str> = markers.iter().map(String::as_str).collect();
    let shims = procs::shim_processes(shim_name, &m);
    for p in &shims {
        out.push(format!(
            "shim process left: pid {} (ppid {}, state {}): {}",
            p.pid,
            p.ppid,
            p.state,
            p.cmdline_str()
        ));
    }
    out.extend(zombies(cd, &shims));
    out
}

/// Zombies whose parent is our containerd or one of our shims (a shim must reap what it
/// started; the test process reaps its own commands in their threads).
fn zombies(cd: &Containerd, shims: &[procs::Proc]) -> Vec<String> {
    let daemon = cd.pid().map(|p| p as i32).unwrap_or(-1);
    let all = procs::all();
    all.iter()
        .filter(|p| p.state == 'Z')
        .filter(|p| {
            p.ppid == daemon
                || shims.iter().any(|s| s.pid == p.ppid)
                || all.iter().any(|q| {
                    q.pid == p.ppid && q.argv0_name() == paths::SHIM_BINARY && cd_marked(cd, q)
                })
        })
        .map(|p| {
            format!(
                "zombie left: pid {} ({}) child of {}",
                p.pid, p.comm, p.ppid
            )
        })
        .collect()
}

fn cd_marked(cd: &Containerd, p: &procs::Proc) -> bool {
    let cl = p.cmdline_str();
    let env = p.environ();
    cd.markers()
        .iter()
        .any(|m| cl.contains(m.as_str()) || env.contains(m.as_str()))
}
