//! Wasm test images: the place for the wasm end-to-end tests' support code.
//!
//! Modules are built from `examples/wasm` (Rust, targets wasm32-wasip1 / wasm32-wasip2) into
//! the workspace target dir, then wrapped by `mkimage.py wasm-layer` into an image whose only
//! layer is the module, and imported with `--all-platforms` (the image's architecture is
//! `wasm`). Usage from a test:
//!
//! ```text
//! let module = wasm_images::module("hello", Target::P1)?;   // builds examples/wasm if needed
//! let image = wasm_images::import_module(&cd, &module, "docker.io/amphi/hello-wasm:e2e", false)?;
//! case.ctr(&["run", "--rm", "--runtime", RUNTIME, &image, "w1"])?;
//! ```

use crate::cmd;
use crate::containerd::Containerd;
use crate::images;
use crate::paths;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

#[derive(Debug, Clone, Copy)]
pub enum Target {
    /// wasm32-wasip1: a core module.
    P1,
    /// wasm32-wasip2: a component.
    P2,
}

impl Target {
    pub fn triple(self) -> &'static str {
        match self {
            Target::P1 => "wasm32-wasip1",
            Target::P2 => "wasm32-wasip2",
        }
    }
}

/// Path of the built module `name` (a bin of a package under examples/wasm), building it with
/// `cargo build --release --target T` in `examples/wasm` when it is missing.
pub fn module(name: &str, target: Target) -> Result<PathBuf> {
    let dir = paths::workspace_root().join("examples/wasm");
    let target_dir = paths::profile_dir().parent().map(Path::to_path_buf).unwrap_or_else(|| paths::workspace_root().join("target"));
    let out = target_dir.join(target.triple()).join("release").join(format!("{name}.wasm"));
    if out.is_file() {
        return Ok(out);
    }
    anyhow::ensure!(dir.is_dir(), "{} does not exist (no wasm examples yet)", dir.display());
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(&dir)
        .args(["build", "--release", "--target", target.triple()])
        .arg("--target-dir")
        .arg(&target_dir);
    cmd::run(c, Duration::from_secs(900))?.ok().with_context(|| format!("building examples/wasm for {}", target.triple()))?;
    anyhow::ensure!(out.is_file(), "{} not produced by the examples/wasm build", out.display());
    Ok(out)
}

/// Wraps `module` into an image named `image` and imports it; returns the image name.
pub fn import_module(cd: &Containerd, module: &Path, image: &str, component: bool) -> Result<String> {
    let stem = module.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let file = format!("wasm-{stem}-{}.tar", if component { "component" } else { "module" });
    let m = module.to_string_lossy();
    let mut args = vec!["wasm-layer", image, &m];
    if component {
        args.push("--component");
    }
    let archive = images::build_archive(&file, &args)?;
    images::import(cd, &archive, &["--all-platforms"])?;
    Ok(image.to_string())
}
