//! The one place where the wasmtime `Config` is made. The shim (compiling) and the
//! container process (loading) must use identical settings, or artifacts won't load.

use wasmtime::{Config, Engine, OptLevel};

use crate::{Error, Result};

/// The engine configuration used for both compiling and running.
pub fn engine_config() -> Config {
    let mut c = Config::new();
    c.cranelift_opt_level(OptLevel::Speed);
    // SIGTERM/SIGINT interrupt the guest by bumping the epoch.
    c.epoch_interruption(true);
    c.wasm_component_model(true);
    // `memory.grow` beyond the StoreLimits returns -1 to the guest instead of trapping.
    c
}

/// A new engine with [`engine_config`].
pub fn new_engine() -> Result<Engine> {
    Engine::new(&engine_config()).map_err(|e| Error::Engine(crate::chain(&e)))
}
