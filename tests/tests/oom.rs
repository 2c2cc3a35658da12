//! OOM kills: exit 137, a `/tasks/oom` event before the task's `/tasks/exit`, and Stats still
//! answering between the exit and Delete.

use amphi_tests::cmd::Running;
use amphi_tests::{e2e, Case};
use anyhow::Result;
use std::time::Duration;

const LIMIT: &str = "20000000";
/// Holds 200 MB in a shell variable: far over the limit.
const HOG: &str = r#"x=$(head -c 200000000 /dev/zero | tr "\0" a)"#;

/// Index of the first `ctr events` line with `topic` that names `id`.
fn event_line(lines: &[&str], topic: &str, id: &str) -> Option<usize> {
    lines
        .iter()
        .position(|l| l.split_whitespace().any(|w| w == topic) && l.contains(&format!("\"{id}\"")))
}

fn oom(c: &mut Case) -> Result<()> {
    // Subscribe first; the create event of our container proves the subscription was live.
    let events = Running::spawn(c.cd.ctr_command(&["events"]), None)?;
    std::thread::sleep(Duration::from_millis(1000));
    let id = c.id("rm");
    let out = c.run_rm(&["--memory-limit", LIMIT], &id, &["sh", "-c", HOG])?;
    let out = out.expect_code(137)?;
    std::thread::sleep(Duration::from_millis(500));
    let ev = events.wait(Duration::from_millis(100))?;
    let lines: Vec<&str> = ev.stdout.lines().collect();
    let create = event_line(&lines, "/tasks/create", &id);
    let oom = event_line(&lines, "/tasks/oom", &id);
    let exit = event_line(&lines, "/tasks/exit", &id);
    anyhow::ensure!(
        create.is_some(),
        "ctr events missed /tasks/create of {id} (subscribed too late?):\n{}\n{}",
        ev.stdout,
        out.describe()
    );
    let (Some(oom), Some(exit)) = (oom, exit) else {
        anyhow::bail!("expected /tasks/oom and /tasks/exit for {id}, got oom {oom:?} exit {exit:?}; events:\n{}", ev.stdout)
    };
    anyhow::ensure!(
        oom < exit,
        "/tasks/oom (line {oom}) came after /tasks/exit (line {exit}):\n{}",
        ev.stdout
    );

    // Detached: after the OOM exit, metrics still answer until the task is deleted.
    let id = c.id("d");
    c.cd.ctr(&[
        "run",
        "-d",
        "--runtime",
        c.runtime.name(),
        "--memory-limit",
        LIMIT,
        c.image(),
        &id,
        "sh",
        "-c",
        HOG,
    ])?
    .ok()?;
    c.wait_status(&id, "STOPPED", Duration::from_secs(60))?;
    let m = c.ctr(&["task", "metrics", &id])?.ok()?;
    anyhow::ensure!(
        m.stdout.contains("memory"),
        "metrics after the exit lack memory: {}",
        m.describe()
    );
    // Delete returns the exit status; ctr warns about it.
    let del = c.ctr(&["task", "delete", &id])?.ok()?;
    anyhow::ensure!(
        del.stderr.contains("exit code 137"),
        "task delete should report 137: {}",
        del.describe()
    );
    let after = c.ctr(&["task", "metrics", &id])?;
    anyhow::ensure!(
        !after.success(),
        "metrics after delete should fail: {}",
        after.describe()
    );
    c.ctr(&["containers", "delete", &id])?.ok()?;
    Ok(())
}

e2e!(oom_kill, oom);
