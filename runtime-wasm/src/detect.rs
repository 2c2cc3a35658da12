//! Native-or-wasm detection of a container entrypoint, from its first bytes.
//!
//! This module never opens a file: an entrypoint is a tenant's file, and the shim reads it only
//! through `runtime_native::fs::tenant_file` (inside the rootfs, regular files only, bounded reads),
//! then hands the head it read to [`detect_bytes`].

use crate::{Error, Result};

/// What kind of wasm an entrypoint holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WasmFormat {
    /// Binary core module (`\0asm` version 1).
    CoreModule,
    /// Binary component (`\0asm` layer 1, version 0x0d).
    Component,
    /// WebAssembly text (`.wat`), module or component; the compiler tells which.
    Text,
}

/// The result of [`detect`] / [`detect_bytes`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entrypoint {
    /// ELF, `#!` script, or anything that is not wasm: exec it.
    Native,
    /// Run it with wasmtime.
    Wasm(WasmFormat),
}

const MAGIC: &[u8; 4] = b"\0asm";
const MODULE_VERSION: [u8; 4] = [0x01, 0x00, 0x00, 0x00];
const COMPONENT_VERSION: [u8; 4] = [0x0d, 0x00, 0x01, 0x00];

/// Split an OCI entrypoint `path#export` into the path and the export to call.
/// `#` with nothing after it means "no export".
pub fn split_entry(entry: &str) -> (&str, Option<&str>) {
    match entry.rsplit_once('#') {
        Some((path, export)) if !path.is_empty() => (
            path,
            if export.is_empty() {
                None
            } else {
                Some(export)
            },
        ),
        _ => (entry, None),
    }
}

/// Classify the bytes of an entrypoint. `name` is used for error messages and
/// for the `.wat` extension check.
///
/// A file that starts with the wasm magic but whose header is truncated or has an
/// unknown version is an error (it is clearly meant to be wasm, and exec'ing it
/// would only give `ENOEXEC`).
pub fn detect_bytes(name: &str, bytes: &[u8]) -> Result<Entrypoint> {
    if bytes.starts_with(MAGIC) {
        if bytes.len() < 8 {
            return Err(Error::InvalidModule {
                module: name.to_string(),
                reason: format!("truncated wasm header ({} bytes)", bytes.len()),
            });
        }
        let version: [u8; 4] = bytes[4..8].try_into().unwrap();
        return match version {
            MODULE_VERSION => Ok(Entrypoint::Wasm(WasmFormat::CoreModule)),
            COMPONENT_VERSION => Ok(Entrypoint::Wasm(WasmFormat::Component)),
            v => Err(Error::InvalidModule {
                module: name.to_string(),
                reason: format!("unsupported wasm version/layer {v:02x?}"),
            }),
        };
    }
    if looks_like_wat(name, bytes) {
        return Ok(Entrypoint::Wasm(WasmFormat::Text));
    }
    Ok(Entrypoint::Native)
}

fn looks_like_wat(name: &str, bytes: &[u8]) -> bool {
    if bytes.starts_with(b"\x7fELF") || bytes.starts_with(b"#!") {
        return false;
    }
    let text = match std::str::from_utf8(&bytes[..bytes.len().min(64)]) {
        Ok(t) => t,
        // a multi-byte char cut at 64 bytes: check what decoded
        Err(e) => std::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or(""),
    };
    let t = skip_wat_trivia(text);
    let starts_sexpr = t.starts_with("(module") || t.starts_with("(component");
    if name.ends_with(".wat") {
        // an (empty or comment-only) .wat file is still meant as text
        starts_sexpr || t.is_empty() || t.starts_with('(')
    } else {
        starts_sexpr
    }
}

/// Skip whitespace, `;;` line comments and `(; ;)` block comments.
fn skip_wat_trivia(mut t: &str) -> &str {
    loop {
        let before = t.len();
        t = t.trim_start();
        if let Some(rest) = t.strip_prefix(";;") {
            t = rest.split_once('\n').map(|(_, r)| r).unwrap_or("");
        } else if let Some(rest) = t.strip_prefix("(;") {
            t = rest.split_once(";)").map(|(_, r)| r).unwrap_or("");
        }
        if t.len() == before {
            return t;
        }
    }
}

/// For `.wat` text: does it define a component (vs a core module)?
pub(crate) fn wat_is_component(bytes: &[u8]) -> bool {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(4096)]);
    skip_wat_trivia(&text).starts_with("(component")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Binary modules and components by their magic, text by its extension or its first
    /// form; ELF, scripts, garbage and empty files are native.
    #[test]
    fn formats_by_magic_extension_and_content() {
        use Entrypoint::{Native, Wasm};
        use WasmFormat::{Component, CoreModule, Text};
        let cases: [(&str, &[u8], Entrypoint); 9] = [
            ("m", b"\0asm\x01\0\0\0rest", Wasm(CoreModule)),
            ("c", b"\0asm\x0d\0\x01\0rest", Wasm(Component)),
            ("x.wat", b";; hi\n(module)", Wasm(Text)),
            ("app", b"  (; c ;) (component)", Wasm(Text)),
            ("app.txt", b"hello (module)", Native),
            ("a", b"\x7fELF\x02\x01\x01", Native),
            ("a.wat", b"#!/bin/sh\n", Native),
            ("a", b"\x01\x02garbage", Native),
            ("a", b"", Native),
        ];
        for (name, bytes, want) in cases {
            assert_eq!(detect_bytes(name, bytes).unwrap(), want, "{name} {bytes:?}");
        }
    }

    #[test]
    fn truncated_or_unknown_version_is_an_error() {
        let e = detect_bytes("short.wasm", b"\0asm\x01")
            .unwrap_err()
            .to_string();
        assert!(e.contains("short.wasm") && e.contains("truncated"), "{e}");
        let e = detect_bytes("v9.wasm", b"\0asm\x09\0\0\0")
            .unwrap_err()
            .to_string();
        assert!(e.contains("v9.wasm") && e.contains("version"), "{e}");
    }

    #[test]
    fn entry_split() {
        assert_eq!(split_entry("/app.wasm#run"), ("/app.wasm", Some("run")));
        assert_eq!(split_entry("/app.wasm"), ("/app.wasm", None));
        assert_eq!(split_entry("/app.wasm#"), ("/app.wasm", None));
        assert_eq!(split_entry("#x"), ("#x", None));
    }
}
