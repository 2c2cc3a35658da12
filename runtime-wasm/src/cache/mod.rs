//! Node-wide on-disk cache of compiled artifacts.
//!
//! Layout: `<dir>/<sha256(module)>-<engine-hash>.v2.cwasm`, each entry wasmtime's artifact
//! followed by a trailer with its sha256 and kind ([`artifact`]). The `.v2` names the entry
//! format: shims of older builds on the same node wrote `<sha256>-<engine>.cwasm` without a
//! trailer into the same default directory, and the two never open each other's entries.
//!
//! Entries are written to a temp file in the same directory and renamed into place, so
//! concurrent compiles of the same module (threads or shims) are safe: the last rename wins,
//! and both files are valid. Readers hold an open fd / mmap, so eviction (unlink) never
//! disturbs a running container. A hit sets the entry's atime, which is the LRU clock.
//!
//! Trust: the directory is root's alone and worked on through fds ([`dir`]); an entry is
//! used only after its digest matched (once per entry version and shim process: a verified
//! `(dev, inode, size, mtime)` is remembered), and is handed to containers opened through a
//! read-only mount, so none of them can change what the others run. A mismatch is logged and
//! the module compiled again.

mod artifact;
mod dir;

use std::collections::HashMap;
use std::fs::File;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::Engine;

use crate::detect::{detect_bytes, wat_is_component, Entrypoint, WasmFormat};
use crate::run::component_kind;
use crate::settings::CompileKey;
use crate::{Error, Result, WasmKind, WasmPayload, WasmSettings};
use dir::{CacheDir, Entry};

pub const DEFAULT_CACHE_DIR: &str = "/var/lib/amphi/wasm-cache";
/// 2 GiB.
pub const DEFAULT_CACHE_MAX_BYTES: u64 = 2 << 30;

/// Ends every entry name of the current format ([`artifact`]).
const FORMAT_SUFFIX: &str = ".v2.cwasm";
/// Ends the entries of every format: all count against the size bound.
const ANY_FORMAT_SUFFIX: &str = ".cwasm";
/// Bound on the remembered verified entries (cleared when full).
const VERIFIED_MAX: usize = 4096;

/// What identifies one version of an entry's content: dev, inode, size, mtime (s, ns).
type EntryVersion = (u64, u64, i64, i64, i64);

/// The compile cache. Cheap to share between threads (`&Cache` is enough).
pub struct Cache {
    dir: CacheDir,
    max_bytes: u64,
    engine: Engine,
    engine_hash: String,
    /// Engines for non-default `[wasm]` settings that change compiled code, by
    /// [`CompileKey`]; their compatibility hash is part of the entry's name, so the same module
    /// compiled with two such settings is two entries.
    others: Mutex<HashMap<CompileKey, (Engine, String)>>,
    /// Entries whose digest matched in this process, with their kind.
    verified: Mutex<HashMap<EntryVersion, WasmKind>>,
}

/// A compiled (or cached) module, ready to hand to a container.
#[derive(Debug)]
pub struct Compiled {
    /// Path of the cache entry (for logs; it may be evicted later, use `file`).
    pub artifact: PathBuf,
    /// The entry opened read-only through the cache's read-only mount: pass this fd to the
    /// container process (no reopen of it can write).
    pub file: File,
    pub payload: WasmPayload,
    /// Whether the artifact came from the cache.
    pub cache_hit: bool,
}

struct Sha256Hasher(Sha256);
impl Hasher for Sha256Hasher {
    fn finish(&self) -> u64 {
        0
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The engine's compatibility hash, as the 16 hex digits in a cache entry's name.
fn engine_hash(engine: &Engine) -> String {
    let mut h = Sha256Hasher(Sha256::new());
    engine.precompile_compatibility_hash().hash(&mut h);
    hex(&h.0.finalize()[..8])
}

/// `sha256:<hex>` of `bytes`.
fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(bytes)))
}

fn version_of(e: &Entry) -> EntryVersion {
    let s = &e.stat;
    (s.st_dev, s.st_ino, s.st_size, s.st_mtime, s.st_mtime_nsec)
}

impl Cache {
    /// Open (creating it if needed) the cache at `dir`, bounded to `max_bytes`. The
    /// directory is made private (0700) and must belong to the caller; opening needs
    /// CAP_SYS_ADMIN for the read-only mount entries are read through.
    pub fn open(dir: impl Into<PathBuf>, max_bytes: u64) -> Result<Cache> {
        let dir = CacheDir::open(&dir.into())?;
        let engine = crate::new_engine()?;
        let engine_hash = engine_hash(&engine);
        Ok(Cache {
            dir,
            max_bytes,
            engine,
            engine_hash,
            others: Mutex::new(HashMap::new()),
            verified: Mutex::new(HashMap::new()),
        })
    }

    /// The compiling engine and its hash for `settings`.
    fn engine_for(&self, settings: &WasmSettings) -> Result<(Engine, String)> {
        let key = settings.compile_key();
        if key == WasmSettings::default().compile_key() {
            return Ok((self.engine.clone(), self.engine_hash.clone()));
        }
        let mut others = self.others.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = others.get(&key) {
            return Ok(e.clone());
        }
        let engine = crate::engine_for(settings)?;
        let hash = engine_hash(&engine);
        others.insert(key, (engine.clone(), hash.clone()));
        Ok((engine, hash))
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Compile `bytes` (binary module, component, or `.wat` text) named `name` (for
    /// messages), with an optional core-module `export` to call instead of `_start`.
    /// Classifies a component (command or HTTP proxy); imports and the entry point are
    /// checked where the program is linked, once, when the container loads it ([`crate::load`]).
    pub fn compile(&self, name: &str, bytes: &[u8], export: Option<&str>) -> Result<Compiled> {
        self.compile_with(&WasmSettings::default(), name, bytes, export)
    }

    /// [`Cache::compile`] with the `[wasm]` settings of the container: those that change
    /// compiled code select the engine (and so the entry); all of them travel in the payload.
    pub fn compile_with(
        &self,
        settings: &WasmSettings,
        name: &str,
        bytes: &[u8],
        export: Option<&str>,
    ) -> Result<Compiled> {
        let (engine, engine_hash) = self.engine_for(settings)?;
        let format =
            match detect_bytes(name, bytes)? {
                Entrypoint::Wasm(f) => f,
                Entrypoint::Native => return Err(Error::InvalidModule {
                    module: name.to_string(),
                    reason:
                        "not a WebAssembly module or component (no \\0asm header, not .wat text)"
                            .into(),
                }),
            };
        let is_component = match format {
            WasmFormat::CoreModule => false,
            WasmFormat::Component => true,
            WasmFormat::Text => wat_is_component(bytes),
        };
        if is_component && export.is_some() {
            return Err(Error::InvalidModule {
                module: name.to_string(),
                reason: "`#export` entry points select core module exports; this is a component"
                    .into(),
            });
        }
        let digest = digest(bytes);
        let key = format!(
            "{}-{}{FORMAT_SUFFIX}",
            &digest["sha256:".len()..],
            engine_hash
        );
        let payload = |kind| WasmPayload {
            kind,
            export: export.map(str::to_string),
            digest: digest.clone(),
            name: name.to_string(),
            settings: settings.clone(),
        };

        if let Some((file, kind)) = self.hit(&key, is_component) {
            self.dir.touch(&key);
            return Ok(Compiled {
                artifact: self.dir.path().join(&key),
                file,
                payload: payload(kind),
                cache_hit: true,
            });
        }

        // Miss: compile, write atomically, then open it like a hit.
        let artifact = if is_component {
            engine.precompile_component(bytes)
        } else {
            engine.precompile_module(bytes)
        }
        .map_err(|e| Error::InvalidModule {
            module: name.to_string(),
            reason: crate::chain(&e),
        })?;
        let kind = if is_component {
            // SAFETY: the bytes were produced by `precompile_component` of this engine just now.
            let c = unsafe { Component::deserialize(&engine, &artifact) }.map_err(|e| {
                Error::Artifact {
                    module: name.to_string(),
                    reason: crate::chain(&e),
                }
            })?;
            component_kind(&engine, name, &c)?
        } else {
            WasmKind::CoreModule
        };
        self.dir
            .write(&key, &[&artifact, &artifact::trailer(&artifact, kind)])?;
        let entry = self.dir.open_entry(&key)?.ok_or_else(|| Error::Cache {
            path: self.dir.path().join(&key),
            op: "open the entry just written",
            source: std::io::ErrorKind::NotFound.into(),
        })?;
        // Our own bytes, just written: no need to hash them again.
        self.remember(version_of(&entry), kind);
        self.dir.evict(ANY_FORMAT_SUFFIX, &key, self.max_bytes);
        Ok(Compiled {
            artifact: self.dir.path().join(&key),
            file: entry.file,
            payload: payload(kind),
            cache_hit: false,
        })
    }

    /// The entry `key`, when it is there and trusted: opened, owned by us, private, its digest
    /// matching and its kind what the module is. An entry that fails any check is logged and
    /// removed (the caller compiles again).
    fn hit(&self, key: &str, is_component: bool) -> Option<(File, WasmKind)> {
        let discard = |why: String| {
            log::warn!(
                "wasm cache: discarding entry {}: {why}; compiling again",
                self.dir.path().join(key).display()
            );
            self.dir.remove(key);
            None
        };
        let entry = match self.dir.open_entry(key) {
            Ok(Some(e)) => e,
            Ok(None) => return None,
            Err(e) => return discard(e.to_string()),
        };
        let version = version_of(&entry);
        let known = self
            .verified
            .lock()
            .ok()
            .and_then(|m| m.get(&version).copied());
        let kind = match known {
            Some(k) => k,
            None => match artifact::verify(&entry.file, entry.stat.st_size as u64) {
                Ok(k) => {
                    self.remember(version, k);
                    k
                }
                Err(why) => return discard(why),
            },
        };
        if (kind != WasmKind::CoreModule) != is_component {
            return discard(format!("holds a {kind:?}, the module is not one"));
        }
        Some((entry.file, kind))
    }

    fn remember(&self, version: EntryVersion, kind: WasmKind) {
        if let Ok(mut m) = self.verified.lock() {
            if m.len() >= VERIFIED_MAX {
                m.clear();
            }
            m.insert(version, kind);
        }
    }
}
