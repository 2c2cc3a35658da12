//! The `[wasm]` table of the runtime options file: wasmtime settings a user may choose per
//! runtime handler (the file) or per container (`io.amphi.wasm.*` annotations).
//!
//! The settings travel from the shim to the container process inside the [`crate::WasmPayload`],
//! so both build their engine from the same values: [`WasmSettings::compile_key`] names the ones
//! that change compiled code (and so the cache entry), the rest only change how the container
//! process runs it.

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Annotation prefix: `io.amphi.wasm.http.access_log=true` sets `[wasm.http] access_log`.
pub const ANNOTATION_PREFIX: &str = "io.amphi.wasm.";

/// The wasm proposals a user may switch, one table: each line is a field of [`Proposals`] (its
/// key in `[wasm.proposals]`) and the `wasmtime::Config` setter it drives, so a proposal is
/// added in one place.
macro_rules! proposals {
    ($($field:ident => $setter:ident,)*) => {
        /// Wasm proposals, each `None` = wasmtime 48's default (all of these are on by default).
        #[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(deny_unknown_fields, default)]
        pub struct Proposals {
            $(pub $field: Option<bool>,)*
        }

        impl Proposals {
            /// Sets on `c` each proposal that was chosen; the others keep wasmtime's default.
            pub(crate) fn apply(&self, c: &mut wasmtime::Config) {
                $(if let Some(on) = self.$field {
                    c.$setter(on);
                })*
            }
        }
    };
}

proposals! {
    gc => wasm_gc,
    exceptions => wasm_exceptions,
    threads => wasm_threads,
    simd => wasm_simd,
    relaxed_simd => wasm_relaxed_simd,
    tail_call => wasm_tail_call,
    multi_memory => wasm_multi_memory,
    memory64 => wasm_memory64,
    function_references => wasm_function_references,
}

/// `memory_keep_resident` where PAGEMAP_SCAN is there: more than the few pages a small guest
/// dirties per request, less than a large one's heap.
pub const DEFAULT_KEEP_RESIDENT: u64 = 2 << 20;
/// `table_keep_resident` where PAGEMAP_SCAN is there.
pub const DEFAULT_TABLE_KEEP_RESIDENT: u64 = 64 << 10;

/// Sizes of the pooling allocator that serves HTTP proxies (one instance per request).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Pooling {
    /// Largest linear memory one instance may have, bytes (also capped by the container's
    /// memory limit).
    pub max_memory_bytes: u64,
    /// Most elements of one table.
    pub table_elements: u32,
    /// Core instances, memories and tables one component instance may hold.
    pub max_core_instances_per_component: u32,
    pub max_memories_per_component: u32,
    pub max_tables_per_component: u32,
    /// Linear memory kept mapped between two instances of a slot (the pages the last instance
    /// dirtied are restored in place rather than dropped and faulted in again), bytes. Unset:
    /// [`DEFAULT_KEEP_RESIDENT`] where the kernel has PAGEMAP_SCAN (only dirtied pages are
    /// restored), else 0 (the kept prefix would be memset whole for every request).
    pub memory_keep_resident: Option<u64>,
    /// The same for each table, bytes (same default rule, [`DEFAULT_TABLE_KEEP_RESIDENT`]).
    pub table_keep_resident: Option<u64>,
}

impl Default for Pooling {
    fn default() -> Self {
        Pooling {
            max_memory_bytes: 4 << 30,
            table_elements: 20_000,
            max_core_instances_per_component: 16,
            max_memories_per_component: 4,
            max_tables_per_component: 16,
            memory_keep_resident: None,
            table_keep_resident: None,
        }
    }
}

/// What a `wasi:http/incoming-handler` server does per request.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Http {
    /// Requests served at once (= instances in the pool); more wait for a free one.
    pub max_instances: u32,
    /// Largest request body, bytes: a larger one answers 413.
    pub max_body_bytes: u64,
    /// Guest run time of one request, milliseconds: past it the request answers 503 (or its
    /// response stream is cut). 0 = no limit.
    pub request_timeout_ms: u64,
    /// One line per request (method, path, status, duration) on the container's stdout.
    pub access_log: bool,
    /// Server threads; 0 = the CPUs the container may use (its CPU quota and cpuset).
    pub workers: u32,
    /// Requests one instance serves, one after another, before a fresh one replaces it. 1 (the
    /// default) = a fresh instance per request, so nothing of one request's guest state (its
    /// globals, its heap) reaches the next. More saves the instantiation and the slot reset per
    /// request, for guests that keep no per-request state in globals.
    pub instance_reuse: u32,
}

impl Default for Http {
    fn default() -> Self {
        Http {
            max_instances: 1000,
            max_body_bytes: 128 << 20,
            request_timeout_ms: 60_000,
            access_log: false,
            workers: 0,
            instance_reuse: 1,
        }
    }
}

/// Everything in the `[wasm]` table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WasmSettings {
    #[serde(default)]
    pub proposals: Proposals,
    /// Fuel per run (a command) or per request (HTTP): the guest traps when it is used up.
    /// `None` = unmetered (no fuel instrumentation in the compiled code).
    pub fuel: Option<u64>,
    /// Wall-clock limit of a command's whole run, milliseconds (epoch interruption): the guest
    /// traps past it. `None` = no limit. HTTP requests use `http.request_timeout_ms`.
    pub time_limit_ms: Option<u64>,
    #[serde(default)]
    pub pooling: Pooling,
    #[serde(default)]
    pub http: Http,
}

/// The settings that change the compiled artifact; part of the cache key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CompileKey {
    pub proposals: Proposals,
    pub fuel: bool,
}

#[derive(Deserialize)]
struct File {
    #[serde(default)]
    wasm: Option<toml::Value>,
}

impl WasmSettings {
    /// The `[wasm]` table of the options file (other tables belong to others), overridden by
    /// the `io.amphi.wasm.*` annotations. Unknown keys and wrong types are errors.
    pub fn from_options<'a>(
        toml_text: Option<&str>,
        annotations: impl IntoIterator<Item = (&'a String, &'a String)>,
    ) -> Result<WasmSettings> {
        let bad = |m: String| Error::Settings(m);
        let mut table = match toml_text {
            Some(t) => toml::from_str::<File>(t)
                .map_err(|e| bad(format!("runtime options: {e}")))?
                .wasm
                .unwrap_or_else(|| toml::Value::Table(Default::default())),
            None => toml::Value::Table(Default::default()),
        };
        if !table.is_table() {
            return Err(bad("runtime options: `wasm` must be a table".into()));
        }
        let mut anns: Vec<(&String, &String)> = annotations
            .into_iter()
            .filter(|(k, _)| k.starts_with(ANNOTATION_PREFIX))
            .collect();
        anns.sort();
        for (k, v) in anns {
            let path = &k[ANNOTATION_PREFIX.len()..];
            set_path(&mut table, path, parse_scalar(v))
                .map_err(|m| bad(format!("annotation {k}: {m}")))?;
        }
        let s: WasmSettings = table
            .try_into()
            .map_err(|e| bad(format!("[wasm] settings: {e}")))?;
        s.validate()?;
        Ok(s)
    }

    fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(Error::Settings(m.to_string()));
        if self.http.max_instances == 0 {
            return bad("[wasm.http] max_instances must be at least 1");
        }
        if self.http.max_instances > 100_000 {
            return bad("[wasm.http] max_instances is at most 100000");
        }
        if self.pooling.max_memory_bytes < 64 << 10 || self.pooling.max_memory_bytes > 4 << 30 {
            return bad("[wasm.pooling] max_memory_bytes must be between 64 KiB and 4 GiB");
        }
        if self.http.workers > 256 {
            return bad("[wasm.http] workers is at most 256");
        }
        if self.http.instance_reuse == 0 {
            return bad(
                "[wasm.http] instance_reuse must be at least 1 (1 = a fresh instance per request)",
            );
        }
        if self.fuel == Some(0) {
            return bad("fuel = 0 would trap at once; leave it out for unmetered");
        }
        Ok(())
    }

    pub fn compile_key(&self) -> CompileKey {
        CompileKey {
            proposals: self.proposals.clone(),
            fuel: self.fuel.is_some(),
        }
    }
}

/// An annotation value as TOML would read it (`true`, `42`), else as a string.
fn parse_scalar(v: &str) -> toml::Value {
    if let Ok(b) = v.parse::<bool>() {
        return toml::Value::Boolean(b);
    }
    if let Ok(n) = v.parse::<i64>() {
        return toml::Value::Integer(n);
    }
    toml::Value::String(v.to_string())
}

/// An annotation that names no setting.
#[derive(Debug, thiserror::Error)]
enum BadName {
    #[error("bad setting name {0:?}")]
    Name(String),
    #[error("{0} is not a table")]
    NotATable(String),
}

fn set_path(
    root: &mut toml::Value,
    path: &str,
    value: toml::Value,
) -> std::result::Result<(), BadName> {
    let parts: Vec<&str> = path.split('.').collect();
    if parts.iter().any(|p| p.is_empty()) || parts.len() > 3 {
        return Err(BadName::Name(path.to_string()));
    }
    let mut cur = root;
    for (i, p) in parts.iter().enumerate() {
        let table = cur
            .as_table_mut()
            .ok_or_else(|| BadName::NotATable(parts[..i].join(".")))?;
        if i + 1 == parts.len() {
            table.insert(p.to_string(), value);
            return Ok(());
        }
        cur = table
            .entry(p.to_string())
            .or_insert_with(|| toml::Value::Table(Default::default()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str, anns: &[(&str, &str)]) -> Result<WasmSettings> {
        let a: Vec<(String, String)> = anns
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        WasmSettings::from_options(Some(text), a.iter().map(|(k, v)| (k, v)))
    }

    #[test]
    fn defaults_without_a_wasm_table() {
        let s = parse("[network]\nmode = \"none\"\n", &[]).unwrap();
        assert_eq!(s, WasmSettings::default());
        assert_eq!(s.http.max_instances, 1000);
    }

    #[test]
    fn file_and_annotations() {
        let s = parse(
            "[wasm]\nfuel = 1000000\n[wasm.proposals]\ngc = false\n[wasm.http]\nmax_body_bytes = 10\n",
            &[
                ("io.amphi.wasm.http.access_log", "true"),
                ("io.amphi.wasm.http.max_body_bytes", "20"),
                ("io.amphi.network.mode", "bridge"),
            ],
        )
        .unwrap();
        assert_eq!(s.fuel, Some(1_000_000));
        assert_eq!(s.proposals.gc, Some(false));
        assert!(s.http.access_log);
        assert_eq!(s.http.max_body_bytes, 20);
    }

    #[test]
    fn unknown_and_wrong_settings_are_errors() {
        for (text, anns, needle) in [
            ("[wasm]\nturbo = true\n", vec![], "turbo"),
            ("[wasm.proposals]\nsimd = 3\n", vec![], "simd"),
            ("", vec![("io.amphi.wasm.http.nope", "1")], "nope"),
            (
                "",
                vec![("io.amphi.wasm.http.max_instances", "0")],
                "max_instances",
            ),
            (
                "",
                vec![("io.amphi.wasm.http.instance_reuse", "0")],
                "instance_reuse",
            ),
            ("", vec![("io.amphi.wasm.a..b", "0")], "a..b"),
            ("[wasm]\nfuel = 0\n", vec![], "fuel"),
        ] {
            let e = parse(text, &anns).unwrap_err().to_string();
            assert!(e.contains(needle), "{text} {anns:?}: {e}");
        }
    }

    #[test]
    fn compile_key_ignores_runtime_only_settings() {
        let a = parse("[wasm.http]\naccess_log = true\n", &[]).unwrap();
        let b = WasmSettings::default();
        assert_eq!(a.compile_key(), b.compile_key());
        let c = parse("[wasm.proposals]\nsimd = false\n", &[]).unwrap();
        assert_ne!(c.compile_key(), b.compile_key());
    }
}
