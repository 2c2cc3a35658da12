//! Recursive mount options in a spec (`rro`, `rnoexec`...), as `ctr run --mount` passes them:
//! applied with mount_setattr(AT_RECURSIVE) to the bind mount and every mount below it, where
//! a plain `ro` bind leaves the submounts writable.

use amphi_tests::{e2e, Case};
use anyhow::{Context, Result};
use nix::mount::{mount, MsFlags};

/// Unmounts the case's host submount when dropped.
struct Submount(std::path::PathBuf);

impl Drop for Submount {
    fn drop(&mut self) {
        amphi_tests::mounts::unmount_all_under(&self.0);
    }
}

fn recursive_readonly(c: &mut Case) -> Result<()> {
    let dir = c.cd.dir.join("rro-volume");
    let sub = dir.join("sub");
    std::fs::create_dir_all(&sub)?;
    let _guard = Submount(dir.clone());
    mount(
        Some("tmpfs"),
        &sub,
        Some("tmpfs"),
        MsFlags::empty(),
        Some("size=1m"),
    )
    .with_context(|| format!("mount tmpfs on {}", sub.display()))?;
    let probe = "touch /vol/top 2>/dev/null; echo top=$?; touch /vol/sub/file 2>/dev/null; \
                 echo sub=$?";
    let run = |suffix: &str, options: &str| -> Result<String> {
        let spec = format!("type=bind,src={},dst=/vol,options={options}", dir.display());
        let id = c.id(suffix);
        Ok(c.run_rm(&["--mount", &spec], &id, &["sh", "-c", probe])?
            .ok()?
            .stdout)
    };
    let plain = run("ro", "rbind:ro")?;
    anyhow::ensure!(
        plain.contains("top=1") && plain.contains("sub=0"),
        "an ro bind (not recursive): {plain}"
    );
    let recursive = run("rro", "rbind:rro")?;
    anyhow::ensure!(
        recursive.contains("top=1") && recursive.contains("sub=1"),
        "an rro bind leaves its submount writable: {recursive}"
    );
    let noexec = run("rnoexec", "rbind:rnoexec")?;
    anyhow::ensure!(
        noexec.contains("top=0") && noexec.contains("sub=0"),
        "rnoexec made the volume read-only: {noexec}"
    );
    let id = c.id("rnoexec-run");
    let out = c
        .run_rm(
            &[
                "--mount",
                &format!(
                    "type=bind,src={},dst=/vol,options=rbind:rnoexec",
                    dir.display()
                ),
            ],
            &id,
            &[
                "sh",
                "-c",
                "cp /bin/busybox /vol/sub/bb && /vol/sub/bb true; echo exec=$?",
            ],
        )?
        .ok()?;
    anyhow::ensure!(
        !out.stdout.contains("exec=0"),
        "a binary ran from a submount of an rnoexec volume: {}",
        out.describe()
    );
    Ok(())
}

e2e!(recursive_mount_options, recursive_readonly);
