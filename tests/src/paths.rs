//! Where things are: the workspace, the cargo target dir, the built shim.

use anyhow::Result;
use std::path::{Path, PathBuf};

pub const SHIM_BINARY: &str = "containerd-shim-amphi-v1";

/// The workspace root (parent of the `tests/` crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The profile directory the running test binary was built into (`<target>/release`), derived
/// from the test executable (`<target>/release/deps/<test>-<hash>`), else `CARGO_TARGET_DIR`,
/// else `<workspace>/target/release`.
pub fn profile_dir() -> PathBuf {
    if let Ok(exe) = std::env::current_exe() {
        if let Some(deps) = exe.parent() {
            if deps.file_name().is_some_and(|n| n == "deps") {
                if let Some(p) = deps.parent() {
                    return p.to_path_buf();
                }
            }
        }
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    target.join("release")
}

/// Scratch space kept between runs (built image archives).
pub fn cache_dir() -> PathBuf {
    let d = profile_dir()
        .parent()
        .map(|t| t.join("amphi-e2e"))
        .unwrap_or_else(|| workspace_root().join("target/amphi-e2e"));
    let _ = std::fs::create_dir_all(&d);
    d
}

/// The built shim: `$AMPHI_SHIM` if set, else `<profile dir>/containerd-shim-amphi-v1`, else
/// `<workspace>/target/release/containerd-shim-amphi-v1`.
pub fn shim_binary() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("AMPHI_SHIM") {
        let p = PathBuf::from(p);
        anyhow::ensure!(p.is_file(), "AMPHI_SHIM={} does not exist", p.display());
        return Ok(p);
    }
    let candidates = [
        profile_dir().join(SHIM_BINARY),
        workspace_root().join("target/release").join(SHIM_BINARY),
    ];
    for c in &candidates {
        if c.is_file() {
            return Ok(c.clone());
        }
    }
    anyhow::bail!(
        "{SHIM_BINARY} not built (looked at {}); run `cargo build --release -p amphi-shim` first",
        candidates
            .iter()
            .map(|c| c.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// The python interpreter used for tests/scripts/mkimage.py (Debian's, if present).
pub fn python() -> PathBuf {
    for p in ["/usr/bin/python3", "/usr/local/bin/python3"] {
        if Path::new(p).is_file() {
            return PathBuf::from(p);
        }
    }
    PathBuf::from("python3")
}
