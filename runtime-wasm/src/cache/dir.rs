//! The cache directory: private to its owner, worked on through file descriptors only.
//!
//! * The directory is created 0700 (an existing one is narrowed to 0700), opened with
//!   `O_NOFOLLOW`, and must belong to the user the shim runs as (root): nobody else can plant
//!   or read an entry.
//! * Entries are written 0600 to a temp file and renamed into place, all relative to the
//!   directory's fd, so a path swapped after the check can redirect nothing.
//! * Entries are *read* through a detached read-only copy of the directory's mount
//!   ([`crate::mount`]). The file handed to a container is open on that copy, so a reopen of it
//!   through `/proc/<pid>/fd/N` or `/proc/<pid>/map_files/` — even by root with CAP_SYS_PTRACE
//!   and CAP_DAC_OVERRIDE — goes through a read-only mount and fails with EROFS for writing.
//!   The inode is the same one, so every container on the node maps the same page cache.

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::{openat, renameat, OFlag};
use nix::sys::stat::{fchmod, fstat, fstatat, utimensat, FileStat, Mode, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{unlinkat, UnlinkatFlags};

use crate::mount;
use crate::{Error, Result};

const TMP_PREFIX: &str = ".tmp-";
/// Temp files older than this are leftovers of a crashed compile.
const STALE_TMP: Duration = Duration::from_secs(3600);

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

pub(crate) struct CacheDir {
    path: PathBuf,
    /// The directory itself, for writes, renames, unlinks and the LRU clock.
    dir: OwnedFd,
    /// A detached read-only copy of the directory's mount: entries are opened through it.
    /// `None` in a compile helper, which only writes an entry ([`CacheDir::open_for_writing`]).
    sealed: Option<OwnedFd>,
}

fn io(e: Errno) -> std::io::Error {
    std::io::Error::from_raw_os_error(e as i32)
}

/// An entry as found in the directory.
pub(crate) struct Entry {
    pub(crate) file: File,
    pub(crate) stat: FileStat,
}

impl CacheDir {
    /// Opens (creating it) the directory for reading and writing entries.
    pub(crate) fn open(path: &Path) -> Result<CacheDir> {
        let mut dir = Self::open_for_writing(path)?;
        let sealed = mount::clone_mount(dir.dir.as_fd())
            .and_then(|m| {
                mount::set_attrs(
                    m.as_fd(),
                    mount::MOUNT_ATTR_RDONLY | mount::MOUNT_ATTR_NOSUID | mount::MOUNT_ATTR_NODEV,
                )?;
                Ok(m)
            })
            .map_err(|e| Error::Cache {
                path: path.to_path_buf(),
                op: "make the read-only detached mount entries are read through (open_tree + mount_setattr, Linux 5.12+, CAP_SYS_ADMIN)",
                source: e,
            })?;
        dir.sealed = Some(sealed);
        Ok(dir)
    }

    /// Opens (creating it) the directory, checked as [`CacheDir::open`] does, for writing
    /// entries only: a compile helper's, which needs no read-only mount.
    pub(crate) fn open_for_writing(path: &Path) -> Result<CacheDir> {
        let err = |op: &'static str, source: std::io::Error| Error::Cache {
            path: path.to_path_buf(),
            op,
            source,
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| err("create parent directory", e))?;
        }
        match nix::unistd::mkdir(path, Mode::from_bits_truncate(0o700)) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(err("create directory", io(e))),
        }
        let dir = nix::fcntl::open(
            path,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| err("open directory (no symlink)", io(e)))?;
        let st = fstat(&dir).map_err(|e| err("stat directory", io(e)))?;
        let me = nix::unistd::geteuid().as_raw();
        if st.st_uid != me {
            return Err(err(
                "check owner",
                std::io::Error::other(format!(
                    "owned by uid {}, not by the shim's uid {me}: refusing to trust its entries",
                    st.st_uid
                )),
            ));
        }
        if st.st_mode & 0o077 != 0 {
            fchmod(&dir, Mode::from_bits_truncate(0o700))
                .map_err(|e| err("narrow mode to 0700", io(e)))?;
        }
        Ok(CacheDir {
            path: path.to_path_buf(),
            dir,
            sealed: None,
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, name: &str, op: &'static str, source: std::io::Error) -> Error {
        Error::Cache {
            path: self.path.join(name),
            op,
            source,
        }
    }

    /// Opens entry `name` through the read-only mount, without following a link, and checks
    /// that it is a plain file of ours that nobody else may read or write. `Ok(None)`: there
    /// is no such entry. `Err`: there is one, and it is not to be trusted.
    pub(crate) fn open_entry(&self, name: &str) -> Result<Option<Entry>> {
        let Some(sealed) = &self.sealed else {
            return Err(self.err(
                name,
                "open entry",
                std::io::Error::other("opened for writing only (a compile helper)"),
            ));
        };
        let fd = match openat(
            sealed,
            name,
            OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => return Ok(None),
            Err(e) => return Err(self.err(name, "open entry (no symlink)", io(e))),
        };
        let stat = fstat(&fd).map_err(|e| self.err(name, "stat entry", io(e)))?;
        let bad = |why: String| self.err(name, "check entry", std::io::Error::other(why));
        if stat.st_mode & libc::S_IFMT != libc::S_IFREG {
            return Err(bad(format!("not a regular file (mode {:o})", stat.st_mode)));
        }
        let me = nix::unistd::geteuid().as_raw();
        if stat.st_uid != me {
            return Err(bad(format!("owned by uid {}, not {me}", stat.st_uid)));
        }
        if stat.st_mode & 0o077 != 0 || stat.st_nlink != 1 {
            return Err(bad(format!(
                "mode {:o} with {} links (entries are 0600 with one link)",
                stat.st_mode & 0o7777,
                stat.st_nlink
            )));
        }
        Ok(Some(Entry {
            file: File::from(fd),
            stat,
        }))
    }

    /// Writes `parts` as entry `name`: a 0600 temp file renamed into place.
    pub(crate) fn write(&self, name: &str, parts: &[&[u8]]) -> Result<()> {
        let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = format!("{TMP_PREFIX}{name}-{}-{n}", std::process::id());
        let fd = openat(
            &self.dir,
            tmp.as_str(),
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )
        .map_err(|e| self.err(&tmp, "create temp file", io(e)))?;
        let mut f = File::from(fd);
        for p in parts {
            if let Err(e) = f.write_all(p) {
                self.remove(&tmp);
                return Err(self.err(&tmp, "write", e));
            }
        }
        drop(f);
        renameat(&self.dir, tmp.as_str(), &self.dir, name).map_err(|e| {
            self.remove(&tmp);
            self.err(&tmp, "rename into place", io(e))
        })
    }

    /// Unlinks entry `name`, best effort (open fds and maps of it stay valid).
    pub(crate) fn remove(&self, name: &str) -> bool {
        unlinkat(&self.dir, name, UnlinkatFlags::NoRemoveDir).is_ok()
    }

    /// Sets the entry's atime to now: the LRU clock. Its mtime stays what it was written with,
    /// so it keeps naming one version of the content.
    pub(crate) fn touch(&self, name: &str) {
        let _ = utimensat(
            &self.dir,
            name,
            &TimeSpec::UTIME_NOW,
            &TimeSpec::UTIME_OMIT,
            UtimensatFlags::NoFollowSymlink,
        );
    }

    /// Deletes least-recently-used entries (names ending in `suffix`) until their total is
    /// within `max_bytes`; `keep` is never deleted. Also removes stale temp files.
    pub(crate) fn evict(&self, suffix: &str, keep: &str, max_bytes: u64) {
        let Ok(dup) = self.dir.try_clone() else {
            return;
        };
        let Ok(mut listing) = nix::dir::Dir::from_fd(dup) else {
            return;
        };
        let now = TimeSpec::from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default(),
        );
        let mut entries = Vec::new();
        let mut total = 0u64;
        for e in listing.iter().flatten() {
            let name = String::from_utf8_lossy(e.file_name().to_bytes()).into_owned();
            let Ok(st) = fstatat(
                &self.dir,
                name.as_str(),
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            ) else {
                continue;
            };
            if name.as_bytes().starts_with(TMP_PREFIX.as_bytes()) {
                if now.tv_sec() - st.st_mtime > STALE_TMP.as_secs() as i64 {
                    self.remove(&name);
                }
                continue;
            }
            if !name.ends_with(suffix) || st.st_mode & libc::S_IFMT != libc::S_IFREG {
                continue;
            }
            let len = st.st_size as u64;
            total += len;
            entries.push(((st.st_atime, st.st_atime_nsec), len, name));
        }
        if total <= max_bytes {
            return;
        }
        entries.sort();
        for (_, len, name) in entries {
            if total <= max_bytes {
                break;
            }
            if name == keep {
                continue;
            }
            if self.remove(&name) {
                log::info!("wasm cache: evicted {}", self.path.join(&name).display());
                total = total.saturating_sub(len);
            }
        }
    }
}
