//! pause/resume, metrics, ps.

use amphi_tests::cmd::Running;
use amphi_tests::{e2e, Case};
use anyhow::Result;
use std::time::Duration;

fn pause_resume(c: &mut Case) -> Result<()> {
    let id = c.id("p");
    c.run_detached(&[], &id, &["sleep", "1000"])?;
    c.ctr(&["task", "pause", &id])?.ok()?;
    c.wait_status(&id, "PAUSED", Duration::from_secs(10))?;
    c.ctr(&["task", "resume", &id])?.ok()?;
    c.wait_status(&id, "RUNNING", Duration::from_secs(10))?;
    // Still alive and usable after resuming.
    c.ctr(&["task", "exec", "--exec-id", "after", &id, "true"])?
        .ok()?;
    c.remove(&id)
}

/// Value of metric `name` in `ctr task metrics` output (`METRIC VALUE` rows).
fn metric(out: &str, name: &str) -> Option<String> {
    out.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        (f.next()? == name).then(|| f.next().unwrap_or("").to_string())
    })
}

fn metrics(c: &mut Case) -> Result<()> {
    let id = c.id("m");
    c.run_detached(&[], &id, &["sh", "-c", "sleep 1000 & wait"])?;
    let out = c.ctr(&["task", "metrics", &id])?.ok()?;
    let s = &out.stdout;
    let d = || out.describe();
    // cgroup v1 names, else v2 names (ctr prints whichever the shim returned).
    let pids: u64 = metric(s, "pids.current")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no pids.current: {}", d()))?;
    anyhow::ensure!(pids >= 1, "pids.current = {pids}: {}", d());
    let mem = metric(s, "memory.usage_in_bytes")
        .or_else(|| metric(s, "memory.usage"))
        .ok_or_else(|| anyhow::anyhow!("no memory usage: {}", d()))?;
    anyhow::ensure!(
        mem.parse::<u64>().map(|m| m > 0).unwrap_or(false),
        "memory usage {mem:?}: {}",
        d()
    );
    let cpu = metric(s, "cpuacct.usage")
        .or_else(|| metric(s, "cpu.usage_usec"))
        .ok_or_else(|| anyhow::anyhow!("no cpu usage: {}", d()))?;
    anyhow::ensure!(cpu.parse::<u64>().is_ok(), "cpu usage {cpu:?}: {}", d());
    c.remove(&id)
}

fn ps(c: &mut Case) -> Result<()> {
    let id = c.id("ps");
    c.run_detached(&[], &id, &["sleep", "1000"])?;
    let (pid, _) = c.task(&id)?.ok_or_else(|| anyhow::anyhow!("no task"))?;
    let pids = c.task_pids(&id)?;
    anyhow::ensure!(pids == vec![pid], "task ps {pids:?}, task ls pid {pid}");
    let bg = Running::spawn(
        c.cd.ctr_command(&["task", "exec", "--exec-id", "two", &id, "sleep", "1000"]),
        None,
    )?;
    amphi_tests::cmd::wait_for(Duration::from_secs(20), "two pids in task ps", || {
        let p = c.task_pids(&id)?;
        Ok((p.len() == 2 && p.contains(&pid)).then_some(()))
    })?;
    c.ctr(&["task", "kill", "--exec-id", "two", "-s", "SIGKILL", &id])?
        .ok()?;
    bg.wait(Duration::from_secs(20))?;
    c.remove(&id)
}

e2e!(task_pause_resume, pause_resume);
e2e!(task_metrics, metrics);
e2e!(task_ps, ps);
