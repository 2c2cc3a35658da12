//! Run, output, exit codes; and the same echo against runc to validate the harness.

use amphi_tests::{e2e, e2e_runc, Case};
use anyhow::Result;

fn echo_hello(c: &mut Case) -> Result<()> {
    let id = c.id("echo");
    let out = c.run_rm(&[], &id, &["echo", "hello"])?.ok()?;
    anyhow::ensure!(out.stdout.trim() == "hello", "expected `hello`, got: {}", out.describe());
    Ok(())
}

fn exit_code(c: &mut Case) -> Result<()> {
    let id = c.id("exit3");
    c.run_rm(&[], &id, &["sh", "-c", "exit 3"])?.expect_code(3)?;
    Ok(())
}

e2e!(echo, echo_hello);
e2e!(exit_codes, exit_code);
e2e_runc!(compare_runc_echo, echo_hello);
