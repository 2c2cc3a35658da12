//! What the shim tells the container process to run.

use serde::{Deserialize, Serialize};

use crate::{Error, Result, WasmSettings};

/// Which kind of wasm program the artifact holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WasmKind {
    /// A core module run with WASI preview1: `_start`, or the payload's `export`.
    CoreModule,
    /// A component exporting `wasi:cli/run`.
    ComponentCommand,
    /// A component exporting `wasi:http/incoming-handler`, served over HTTP/1.1.
    HttpProxy,
}

/// Serializable description of the wasm workload, carried from the shim to the
/// container process next to the artifact fd.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WasmPayload {
    pub kind: WasmKind,
    /// Core modules only: the function to call instead of `_start`.
    pub export: Option<String>,
    /// `sha256:<hex>` of the module bytes, for messages.
    pub digest: String,
    /// Module name for messages (entrypoint path or image reference).
    pub name: String,
    /// The `[wasm]` settings the artifact was compiled with; the container process builds its
    /// engine from them.
    #[serde(default)]
    pub settings: WasmSettings,
}

impl WasmPayload {
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("WasmPayload serializes")
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        serde_json::from_slice(bytes).map_err(|e| Error::Payload(e.to_string()))
    }
}
