//! Wiring runtime-wasm into the shim: the node-wide compile cache (used by the service, in the
//! shim process) and the `wasm` workload runner (used in the container process, after the
//! spawner set the container up).

use std::fs::File;
use std::os::fd::FromRawFd;
use std::path::PathBuf;
use std::sync::OnceLock;

use runtime_native::{PreparedWorkload, ProcessContext, RunnerError, SetupFds, WorkloadRunner};
use runtime_wasm::{Cache, DataMount, GuestDir, GuestDirs, Loaded, RunContext, WasmPayload};

/// The `[wasm]` settings of a container: the runtime options' TOML (`ConfigBody`, or the file
/// at `ConfigPath`: the same file as the `[network]` table), overridden by the spec's
/// `io.amphi.wasm.*` annotations. An unknown or unsupported setting is an error naming it.
pub fn settings(
    options: Option<&containerd_shim_protos::protobuf::well_known_types::any::Any>,
    annotations: Option<&std::collections::HashMap<String, String>>,
) -> Result<runtime_wasm::WasmSettings, crate::runtime_options::ConfigError> {
    let text = crate::runtime_options::config_text(options)?.map(|c| c.text);
    let empty = std::collections::HashMap::new();
    runtime_wasm::WasmSettings::from_options(text.as_deref(), annotations.unwrap_or(&empty))
        .map_err(crate::runtime_options::ConfigError::Wasm)
}

/// The name the service puts in `Workload::Custom` and `main` registers.
pub const RUNNER: &str = "wasm";

/// The compile cache, opened on first use so native-only shims never build a wasm engine.
/// `AMPHI_WASM_CACHE_DIR` and `AMPHI_WASM_CACHE_MAX_BYTES` override the defaults.
pub fn cache() -> Result<&'static Cache, runtime_wasm::Error> {
    static CACHE: OnceLock<Cache> = OnceLock::new();
    if let Some(c) = CACHE.get() {
        return Ok(c);
    }
    let dir = std::env::var_os("AMPHI_WASM_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(runtime_wasm::DEFAULT_CACHE_DIR));
    let max = std::env::var("AMPHI_WASM_CACHE_MAX_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(runtime_wasm::DEFAULT_CACHE_MAX_BYTES);
    let cache = Cache::open(dir, max)?;
    Ok(CACHE.get_or_init(|| cache))
}

pub struct WasmRunner;

pub static WASM_RUNNER: WasmRunner = WasmRunner;

struct PreparedWasm(Loaded, Vec<GuestDir>);

impl WorkloadRunner for WasmRunner {
    /// The guest's directories: copies of the container's root and data mounts, taken while
    /// the process can still make them (runtime_wasm::take_guest_dirs).
    fn setup(&self, spec: &oci_spec::runtime::Spec) -> Result<SetupFds, RunnerError> {
        let mounts = spec.mounts().clone().unwrap_or_default();
        let data: Vec<DataMount> = mounts
            .iter()
            .map(|m| DataMount {
                destination: m.destination().to_str().unwrap_or("/"),
                typ: m.typ().as_deref().unwrap_or(""),
                source: m.source().as_ref().and_then(|p| p.to_str()).unwrap_or(""),
                bind: m.typ().as_deref() == Some("bind")
                    || m.options()
                        .iter()
                        .flatten()
                        .any(|o| o == "bind" || o == "rbind"),
            })
            .collect();
        let dirs = runtime_wasm::take_guest_dirs(&data)?;
        Ok(dirs.into_iter().map(|d| (d.guest, d.dir)).collect())
    }

    fn prepare(
        &self,
        ctx: &ProcessContext,
        payload: &[u8],
        setup: SetupFds,
    ) -> Result<Box<dyn PreparedWorkload>, RunnerError> {
        let payload = WasmPayload::from_bytes(payload)?;
        let fd = *ctx
            .extra_fds
            .first()
            .ok_or_else(|| runtime_wasm::Error::Artifact {
                module: payload.name.clone(),
                reason: "no compiled artifact was handed over".into(),
            })?;
        // The host creates errors in the normal course of a guest's I/O (a closed stream at
        // the end of every HTTP body); with RUST_BACKTRACE in the shim's environment each one
        // would capture a stack backtrace (5% of a request's time). A trap's wasm backtrace is
        // wasmtime's own and stays. This process is still single-threaded here.
        std::env::set_var("RUST_LIB_BACKTRACE", "0");
        // SAFETY: the spawner handed this fd to this process for the runner to own.
        let artifact = unsafe { File::from_raw_fd(fd) };
        let mut loaded = runtime_wasm::load(artifact, &payload)?;
        // As the idle shim does: a guest that waits does not keep the binary's text mapped.
        loaded.set_idle_hook(runtime_native::memory::trim_idle);
        let dirs = setup
            .into_iter()
            .map(|(guest, dir)| GuestDir { guest, dir })
            .collect();
        Ok(Box::new(PreparedWasm(loaded, dirs)))
    }
}

impl PreparedWorkload for PreparedWasm {
    fn run(self: Box<Self>, ctx: &ProcessContext) -> i32 {
        // ps/top show the module and its arguments, not the spawner we were cloned from.
        runtime_wasm::set_process_title(&ctx.args);
        let mut run = RunContext::new(ctx.args.clone(), ctx.env.clone());
        run.cwd = if ctx.cwd.is_empty() {
            "/".into()
        } else {
            ctx.cwd.clone()
        };
        run.memory_limit = ctx.memory_limit;
        let PreparedWasm(loaded, dirs) = *self;
        run.dirs = GuestDirs::Copies(dirs);
        loaded.run(run)
    }
}
