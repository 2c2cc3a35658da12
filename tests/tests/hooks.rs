//! OCI hooks through containerd (`ctr run --config` with a spec that has hooks): every kind
//! runs once, in its place, with the state on stdin; a failing hook fails the run with its
//! output and leaves nothing behind.

use amphi_tests::{e2e, e2e_runc, Case};
use anyhow::{Context, Result};
use std::os::unix::fs::PermissionsExt;

fn read_state(dir: &std::path::Path, kind: &str) -> Result<serde_json::Value> {
    let p = dir.join(format!("{kind}.json"));
    let s = std::fs::read_to_string(&p).with_context(|| format!("{kind} hook did not run"))?;
    serde_json::from_str(&s).with_context(|| format!("{kind} state: {s:?}"))
}

fn all_hooks(c: &mut Case) -> Result<()> {
    let id = c.id("hooks");
    let out_dir = c.cd.dir.join(format!("{id}-out"));
    std::fs::create_dir_all(&out_dir)?;
    let hook = c.cd.dir.join(format!("{id}-hook.sh"));
    std::fs::write(
        &hook,
        format!("#!/bin/sh\ncat > {}/$1.json\n", out_dir.display()),
    )?;
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755))?;
    let h = |kind: &str| serde_json::json!([{"path": hook.display().to_string(), "args": ["hook", kind], "timeout": 10}]);
    let spec = c.spec_file(&id, |s| {
        s["process"]["args"] = serde_json::json!(["/bin/sh", "-c", "/bin/cat /dev/shm/start.json"]);
        s["annotations"] = serde_json::json!({"amphi.test/hooks": "yes"});
        s["hooks"] = serde_json::json!({
            "createRuntime": h("createRuntime"),
            "createContainer": h("createContainer"),
            "startContainer": [{"path": "/bin/start-hook", "args": ["start-hook"]}],
            "poststart": h("poststart"),
            "poststop": h("poststop"),
        });
    })?;
    // startContainer hooks resolve inside the container.
    let sc = c.spec_rootfs(&id).join("bin/start-hook");
    std::fs::write(&sc, "#!/bin/sh\ncat > /dev/shm/start.json\n")?;
    std::fs::set_permissions(&sc, std::fs::Permissions::from_mode(0o755))?;
    let out = c.run_config(&spec, &id)?.ok()?;
    let start: serde_json::Value = serde_json::from_str(out.stdout.trim())
        .with_context(|| format!("startContainer state: {}", out.describe()))?;
    let cr = read_state(&out_dir, "createRuntime")?;
    let cc = read_state(&out_dir, "createContainer")?;
    let ps = read_state(&out_dir, "poststart")?;
    let stop = read_state(&out_dir, "poststop")?;
    for (k, v) in [
        ("createRuntime", &cr),
        ("createContainer", &cc),
        ("startContainer", &start),
        ("poststart", &ps),
        ("poststop", &stop),
    ] {
        anyhow::ensure!(v["id"] == id.as_str(), "{k}: id in {v}");
        anyhow::ensure!(
            v["annotations"]["amphi.test/hooks"] == "yes",
            "{k}: annotations in {v}"
        );
        anyhow::ensure!(
            v["bundle"].as_str().is_some_and(|b| b.contains(&id)),
            "{k}: bundle in {v}"
        );
    }
    anyhow::ensure!(cr["status"] == "creating", "createRuntime: {cr}");
    let pid = cr["pid"].as_i64().unwrap_or(0);
    anyhow::ensure!(pid > 1, "createRuntime pid: {cr}");
    // runc gives createContainer the pid inside the container's pid namespace (1); amphi
    // gives every hook the host pid, as the runtime spec defines `pid`.
    anyhow::ensure!(
        cc["pid"].as_i64().unwrap_or(0) > 0 && ps["pid"] == pid,
        "pids: {cc} {ps}"
    );
    // runc reports "created" to poststart hooks, amphi "running".
    anyhow::ensure!(
        ps["status"] == "running" || ps["status"] == "created",
        "poststart: {ps}"
    );
    anyhow::ensure!(stop["status"] == "stopped", "poststop: {stop}");
    c.check_leaks()
}

fn failing_hook(c: &mut Case) -> Result<()> {
    let id = c.id("badhook");
    let hook = c.cd.dir.join(format!("{id}-hook.sh"));
    std::fs::write(
        &hook,
        "#!/bin/sh\necho 'createRuntime says no' >&2\nexit 3\n",
    )?;
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755))?;
    let spec = c.spec_file(&id, |s| {
        s["process"]["args"] = serde_json::json!(["/bin/true"]);
        s["hooks"] = serde_json::json!({"createRuntime": [{"path": hook.display().to_string()}]});
    })?;
    let out = c.run_config(&spec, &id)?.failed()?;
    out.expect_output(
        "createRuntime says no",
        "error should carry the hook's output",
    )?;
    c.remove(&id)?;
    c.check_leaks()
}

e2e!(hooks_all_kinds, all_hooks);
e2e!(hooks_failing, failing_hook);
e2e_runc!(compare_runc_hooks, all_hooks);
e2e_runc!(compare_runc_failing_hook, failing_hook);
