//! `/etc/hosts` and `/etc/resolv.conf` written into a container's rootfs, without following
//! symlinks the image may have planted (`etc/hosts -> /etc/shadow` must not reach the host).

use std::io::Write;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{openat, AtFlags, OFlag};
use nix::sys::stat::{fstatat, mkdirat, Mode, SFlag};
use nix::unistd::{unlinkat, UnlinkatFlags};

use super::NetError;
use crate::PathIoError;

pub fn hosts_content(hostname: &str, ip: Ipv4Addr) -> String {
    format!("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{ip}\t{hostname}\n")
}

/// resolv.conf for a container: `dns` when given, else the host's nameservers that are not
/// loopback (a host stub resolver is unreachable from the container), with its search and
/// options lines; public resolvers when nothing usable is left, as Docker does.
pub fn resolv_content(dns: &[Ipv4Addr], host_resolv: &str) -> String {
    let mut out = String::new();
    if !dns.is_empty() {
        for d in dns {
            out.push_str(&format!("nameserver {d}\n"));
        }
        return out;
    }
    let mut servers = 0;
    for line in host_resolv.lines() {
        let l = line.trim();
        let mut w = l.split_whitespace();
        match w.next() {
            Some("nameserver") => {
                let Some(addr) = w.next() else { continue };
                let loopback = addr
                    .parse::<std::net::IpAddr>()
                    .map(|a| a.is_loopback())
                    .unwrap_or(true);
                if !loopback {
                    out.push_str(&format!("nameserver {addr}\n"));
                    servers += 1;
                }
            }
            Some("search") | Some("domain") | Some("options") => {
                out.push_str(l);
                out.push('\n');
            }
            _ => {}
        }
    }
    if servers == 0 {
        out.push_str("nameserver 8.8.8.8\nnameserver 8.8.4.4\n");
    }
    out
}

fn sys(what: &str, path: &Path) -> impl FnOnce(Errno) -> NetError {
    let what = format!("{what} {}", path.display());
    move |e| {
        NetError::from(PathIoError {
            op: "write container file",
            path: what.into(),
            source: e.into(),
        })
    }
}

/// Writes `etc/<name>` under `rootfs`, creating `etc` if missing and replacing a symlink.
pub fn write_in_rootfs(rootfs: &Path, name: &str, content: &str) -> Result<(), NetError> {
    let dirflags = OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_RDONLY;
    let root = nix::fcntl::open(rootfs, dirflags, Mode::empty()).map_err(sys("open", rootfs))?;
    let etc_path = rootfs.join("etc");
    let etc = match openat(root.as_fd(), "etc", dirflags, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => {
            mkdirat(root.as_fd(), "etc", Mode::from_bits_truncate(0o755))
                .map_err(sys("mkdir", &etc_path))?;
            openat(root.as_fd(), "etc", dirflags, Mode::empty()).map_err(sys("open", &etc_path))?
        }
        Err(e) => return Err(sys("open (not a directory?)", &etc_path)(e)),
    };
    let path = etc_path.join(name);
    if let Ok(st) = fstatat(etc.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
            unlinkat(etc.as_fd(), name, UnlinkatFlags::NoRemoveDir)
                .map_err(sys("remove", &path))?;
        }
    }
    let fd: OwnedFd = openat(
        etc.as_fd(),
        name,
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_TRUNC | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o644),
    )
    .map_err(sys("create", &path))?;
    // SAFETY: we own the fd and hand its ownership to the File.
    let mut f = unsafe { std::fs::File::from_raw_fd(std::os::fd::IntoRawFd::into_raw_fd(fd)) };
    f.write_all(content.as_bytes())
        .map_err(PathIoError::on("write", &path))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_filters_loopback() {
        let host = "# comment\nnameserver 127.0.0.53\nnameserver 192.0.2.1\nsearch example.org\noptions edns0\n";
        assert_eq!(
            resolv_content(&[], host),
            "nameserver 192.0.2.1\nsearch example.org\noptions edns0\n"
        );
        assert_eq!(
            resolv_content(&[], "nameserver 127.0.0.53\n"),
            "nameserver 8.8.8.8\nnameserver 8.8.4.4\n"
        );
        assert_eq!(
            resolv_content(&[Ipv4Addr::new(1, 1, 1, 1)], host),
            "nameserver 1.1.1.1\n"
        );
    }

    #[test]
    fn writes_files_and_replaces_symlinks() {
        let d = tempfile::tempdir().unwrap();
        let outside = d.path().join("outside");
        std::fs::write(&outside, "secret").unwrap();
        let root = d.path().join("rootfs");
        std::fs::create_dir(&root).unwrap();
        // No etc at all.
        write_in_rootfs(&root, "hosts", "a\n").unwrap();
        assert_eq!(
            std::fs::read_to_string(root.join("etc/hosts")).unwrap(),
            "a\n"
        );
        // A planted symlink is replaced, its target untouched.
        std::os::unix::fs::symlink(&outside, root.join("etc/resolv.conf")).unwrap();
        write_in_rootfs(&root, "resolv.conf", "b\n").unwrap();
        assert_eq!(std::fs::read_to_string(&outside).unwrap(), "secret");
        assert_eq!(
            std::fs::read_to_string(root.join("etc/resolv.conf")).unwrap(),
            "b\n"
        );
        assert!(!std::fs::symlink_metadata(root.join("etc/resolv.conf"))
            .unwrap()
            .file_type()
            .is_symlink());
        // etc itself a symlink: refused.
        let root2 = d.path().join("rootfs2");
        std::fs::create_dir(&root2).unwrap();
        std::os::unix::fs::symlink(d.path(), root2.join("etc")).unwrap();
        assert!(write_in_rootfs(&root2, "hosts", "c\n").is_err());
        assert!(hosts_content("h", Ipv4Addr::new(10, 0, 0, 2)).contains("10.0.0.2\th\n"));
    }
}
