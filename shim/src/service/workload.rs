//! Deciding what the container process runs: the native entrypoint, or a WebAssembly module.
//!
//! The entrypoint (`process.args[0]`, optionally `path#export`) is looked up inside the
//! container's rootfs without leaving it (openat2 RESOLVE_IN_ROOT, so a symlink in the image
//! cannot point the shim at a host file). Wasm is compiled here, in the shim, where threads are
//! safe, through the node-wide cache; the container process receives the opened artifact as an
//! extra fd and the `wasm` runner (see `crate::wasm`) maps it after pivot_root.
//! An entrypoint that is not in the rootfs may be a module the image carries as a layer
//! (`crate::wasm_layers`). Anything that is not wasm — or is not found — is left to the native
//! exec path, which reports a missing entrypoint in runc's words.

use std::fs::File;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::Path;

use runtime_native::Workload;
use runtime_wasm::Entrypoint;

use super::error::{ServiceError, ServiceResult};
use crate::wasm;
use crate::wasm_layers::{self, LayerSource};

/// Where a wasm module's `[wasm]` settings come from: computed only when the entrypoint is
/// wasm, so a native container never reads them.
#[derive(Default)]
pub struct SettingsSource<'a> {
    pub options: Option<&'a containerd_shim_protos::protobuf::well_known_types::any::Any>,
    pub annotations: Option<&'a std::collections::HashMap<String, String>>,
}

pub struct Plan {
    pub workload: Workload,
    pub extra_fds: Vec<OwnedFd>,
}

fn native() -> Plan {
    Plan {
        workload: Workload::Exec,
        extra_fds: Vec::new(),
    }
}

/// The plan for a container's init process. `layers` says where to look for a module that
/// the image carries as a layer when the entrypoint is not a file in the rootfs.
pub fn plan_init(
    rootfs: &Path,
    spec: &oci_spec::runtime::Spec,
    layers: Option<&LayerSource>,
    settings: &SettingsSource,
) -> ServiceResult<Plan> {
    match spec.process() {
        Some(process) => plan(rootfs, process, layers, settings),
        None => Ok(native()),
    }
}

/// The plan for an exec into a running container.
pub fn plan_exec(
    rootfs: &Path,
    process: &oci_spec::runtime::Process,
    layers: Option<&LayerSource>,
    settings: &SettingsSource,
) -> ServiceResult<Plan> {
    plan(rootfs, process, layers, settings)
}

fn plan(
    rootfs: &Path,
    process: &oci_spec::runtime::Process,
    layers: Option<&LayerSource>,
    settings: &SettingsSource,
) -> ServiceResult<Plan> {
    let Some(entry) = process.args().as_ref().and_then(|a| a.first()) else {
        return Ok(native());
    };
    let (path, export) = runtime_wasm::split_entry(entry);
    let env = process.env().clone().unwrap_or_default();
    let Some(mut file) = open_entrypoint(rootfs, path, &env) else {
        return match layers {
            Some(source) => plan_from_layer(source, path, export, settings),
            None => Ok(native()),
        };
    };
    let mut head = Vec::with_capacity(64);
    (&mut file)
        .take(64)
        .read_to_end(&mut head)
        .map_err(|e| ServiceError::Internal(format!("read entrypoint {path}: {e}")))?;
    let kind = runtime_wasm::detect_bytes(path, &head).map_err(invalid)?;
    if kind == Entrypoint::Native {
        return Ok(native());
    }
    let mut bytes = head;
    file.read_to_end(&mut bytes)
        .map_err(|e| ServiceError::Internal(format!("read wasm module {path}: {e}")))?;
    wasm_plan(path, &bytes, export, settings)
}

/// The entrypoint is not in the rootfs: the module may be a layer of the image. When the
/// image has no wasm layer, the native path reports the missing entrypoint.
fn plan_from_layer(
    source: &LayerSource,
    path: &str,
    export: Option<&str>,
    settings: &SettingsSource,
) -> ServiceResult<Plan> {
    match wasm_layers::find(source, path) {
        Ok(Some(layer)) => {
            log::info!(
                "{path} is layer {} ({}) of image {}",
                layer.digest,
                layer.media_type,
                layer.image
            );
            wasm_plan(path, &layer.bytes, export, settings)
        }
        Ok(None) => Ok(native()),
        Err(e) => Err(ServiceError::InvalidArgument(format!(
            "entrypoint {path} is not in the rootfs, and {e}"
        ))),
    }
}

/// Compiles (or finds in the node cache) the module and hands its artifact to the runner.
fn wasm_plan(
    path: &str,
    bytes: &[u8],
    export: Option<&str>,
    settings: &SettingsSource,
) -> ServiceResult<Plan> {
    let settings = wasm::settings(settings.options, settings.annotations)
        .map_err(|e| ServiceError::InvalidArgument(format!("wasm module {path}: {e}")))?;
    let compiled = wasm::cache()
        .map_err(invalid)?
        .compile_with(&settings, path, bytes, export)
        .map_err(invalid)?;
    log::info!(
        "wasm {path}: {} ({})",
        compiled.payload.digest,
        if compiled.cache_hit {
            "cache hit"
        } else {
            "compiled"
        }
    );
    Ok(Plan {
        workload: Workload::Custom {
            runner: wasm::RUNNER.to_string(),
            payload: compiled.payload.to_bytes(),
        },
        extra_fds: vec![OwnedFd::from(compiled.file)],
    })
}

fn invalid(e: runtime_wasm::Error) -> ServiceError {
    ServiceError::InvalidArgument(e.to_string())
}

/// Opens the entrypoint inside `rootfs`: an absolute or relative path as is, a bare name
/// through the container's `PATH`. `None` when it is not there (the native path reports it).
fn open_entrypoint(rootfs: &Path, path: &str, env: &[String]) -> Option<File> {
    if path.contains('/') {
        return open_in_root(rootfs, path);
    }
    let search = env
        .iter()
        .find_map(|kv| kv.strip_prefix("PATH="))
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    search
        .split(':')
        .filter(|d| !d.is_empty())
        .find_map(|dir| open_in_root(rootfs, &format!("{dir}/{path}")))
}

/// `openat2(rootfs, path, RESOLVE_IN_ROOT)`: symlinks and `..` resolve as if `rootfs` were `/`.
fn open_in_root(rootfs: &Path, path: &str) -> Option<File> {
    let root = File::open(rootfs).ok()?;
    let resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;
    let fd = runtime_native::resolve::openat2(&root, path, libc::O_RDONLY, resolve).ok()?;
    let file = File::from(fd);
    file.metadata().ok().filter(|m| m.is_file()).map(|_| file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn entrypoints_resolve_inside_the_rootfs_only() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("bin")).unwrap();
        std::fs::write(root.join("bin/app.wasm"), b"\0asm\x01\0\0\0").unwrap();
        // A symlink to an absolute path resolves inside the root, not on the host.
        symlink("/bin/app.wasm", root.join("link.wasm")).unwrap();
        symlink("/etc/hostname", root.join("escape")).unwrap();
        assert!(open_in_root(root, "/bin/app.wasm").is_some());
        assert!(open_in_root(root, "/link.wasm").is_some());
        assert!(open_in_root(root, "/escape").is_none());
        assert!(open_in_root(root, "/../../bin/app.wasm").is_some());
        let env = vec!["PATH=/nope:/bin".to_string()];
        assert!(open_entrypoint(root, "app.wasm", &env).is_some());
        assert!(open_entrypoint(root, "missing", &env).is_none());
    }

    #[test]
    fn native_and_missing_entrypoints_take_the_exec_path() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("tool"), b"#!/bin/sh\necho hi\n").unwrap();
        let mut p = oci_spec::runtime::Process::default();
        p.set_args(Some(vec!["/tool".into()]));
        assert_eq!(
            plan_exec(dir.path(), &p, None, &SettingsSource::default())
                .unwrap()
                .workload,
            Workload::Exec
        );
        p.set_args(Some(vec!["/absent".into()]));
        assert_eq!(
            plan_exec(dir.path(), &p, None, &SettingsSource::default())
                .unwrap()
                .workload,
            Workload::Exec
        );
    }

    #[test]
    fn invalid_wasm_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("bad.wasm"), b"\0asm\x09").unwrap();
        let mut p = oci_spec::runtime::Process::default();
        p.set_args(Some(vec!["/bad.wasm".into()]));
        let err = plan_exec(dir.path(), &p, None, &SettingsSource::default())
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("/bad.wasm"), "{err}");
    }
}
