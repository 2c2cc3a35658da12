//! The Kubernetes node installer (examples/kubernetes/installer/install.sh) against a fake host
//! root holding each containerd version's default config: the handler it adds is what that
//! containerd parses (`containerd config dump`), a second run changes nothing, options are
//! carried, and `uninstall` restores the original file byte for byte.

use amphi_tests::{cmd, paths, Version};
use anyhow::{Context, Result};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn install(host: &Path, shim: &Path, args: &[&str], options: Option<&str>) -> Result<String> {
    let script = paths::workspace_root().join("examples/kubernetes/installer/install.sh");
    let mut c = Command::new("sh");
    c.arg(&script)
        .args(args)
        .env("HOST_ROOT", host)
        .env("SHIM_SOURCE", shim)
        .env("RESTART", "0");
    if let Some(o) = options {
        c.env("RUNTIME_OPTIONS", o);
    }
    Ok(cmd::run(c, Duration::from_secs(30))?.ok()?.stdout)
}

fn installer(v: Version) -> Result<()> {
    v.require()?;
    let tmp = tempfile::tempdir()?;
    let host = tmp.path().join("host");
    let shim = tmp.path().join("containerd-shim-amphi-v1");
    std::fs::write(&shim, b"#!/bin/sh\necho fake shim\n")?;
    let cfg = host.join("etc/containerd/config.toml");
    std::fs::create_dir_all(cfg.parent().unwrap())?;
    let mut c = Command::new(v.containerd());
    c.args(["config", "default"]);
    let default = cmd::run(c, Duration::from_secs(30))?.ok()?.stdout;
    std::fs::write(&cfg, &default)?;
    // Both installs pass the same options: the second must find the handler up to date.
    let install_with_options = || {
        install(
            &host,
            &shim,
            &["install"],
            Some("ConfigPath = '/etc/amphi/config.toml'"),
        )
    };

    let out = install_with_options()?;
    anyhow::ensure!(
        out.contains("added the amphi runtime handler"),
        "first run: {out}"
    );
    anyhow::ensure!(
        std::fs::read(host.join("usr/local/bin/containerd-shim-amphi-v1"))?
            == std::fs::read(&shim)?,
        "binary not copied"
    );
    let patched = std::fs::read_to_string(&cfg)?;
    let out = install_with_options()?;
    anyhow::ensure!(
        out.contains("already has the amphi handler") && out.contains("up to date"),
        "second run: {out}"
    );
    anyhow::ensure!(
        std::fs::read_to_string(&cfg)? == patched,
        "second run changed the config"
    );

    // What containerd itself makes of it.
    let mut c = Command::new(v.containerd());
    c.arg("--config").arg(&cfg).args(["config", "dump"]);
    let dump = cmd::run(c, Duration::from_secs(30))?
        .ok()
        .context("containerd config dump of the patched config")?
        .stdout;
    let table = if v.is_v2() {
        "[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.amphi]"
    } else {
        "[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.amphi]"
    };
    let at = dump
        .find(table)
        .with_context(|| format!("{table} not in the dump:\n{dump}"))?;
    let section: String = dump[at..].lines().take(40).collect::<Vec<_>>().join("\n");
    anyhow::ensure!(
        section.contains("io.containerd.amphi.v1"),
        "runtime_type missing:\n{section}"
    );
    anyhow::ensure!(
        section.contains("ConfigPath") && section.contains("/etc/amphi/config.toml"),
        "options missing:\n{section}"
    );

    let out = install(&host, &shim, &["uninstall"], None)?;
    anyhow::ensure!(
        out.contains("removed the amphi runtime handler"),
        "uninstall: {out}"
    );
    anyhow::ensure!(
        std::fs::read_to_string(&cfg)? == default,
        "uninstall did not restore the original config"
    );
    anyhow::ensure!(
        !host.join("usr/local/bin/containerd-shim-amphi-v1").exists(),
        "uninstall left the binary"
    );
    Ok(())
}

#[test]
fn installer_containerd_1_6() {
    installer(Version::V1_6).unwrap()
}
#[test]
fn installer_containerd_1_7() {
    installer(Version::V1_7).unwrap()
}
#[test]
fn installer_containerd_2_1() {
    installer(Version::V2_1).unwrap()
}
