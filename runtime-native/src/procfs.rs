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

fn on_procfs(fd: &impl AsRawFd) -> std::io::Result<bool> {
    // SAFETY: fstatfs fills a statfs struct we own, for an fd that stays open for the call.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstatfs(fd.as_raw_fd(), &mut st) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(st.f_type as i64 == PROC_SUPER_MAGIC)
}

fn not_proc(what: &str) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::PermissionDenied,
        format!("{what} is not on procfs: refusing to write through it"),
    )
}

/// Writes `data` to `/proc/<rel>` (e.g. `sys/net/ipv4/ip_forward`, `self/oom_score_adj`).
pub fn write(rel: &str, data: &[u8]) -> std::io::Result<()> {
    let proc_dir = File::open("/proc")?;
    if !on_procfs(&proc_dir)? {
        return Err(not_proc("/proc"));
    }
    let rel = rel.trim_start_matches('/');
    let resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_XDEV;
    // `self` is a symlink procfs provides: ask this procfs which pid it names (getpid() would
    // be wrong when the caller's pid namespace is not the one this /proc was mounted for).
    let rel = match rel.strip_prefix("self/") {
        Some(rest) => {
            let me = nix::fcntl::readlinkat(&proc_dir, "self").map_err(std::io::Error::from)?;
            format!("{}/{rest}", me.to_string_lossy())
        }
        None => rel.to_string(),
    };
    let fd = crate::resolve::openat2(&proc_dir, &rel, libc::O_WRONLY, resolve)?;
    if !on_procfs(&fd)? {
        return Err(not_proc(&format!("/proc/{rel}")));
    }
    File::from(fd).write_all(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_reach_procfs_files() {
        // Writing our own current value back is always allowed.
        let cur = std::fs::read_to_string("/proc/self/oom_score_adj").unwrap();
        write("self/oom_score_adj", cur.trim().as_bytes()).unwrap();
    }

    #[test]
    fn self_names_this_process() {
        let me = nix::fcntl::readlinkat(&File::open("/proc").unwrap(), "self").unwrap();
        assert_eq!(me.to_string_lossy(), std::process::id().to_string());
    }

    #[test]
    fn symlinks_and_escapes_are_refused() {
        // /proc/mounts is a symlink to self/mounts: refused, not followed.
        assert!(write("mounts", b"x").is_err());
        assert!(write("../etc/hostname", b"x").is_err());
    }
}
