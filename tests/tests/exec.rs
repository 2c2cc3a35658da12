//! `ctr task exec` into a running container.

use amphi_tests::cmd::{self, Running};
use amphi_tests::{e2e, Case};
use anyhow::Result;
use std::time::Duration;

fn exec(c: &mut Case) -> Result<()> {
    let id = c.id("x");
    c.run_detached(
        &[],
        &id,
        &["sh", "-c", "echo init-was-here > /tmp/mark; sleep 1000"],
    )?;
    // Output, and it runs in the container's filesystem.
    let out = cmd::wait_for(Duration::from_secs(10), "the init's mark file", || {
        let o = c.ctr(&["task", "exec", "--exec-id", "e1", &id, "cat", "/tmp/mark"])?;
        Ok(o.success().then_some(o))
    })?;
    anyhow::ensure!(
        out.stdout.trim() == "init-was-here",
        "exec output: {}",
        out.describe()
    );
    // Exit code.
    c.ctr(&["task", "exec", "--exec-id", "e2", &id, "sh", "-c", "exit 5"])?
        .expect_code(5)?;
    // Same pid namespace as the init: it sees the init's sleep.
    let out = c
        .ctr(&["task", "exec", "--exec-id", "e3", &id, "ps"])?
        .ok()?;
    anyhow::ensure!(
        out.stdout.contains("sleep 1000"),
        "exec's ps does not show the init: {}",
        out.describe()
    );
    // A duplicate exec id is refused while the first is alive.
    let bg = Running::spawn(
        c.cd.ctr_command(&["task", "exec", "--exec-id", "dup", &id, "sleep", "1000"]),
        None,
    )?;
    cmd::wait_for(Duration::from_secs(20), "the first exec to run", || {
        Ok((c.task_pids(&id)?.len() >= 2).then_some(()))
    })?;
    let out = c
        .ctr(&["task", "exec", "--exec-id", "dup", &id, "true"])?
        .failed()?;
    anyhow::ensure!(
        out.all().contains("dup") || out.all().contains("exist"),
        "duplicate exec error should name it: {}",
        out.describe()
    );
    c.ctr(&["task", "kill", "--exec-id", "dup", "-s", "SIGKILL", &id])?
        .ok()?;
    bg.wait(Duration::from_secs(20))?.expect_code(137)?;
    // The exec id can be used again once that exec is gone.
    c.ctr(&["task", "exec", "--exec-id", "dup", &id, "true"])?
        .ok()?;
    // An exec of a missing binary fails and names it.
    let out = c
        .ctr(&["task", "exec", "--exec-id", "e4", &id, "/nope/missing"])?
        .failed()?;
    out.expect_output("/nope/missing", "exec error should name the path")?;
    c.remove(&id)
}

e2e!(task_exec, exec);
