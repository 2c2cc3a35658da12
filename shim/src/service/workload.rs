//! Deciding what the container process runs: the native entrypoint, or a WebAssembly module.
//!
//! The entrypoint (`process.args[0]`, optionally `path#export`) is a tenant's file and is read
//! only through `runtime_native::fs::tenant_file`: looked up inside the container's rootfs without
//! leaving it, regular files only, a head of a few bytes to tell native from wasm, and the whole
//! module only under the container's size limit (`[tenant_files] max_bytes` in the runtime
//! options). Wasm is looked up in the node-wide cache here; a module the cache lacks is
//! compiled by a short-lived helper process in the container's cgroup (`crate::compile_helper`:
//! its memory is the pod's), at most one per CPU at once (`crate::compile_slots`); the container
//! process receives the opened artifact as an extra fd and the `wasm` runner (see `crate::wasm`)
//! maps it after pivot_root. An entrypoint that is not in the rootfs may be a module the image carries
//! as a layer (`crate::wasm_layers`). Anything that is not wasm — or is not found — is left to
//! the native exec path, which reports a missing entrypoint in runc's words. Planning runs on
//! the blocking pool and is waited for at most [`PLAN_TIMEOUT`] ([`bounded`]).

use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::time::Duration;

use runtime_native::fs::tenant_file::{Limits, TenantFile, TenantFileError};
use runtime_native::Workload;
use runtime_wasm::Entrypoint;

use super::error::{ServiceError, ServiceResult};
use crate::wasm;
use crate::wasm_layers::{self, LayerSource};

/// Where a wasm module's `[wasm]` settings come from (owned: a plan runs on its own thread):
/// computed only when the entrypoint is wasm, so a native container never reads them.
#[derive(Default, Clone)]
pub struct SettingsSource {
    pub options: Option<containerd_shim_protos::protobuf::well_known_types::any::Any>,
    pub annotations: Option<std::collections::HashMap<String, String>>,
}

impl SettingsSource {
    /// The runtime `options` of a Create (an exec has none) and the annotations of `spec`.
    pub fn new(
        options: Option<containerd_shim_protos::protobuf::well_known_types::any::Any>,
        spec: &oci_spec::runtime::Spec,
    ) -> SettingsSource {
        SettingsSource {
            options,
            annotations: spec.annotations().clone(),
        }
    }
}

/// How long Create or Exec waits for a plan (a lookup, a read, maybe a compile). Kubelet gives
/// a runtime request two minutes. A compile helper is killed at this bound after its start, or
/// earlier when a failed Create removes the cgroup it runs in.
pub const PLAN_TIMEOUT: Duration = Duration::from_secs(120);

/// How many bytes of an entrypoint tell native from wasm (`runtime_wasm::detect_bytes`).
const HEAD_BYTES: usize = 64;

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

/// Where and how to look for the entrypoint: the rootfs, the image's layers (when the
/// entrypoint is not a file in the rootfs), and the size limit on what is read whole.
pub struct PlanInput<'a> {
    pub rootfs: &'a Path,
    pub layers: Option<&'a LayerSource>,
    pub limits: Limits,
    pub settings: SettingsSource,
    /// The container's cgroup: a module the cache lacks is compiled in a helper placed there
    /// (`crate::compile_helper`). None only where there is no container (unit tests).
    pub cgroup: Option<runtime_native::Cgroup>,
}

/// The plan for a container's init process.
pub fn plan_init(input: &PlanInput, spec: &oci_spec::runtime::Spec) -> ServiceResult<Plan> {
    match spec.process() {
        Some(process) => plan(input, process),
        None => Ok(native()),
    }
}

/// The plan for an exec into a running container.
pub fn plan_exec(input: &PlanInput, process: &oci_spec::runtime::Process) -> ServiceResult<Plan> {
    plan(input, process)
}

/// Runs `f` (a plan) on its own blocking-pool thread and waits for it at most
/// [`PLAN_TIMEOUT`]. Called from the blocking pool (Create and Exec run there), inside the
/// runtime. When the time is up the caller gets an error naming `what`; the thread finishes
/// on its own and what it made (fds) is dropped.
pub fn bounded<T: Send + 'static>(
    what: &str,
    f: impl FnOnce() -> ServiceResult<T> + Send + 'static,
) -> ServiceResult<T> {
    bounded_for(PLAN_TIMEOUT, what, f)
}

fn bounded_for<T: Send + 'static>(
    timeout: Duration,
    what: &str,
    f: impl FnOnce() -> ServiceResult<T> + Send + 'static,
) -> ServiceResult<T> {
    let handle = tokio::runtime::Handle::current();
    let task = handle.spawn_blocking(f);
    match handle.block_on(tokio::time::timeout(timeout, task)) {
        Ok(Ok(result)) => result,
        Ok(Err(source)) => Err(ServiceError::PlanFailed {
            what: what.to_string(),
            source,
        }),
        Err(_) => Err(ServiceError::PlanTimeout {
            what: what.to_string(),
            timeout,
        }),
    }
}

fn plan(input: &PlanInput, process: &oci_spec::runtime::Process) -> ServiceResult<Plan> {
    let Some(entry) = process.args().as_ref().and_then(|a| a.first()) else {
        return Ok(native());
    };
    let (path, export) = runtime_wasm::split_entry(entry);
    let env = process.env().clone().unwrap_or_default();
    let Some(mut file) = open_entrypoint(input.rootfs, path, &env)? else {
        return match input.layers {
            Some(source) => plan_from_layer(source, path, export, input),
            None => Ok(native()),
        };
    };
    let head = file.read_head(HEAD_BYTES).map_err(refused)?;
    let kind = runtime_wasm::detect_bytes(path, &head).map_err(ServiceError::from)?;
    if kind == Entrypoint::Native {
        return Ok(native());
    }
    let bytes = file.read_all(input.limits.max_bytes).map_err(refused)?;
    wasm_plan(path, &bytes, export, input)
}

/// The entrypoint is not in the rootfs: the module may be a layer of the image. When the
/// image has no wasm layer, the native path reports the missing entrypoint.
fn plan_from_layer(
    source: &LayerSource,
    path: &str,
    export: Option<&str>,
    input: &PlanInput,
) -> ServiceResult<Plan> {
    match wasm_layers::find(source, path, input.limits.max_bytes) {
        Ok(Some(layer)) => {
            log::info!(
                "{path} is layer {} ({}) of image {}",
                layer.digest,
                layer.media_type,
                layer.image
            );
            wasm_plan(path, &layer.bytes, export, input)
        }
        Ok(None) => Ok(native()),
        Err(source) => Err(ServiceError::EntrypointLayer {
            path: path.to_string(),
            source: Box::new(source),
        }),
    }
}

/// Compiles (or finds in the node cache) the module and hands its artifact to the runner.
fn wasm_plan(
    path: &str,
    bytes: &[u8],
    export: Option<&str>,
    input: &PlanInput,
) -> ServiceResult<Plan> {
    // Before any compile: what one function costs to compile grows with its size.
    let max_function = usize::try_from(input.limits.max_function_bytes).unwrap_or(usize::MAX);
    runtime_wasm::check_function_sizes(path, bytes, max_function)?;
    let settings = &input.settings;
    let settings = wasm::settings(settings.options.as_ref(), settings.annotations.as_ref())
        .map_err(|source| ServiceError::WasmConfig {
            module: path.to_string(),
            source: Box::new(source),
        })?;
    let cache = wasm::cache().map_err(ServiceError::from)?;
    let compiled = match cache
        .lookup(
            &settings,
            runtime_wasm::Module {
                name: path,
                bytes,
                export,
            },
        )
        .map_err(ServiceError::from)?
    {
        runtime_wasm::Lookup::Hit(compiled) => compiled,
        runtime_wasm::Lookup::Miss(job) => {
            let _slot = crate::compile_slots::compile_slots().take();
            crate::compile_helper::compile(
                cache.dir(),
                &job,
                bytes,
                input.cgroup.as_ref(),
                PLAN_TIMEOUT,
            )
            .map_err(ServiceError::Compile)?;
            cache.finish(&job).map_err(ServiceError::from)?
        }
    };
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

fn refused(e: TenantFileError) -> ServiceError {
    ServiceError::Entrypoint(e)
}

/// Opens the entrypoint inside `rootfs`: an absolute or relative path as is, a bare name
/// through the container's `PATH` (skipping what is missing or not a regular file, as execvp
/// does). `None` when it is not there (the native path reports it); an entrypoint that is
/// there but may not be read (a FIFO, a device, a directory) is an error naming it.
fn open_entrypoint(rootfs: &Path, path: &str, env: &[String]) -> ServiceResult<Option<TenantFile>> {
    let root = open_root(rootfs)?;
    if path.contains('/') {
        return match TenantFile::open(&root, "the rootfs", path) {
            Ok(f) => Ok(Some(f)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(refused(e)),
        };
    }
    let search = env
        .iter()
        .find_map(|kv| kv.strip_prefix("PATH="))
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    for dir in search.split(':').filter(|d| !d.is_empty()) {
        match TenantFile::open(&root, "the rootfs", &format!("{dir}/{path}")) {
            Ok(f) => return Ok(Some(f)),
            Err(e) if e.is_not_found() => continue,
            Err(TenantFileError::NotRegular { .. }) => continue,
            Err(e) => return Err(refused(e)),
        }
    }
    Ok(None)
}

/// The rootfs directory (a host path containerd gave us), as an `O_PATH` fd to resolve in.
fn open_root(rootfs: &Path) -> ServiceResult<File> {
    nix::fcntl::open(
        rootfs,
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map(File::from)
    .map_err(|source| ServiceError::OpenRootfs {
        path: rootfs.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn input(root: &Path, max_bytes: u64) -> PlanInput<'_> {
        PlanInput {
            rootfs: root,
            layers: None,
            limits: Limits {
                max_bytes,
                ..Limits::default()
            },
            settings: SettingsSource::default(),
            cgroup: None,
        }
    }

    fn process(entry: &str) -> oci_spec::runtime::Process {
        let mut p = oci_spec::runtime::Process::default();
        p.set_args(Some(vec![entry.into()]));
        p
    }

    fn plan_error(root: &Path, entry: &str, max_bytes: u64) -> String {
        match plan_exec(&input(root, max_bytes), &process(entry)) {
            Ok(_) => panic!("{entry}: planned"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn entrypoints_resolve_inside_the_rootfs_only() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("bin")).unwrap();
        std::fs::write(root.join("bin/app.wasm"), b"\0asm\x01\0\0\0").unwrap();
        // A symlink to an absolute path resolves inside the root, not on the host.
        symlink("/bin/app.wasm", root.join("link.wasm")).unwrap();
        symlink("/etc/hostname", root.join("escape")).unwrap();
        let found = |p: &str| open_entrypoint(root, p, &[]).unwrap().is_some();
        assert!(found("/bin/app.wasm"));
        assert!(found("/link.wasm"));
        assert!(!found("/escape"));
        assert!(found("/../../bin/app.wasm"));
        let env = vec!["PATH=/nope:/bin".to_string()];
        assert!(open_entrypoint(root, "app.wasm", &env).unwrap().is_some());
        assert!(open_entrypoint(root, "missing", &env).unwrap().is_none());
    }

    #[test]
    fn native_and_missing_entrypoints_take_the_exec_path() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("tool"), b"#!/bin/sh\necho hi\n").unwrap();
        // A native binary bigger than the limit is fine: only its head is read.
        let elf = File::create(dir.path().join("huge")).unwrap();
        std::io::Write::write_all(&mut &elf, b"\x7fELF\x02\x01\x01").unwrap();
        elf.set_len(3 << 30).unwrap();
        for entry in ["/tool", "/absent", "/huge"] {
            let plan = plan_exec(&input(dir.path(), 1024), &process(entry)).unwrap();
            assert_eq!(plan.workload, Workload::Exec, "{entry}");
        }
    }

    #[test]
    fn invalid_wasm_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("bad.wasm"), b"\0asm\x09").unwrap();
        let err = plan_error(dir.path(), "/bad.wasm", 1024);
        assert!(err.contains("/bad.wasm"), "{err}");
    }

    #[test]
    fn special_files_are_refused_by_name_and_kind() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        nix::unistd::mkfifo(
            &root.join("x"),
            nix::sys::stat::Mode::from_bits_truncate(0o644),
        )
        .unwrap();
        std::fs::create_dir(root.join("d")).unwrap();
        // Returns at once: a FIFO is never opened for reading.
        let err = plan_error(root, "/x", 1024);
        assert!(err.contains("/x is a FIFO, not a regular file"), "{err}");
        let err = plan_error(root, "/d", 1024);
        assert!(err.contains("/d is a directory"), "{err}");
        // Through PATH, a FIFO is skipped like execvp skips what it cannot run.
        std::fs::create_dir_all(root.join("a")).unwrap();
        std::fs::create_dir_all(root.join("b")).unwrap();
        nix::unistd::mkfifo(
            &root.join("a/tool"),
            nix::sys::stat::Mode::from_bits_truncate(0o644),
        )
        .unwrap();
        std::fs::write(root.join("b/tool"), b"#!/bin/sh\n").unwrap();
        let env = vec!["PATH=/a:/b".to_string()];
        let f = open_entrypoint(root, "tool", &env).unwrap().unwrap();
        assert_eq!(f.path(), "/b/tool");
    }

    #[test]
    fn an_over_size_module_is_refused_before_it_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let big = File::create(dir.path().join("big.wasm")).unwrap();
        std::io::Write::write_all(&mut &big, b"\0asm\x01\0\0\0").unwrap();
        big.set_len(3 << 30).unwrap();
        let err = plan_error(
            dir.path(),
            "/big.wasm",
            runtime_native::fs::tenant_file::DEFAULT_MAX_BYTES,
        );
        assert!(
            err.contains("/big.wasm is 3221225472 bytes") && err.contains("limit of 268435456"),
            "{err}"
        );
    }

    #[test]
    fn a_plan_that_hangs_is_given_up_on() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let (release, hung) = std::sync::mpsc::channel::<()>();
        let bounded_plans = rt.block_on(async move {
            tokio::task::spawn_blocking(move || {
                // Blocks until the test releases it, long after the timeout.
                let hangs = bounded_for(Duration::from_millis(50), "plan of exec e1", move || {
                    let _ = hung.recv();
                    Ok(())
                });
                let fails = bounded("plan of exec e2", || -> ServiceResult<()> {
                    Err(ServiceError::InvalidArgument("entrypoint: no".into()))
                });
                (hangs, fails)
            })
            .await
            .unwrap()
        });
        let _ = release.send(());
        let err = bounded_plans.0.unwrap_err().to_string();
        assert!(err.contains("plan of exec e1: not done after"), "{err}");
        // A plan's own error comes back as it is.
        assert_eq!(bounded_plans.1.unwrap_err().to_string(), "entrypoint: no");
    }
}
