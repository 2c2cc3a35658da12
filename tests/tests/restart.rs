//! containerd restarts while a container runs: the task survives and is still controllable.

use amphi_tests::cmd::Running;
use amphi_tests::{e2e, Case};
use anyhow::Result;
use std::time::Duration;

fn restart(c: &mut Case) -> Result<()> {
    let id = c.id("r");
    c.run_detached(&[], &id, &["sleep", "1000"])?;
    let (pid, _) = c.task(&id)?.ok_or_else(|| anyhow::anyhow!("no task"))?;
    c.cd.restart()?;
    c.wait_status(&id, "RUNNING", Duration::from_secs(20))?;
    let (pid2, _) = c
        .task(&id)?
        .ok_or_else(|| anyhow::anyhow!("no task after restart"))?;
    anyhow::ensure!(
        pid == pid2,
        "pid changed across the restart: {pid} -> {pid2}"
    );
    c.ctr(&["task", "exec", "--exec-id", "after", &id, "true"])?
        .ok()?;
    // The exit must reach the new daemon as an event with the right status.
    let events = Running::spawn(c.cd.ctr_command(&["events"]), None)?;
    std::thread::sleep(Duration::from_millis(500));
    c.ctr(&["task", "kill", "-s", "SIGKILL", &id])?.ok()?;
    c.wait_status(&id, "STOPPED", Duration::from_secs(20))?;
    std::thread::sleep(Duration::from_millis(500));
    let ev = events.wait(Duration::from_millis(10))?; // killed: collects what it printed
    let init = format!("\"id\":\"{id}\"");
    let exit = ev
        .stdout
        .lines()
        .find(|l| l.contains("/tasks/exit") && l.contains(&init));
    anyhow::ensure!(
        exit.is_some_and(|l| l.contains("137")),
        "no /tasks/exit event with status 137 for {id}; events:\n{}",
        ev.stdout
    );
    c.ctr(&["task", "delete", &id])?.ok()?;
    c.ctr(&["containers", "delete", &id])?.ok()?;
    Ok(())
}

e2e!(containerd_restart, restart);
