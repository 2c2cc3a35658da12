//! Run, output, exit codes; and the same echo against runc to validate the harness.

use amphi_tests::{e2e, e2e_runc, Case};
use anyhow::Result;

fn echo_hello(c: &mut Case) -> Result<()> {
    let id = c.id("echo");
    let out = c.run_rm(&[], &id, &["echo", "hello"])?.ok()?;
    anyhow::ensure!(
        out.stdout.trim() == "hello",
        "expected `hello`, got: {}",
        out.describe()
    );
    Ok(())
}

fn exit_code(c: &mut Case) -> Result<()> {
    let id = c.id("exit3");
    c.run_rm(&[], &id, &["sh", "-c", "exit 3"])?
        .expect_code(3)?;
    Ok(())
}

e2e!(echo, echo_hello);
e2e!(exit_codes, exit_code);
e2e_runc!(compare_runc_echo, echo_hello);

/// The leak check itself: while a container runs it must see the container's cgroup and its
/// shim (and, for runtimes that mount the rootfs in the host namespace, the mount).
fn leak_check_sees_running(c: &mut Case) -> Result<()> {
    let id = c.id("leaky");
    c.run_detached(&[], &id, &["sleep", "1000"])?;
    let found = amphi_tests::leaks::find(&c.cd, std::slice::from_ref(&id), c.runtime.shim_binary());
    let has = |what: &str| found.iter().any(|f| f.starts_with(what));
    anyhow::ensure!(
        has("cgroup left"),
        "leak check did not see the running container's cgroup: {found:?}"
    );
    anyhow::ensure!(
        has("shim process left"),
        "leak check did not see the running shim: {found:?}"
    );
    if c.runtime == amphi_tests::Runtime::Runc {
        anyhow::ensure!(
            has("mount left"),
            "leak check did not see runc's rootfs mount: {found:?}"
        );
    }
    c.remove(&id)
}

e2e!(leak_check_works, leak_check_sees_running);
