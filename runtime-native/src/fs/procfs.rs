//! Writes into procfs that cannot be redirected (the CVE-2025-52881 class).
//!
//! A container's image or mounts can try to make a path like `/proc/sys/net/...` lead somewhere
//! else: a symlink, a bind mount of another file over it, or a non-proc filesystem mounted on
//! `/proc`. A runtime that writes through such a path as root writes where the attacker chose.
//! Every runtime write into procfs goes through `write`: `/proc` is opened as a directory and
//! must be procfs; the file is opened beneath it with openat2 refusing symlinks and mount
//! crossings (`RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_XDEV`), and must itself be on
//! procfs, before one byte is written.

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;

const PROC_SUPER_MAGIC: i64 = 0x9fa0;

pub(crate) fn on_procfs(fd: &impl AsRawFd) -> std::io::Result<bool> {
    // SAFETY: fstatfs fills a statfs struct we own, for an fd that stays open for the call.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstatfs(fd.as_raw_fd(), &mut st) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(st.f_type as i64 == PROC_SUPER_MAGIC)
}

pub(crate) fn not_proc(what: &str) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::PermissionDenied,
        format!("{what} is not on procfs: refusing to write through it"),
    )
}

/// `/proc`, opened as a directory and checked to be procfs.
pub(crate) fn proc_dir() -> std::io::Result<File> {
    let proc_dir = File::open("/proc")?;
    if !on_procfs(&proc_dir)? {
        return Err(not_proc("/proc"));
    }
    Ok(proc_dir)
}

/// The one place a procfs file is opened for writing and written: beneath `proc_dir`, no
/// symlinks, no mount crossings, and the file itself on procfs.
fn write_beneath(proc_dir: &File, rel: &str, data: &[u8]) -> std::io::Result<()> {
    let resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_XDEV;
    let fd = crate::resolve::openat2(proc_dir, rel, libc::O_WRONLY, resolve)?;
    if !on_procfs(&fd)? {
        return Err(not_proc(&format!("/proc/{rel}")));
    }
    // One write(2) where the file takes it whole (the id maps accept a map only once).
    let n = File::from(fd).write(data)?;
    if n != data.len() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::WriteZero,
            format!("/proc/{rel}: short write ({n} of {} bytes)", data.len()),
        ));
    }
    Ok(())
}

/// Writes `data` to `/proc/<rel>` (e.g. `sys/net/ipv4/ip_forward`, `self/oom_score_adj`,
/// `thread-self/attr/exec`).
pub fn write(rel: &str, data: &[u8]) -> std::io::Result<()> {
    let proc_dir = proc_dir()?;
    let rel = rel.trim_start_matches('/');
    // `self` is a symlink procfs provides: ask this procfs which pid it names (getpid() would
    // be wrong when the caller's pid namespace is not the one this /proc was mounted for).
    // `thread-self` likewise names the calling thread (`<pid>/task/<tid>`).
    let own = ["self", "thread-self"]
        .into_iter()
        .find_map(|link| Some((link, rel.strip_prefix(link)?.strip_prefix('/')?)));
    let rel = match own {
        Some((link, rest)) => {
            let me = nix::fcntl::readlinkat(&proc_dir, link).map_err(std::io::Error::from)?;
            format!("{}/{rest}", me.to_string_lossy())
        }
        None => rel.to_string(),
    };
    write_beneath(&proc_dir, &rel, data)
}

/// `file` names one entry directly in a pid's directory (`uid_map`, `setgroups`...).
fn pid_entry(pid: i32, file: &str) -> std::io::Result<String> {
    let bad = |what: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, what);
    if pid <= 0 {
        return Err(bad(format!("pid {pid} has no /proc directory")));
    }
    if file.is_empty() || file == "." || file == ".." || file.contains(['/', '\0']) {
        return Err(bad(format!(
            "{file:?} is not a file name under /proc/{pid}"
        )));
    }
    Ok(format!("{pid}/{file}"))
}

/// Writes `data` to `/proc/<pid>/<file>` for a process the caller knows by `pid` (e.g. the
/// spawner writing a new user namespace's `uid_map`). `pid` is a number in the caller's pid
/// namespace, so `/proc` must belong to that namespace too: its `self` must name the caller.
pub fn write_pid(pid: i32, file: &str, data: &[u8]) -> std::io::Result<()> {
    let rel = pid_entry(pid, file)?;
    let proc_dir = proc_dir()?;
    let me = nix::fcntl::readlinkat(&proc_dir, "self").map_err(std::io::Error::from)?;
    if me.to_string_lossy() != std::process::id().to_string() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!(
                "/proc is not of this process's pid namespace (its self is {me:?}, we are {}): \
                 refusing to write /proc/{rel}",
                std::process::id()
            ),
        ));
    }
    write_beneath(&proc_dir, &rel, data)
}

/// `/proc/<pid>/fd/<n>` naming `fd`, for the syscalls that take a path only (mount(2) as
/// source or target, readlink): `/proc` must be procfs, and the path must lead to `fd`'s own
/// file (device and inode) before it is handed out. The kernel follows that magic link to the
/// file the fd holds, not to whatever a path with the same name leads to now. Nothing else
/// mounts in the caller's mount namespace while it sets up a container, so `/proc` stays what
/// was checked until the path is used.
pub(crate) fn fd_path(fd: &impl std::os::fd::AsFd) -> std::io::Result<std::path::PathBuf> {
    let proc_dir = proc_dir()?;
    let me = nix::fcntl::readlinkat(&proc_dir, "self").map_err(std::io::Error::from)?;
    let rel = format!("{}/fd/{}", me.to_string_lossy(), fd.as_fd().as_raw_fd());
    let via = nix::sys::stat::fstatat(&proc_dir, rel.as_str(), nix::fcntl::AtFlags::empty())
        .map_err(std::io::Error::from)?;
    let own = nix::sys::stat::fstat(fd).map_err(std::io::Error::from)?;
    if (via.st_dev, via.st_ino) != (own.st_dev, own.st_ino) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!(
                "/proc/{rel} does not lead to the file of fd {}",
                fd.as_fd().as_raw_fd()
            ),
        ));
    }
    Ok(std::path::PathBuf::from(format!("/proc/{rel}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fd_paths_lead_to_the_fd() {
        let d = tempfile::tempdir().unwrap();
        let f = File::create(d.path().join("x")).unwrap();
        let p = fd_path(&f).unwrap();
        assert!(
            p.starts_with(format!("/proc/{}/fd", std::process::id())),
            "{p:?}"
        );
        assert_eq!(
            std::fs::read_link(&p).unwrap(),
            d.path().canonicalize().unwrap().join("x")
        );
    }

    #[test]
    fn writes_reach_procfs_files() {
        // Writing our own current value back is always allowed.
        let cur = std::fs::read_to_string("/proc/self/oom_score_adj").unwrap();
        write("self/oom_score_adj", cur.trim().as_bytes()).unwrap();
    }

    #[test]
    fn self_names_this_process() {
        let me = nix::fcntl::readlinkat(File::open("/proc").unwrap(), "self").unwrap();
        assert_eq!(me.to_string_lossy(), std::process::id().to_string());
    }

    #[test]
    fn symlinks_and_escapes_are_refused() {
        // /proc/mounts is a symlink to self/mounts: refused, not followed.
        assert!(write("mounts", b"x").is_err());
        assert!(write("../etc/hostname", b"x").is_err());
    }

    #[test]
    fn pid_writes_stay_in_the_pid_directory() {
        let me = std::process::id() as i32;
        let cur = std::fs::read_to_string("/proc/self/oom_score_adj").unwrap();
        write_pid(me, "oom_score_adj", cur.trim().as_bytes()).unwrap();
        assert_eq!(pid_entry(42, "uid_map").unwrap(), "42/uid_map");
        // Only a plain name inside the pid's own directory.
        for f in [
            "",
            ".",
            "..",
            "../1/uid_map",
            "task/1/uid_map",
            "/etc/passwd",
            "a\0b",
        ] {
            let e = write_pid(me, f, b"x").unwrap_err();
            assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput, "{f:?}: {e}");
        }
        for pid in [0, -1] {
            let e = write_pid(pid, "uid_map", b"x").unwrap_err();
            assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput, "{pid}: {e}");
        }
        // `cwd` is a symlink: refused, not followed.
        let e = write_pid(me, "cwd", b"x").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ELOOP), "{e}");
    }

    #[test]
    fn id_maps_are_written_through_the_verified_handle() {
        // Needs root (or CAP_SETUID over the new namespace's parent) and unshare(1).
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let Ok(mut child) = std::process::Command::new("unshare")
            .args(["--user", "sleep", "10"])
            .spawn()
        else {
            return;
        };
        let pid = child.id() as i32;
        // unshare(1) execs sleep once it is in the new user namespace.
        let own = std::fs::read_link("/proc/self/ns/user").unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while std::fs::read_link(format!("/proc/{pid}/ns/user")).ok() == Some(own.clone())
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let res = write_pid(pid, "uid_map", b"0 100000 1000\n")
            .and_then(|()| write_pid(pid, "gid_map", b"0 200000 1000\n"));
        let uid_map = std::fs::read_to_string(format!("/proc/{pid}/uid_map"));
        let gid_map = std::fs::read_to_string(format!("/proc/{pid}/gid_map"));
        // A second map is refused by the kernel, and the error comes back.
        let again = write_pid(pid, "uid_map", b"0 300000 1\n");
        let _ = child.kill();
        let _ = child.wait();
        res.unwrap();
        let words = |s: String| s.split_whitespace().map(String::from).collect::<Vec<_>>();
        assert_eq!(words(uid_map.unwrap()), ["0", "100000", "1000"]);
        assert_eq!(words(gid_map.unwrap()), ["0", "200000", "1000"]);
        assert!(again.is_err());
    }
}
