//! `ctr task kill`: SIGTERM, SIGKILL, --all, --exec-id; exit statuses as 128+signal.

use amphi_tests::cmd::Running;
use amphi_tests::{e2e, Case};
use anyhow::Result;
use std::time::Duration;

/// SIGKILL of the init (`sleep`, pid 1 of its namespace) -> exit 137.
fn sigkill(c: &mut Case) -> Result<()> {
    let id = c.id("k");
    let bg = c.run_bg(&[], &id, &["sleep", "1000"])?;
    c.ctr(&["task", "kill", "-s", "SIGKILL", &id])?.ok()?;
    bg.wait(Duration::from_secs(30))?.expect_code(137)?;
    Ok(())
}

/// Default signal (SIGTERM) reaches an init that traps it; its exit status comes back.
/// (A pid-1 `sleep` without a handler ignores SIGTERM, with every runtime.)
fn sigterm_init(c: &mut Case) -> Result<()> {
    let id = c.id("t");
    let bg = c.run_bg(
        &[],
        &id,
        &["sh", "-c", "trap 'exit 143' TERM; sleep 1000 & wait"],
    )?;
    c.kill_until_exit(bg, &[&id])?.expect_code(143)?;
    Ok(())
}

/// SIGTERM to a non-init process (an exec'd `sleep`) kills it: the exec exits 143.
fn sigterm_exec(c: &mut Case) -> Result<()> {
    let id = c.id("te");
    c.run_detached(&[], &id, &["sleep", "1000"])?;
    let bg = Running::spawn(
        c.cd.ctr_command(&["task", "exec", "--exec-id", "s1", &id, "sleep", "1000"]),
        None,
    )?;
    amphi_tests::cmd::wait_for(
        Duration::from_secs(20),
        "the exec to show in task ps",
        || Ok((c.task_pids(&id)?.len() >= 2).then_some(())),
    )?;
    c.ctr(&["task", "kill", "--exec-id", "s1", "-s", "SIGTERM", &id])?
        .ok()?;
    bg.wait(Duration::from_secs(20))?.expect_code(143)?;
    // The init still runs.
    c.expect_running(&id, "after its exec was killed")?;
    c.remove(&id)
}

/// `--all` SIGTERM reaches the init's child: `wait $!` returns 143 and the shell exits with it.
fn sigterm_all(c: &mut Case) -> Result<()> {
    let id = c.id("ta");
    let bg = c.run_bg(&[], &id, &["sh", "-c", "sleep 1000 & wait $!"])?;
    c.kill_until_exit(bg, &["--all", "-s", "SIGTERM", &id])?
        .expect_code(143)?;
    Ok(())
}

/// `--all` SIGKILL kills everything: 137.
fn sigkill_all(c: &mut Case) -> Result<()> {
    let id = c.id("ka");
    let bg = c.run_bg(&[], &id, &["sh", "-c", "sleep 1000 & sleep 1000 & wait"])?;
    c.ctr(&["task", "kill", "--all", "-s", "SIGKILL", &id])?
        .ok()?;
    bg.wait(Duration::from_secs(30))?.expect_code(137)?;
    Ok(())
}

e2e!(kill_sigkill, sigkill);
e2e!(kill_sigterm_init, sigterm_init);
e2e!(kill_sigterm_exec, sigterm_exec);
e2e!(kill_all_sigterm, sigterm_all);
e2e!(kill_all_sigkill, sigkill_all);
