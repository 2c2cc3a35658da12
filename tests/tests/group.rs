//! Containers with the same `io.containerd.runc.v2.group` annotation share one shim process.

use amphi_tests::procs;
use amphi_tests::{e2e, Case};
use anyhow::Result;

fn group(c: &mut Case) -> Result<()> {
    let a = c.id("a");
    let b = c.id("b");
    let ann = format!("io.containerd.runc.v2.group={}-grp", c.cd.namespace);
    c.run_detached(&["--annotation", &ann], &a, &["sleep", "1000"])?;
    c.run_detached(&["--annotation", &ann], &b, &["sleep", "1000"])?;
    let all = c.shim_processes();
    let top = procs::top_level(&all);
    anyhow::ensure!(
        top.len() == 1,
        "expected one {} serving both containers, found {}:\n{}",
        c.runtime.shim_binary(),
        top.len(),
        all.iter()
            .map(|p| format!("  pid {} ppid {}: {}", p.pid, p.ppid, p.cmdline_str()))
            .collect::<Vec<_>>()
            .join("\n")
    );
    // Removing one leaves the other served.
    c.remove(&a)?;
    let (_, st) = c
        .task(&b)?
        .ok_or_else(|| anyhow::anyhow!("task {b} vanished with {a}"))?;
    anyhow::ensure!(st == "RUNNING", "{b} is {st} after removing {a}");
    c.ctr(&["task", "exec", "--exec-id", "still", &b, "true"])?
        .ok()?;
    c.remove(&b)
}

e2e!(shim_group, group);
