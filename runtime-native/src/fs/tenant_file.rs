//! The one way the host side (the shim, as host root) opens and reads a file a tenant owns: an
//! entrypoint in a container's rootfs, a module the shim is about to compile.
//!
//! A tenant controls everything about such a file: it may be a symlink out of the rootfs, a
//! FIFO whose open(2) blocks until a writer comes, a device node, a 100 GB sparse file, or a
//! file with a write lease that makes open(2) wait for the lease holder. So:
//! 1. `openat2(root, path, O_PATH, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`: symlinks and `..`
//!    resolve as if the rootfs were `/`, `/proc/<pid>/...`-style magic links are refused, and an
//!    `O_PATH` open never runs a device's or a FIFO's open routine (nothing can block);
//! 2. `fstat` on that fd: only a regular file goes on, and its size is known before one byte is
//!    read;
//! 3. a reopen of *that inode* for reading through `/proc/self/fd/N` (`resolve::reopen`), with
//!    `O_NONBLOCK` (an open that would wait for a lease break fails with EWOULDBLOCK instead),
//!    `O_NOCTTY` and `O_CLOEXEC`;
//! 4. reads bounded by the caller: a head of a few bytes to tell native from wasm, or the whole
//!    file only under a size limit, checked against the fstat size before reading and against
//!    the bytes actually read (the file may grow meanwhile).
//!
//! A native binary is never read whole, so the size limit applies only to [`TenantFile::read_all`].

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

use nix::sys::stat::SFlag;

/// The default cap on a tenant file read whole (a wasm module): 256 MiB.
pub const DEFAULT_MAX_BYTES: u64 = 256 << 20;
/// The default cap on one function body the shim compiles: 1 MiB (compiling one costs about
/// 100 times its size in memory).
pub const DEFAULT_MAX_FUNCTION_BYTES: u64 = 1 << 20;

/// The `[tenant_files]` table of the shim's config file (the runtime options' TOML):
///
/// ```toml
/// [tenant_files]
/// max_bytes = 268435456   # the largest tenant file (a wasm module) the shim reads whole
/// max_function_bytes = 1048576   # the largest function body in a module the shim compiles
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_bytes: u64,
    pub max_function_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: DEFAULT_MAX_BYTES,
            max_function_bytes: DEFAULT_MAX_FUNCTION_BYTES,
        }
    }
}

#[derive(serde::Deserialize)]
struct RawConfig {
    tenant_files: Option<RawLimits>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_bytes: Option<u64>,
    max_function_bytes: Option<u64>,
}

impl Limits {
    /// Parses the `[tenant_files]` table of `text` (other tables are ignored; a file without
    /// it gives the defaults; unknown keys inside it are errors, so a typo is not silent).
    pub fn from_toml(text: &str) -> Result<Limits, LimitsError> {
        let raw: RawConfig = toml::from_str(text).map_err(LimitsError::Toml)?;
        let mut limits = Limits::default();
        let Some(t) = raw.tenant_files else {
            return Ok(limits);
        };
        for (key, value, into) in [
            ("max_bytes", t.max_bytes, &mut limits.max_bytes),
            (
                "max_function_bytes",
                t.max_function_bytes,
                &mut limits.max_function_bytes,
            ),
        ] {
            match value {
                Some(0) => return Err(LimitsError::Zero { key }),
                Some(v) => *into = v,
                None => {}
            }
        }
        Ok(limits)
    }
}

/// A `[tenant_files]` table that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum LimitsError {
    #[error("config: {0}")]
    Toml(#[source] toml::de::Error),
    #[error("config: tenant_files.{key} must be more than 0")]
    Zero { key: &'static str },
}

/// Why a tenant file was not opened or read; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum TenantFileError {
    #[error("open {path} inside {root}: {source}")]
    Open {
        root: String,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is a {kind}, not a regular file: refusing to read it")]
    NotRegular { path: String, kind: &'static str },
    #[error("{path} is {size} bytes, more than the limit of {limit} bytes on what the shim reads of a tenant file")]
    TooLarge { path: String, size: u64, limit: u64 },
    #[error("read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl TenantFileError {
    /// The path does not exist in the root (ENOENT, or a component that is not a directory):
    /// callers fall back to other places to look, or to the native exec path.
    pub fn is_not_found(&self) -> bool {
        matches!(self, TenantFileError::Open { source, .. }
            if matches!(source.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR)))
    }
}

/// A regular file inside a tenant's root, opened for reading (see the module docs).
#[derive(Debug)]
pub struct TenantFile {
    file: File,
    path: String,
    size: u64,
}

/// What a file type (st_mode's type bits) is called, for messages.
fn kind_of(kind: SFlag) -> &'static str {
    match kind {
        SFlag::S_IFDIR => "directory",
        SFlag::S_IFIFO => "FIFO",
        SFlag::S_IFCHR => "character device",
        SFlag::S_IFBLK => "block device",
        SFlag::S_IFSOCK => "socket",
        SFlag::S_IFLNK => "symlink",
        _ => "special file",
    }
}

impl TenantFile {
    /// Opens `path` (absolute or relative; either way relative to the root) inside the
    /// directory `root`.
    pub fn open_in(root: &Path, path: &str) -> Result<TenantFile, TenantFileError> {
        let dir = nix::fcntl::open(
            root,
            nix::fcntl::OFlag::O_PATH
                | nix::fcntl::OFlag::O_DIRECTORY
                | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(|e| TenantFileError::Open {
            root: root.display().to_string(),
            path: path.to_string(),
            source: e.into(),
        })?;
        Self::open(&dir, &root.display().to_string(), path)
    }

    /// Opens `path` inside the directory `root` (an fd; `root_name` is for messages).
    pub fn open(
        root: &impl AsRawFd,
        root_name: &str,
        path: &str,
    ) -> Result<TenantFile, TenantFileError> {
        let open_err = |source| TenantFileError::Open {
            root: root_name.to_string(),
            path: path.to_string(),
            source,
        };
        let resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;
        let opath: OwnedFd =
            crate::resolve::openat2(root, path, libc::O_PATH, resolve).map_err(open_err)?;
        // fstat works on an O_PATH fd and is about the inode the lookup found.
        let st = nix::sys::stat::fstat(&opath).map_err(|e| open_err(e.into()))?;
        let kind = SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits());
        if kind != SFlag::S_IFREG {
            return Err(TenantFileError::NotRegular {
                path: path.to_string(),
                kind: kind_of(kind),
            });
        }
        let flags = libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY;
        let file = crate::resolve::reopen(&opath, flags).map_err(open_err)?;
        Ok(TenantFile {
            file,
            path: path.to_string(),
            size: st.st_size as u64,
        })
    }

    /// The path it was opened by (relative to its root).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Its size when it was opened.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// At most the first `n` bytes (fewer when the file is shorter).
    pub fn read_head(&mut self, n: usize) -> Result<Vec<u8>, TenantFileError> {
        let mut head = Vec::with_capacity(n.min(self.size as usize));
        (&mut self.file)
            .take(n as u64)
            .read_to_end(&mut head)
            .map_err(|source| self.read_err(source))?;
        Ok(head)
    }

    /// The whole file, from the start, refused when it is (or grows to be) over `limit` bytes.
    pub fn read_all(mut self, limit: u64) -> Result<Vec<u8>, TenantFileError> {
        let too_large = |size| TenantFileError::TooLarge {
            path: self.path.clone(),
            size,
            limit,
        };
        if self.size > limit {
            return Err(too_large(self.size));
        }
        let mut file = &self.file;
        std::io::Seek::rewind(&mut file).map_err(|source| self.read_err(source))?;
        // Capacity from the fstat size, which is at most `limit`.
        let mut bytes = Vec::with_capacity(self.size as usize);
        file.take(limit + 1)
            .read_to_end(&mut bytes)
            .map_err(|source| self.read_err(source))?;
        if bytes.len() as u64 > limit {
            // It grew past the limit after the fstat: say how big it is now.
            let now = self.file.metadata().map(|m| m.len()).unwrap_or(limit + 1);
            return Err(too_large(now.max(limit + 1)));
        }
        self.size = bytes.len() as u64;
        Ok(bytes)
    }

    fn read_err(&self, source: std::io::Error) -> TenantFileError {
        TenantFileError::Read {
            path: self.path.clone(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn root_with_module() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("bin")).unwrap();
        std::fs::write(dir.path().join("bin/app.wasm"), b"\0asm\x01\0\0\0body").unwrap();
        dir
    }

    fn open(root: &Path, path: &str) -> Result<TenantFile, TenantFileError> {
        TenantFile::open_in(root, path)
    }

    #[test]
    fn a_regular_file_reads_head_and_whole() {
        let dir = root_with_module();
        let mut f = open(dir.path(), "/bin/app.wasm").unwrap();
        assert_eq!(f.size(), 12);
        assert_eq!(f.read_head(4).unwrap(), b"\0asm");
        // read_all starts over from the beginning.
        assert_eq!(f.read_all(12).unwrap(), b"\0asm\x01\0\0\0body");
        // `..` past the root stays in it.
        let f = open(dir.path(), "../../../bin/app.wasm").unwrap();
        assert_eq!(f.read_all(100).unwrap().len(), 12);
    }

    #[test]
    fn the_reopened_fd_is_nonblocking_and_close_on_exec() {
        let dir = root_with_module();
        let f = open(dir.path(), "bin/app.wasm").unwrap();
        let fl = nix::fcntl::fcntl(&f.file, nix::fcntl::FcntlArg::F_GETFL).unwrap();
        // (O_NOCTTY only acts at open time; F_GETFL does not report it.)
        assert!(fl & libc::O_NONBLOCK != 0, "{fl:o}");
        assert_eq!(fl & libc::O_ACCMODE, libc::O_RDONLY);
        let fd = nix::fcntl::fcntl(&f.file, nix::fcntl::FcntlArg::F_GETFD).unwrap();
        assert!(fd & libc::FD_CLOEXEC != 0);
    }

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let dir = root_with_module();
        let p = dir.path().join("x");
        nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
        // A plain open(O_RDONLY) would wait for a writer forever; this returns at once.
        let e = open(dir.path(), "/x").unwrap_err();
        assert!(
            matches!(e, TenantFileError::NotRegular { kind: "FIFO", .. }),
            "{e}"
        );
        assert!(e.to_string().contains("/x is a FIFO"), "{e}");
    }

    #[test]
    fn a_character_device_is_refused() {
        // /dev/null through a symlink in the root is a path in the root (not found), so use a
        // root that holds a real device: the host's /dev.
        let e = open(Path::new("/dev"), "null").unwrap_err();
        assert!(
            matches!(
                e,
                TenantFileError::NotRegular {
                    kind: "character device",
                    ..
                }
            ),
            "{e}"
        );
        if nix::unistd::geteuid().is_root() {
            // A node the tenant made in its own rootfs (needs CAP_MKNOD).
            let dir = root_with_module();
            let dev = nix::sys::stat::makedev(1, 3);
            nix::sys::stat::mknod(
                &dir.path().join("c"),
                nix::sys::stat::SFlag::S_IFCHR,
                nix::sys::stat::Mode::from_bits_truncate(0o666),
                dev,
            )
            .unwrap();
            let e = open(dir.path(), "/c").unwrap_err();
            assert!(e.to_string().contains("/c is a character device"), "{e}");
        }
    }

    #[test]
    fn a_directory_is_refused() {
        let dir = root_with_module();
        let e = open(dir.path(), "/bin").unwrap_err();
        assert!(e.to_string().contains("/bin is a directory"), "{e}");
    }

    #[test]
    fn a_symlink_out_of_the_root_resolves_inside_it() {
        let host = tempfile::tempdir().unwrap();
        let canary = host.path().join("canary.wasm");
        std::fs::write(&canary, b"\0asm\x01\0\0\0host").unwrap();
        let dir = root_with_module();
        symlink(&canary, dir.path().join("abs")).unwrap();
        let up = format!("../../../../../../..{}", canary.display());
        symlink(&up, dir.path().join("rel")).unwrap();
        for link in ["/abs", "rel"] {
            let e = open(dir.path(), link).unwrap_err();
            assert!(e.is_not_found(), "{link}: {e}");
        }
        // A symlink that stays inside the root is followed.
        symlink("/bin/app.wasm", dir.path().join("inside")).unwrap();
        assert_eq!(open(dir.path(), "/inside").unwrap().size(), 12);
    }

    #[test]
    fn a_magic_link_is_refused() {
        // /proc/self/exe and /proc/self/cwd are magic links: with /proc as the root, a lookup
        // through them is refused (ELOOP), never followed to the file they name.
        for link in ["self/exe", "self/cwd", "self/fd/0", "thread-self/root"] {
            let e = open(Path::new("/proc"), link).unwrap_err();
            let errno = match &e {
                TenantFileError::Open { source, .. } => source.raw_os_error(),
                _ => None,
            };
            assert_eq!(errno, Some(libc::ELOOP), "{link}: {e}");
        }
    }

    #[test]
    fn an_over_size_file_is_refused_before_reading() {
        let dir = root_with_module();
        let big = File::create(dir.path().join("big.wasm")).unwrap();
        // Sparse: 3 GiB that take no disk, and no memory unless someone reads them.
        big.set_len(3 << 30).unwrap();
        let mut f = open(dir.path(), "/big.wasm").unwrap();
        assert_eq!(f.size(), 3 << 30);
        assert_eq!(f.read_head(8).unwrap(), vec![0u8; 8]);
        let e = f.read_all(DEFAULT_MAX_BYTES).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("/big.wasm") && text.contains("3221225472") && text.contains("268435456"),
            "{text}"
        );
        // At the limit exactly is fine; one byte over is not.
        let f = open(dir.path(), "/bin/app.wasm").unwrap();
        assert!(matches!(
            f.read_all(11).unwrap_err(),
            TenantFileError::TooLarge {
                size: 12,
                limit: 11,
                ..
            }
        ));
    }

    #[test]
    fn missing_paths_are_not_found() {
        let dir = root_with_module();
        assert!(open(dir.path(), "/nope").unwrap_err().is_not_found());
        assert!(open(dir.path(), "/bin/app.wasm/x")
            .unwrap_err()
            .is_not_found());
        assert!(!open(dir.path(), "/bin").unwrap_err().is_not_found());
    }

    #[test]
    fn limits_come_from_the_tenant_files_table() {
        assert_eq!(Limits::from_toml("").unwrap(), Limits::default());
        assert_eq!(Limits::default().max_bytes, 256 << 20);
        let l = Limits::from_toml("[network]\nmode = \"none\"\n[tenant_files]\nmax_bytes = 4096\n");
        assert_eq!(l.unwrap().max_bytes, 4096);
        let l = Limits::from_toml("[tenant_files]\nmax_function_bytes = 77\n").unwrap();
        assert_eq!((l.max_bytes, l.max_function_bytes), (256 << 20, 77));
        for bad in [
            "[tenant_files]\nmax_bytes = 0",
            "[tenant_files]\nmax_function_bytes = 0",
            "[tenant_files]\nmax_bytes = -1",
            "[tenant_files]\nmax_byte = 10",
            "[tenant_files]\nmax_bytes = \"1G\"",
            "[tenant_files",
        ] {
            assert!(Limits::from_toml(bad).is_err(), "{bad:?}");
        }
    }
}
