//! Test images built offline by tests/scripts/mkimage.py, cached in the target dir, and
//! imported into a daemon.

use crate::cmd;
use crate::containerd::Containerd;
use crate::paths;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

/// The busybox image every native test uses.
pub const BUSYBOX: &str = "docker.io/amphi/busybox:e2e";

static BUILD_LOCK: Mutex<()> = Mutex::new(());

/// Builds (once; cached by name) an OCI archive with `mkimage.py ARGS`, returning its path.
/// The archive is written to a temp name and renamed, so concurrent builders never see half.
pub fn build_archive(file_name: &str, mkimage_args: &[&str]) -> Result<PathBuf> {
    let _g = BUILD_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let out = paths::cache_dir().join(file_name);
    if out.is_file() {
        return Ok(out);
    }
    let tmp = paths::cache_dir().join(format!("{file_name}.{}.partial", std::process::id()));
    let script = paths::workspace_root().join("tests/scripts/mkimage.py");
    let mut c = Command::new(paths::python());
    c.arg(&script)
        .arg(mkimage_args[0])
        .arg(&tmp)
        .args(&mkimage_args[1..]);
    cmd::run(c, Duration::from_secs(120))?
        .ok()
        .context("building a test image with mkimage.py")?;
    std::fs::rename(&tmp, &out)?;
    Ok(out)
}

/// The busybox image archive (needs /bin/busybox from busybox-static).
pub fn busybox_archive() -> Result<PathBuf> {
    anyhow::ensure!(
        Path::new("/bin/busybox").is_file(),
        "/bin/busybox missing: apt-get install busybox-static (scripts/setup.sh does)"
    );
    build_archive("busybox-e2e.tar", &["rootfs", BUSYBOX])
}

/// `ctr images import` of an archive into `cd` (extra flags e.g. `--all-platforms`).
pub fn import(cd: &Containerd, archive: &Path, extra: &[&str]) -> Result<()> {
    let a = archive.to_string_lossy();
    let mut args = vec!["images", "import"];
    args.extend_from_slice(extra);
    args.push(&a);
    cd.ctr_timeout(&args, Duration::from_secs(120))?
        .ok()
        .context("importing a test image")?;
    Ok(())
}

/// Builds (if needed) and imports the busybox image.
pub fn import_busybox(cd: &Containerd) -> Result<()> {
    import(cd, &busybox_archive()?, &[])
}
