//! Node-wide on-disk cache of compiled artifacts.
//!
//! Layout: `<dir>/<sha256(module)>-<engine-hash>.cwasm`. Entries are written to a
//! temp file in the same directory and renamed into place, so concurrent compiles of
//! the same module (threads or shims) are safe: the last rename wins, and both files
//! are valid. Readers hold an open fd / mmap, so eviction (unlink) never disturbs a
//! running container. A hit touches the entry's mtime, which is the LRU clock.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::{Engine, Module};

use crate::detect::{detect_bytes, wat_is_component, Entrypoint, WasmFormat};
use crate::run::{prepare_component, prepare_module};
use crate::settings::CompileKey;
use crate::{Error, Result, WasmKind, WasmPayload, WasmSettings};

pub const DEFAULT_CACHE_DIR: &str = "/var/lib/amphi/wasm-cache";
/// 2 GiB.
pub const DEFAULT_CACHE_MAX_BYTES: u64 = 2 << 30;

const SUFFIX: &str = ".cwasm";
const TMP_PREFIX: &str = ".tmp-";
/// Temp files older than this are leftovers of a crashed compile.
const STALE_TMP: Duration = Duration::from_secs(3600);

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// The compile cache. Cheap to share between threads (`&Cache` is enough).
pub struct Cache {
    dir: PathBuf,
    max_bytes: u64,
    engine: Engine,
    engine_hash: String,
    /// Engines for non-default `[wasm]` settings that change compiled code, by
    /// [`CompileKey`]; their compatibility hash is part of the entry's name, so the same module
    /// compiled with two such settings is two entries.
    others: Mutex<HashMap<CompileKey, (Engine, String)>>,
}

/// A compiled (or cached) module, ready to hand to a container.
#[derive(Debug)]
pub struct Compiled {
    /// Path of the cache entry (for logs; it may be evicted later, use `file`).
    pub artifact: PathBuf,
    /// The artifact opened read-only: pass this fd to the container process.
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

impl Cache {
    /// Open (creating it if needed) the cache at `dir`, bounded to `max_bytes`.
    pub fn open(dir: impl Into<PathBuf>, max_bytes: u64) -> Result<Cache> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(|source| Error::Cache {
            path: dir.clone(),
            op: "create directory",
            source,
        })?;
        let engine = crate::new_engine()?;
        let engine_hash = engine_hash(&engine);
        Ok(Cache {
            dir,
            max_bytes,
            engine,
            engine_hash,
            others: Mutex::new(HashMap::new()),
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
        &self.dir
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Compile `bytes` (binary module, component, or `.wat` text) named `name` (for
    /// messages), with an optional core-module `export` to call instead of `_start`.
    /// Validates the entry point and that every import can be satisfied.
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
        let key = format!("{}-{}{SUFFIX}", &digest["sha256:".len()..], engine_hash);
        let path = self.dir.join(&key);

        // Hit?
        if let Ok(file) = File::open(&path) {
            match self.validate(&engine, name, &path, &file, is_component, export) {
                Ok(Validated::Ok(kind)) => {
                    touch(&path);
                    let mut c = self.compiled(path, file, kind, export, digest, name, true);
                    c.payload.settings = settings.clone();
                    return Ok(c);
                }
                Ok(Validated::Invalid(e)) => return Err(e),
                Err(e) => {
                    log::warn!(
                        "wasm cache: discarding unusable entry {}: {e}",
                        path.display()
                    );
                    let _ = fs::remove_file(&path);
                }
            }
        }

        // Miss: compile, write atomically, then load it back exactly like a hit.
        let artifact = if is_component {
            engine.precompile_component(bytes)
        } else {
            engine.precompile_module(bytes)
        }
        .map_err(|e| Error::InvalidModule {
            module: name.to_string(),
            reason: crate::chain(&e),
        })?;
        self.write_atomic(&key, &path, &artifact)?;
        let file = File::open(&path).map_err(|source| Error::Cache {
            path: path.clone(),
            op: "open",
            source,
        })?;
        let kind = match self.validate(&engine, name, &path, &file, is_component, export)? {
            Validated::Ok(kind) => kind,
            Validated::Invalid(e) => return Err(e),
        };
        self.evict(&path);
        let mut c = self.compiled(path, file, kind, export, digest, name, false);
        c.payload.settings = settings.clone();
        Ok(c)
    }

    #[allow(clippy::too_many_arguments)]
    fn compiled(
        &self,
        artifact: PathBuf,
        file: File,
        kind: WasmKind,
        export: Option<&str>,
        digest: String,
        name: &str,
        cache_hit: bool,
    ) -> Compiled {
        let payload = WasmPayload {
            kind,
            export: export.map(str::to_string),
            digest,
            name: name.to_string(),
            settings: Default::default(),
        };
        Compiled {
            artifact,
            file,
            payload,
            cache_hit,
        }
    }

    /// Outer `Err`: the artifact itself is unusable (corrupt/stale) → recompile.
    /// `Validated::Invalid`: the artifact is fine but the program can't run as asked.
    fn validate(
        &self,
        engine: &Engine,
        name: &str,
        path: &Path,
        file: &File,
        is_component: bool,
        export: Option<&str>,
    ) -> Result<Validated> {
        let artifact_err = |e: wasmtime::Error| Error::Artifact {
            module: name.to_string(),
            reason: format!("{}: {}", path.display(), crate::chain(&e)),
        };
        if is_component {
            // SAFETY: the file is our own cache entry, produced by `precompile_component`
            // with the same engine config; entries are replaced by rename, never modified.
            let c = unsafe { Component::deserialize_file(engine, path) }.map_err(artifact_err)?;
            Ok(match prepare_component(engine, name, &c, None) {
                Ok((kind, _)) => Validated::Ok(kind),
                Err(e) => Validated::Invalid(e),
            })
        } else {
            let f = file.try_clone().map_err(|source| Error::Cache {
                path: path.to_path_buf(),
                op: "dup",
                source,
            })?;
            // SAFETY: as above.
            let m = unsafe { Module::deserialize_open_file(engine, f) }.map_err(artifact_err)?;
            Ok(match prepare_module(engine, name, &m, export) {
                Ok(_) => Validated::Ok(WasmKind::CoreModule),
                Err(e) => Validated::Invalid(e),
            })
        }
    }

    fn write_atomic(&self, key: &str, path: &Path, data: &[u8]) -> Result<()> {
        let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = self
            .dir
            .join(format!("{TMP_PREFIX}{key}-{}-{n}", std::process::id()));
        let cache_err = |op, source| Error::Cache {
            path: tmp.clone(),
            op,
            source,
        };
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| cache_err("create temp file", e))?;
        if let Err(e) = f.write_all(data) {
            let _ = fs::remove_file(&tmp);
            return Err(cache_err("write", e));
        }
        drop(f);
        fs::rename(&tmp, path).map_err(|e| {
            let _ = fs::remove_file(&tmp);
            cache_err("rename into place", e)
        })
    }

    /// Delete least-recently-used entries until the total is within `max_bytes`.
    /// `keep` (the entry just written) is never deleted. Also removes stale temp files.
    fn evict(&self, keep: &Path) {
        let Ok(rd) = fs::read_dir(&self.dir) else {
            return;
        };
        let now = SystemTime::now();
        let mut entries = Vec::new();
        let mut total = 0u64;
        for e in rd.flatten() {
            let name = e.file_name();
            let name = name.as_bytes();
            let Ok(md) = e.metadata() else { continue };
            let mtime = md.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            if name.starts_with(TMP_PREFIX.as_bytes()) {
                if now.duration_since(mtime).unwrap_or_default() > STALE_TMP {
                    let _ = fs::remove_file(e.path());
                }
                continue;
            }
            if !name.ends_with(SUFFIX.as_bytes()) || !md.is_file() {
                continue;
            }
            total += md.len();
            entries.push((mtime, md.len(), e.path()));
        }
        if total <= self.max_bytes {
            return;
        }
        entries.sort_by_key(|(t, _, _)| *t);
        for (_, len, p) in entries {
            if total <= self.max_bytes {
                break;
            }
            if p == keep {
                continue;
            }
            if fs::remove_file(&p).is_ok() {
                log::info!("wasm cache: evicted {}", p.display());
                total = total.saturating_sub(len);
            }
        }
    }
}

enum Validated {
    Ok(WasmKind),
    Invalid(Error),
}

/// Set atime and mtime to now (the LRU clock). Best effort.
fn touch(path: &Path) {
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return;
    };
    // SAFETY: valid C string; NULL times means "now".
    unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), std::ptr::null(), 0) };
}
