//! Regression tests for the protections runc learned the hard way, through containerd:
//! no host fd reaches a container process and its cwd is inside the container
//! (CVE-2024-21626 class), and the process is not dumpable before exec while nothing of the
//! runtime binary is reachable from it (CVE-2019-5736 class).

use amphi_tests::{e2e, e2e_runc, Case};
use anyhow::Result;

/// The container sees exactly fds 0, 1, 2 (plus the directory fd `ls` itself opens), and its
/// cwd resolves inside its own root.
fn only_stdio_fds_and_cwd_inside(c: &mut Case) -> Result<()> {
    let id = c.id("fds");
    let script =
        "echo cwd=$(readlink /proc/1/cwd); echo root=$(readlink /proc/1/root); cd /proc/self/fd && ls";
    let out = c.run_rm(&[], &id, &["sh", "-c", script])?.ok()?;
    let mut fds: Vec<u32> = out
        .stdout
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    fds.sort();
    // 0-2 are stdio; `ls` opens the directory it lists (3) and `sh` may keep its own copy of
    // the script's stdin/cwd dir (which is /proc/self/fd, inside the container).
    let leaked: Vec<_> = fds.iter().filter(|fd| **fd > 3).collect();
    anyhow::ensure!(
        fds.starts_with(&[0, 1, 2]) && leaked.is_empty(),
        "unexpected fds in the container: {fds:?}\n{}",
        out.describe()
    );
    anyhow::ensure!(
        out.stdout.contains("cwd=/\n") && out.stdout.contains("root=/\n"),
        "the container's init cwd/root must be its own /: {}",
        out.describe()
    );
    Ok(())
}

/// The runtime binary is not reachable from the container: the init's exe is the container's
/// program, and no process in the container maps the shim.
fn runtime_binary_unreachable(c: &mut Case) -> Result<()> {
    let id = c.id("exe");
    let script = "readlink /proc/1/exe; cat /proc/1/maps | grep -c containerd-shim || true";
    let out = c.run_rm(&[], &id, &["sh", "-c", script])?.ok()?;
    let mut lines = out.stdout.lines();
    let exe = lines.next().unwrap_or_default();
    anyhow::ensure!(
        exe == "/bin/busybox",
        "init's exe should be the container's program: {}",
        out.describe()
    );
    anyhow::ensure!(
        lines.next().map(str::trim) == Some("0"),
        "the container maps the runtime binary: {}",
        out.describe()
    );
    Ok(())
}

e2e!(no_host_fds, only_stdio_fds_and_cwd_inside);
e2e!(runtime_binary_not_reachable, runtime_binary_unreachable);
e2e_runc!(compare_runc_no_host_fds, only_stdio_fds_and_cwd_inside);
