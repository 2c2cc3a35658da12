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
//!
//! Who compiles: [`Cache::compile_with`] compiles in the calling process. The shim instead
//! splits a start into [`Cache::lookup`] (a hit is ready at once), [`compile_entry`] in a
//! short-lived helper process placed in the container's cgroup (so the compile's memory is the
//! pod's, not the host's), and [`Cache::finish`], which verifies and opens what it wrote.

mod artifact;
mod dir;

use std::collections::HashMap;
use std::fs::File;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
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

/// A module to compile: its bytes (binary module, component, or `.wat` text), its name (for
/// messages: the entrypoint path) and, for a core module, the export to call instead of
/// `_start` (`path#export`).
#[derive(Debug, Clone, Copy)]
pub struct Module<'a> {
    pub name: &'a str,
    pub bytes: &'a [u8],
    pub export: Option<&'a str>,
}

impl<'a> Module<'a> {
    /// A module that starts at `_start` (or is a component).
    pub fn new(name: &'a str, bytes: &'a [u8]) -> Module<'a> {
        Module {
            name,
            bytes,
            export: None,
        }
    }
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
        let engine = compiling_engine(&WasmSettings::default())?;
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
        let engine = compiling_engine(settings)?;
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

    /// Compiles `module` with the default settings. Classifies a component (command or HTTP
    /// proxy); imports and the entry point are checked where the program is linked, once,
    /// when the container loads it ([`crate::load`]).
    pub fn compile(&self, module: Module) -> Result<Compiled> {
        self.compile_with(&WasmSettings::default(), module)
    }

    /// [`Cache::compile`] with the `[wasm]` settings of the container: those that change
    /// compiled code select the engine (and so the entry); all of them travel in the payload.
    /// Compiles in this process; the shim compiles in a helper instead ([`Cache::lookup`],
    /// [`compile_entry`], [`Cache::finish`]).
    pub fn compile_with(&self, settings: &WasmSettings, module: Module) -> Result<Compiled> {
        let job = match self.lookup(settings, module)? {
            Lookup::Hit(c) => return Ok(c),
            Lookup::Miss(job) => job,
        };
        let (engine, _) = self.engine_for(settings)?;
        let kind = compile_and_write(&self.dir, &engine, &job, module.bytes)?;
        let entry = self
            .dir
            .open_entry(&job.entry)?
            .ok_or_else(|| gone(&self.dir, &job))?;
        // Our own bytes, just written: no need to hash them again.
        self.remember(version_of(&entry), kind);
        self.dir
            .evict(ANY_FORMAT_SUFFIX, &job.entry, self.max_bytes);
        Ok(self.compiled(&job, entry.file, kind, false))
    }

    /// Looks `module` up: the trusted entry when the cache has one, else the [`CompileJob`]
    /// that makes it. Checks what can be checked without compiling (the format, an `#export`
    /// on a component).
    pub fn lookup(&self, settings: &WasmSettings, module: Module) -> Result<Lookup> {
        let (_, engine_hash) = self.engine_for(settings)?;
        let job = CompileJob::new(settings, module, &engine_hash)?;
        if let Some((file, kind)) = self.hit(&job.entry, job.is_component) {
            self.dir.touch(&job.entry);
            return Ok(Lookup::Hit(self.compiled(&job, file, kind, true)));
        }
        Ok(Lookup::Miss(job))
    }

    /// The entry `job` made, written by another process ([`compile_entry`]): opened and
    /// verified like a hit (its digest is checked), then the cache is trimmed to its bound.
    pub fn finish(&self, job: &CompileJob) -> Result<Compiled> {
        let (file, kind) = self
            .hit(&job.entry, job.is_component)
            .ok_or_else(|| gone(&self.dir, job))?;
        self.dir
            .evict(ANY_FORMAT_SUFFIX, &job.entry, self.max_bytes);
        Ok(self.compiled(job, file, kind, false))
    }

    fn compiled(&self, job: &CompileJob, file: File, kind: WasmKind, cache_hit: bool) -> Compiled {
        Compiled {
            artifact: self.dir.path().join(&job.entry),
            file,
            payload: WasmPayload {
                kind,
                export: job.export.clone(),
                digest: job.digest.clone(),
                name: job.name.clone(),
                settings: job.settings.clone(),
            },
            cache_hit,
        }
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
                Err(why) => return discard(why.to_string()),
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

/// A module looked up in the cache ([`Cache::lookup`]).
#[derive(Debug)]
pub enum Lookup {
    /// The cache has a trusted entry for it.
    Hit(Compiled),
    /// It must be compiled into the entry the job names.
    Miss(CompileJob),
}

/// What a cache miss must compile, and the entry it becomes. Serializable: the shim hands it
/// to a short-lived compile helper, which checks it against the module bytes and its own
/// engine before compiling ([`compile_entry`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompileJob {
    /// The module's name, for messages.
    pub name: String,
    /// Core modules only: the export to call instead of `_start`.
    pub export: Option<String>,
    /// The `[wasm]` settings: those that change compiled code select the engine.
    pub settings: WasmSettings,
    /// `sha256:<hex>` of the module bytes.
    pub digest: String,
    /// The entry's file name, `<sha256>-<engine hash>.v2.cwasm`.
    pub entry: String,
    pub is_component: bool,
}

impl CompileJob {
    fn new(settings: &WasmSettings, module: Module, engine_hash: &str) -> Result<CompileJob> {
        let Module {
            name,
            bytes,
            export,
        } = module;
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
        let entry = format!(
            "{}-{engine_hash}{FORMAT_SUFFIX}",
            &digest["sha256:".len()..]
        );
        Ok(CompileJob {
            name: name.to_string(),
            export: export.map(str::to_string),
            settings: settings.clone(),
            digest,
            entry,
            is_component,
        })
    }
}

/// The error for an entry that should be there and is not.
fn gone(dir: &CacheDir, job: &CompileJob) -> Error {
    Error::Cache {
        path: dir.path().join(&job.entry),
        op: "open the entry just written",
        source: std::io::ErrorKind::NotFound.into(),
    }
}

/// The compiling engine for `settings`, as a cache builds it ([`Cache::engine_for`]).
fn compiling_engine(settings: &WasmSettings) -> Result<Engine> {
    if settings.compile_key() == WasmSettings::default().compile_key() {
        crate::new_engine()
    } else {
        crate::engine_for(settings)
    }
}

/// Compiles `bytes` as `job` says and writes the entry into the cache directory `dir`
/// (0600, atomically, with its digest trailer): the work of a compile helper, which runs in
/// the container's cgroup so that the compile's memory is the pod's. The job must be what
/// this process would make of the bytes with its own engine (same digest, same entry name):
/// otherwise the entry would not be the one the caller opens.
pub fn compile_entry(dir: &Path, job: &CompileJob, bytes: &[u8]) -> Result<WasmKind> {
    let engine = compiling_engine(&job.settings)?;
    let module = Module {
        name: &job.name,
        bytes,
        export: job.export.as_deref(),
    };
    let ours = CompileJob::new(&job.settings, module, &engine_hash(&engine))?;
    if ours != *job {
        return Err(Error::Engine(format!(
            "compiling {}: this process makes entry {} of these bytes, not {} (a different engine or module?)",
            job.name, ours.entry, job.entry
        )));
    }
    let dir = CacheDir::open_for_writing(dir)?;
    compile_and_write(&dir, &engine, job, bytes)
}

/// Compiles and classifies the module, and writes its entry.
fn compile_and_write(
    dir: &CacheDir,
    engine: &Engine,
    job: &CompileJob,
    bytes: &[u8],
) -> Result<WasmKind> {
    let name = job.name.as_str();
    let artifact = if job.is_component {
        engine.precompile_component(bytes)
    } else {
        engine.precompile_module(bytes)
    }
    .map_err(|e| Error::InvalidModule {
        module: name.to_string(),
        reason: crate::chain(&e),
    })?;
    let kind = if job.is_component {
        // SAFETY: the bytes were produced by `precompile_component` of this engine just now.
        let c =
            unsafe { Component::deserialize(engine, &artifact) }.map_err(|e| Error::Artifact {
                module: name.to_string(),
                reason: crate::chain(&e),
            })?;
        component_kind(engine, name, &c)?
    } else {
        WasmKind::CoreModule
    };
    dir.write(
        &job.entry,
        &[&artifact, &artifact::trailer(&artifact, kind)],
    )?;
    Ok(kind)
}
