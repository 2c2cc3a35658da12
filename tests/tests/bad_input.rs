//! Bad input fails with a reason the user can read, and leaves nothing behind.

use amphi_tests::{e2e, Case, Runtime};
use anyhow::Result;
use std::time::Duration;

fn missing_entrypoint(c: &mut Case) -> Result<()> {
    let id = c.id("noent");
    let out = c.run_rm(&[], &id, &["/nope/missing"])?.failed()?;
    out.expect_output("/nope/missing", "error should name the path")?;
    c.remove(&id)?;
    c.check_leaks()
}

fn bad_cwd(c: &mut Case) -> Result<()> {
    // A cwd below a regular file can't exist for any runtime.
    let id = c.id("cwdfile");
    let out = c
        .run_rm(&["--cwd", "/etc/passwd/sub"], &id, &["true"])?
        .failed()?;
    out.expect_output("/etc/passwd", "error should name the cwd")?;
    c.remove(&id)?;
    c.check_leaks()?;
    // A cwd that does not exist: amphi refuses it (runc creates it instead).
    if c.runtime == Runtime::Amphi {
        let id = c.id("cwdnope");
        let out = c.run_rm(&["--cwd", "/nope"], &id, &["true"])?.failed()?;
        out.expect_output("/nope", "error should name the cwd")?;
        c.remove(&id)?;
        c.check_leaks()?;
    }
    Ok(())
}

fn unknown_signal(c: &mut Case) -> Result<()> {
    let id = c.id("sig");
    c.run_detached(&[], &id, &["sleep", "1000"])?;
    let out = c.ctr(&["task", "kill", "-s", "SIGFOO", &id])?.failed()?;
    anyhow::ensure!(
        out.all().to_lowercase().contains("signal"),
        "error should mention the signal: {}",
        out.describe()
    );
    c.wait_status(&id, "RUNNING", Duration::from_secs(5))?;
    c.remove(&id)
}

fn invalid_spec(c: &mut Case) -> Result<()> {
    // No process args: the runtime must refuse it.
    let id = c.id("noargs");
    let spec = c.spec_file(&id, |s| s["process"]["args"] = serde_json::json!([]))?;
    let out = c.run_config(&spec, &id)?.failed()?;
    out.expect_output("args", "error should say the args are missing")?;
    c.remove(&id)?;
    c.check_leaks()?;
    // The same spec with args runs: the failure above was the args, nothing else.
    let id = c.id("okargs");
    let spec = c.spec_file(&id, |s| {
        s["process"]["args"] = serde_json::json!(["/bin/true"])
    })?;
    c.run_config(&spec, &id)?.ok()?;
    c.check_leaks()?;
    // A config.json that is not JSON at all.
    let id = c.id("broken");
    let path = c.cd.dir.join("broken.json");
    std::fs::write(&path, "{ this is not json")?;
    c.run_config(&path.display().to_string(), &id)?.failed()?;
    c.remove(&id)?;
    c.check_leaks()
}

/// runc's refusals, in runc's words on both runtimes: a spec without a mount namespace (it
/// masks paths), and LSM settings on a host without that LSM.
fn refused_like_runc(c: &mut Case) -> Result<()> {
    /// A case: its name, how it changes the spec, and the error runc gives.
    type Refusal = (&'static str, fn(&mut serde_json::Value), &'static str);
    let cases: [Refusal; 3] = [
        (
            "nomntns",
            |s| {
                let nss = s["linux"]["namespaces"].as_array_mut().expect("namespaces");
                nss.retain(|n| n["type"] != "mount");
            },
            "unable to restrict sys entries without a private MNT namespace",
        ),
        (
            "apparmor",
            |s| s["process"]["apparmorProfile"] = "amphi-test".into(),
            "apparmor failed to apply profile",
        ),
        (
            "selinux",
            |s| s["process"]["selinuxLabel"] = "system_u:system_r:container_t:s0".into(),
            "selinux label is specified in config, but selinux is disabled or not supported",
        ),
    ];
    for (name, edit, words) in cases {
        // This machine has neither AppArmor nor SELinux (as the README says).
        let id = c.id(name);
        let spec = c.spec_file(&id, |s| {
            s["process"]["args"] = serde_json::json!(["/bin/true"]);
            edit(s)
        })?;
        let out = c.run_config(&spec, &id)?.failed()?;
        out.expect_output(words, &format!("{name}: the error should say {words:?}"))?;
        c.remove(&id)?;
        c.check_leaks()?;
    }
    Ok(())
}

e2e!(bad_entrypoint, missing_entrypoint);
e2e!(bad_refused_like_runc, refused_like_runc);
e2e!(bad_cwd_missing, bad_cwd);
e2e!(bad_signal, unknown_signal);
e2e!(bad_spec, invalid_spec);
