//! The one place where the wasmtime `Config` is made. The shim (compiling) and the
//! container process (loading) build it from the same [`WasmSettings`], or artifacts won't load.
//!
//! Two engines come out of one set of settings: the compiling/command engine (instances
//! allocated on demand: one run, no pool to keep) and the serving engine of an HTTP proxy,
//! which adds the pooling allocator (see DESIGN.md "wasi:http: where a request's time went").
//! The allocation strategy does not change compiled code, so both load the same artifact.

use wasmtime::{Config, Engine, InstanceAllocationStrategy, OptLevel, PoolingAllocationConfig};

use crate::settings::{WasmSettings, DEFAULT_KEEP_RESIDENT, DEFAULT_TABLE_KEEP_RESIDENT};
use crate::{Error, Result};

/// The engine configuration for compiling and running with default settings.
pub fn engine_config() -> Config {
    config_for(&WasmSettings::default()).expect("default wasm settings are valid")
}

/// The engine configuration for compiling and running commands with `settings`.
pub fn config_for(settings: &WasmSettings) -> Result<Config> {
    let mut c = Config::new();
    c.cranelift_opt_level(OptLevel::Speed);
    // SIGTERM/SIGINT and time limits interrupt the guest through the epoch.
    c.epoch_interruption(true);
    c.wasm_component_model(true);
    c.consume_fuel(settings.fuel.is_some());
    // Neither WASI p2 nor wasi:http p2 uses the component-model-async machinery; with it on,
    // every store sets up its concurrent state and every host call goes through its task
    // bookkeeping (measured: DESIGN.md "wasi:http: where a request's time went").
    c.concurrency_support(false);
    settings.proposals.apply(&mut c);
    // `memory.grow` beyond the StoreLimits returns -1 to the guest instead of trapping.
    Ok(c)
}

/// The serving configuration of an HTTP proxy: [`config_for`] plus a pooling allocator with one
/// slot per concurrent request. Slots are reused: a new instance maps the module's
/// copy-on-write memory image into a warm slot instead of mmap/munmap-ing 4 GiB reservations,
/// fiber stacks and tables for every request.
pub fn serving_config(settings: &WasmSettings) -> Result<Config> {
    let mut c = config_for(settings)?;
    let n = settings.http.max_instances;
    let p = &settings.pooling;
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(n)
        .total_core_instances(n.saturating_mul(p.max_core_instances_per_component))
        .max_core_instances_per_component(p.max_core_instances_per_component)
        .total_memories(n.saturating_mul(p.max_memories_per_component))
        .max_memories_per_component(p.max_memories_per_component)
        .max_memories_per_module(p.max_memories_per_component)
        .total_tables(n.saturating_mul(p.max_tables_per_component))
        .max_tables_per_component(p.max_tables_per_component)
        .max_tables_per_module(p.max_tables_per_component)
        .total_stacks(n)
        .total_gc_heaps(n)
        .table_elements(p.table_elements as usize)
        .max_memory_size(usize::try_from(p.max_memory_bytes).unwrap_or(usize::MAX))
        .linear_memory_keep_resident(keep(p.memory_keep_resident, DEFAULT_KEEP_RESIDENT))
        .table_keep_resident(keep(p.table_keep_resident, DEFAULT_TABLE_KEEP_RESIDENT))
        // With PAGEMAP_SCAN (Linux 6.7+) a slot's reset finds the pages the last instance
        // dirtied and restores only those, in place: no madvise, and the next instance does
        // not fault them in again. Without it, the keep-resident prefix is memset.
        .pagemap_scan(wasmtime::Enabled::Auto)
        // Requests' instances are alike: reuse the warmest slot.
        .max_unused_warm_slots(n.min(64));
    c.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Ok(c)
}

/// A keep-resident size: the setting, else `default` where the kernel has PAGEMAP_SCAN (a
/// slot's reset touches only the pages the last instance dirtied) and 0 where it has not (the
/// whole kept prefix would be memset for every request; dropping and re-faulting is cheaper).
fn keep(setting: Option<u64>, default: u64) -> usize {
    let bytes = setting.unwrap_or(if has_pagemap_scan() { default } else { 0 });
    usize::try_from(bytes).unwrap_or(usize::MAX)
}

/// PAGEMAP_SCAN came with Linux 6.7.
fn has_pagemap_scan() -> bool {
    // SAFETY: uname fills the struct it is given; release is NUL-terminated.
    let release = unsafe {
        let mut u: libc::utsname = std::mem::zeroed();
        if libc::uname(&mut u) != 0 {
            return false;
        }
        std::ffi::CStr::from_ptr(u.release.as_ptr())
            .to_string_lossy()
            .into_owned()
    };
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts
        .next()
        .and_then(|p| p.parse::<u32>().ok())
        .unwrap_or(0);
    let minor = parts
        .next()
        .and_then(|p| p.parse::<u32>().ok())
        .unwrap_or(0);
    (major, minor) >= (6, 7)
}

fn build(config: &Config) -> Result<Engine> {
    Engine::new(config).map_err(|e| Error::Engine(crate::chain(&e)))
}

/// A new engine with [`engine_config`].
pub fn new_engine() -> Result<Engine> {
    build(&engine_config())
}

/// The compiling/command engine for `settings`; an unsupported combination is an error that
/// names it.
pub fn engine_for(settings: &WasmSettings) -> Result<Engine> {
    build(&config_for(settings)?).map_err(|e| match e {
        Error::Engine(m) => Error::Settings(format!("[wasm] settings: {m}")),
        e => e,
    })
}

/// The serving engine of an HTTP proxy for `settings`.
pub fn serving_engine(settings: &WasmSettings) -> Result<Engine> {
    build(&serving_config(settings)?).map_err(|e| match e {
        Error::Engine(m) => Error::Settings(format!("[wasm.pooling] settings: {m}")),
        e => e,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serving_and_compiling_engines_share_artifacts() {
        let s = WasmSettings::default();
        let compile = engine_for(&s).unwrap();
        let serve = serving_engine(&s).unwrap();
        let bytes = compile
            .precompile_component(b"(component)")
            .expect("compiles");
        // SAFETY: just produced by a compatible engine.
        unsafe { wasmtime::component::Component::deserialize(&serve, &bytes) }
            .expect("the pooling engine loads what the compiling engine made");
    }

    #[test]
    fn proposals_change_the_compatibility_hash() {
        use std::hash::{DefaultHasher, Hash, Hasher};
        let h = |s: &WasmSettings| {
            let mut d = DefaultHasher::new();
            engine_for(s)
                .unwrap()
                .precompile_compatibility_hash()
                .hash(&mut d);
            d.finish()
        };
        let base = WasmSettings::default();
        let mut no_simd = base.clone();
        no_simd.proposals.simd = Some(false);
        no_simd.proposals.relaxed_simd = Some(false);
        let mut fuel = base.clone();
        fuel.fuel = Some(1000);
        assert_ne!(h(&base), h(&no_simd));
        assert_ne!(h(&base), h(&fuel));
        let mut log = base.clone();
        log.http.access_log = true;
        assert_eq!(h(&base), h(&log));
    }
}
