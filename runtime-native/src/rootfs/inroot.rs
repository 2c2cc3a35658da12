//! Paths inside a container's rootfs, resolved to file descriptors by the kernel and created
//! one component at a time, so that no symlink swapped in between a check and a use (another
//! container writing a shared volume) can send a mount or a create outside the rootfs (the
//! CVE-2021-30465 class).
//!
//! Every lookup is `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)` from the rootfs fd:
//! symlinks resolve as if the rootfs were `/` (as the container will see them), `..` stops at
//! the root, /proc magic links are refused. What is missing is made with `mkdirat` or
//! `openat(O_CREAT | O_EXCL | O_NOFOLLOW)` in the directory fd found so far and opened through
//! that fd without following links. The caller mounts onto the fd it gets back, never onto a
//! path.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

/// How often a create that lost a race (the entry appeared, or was swapped, in between) is
/// retried before giving up.
const RETRIES: usize = 8;

/// How a new regular file is made in a root: only if nothing is there (never an existing
/// file, never through a link), without blocking (a fifo planted meanwhile), not inherited.
pub(crate) const NEW_FILE: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_CREAT)
    .union(OFlag::O_EXCL)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_NONBLOCK)
    .union(OFlag::O_CLOEXEC);

/// Symlinks followed by hand (dangling ones, which the kernel cannot resolve), as for ELOOP.
const MAX_HOPS: usize = 40;

const IN_ROOT: u64 = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;

/// The rootfs a container's paths resolve in: an `O_PATH` directory fd, and its path as the
/// kernel names it (for [`reopen`]).
pub(crate) struct Root {
    fd: OwnedFd,
    /// Read from procfs on first use (only the steps after a mount need it).
    path: std::sync::OnceLock<PathBuf>,
}

/// What to make when a destination does not exist yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Make {
    /// A directory (mode 0755), with every missing parent.
    Dir,
    /// An empty regular file (mode 0644), with every missing parent.
    File,
}

fn errno(e: Errno) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

/// The components of `p` cleaned lexically (as runc cleans a destination): `.` dropped, `..`
/// pops, the root ignored. Symlinks are left for the kernel to resolve in the root.
pub(crate) fn clean(p: &Path) -> Vec<OsString> {
    let mut out: Vec<OsString> = Vec::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n.to_os_string()),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

fn join(parts: &[OsString]) -> OsString {
    if parts.is_empty() {
        return ".".into();
    }
    let mut s = OsString::new();
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            s.push("/");
        }
        s.push(p);
    }
    s
}

fn openat2(dir: &impl AsRawFd, rel: &OsStr, flags: i32, resolve: u64) -> io::Result<OwnedFd> {
    let rel = rel
        .to_str()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path is not UTF-8"))?;
    crate::resolve::openat2(dir, rel, flags, resolve)
}

impl Root {
    /// Opens the directory `path` (a host path the runtime chose, e.g. the bundle's rootfs
    /// once it is mounted) as the root to resolve in.
    pub(crate) fn open(path: &Path) -> io::Result<Root> {
        let fd = nix::fcntl::open(
            path,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(errno)?;
        Ok(Root {
            fd,
            path: std::sync::OnceLock::new(),
        })
    }

    /// `fd` is the root directory itself.
    pub(crate) fn is_root(&self, fd: &OwnedFd) -> bool {
        crate::fds::same_file(fd, &self.fd)
    }

    /// The root's path as the kernel names it.
    fn path(&self) -> io::Result<&Path> {
        if self.path.get().is_none() {
            let p = kernel_path(&self.fd)?;
            let _ = self.path.set(p);
        }
        Ok(self.path.get().expect("set above"))
    }

    /// Opens `dest` (a path as the container sees it) as `O_PATH`, following symlinks inside
    /// the root. `ENOENT` when it does not exist.
    pub(crate) fn open_path(&self, dest: &Path) -> io::Result<OwnedFd> {
        openat2(&self.fd, &join(&clean(dest)), libc::O_PATH, IN_ROOT)
    }

    /// Opens the directory `dest`, making it and its missing parents (mode `mode`) one
    /// component at a time.
    pub(crate) fn mkdir_all(&self, dest: &Path, mode: u32) -> io::Result<OwnedFd> {
        self.mkdir_parts(&clean(dest), mode)
    }

    fn mkdir_parts(&self, parts: &[OsString], mode: u32) -> io::Result<OwnedFd> {
        let dir_flags = libc::O_PATH | libc::O_DIRECTORY;
        let mut parts = parts.to_vec();
        let mut hops = 0;
        'walk: loop {
            // Usually everything is there already: one lookup.
            match openat2(&self.fd, &join(&parts), dir_flags, IN_ROOT) {
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                r => return r,
            }
            let mut dir = openat2(&self.fd, OsStr::new("."), dir_flags, IN_ROOT)?;
            for i in 0..parts.len() {
                // The prefix is looked up from the root each time: a component swapped for a
                // symlink between two steps still resolves inside the root.
                match openat2(&self.fd, &join(&parts[..=i]), dir_flags, IN_ROOT) {
                    Ok(fd) => {
                        dir = fd;
                        continue;
                    }
                    Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                    Err(e) => return Err(e),
                }
                let name = parts[i].as_os_str();
                match nix::sys::stat::mkdirat(&dir, name, Mode::from_bits_truncate(mode)) {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(e) => return Err(errno(e)),
                }
                // Through the directory just used, never following a link: what is there now
                // must be a directory (ours, or one a racer made: either is inside the root).
                match nix::fcntl::openat(
                    &dir,
                    name,
                    OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    Mode::empty(),
                ) {
                    Ok(fd) => dir = fd,
                    Err(Errno::ENOTDIR) => {
                        // A dangling symlink: follow it inside the root, as runc's SecureJoin
                        // does, and walk the path it leads to.
                        let Some(p) = self.splice_link(&dir, name, &parts[i + 1..])? else {
                            return Err(errno(Errno::ENOTDIR));
                        };
                        hops += 1;
                        if hops > MAX_HOPS {
                            return Err(errno(Errno::ELOOP));
                        }
                        parts = p;
                        continue 'walk;
                    }
                    Err(e) => return Err(errno(e)),
                }
            }
            return Ok(dir);
        }
    }

    /// The path of the directory `dir` inside the root, as the kernel resolved it.
    fn parts_of(&self, dir: &OwnedFd) -> io::Result<Vec<OsString>> {
        let full = kernel_path(dir)?;
        let rel = full.strip_prefix(self.path()?).map_err(|_| {
            io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("{} is outside the rootfs", full.display()),
            )
        })?;
        Ok(clean(rel))
    }

    /// When `name` in `dir` is a symlink: where it leads inside the root, then `rest`.
    fn splice_link(
        &self,
        dir: &OwnedFd,
        name: &OsStr,
        rest: &[OsString],
    ) -> io::Result<Option<Vec<OsString>>> {
        let st = nix::sys::stat::fstatat(dir, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
            .map_err(errno)?;
        if st.st_mode & libc::S_IFMT != libc::S_IFLNK {
            return Ok(None);
        }
        let target = PathBuf::from(nix::fcntl::readlinkat(dir, name).map_err(errno)?);
        let mut p: PathBuf = if target.is_absolute() {
            PathBuf::new()
        } else {
            self.parts_of(dir)?.into_iter().collect()
        };
        p.push(target);
        p.extend(rest);
        Ok(Some(clean(&p)))
    }

    /// Opens `dest` as `O_PATH` (following symlinks inside the root); when it does not exist,
    /// makes it as `make` says, and its missing parents.
    pub(crate) fn open_or_make(&self, dest: &Path, make: Make) -> io::Result<OwnedFd> {
        let mut parts = clean(dest);
        if parts.is_empty() {
            return openat2(&self.fd, OsStr::new("."), libc::O_PATH, IN_ROOT);
        }
        let mut hops = 0;
        for _ in 0..RETRIES + MAX_HOPS {
            match openat2(&self.fd, &join(&parts), libc::O_PATH, IN_ROOT) {
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                r => return r,
            }
            let (name, parents) = parts.split_last().expect("not empty");
            let dir = self.mkdir_parts(parents, 0o755)?;
            let made = match make {
                Make::Dir => {
                    nix::sys::stat::mkdirat(&dir, name.as_os_str(), Mode::from_bits_truncate(0o755))
                }
                Make::File => nix::fcntl::openat(
                    &dir,
                    name.as_os_str(),
                    NEW_FILE,
                    Mode::from_bits_truncate(0o644),
                )
                .map(drop),
            };
            match made {
                // Made: open it again from the root like any existing entry (the loop).
                Ok(()) => {}
                Err(Errno::EEXIST) => {
                    // A dangling symlink: make what it leads to inside the root instead.
                    if let Some(p) = self.splice_link(&dir, name.as_os_str(), &[])? {
                        hops += 1;
                        if hops > MAX_HOPS {
                            return Err(errno(Errno::ELOOP));
                        }
                        parts = p;
                        if parts.is_empty() {
                            return openat2(&self.fd, OsStr::new("."), libc::O_PATH, IN_ROOT);
                        }
                    }
                }
                Err(e) => return Err(errno(e)),
            }
        }
        // Still missing after being made each time: a racer removing it as fast.
        Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "it keeps disappearing while being made",
        ))
    }

    /// Opens the mount just attached on top of `covered` (the fd the mount was made onto):
    /// its path looked up again from the root without following any symlink, and checked to
    /// be the root of a mount other than `covered`'s. For the steps after a mount(2) that act
    /// on the new mount (remount flags, propagation), which `covered` itself would not reach.
    pub(crate) fn reopen(&self, covered: &OwnedFd) -> io::Result<OwnedFd> {
        let full = kernel_path(covered)?;
        let moved = || {
            io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("mount point {} was moved while mounting", full.display()),
            )
        };
        let rel = full.strip_prefix(self.path()?).map_err(|_| moved())?;
        let rel = if rel.as_os_str().is_empty() {
            OsStr::new(".")
        } else {
            rel.as_os_str()
        };
        let fd = openat2(
            &self.fd,
            rel,
            libc::O_PATH,
            IN_ROOT | libc::RESOLVE_NO_SYMLINKS,
        )
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                moved()
            } else {
                e
            }
        })?;
        let (old, new) = (mount_info(covered)?, mount_info(&fd)?);
        if !new.is_mount_root || new.mnt_id == old.mnt_id {
            return Err(moved());
        }
        Ok(fd)
    }
}

/// Where `fd` is, as the kernel names it (readlink of its procfs fd link).
fn kernel_path(fd: &OwnedFd) -> io::Result<PathBuf> {
    Ok(PathBuf::from(nix::fcntl::readlinkat(
        nix::fcntl::AT_FDCWD,
        &crate::procfs::fd_path(fd)?,
    )?))
}

/// The mount an fd is on, and whether it is that mount's root (statx).
pub(crate) struct MountInfo {
    pub mnt_id: u64,
    pub is_mount_root: bool,
}

pub(crate) fn mount_info(fd: &impl AsFd) -> io::Result<MountInfo> {
    // SAFETY: statx fills a struct we own, for an fd that stays open for the call.
    let mut st: libc::statx = unsafe { std::mem::zeroed() };
    let r = unsafe {
        libc::statx(
            fd.as_fd().as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
            libc::STATX_MNT_ID,
            &mut st,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(MountInfo {
        mnt_id: st.stx_mnt_id,
        is_mount_root: st.stx_attributes_mask & libc::STATX_ATTR_MOUNT_ROOT as u64 != 0
            && st.stx_attributes & libc::STATX_ATTR_MOUNT_ROOT as u64 != 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;

    fn root() -> (tempfile::TempDir, Root) {
        let d = tempfile::tempdir().unwrap();
        let r = Root::open(d.path()).unwrap();
        (d, r)
    }

    /// Where an fd is, as the kernel names it.
    fn whereis(fd: &OwnedFd) -> PathBuf {
        fs::read_link(crate::procfs::fd_path(fd).unwrap()).unwrap()
    }

    #[test]
    fn cleans_like_runc() {
        let v = |p: &str| clean(Path::new(p));
        assert_eq!(v("/a/./b/../c"), ["a", "c"]);
        assert_eq!(v("/../../x"), ["x"]);
        assert!(v("/").is_empty());
        assert_eq!(v("rel/y"), ["rel", "y"]);
    }

    #[test]
    fn makes_missing_components_inside() {
        let (d, r) = root();
        let fd = r.mkdir_all(Path::new("/a/b/c"), 0o755).unwrap();
        assert_eq!(whereis(&fd), d.path().canonicalize().unwrap().join("a/b/c"));
        let f = r.open_or_make(Path::new("/x/y/file"), Make::File).unwrap();
        let p = d.path().join("x/y/file");
        assert!(fs::metadata(&p).unwrap().is_file());
        assert_eq!(whereis(&f), p.canonicalize().unwrap());
        // An existing entry is opened, not made again.
        let again = r.open_or_make(Path::new("/x/y/file"), Make::File).unwrap();
        assert_eq!(whereis(&again), p.canonicalize().unwrap());
    }

    #[test]
    fn symlinks_resolve_inside_the_root() {
        let (d, r) = root();
        let outside = tempfile::tempdir().unwrap();
        let host = outside.path().canonicalize().unwrap();
        // Absolute and relative links that would leave the root on the host.
        symlink(&host, d.path().join("abs")).unwrap();
        symlink("../../../../../..", d.path().join("up")).unwrap();
        let a = r.mkdir_all(Path::new("/abs/made"), 0o755).unwrap();
        let u = r.open_or_make(Path::new("/up/file"), Make::File).unwrap();
        let base = d.path().canonicalize().unwrap();
        assert!(whereis(&a).starts_with(&base), "{:?}", whereis(&a));
        assert!(whereis(&u).starts_with(&base), "{:?}", whereis(&u));
        assert_eq!(
            fs::read_dir(&host).unwrap().count(),
            0,
            "the host side stays empty"
        );
        // /proc magic links are refused outright, even where they are real.
        let host_root = Root::open(Path::new("/")).unwrap();
        let e = host_root
            .open_path(Path::new("/proc/self/root/etc"))
            .unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ELOOP), "{e}");
    }

    #[test]
    fn a_dangling_symlink_is_followed_inside_the_root() {
        let (d, r) = root();
        let outside = tempfile::tempdir().unwrap();
        let target = outside.path().join("created-by-runtime");
        symlink(&target, d.path().join("dangling")).unwrap();
        symlink("../nowhere/sub", d.path().join("rel")).unwrap();
        // The link leads (in the root) to a missing /<host path>/created-by-runtime: that is
        // made inside the root, as runc's SecureJoin resolves it, never on the host.
        let fd = r.open_or_make(Path::new("/dangling"), Make::File).unwrap();
        assert!(!target.exists());
        let base = d.path().canonicalize().unwrap();
        let inside = base.join(target.strip_prefix("/").unwrap());
        assert_eq!(whereis(&fd), inside);
        // In the middle of a path too, and relative ones stop at the root.
        let fd = r.mkdir_all(Path::new("/rel/deeper"), 0o755).unwrap();
        assert_eq!(whereis(&fd), base.join("nowhere/sub/deeper"));
    }

    #[test]
    fn an_entry_that_is_not_a_directory_stops_the_walk() {
        let (d, r) = root();
        fs::write(d.path().join("file"), "").unwrap();
        let e = r.mkdir_all(Path::new("/file/sub"), 0o755).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOTDIR), "{e}");
        // A link to `/` leads to the root itself, which callers can tell.
        symlink("/", d.path().join("top")).unwrap();
        assert!(r.is_root(&r.open_path(Path::new("/top")).unwrap()));
        assert!(!r.is_root(&r.open_path(Path::new("/file")).unwrap()));
    }

    #[test]
    fn racing_creates_stay_inside() {
        // Two threads make the same tree while a third swaps one component between a
        // directory and a symlink to a host directory: every fd either thread gets is inside
        // the root, and the host directory stays empty.
        let (d, r) = root();
        let outside = tempfile::tempdir().unwrap();
        let host = outside.path().canonicalize().unwrap();
        let base = d.path().canonicalize().unwrap();
        let r = std::sync::Arc::new(r);
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let swapper = {
            let (vol, host, stop) = (d.path().join("vol"), host.clone(), stop.clone());
            std::thread::spawn(move || {
                let tmp = vol.with_extension("tmp");
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let _ = fs::remove_dir_all(&vol);
                    let _ = fs::remove_file(&vol);
                    let _ = fs::create_dir(&vol);
                    let _ = fs::remove_file(&tmp);
                    let _ = symlink(&host, &tmp);
                    let _ = fs::rename(&tmp, &vol);
                }
            })
        };
        let workers: Vec<_> = (0..2)
            .map(|i| {
                let (r, base) = (r.clone(), base.clone());
                std::thread::spawn(move || {
                    for n in 0..300 {
                        let make = if n % 2 == 0 { Make::Dir } else { Make::File };
                        let dest = format!("/vol/w{i}/n{n}");
                        if let Ok(fd) = r.open_or_make(Path::new(&dest), make) {
                            let at = whereis(&fd);
                            assert!(at.starts_with(&base), "{dest} opened at {at:?}");
                        }
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        swapper.join().unwrap();
        assert_eq!(
            fs::read_dir(&host).unwrap().count(),
            0,
            "nothing made on the host"
        );
    }
}
