//! Wasm test images: the place for the wasm end-to-end tests' support code.
//!
//! Modules come from `examples/wasm/out/` (built by `examples/wasm/build.sh`: `NAME.wasm` are
//! WASI preview1 core modules, `NAME-p2.wasm` preview2 components, `http-hello.wasm` a
//! wasi:http component). They are wrapped by `mkimage.py wasm-layer` into an image whose only
//! layers are the modules ([`import_layer_image`]; containerd 1.7+ unpacks only tar layers, so
//! the rootfs is empty and the shim reads the module from containerd's content store; 1.6
//! cannot run such an image), or into a busybox rootfs image with the module as `/NAME.wasm` and as the
//! entrypoint ([`import_rootfs_module`]), which `ctr run` unpacks as usual. Usage from a test:
//!
//! ```text
//! let module = wasm_images::module("hello", Target::P1)?;
//! let image = wasm_images::import_rootfs_module(&c.cd, &module, "docker.io/amphi/hello-wasm:e2e")?;
//! c.cd.ctr(&["run", "--rm", "--runtime", c.runtime.name(), &image, &c.id("w")])?.ok()?;
//! ```

use crate::cmd;
use crate::containerd::Containerd;
use crate::images;
use crate::paths;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// wasm32-wasip1: a core module (`out/NAME.wasm`).
    P1,
    /// wasm32-wasip2: a component (`out/NAME-p2.wasm`).
    P2,
}

/// Path of the built example `name` for `target`, running `examples/wasm/build.sh` when it
/// is missing.
pub fn module(name: &str, target: Target) -> Result<PathBuf> {
    let dir = paths::workspace_root().join("examples/wasm");
    let file = match target {
        Target::P1 => format!("{name}.wasm"),
        Target::P2 => format!("{name}-p2.wasm"),
    };
    let out = dir.join("out").join(&file);
    if out.is_file() {
        return Ok(out);
    }
    let build = dir.join("build.sh");
    anyhow::ensure!(
        build.is_file(),
        "{} missing and no {} to build it",
        out.display(),
        build.display()
    );
    let mut c = Command::new("bash");
    c.arg(&build).current_dir(&dir);
    cmd::run(c, Duration::from_secs(900))?
        .ok()
        .context("building the wasm examples (examples/wasm/build.sh)")?;
    anyhow::ensure!(
        out.is_file(),
        "{} not produced by examples/wasm/build.sh",
        out.display()
    );
    Ok(out)
}

/// Size-and-mtime tag of a file, so a rebuilt module gives a new cached archive.
fn stamp(module: &Path) -> Result<String> {
    let meta = std::fs::metadata(module).with_context(|| format!("{}", module.display()))?;
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs())
        .unwrap_or(0);
    Ok(format!("{}-{mtime}", meta.len()))
}

/// A busybox rootfs image with `module` at `/<file name>` as its entrypoint; imports it and
/// returns the image name.
pub fn import_rootfs_module(cd: &Containerd, module: &Path, image: &str) -> Result<String> {
    let name = module
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let file = format!("rootfs-{name}-{}.tar", stamp(module)?);
    let spec = format!("{}:/{name}", module.display());
    let entry = format!("/{name}");
    let archive = images::build_archive(
        &file,
        &[
            "rootfs",
            image,
            "--file",
            &spec,
            "--entrypoint",
            &entry,
            "--cmd",
        ],
    )?;
    images::import(cd, &archive, &[])?;
    Ok(image.to_string())
}

/// How [`import_layer_image`] builds an image whose layers are modules.
#[derive(Default, Clone, Copy)]
pub struct LayerOptions<'a> {
    /// The media type of every layer (default: each module's, core module or component).
    pub media_type: Option<&'a str>,
    /// The manifest's `OS/ARCH` (default `linux/wasm`). containerd's CRI before 2.0 sees only
    /// images of the node's platform, so a CRI test passes `linux/amd64`.
    pub platform: Option<&'a str>,
}

/// Wraps `modules` into an image named `image` whose layers are the modules themselves (each
/// titled with its file name, the first one the entrypoint) and imports it; returns the image
/// name. containerd 1.6 cannot unpack such an image (`ctr run` fails); 1.7 and 2.1 unpack it
/// to an empty rootfs.
pub fn import_layer_image(
    cd: &Containerd,
    modules: &[&Path],
    opts: LayerOptions,
    image: &str,
) -> Result<String> {
    // The archive is cached under this name and carries the image name: both go in it.
    let mut tag = format!("{}-", image.replace(['/', ':'], "_"));
    for m in modules {
        let stem = m.file_stem().unwrap_or_default().to_string_lossy();
        tag.push_str(&format!("{stem}-{}-", stamp(m)?));
    }
    for t in [opts.media_type, opts.platform].into_iter().flatten() {
        tag.push_str(&t.replace(['/', '+', '.'], "_"));
    }
    let file = format!("wasm-layers-{tag}.tar");
    let paths: Vec<String> = modules.iter().map(|m| m.display().to_string()).collect();
    let mut args = vec!["wasm-layer", image];
    args.extend(paths.iter().map(String::as_str));
    if let Some(t) = opts.media_type {
        args.extend(["--media-type", t]);
    }
    if let Some(p) = opts.platform {
        args.extend(["--platform", p]);
    }
    let archive = images::build_archive(&file, &args)?;
    images::import(cd, &archive, &["--all-platforms"])?;
    Ok(image.to_string())
}

/// A busybox rootfs image (no entrypoint; `ctr run` args name the program) with extra files:
/// `files` are `(host source, destination in the image)`. The archive is written to `dir`
/// (e.g. the daemon's temp dir, for one-off images) when given, else cached in the target
/// dir under a name derived from the files' contents. Imports it; returns the image name.
pub fn import_rootfs_files(
    cd: &Containerd,
    files: &[(&Path, &str)],
    image: &str,
    dir: Option<&Path>,
) -> Result<String> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    image.hash(&mut h);
    for (src, dest) in files {
        let data = std::fs::read(src).with_context(|| format!("reading {}", src.display()))?;
        data.hash(&mut h);
        dest.hash(&mut h);
    }
    let specs: Vec<String> = files
        .iter()
        .map(|(s, d)| format!("{}:{d}", s.display()))
        .collect();
    let mut args: Vec<&str> = vec!["rootfs", image];
    for s in &specs {
        args.push("--file");
        args.push(s);
    }
    let file = format!("rootfs-files-{:016x}.tar", h.finish());
    let archive = match dir {
        None => images::build_archive(&file, &args)?,
        Some(dir) => {
            let out = dir.join(&file);
            let script = paths::workspace_root().join("tests/scripts/mkimage.py");
            let mut c = Command::new(paths::python());
            c.arg(&script).arg(args[0]).arg(&out).args(&args[1..]);
            cmd::run(c, Duration::from_secs(120))?
                .ok()
                .context("building a test image with mkimage.py")?;
            out
        }
    };
    images::import(cd, &archive, &[])?;
    Ok(image.to_string())
}
