//! Entering the container's namespaces from inside the new process: joining those the spec
//! names by path (in the order the kernel needs), the cgroup join and unshare, loopback up,
//! hostname and namespaced sysctls.

use super::*;

/// /proc/self/cgroup, once: host paths (mount_cgroup binds them), so read before any cgroup
/// namespace exists.
pub(super) fn read_self_cgroup(c: &Child) {
    if c.self_cgroup.borrow().is_empty() {
        *c.self_cgroup.borrow_mut() = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    }
}

/// Waits until the spawner has moved us into our cgroup (it does so after the clone, while
/// we set up namespaces and mounts), then creates the cgroup namespace if the spec asks for
/// one. Called where the cgroup matters: before mounting cgroupfs, before the runtime hooks,
/// before dropping capabilities when a cgroup namespace is to be created (unshare needs
/// CAP_SYS_ADMIN), else once Start arrived, before the workload runs. Idempotent.
pub(super) fn ensure_joined(c: &Child) -> Result<(), Error> {
    if let Some(fd) = c.join.take() {
        let res = sync::recv_raw(fd);
        // SAFETY: closing the socket we own.
        unsafe { libc::close(fd) };
        match res.map_err(Error::CgroupJoinWait)? {
            Some((msg, _)) => match msg.split_first() {
                Some((b'J', _)) => {}
                Some((b'E', why)) => {
                    return Err(Error::CgroupJoin(String::from_utf8_lossy(why).into_owned()))
                }
                _ => return Err(Error::NotPlaced),
            },
            None => return Err(Error::NotPlaced),
        }
    }
    if c.unshare_cgroup.replace(false) {
        read_self_cgroup(c);
        nix::sched::unshare(CloneFlags::CLONE_NEWCGROUP).map_err(Error::CgroupNs)?;
    }
    Ok(())
}

/// Sets the loopback interface up in the container's new network namespace, as runc does for
/// every new netns. Done here, in parallel with the cgroup join, rather than by the caller
/// after Ready.
pub(super) fn loopback_up() -> Result<(), Error> {
    // Right after the call that failed: its errno.
    let failed = |step| Error::Loopback {
        step,
        source: Errno::last(),
    };
    // SAFETY: plain socket call; the fd is owned below.
    let s = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if s < 0 {
        return Err(failed("socket"));
    }
    // SAFETY: s is a fresh fd we own.
    let sock = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(s) };
    // SAFETY: ifreq is plain data; zero is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, b) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
        *d = *b as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS with a valid ifreq.
    unsafe {
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut ifr) != 0 {
            return Err(failed("get flags of lo"));
        }
        ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &ifr) != 0 {
            return Err(failed("set lo up"));
        }
    }
    Ok(())
}

pub(super) fn namespaces(spec: &Spec) -> Vec<(LinuxNamespaceType, Option<PathBuf>)> {
    crate::spec::namespaces(spec)
        .iter()
        .map(|n| (n.typ(), n.path().clone()))
        .collect()
}

pub(super) fn ns_order(t: LinuxNamespaceType) -> u8 {
    match t {
        LinuxNamespaceType::User => 0,
        LinuxNamespaceType::Cgroup => 1,
        LinuxNamespaceType::Mount => 9,
        _ => 5,
    }
}

pub(super) fn init_namespaces(c: &Child, spec: &Spec) -> Result<(), Error> {
    let mut join: Vec<(LinuxNamespaceType, PathBuf, OwnedFd)> = Vec::new();
    let mut new_cgroup = false;
    for (t, p) in namespaces(spec) {
        match (t, p) {
            (LinuxNamespaceType::Pid, _) => {}
            (LinuxNamespaceType::Cgroup, None) => new_cgroup = true,
            (_, None) => {}
            (t, Some(p)) => {
                if crate::userns::joined_by_spawner(spec, t) {
                    // Entered by the spawner for the clone (userns.rs); from inside the new
                    // user namespace the path may not even be openable (/proc/<pid>/ns/*).
                    continue;
                }
                let f = crate::ns::open_path(t, &p)?;
                if crate::userns::already_in(&f, t) {
                    continue; // entered by the spawner for the clone (userns.rs)
                }
                join.push((t, p, f));
            }
        }
    }
    join.sort_by_key(|(t, _, _)| ns_order(*t));
    for (t, p, f) in &join {
        crate::ns::join_path(*t, p, f)?;
    }
    // Unshared by `ensure_joined`, once the spawner has moved us into our cgroup.
    c.unshare_cgroup.set(new_cgroup);
    Ok(())
}

pub(super) fn hostname(c: &Child, spec: &Spec, new_uts: bool) -> Result<(), Error> {
    let host = spec.hostname().clone().unwrap_or_default();
    let domain = spec.domainname().clone().unwrap_or_default();
    if host.is_empty() && domain.is_empty() {
        return Ok(());
    }
    if !new_uts {
        c.warn("hostname/domainname ignored: the container has no UTS namespace of its own".into());
        return Ok(());
    }
    if !host.is_empty() {
        nix::unistd::sethostname(&host).map_err(|source| Error::Name {
            what: "hostname",
            name: host.clone(),
            source,
        })?;
    }
    if !domain.is_empty() {
        // SAFETY: valid pointer and length.
        let r = unsafe { libc::setdomainname(domain.as_ptr().cast(), domain.len()) };
        if r != 0 {
            let source = Errno::last();
            return Err(Error::Name {
                what: "domainname",
                name: domain,
                source,
            });
        }
    }
    Ok(())
}

/// Which namespace a sysctl belongs to, if any.
pub(crate) fn sysctl_namespace(key: &str) -> Option<LinuxNamespaceType> {
    const IPC: [&str; 8] = [
        "kernel.msgmax",
        "kernel.msgmnb",
        "kernel.msgmni",
        "kernel.sem",
        "kernel.shmall",
        "kernel.shmmax",
        "kernel.shmmni",
        "kernel.shm_rmid_forced",
    ];
    if IPC.contains(&key) || key.starts_with("fs.mqueue.") {
        Some(LinuxNamespaceType::Ipc)
    } else if key == "kernel.hostname" || key == "kernel.domainname" {
        Some(LinuxNamespaceType::Uts)
    } else if key.starts_with("net.") {
        Some(LinuxNamespaceType::Network)
    } else {
        None
    }
}

pub(super) fn sysctls(
    spec: &Spec,
    nss: &[(LinuxNamespaceType, Option<PathBuf>)],
) -> Result<(), Error> {
    let Some(map) = spec.linux().as_ref().and_then(|l| l.sysctl().clone()) else {
        return Ok(());
    };
    let mut keys: Vec<_> = map.into_iter().collect();
    keys.sort();
    for (k, v) in keys {
        let key = k.replace('/', ".");
        match sysctl_namespace(&key) {
            Some(t) if nss.iter().any(|(n, _)| *n == t) => {}
            _ => return Err(Error::SysctlNotNamespaced { key: k }),
        }
        let path = format!("sys/{}", key.replace('.', "/"));
        crate::procfs::write(&path, v.as_bytes())
            .map_err(|source| Error::Sysctl { key: k, source })?;
    }
    Ok(())
}
