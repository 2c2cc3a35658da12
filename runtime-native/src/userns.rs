//! User namespaces created by the spec (`linux.namespaces` has `user` without a path, with
//! `linux.uidMappings` / `linux.gidMappings`).
//!
//! The container process cannot write its own maps (that needs CAP_SETUID/CAP_SETGID in the
//! parent user namespace), so the work is split as runc splits it:
//! 1. the spawner clones the process with `CLONE_NEWUSER` together with the other new
//!    namespaces, so the new user namespace owns them (the container's root can then mount
//!    its /proc, sysfs, mqueue, devpts);
//! 2. right after the clone the spawner — root in the runtime's user namespace — writes
//!    `/proc/<pid>/uid_map` and `gid_map` through the verified procfs handle
//!    ([`crate::procfs::write_pid`]; `setgroups` stays "allow": a privileged writer may map
//!    groups, and the container may then call setgroups for `additionalGids`), then sends
//!    [`crate::sync::ParentMsg::UserNsMapped`] on the process's sync socket before handing the
//!    socket to the caller;
//! 3. the process joins its cgroups (still as the host's uid 0, which owns `cgroup.procs`),
//!    waits for that message, and becomes the namespace's root with `setresgid(0)` /
//!    `setresuid(0)` before it creates anything.
//!
//! What the container sees: its root is the mapped host uid (an unprivileged uid on the
//! host). Files owned by host ids outside the mapping (e.g. a rootfs owned by host root)
//! appear as `nobody`/`nogroup` and are only readable where their mode allows — fine for a
//! read-only busybox rootfs; a writable rootfs needs a snapshotter that chowns it (or
//! idmapped mounts). Every directory on the path to the rootfs must be searchable by the
//! mapped root (containerd makes the bundle directory 0711 when a spec has a user
//! namespace). Devices cannot be created with mknod inside a user namespace: they are
//! bind-mounted from the host's /dev instead (child.rs `mknod_or_bind`).
//!
//! Other namespaces joined by path together with a new user namespace (e.g. a network
//! namespace made by CNI in the host's user namespace): once inside the new user namespace the
//! process may no longer `setns` into namespaces the host's user namespace owns, so, as runc
//! joins them before it unshares the user namespace, the spawner enters the network, IPC, UTS
//! and cgroup namespaces given by path just for the clone ([`join_for_clone`]) and returns to
//! its own right after; the process then skips them (already in). A mount, pid or time
//! namespace given by path with a new user namespace is not supported.

use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use oci_spec::runtime::{LinuxIdMapping, LinuxNamespaceType, Spec};

use crate::sync::{self, ParentMsg};

type R<T = ()> = std::result::Result<T, String>;

/// The spec asks for a new user namespace.
pub(crate) fn creates_userns(spec: &Spec) -> bool {
    spec.linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .map(|nss| {
            nss.iter()
                .any(|n| n.typ() == LinuxNamespaceType::User && n.path().is_none())
        })
        .unwrap_or(false)
}

fn mappings(spec: &Spec) -> (Vec<LinuxIdMapping>, Vec<LinuxIdMapping>) {
    let l = spec.linux().clone().unwrap_or_default();
    (
        l.uid_mappings().clone().unwrap_or_default(),
        l.gid_mappings().clone().unwrap_or_default(),
    )
}

/// uid/gid mappings only make sense with a user namespace (as runc checks).
pub(crate) fn validate(spec: &Spec) -> R {
    let (uids, gids) = mappings(spec);
    let has_userns = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .map(|nss| nss.iter().any(|n| n.typ() == LinuxNamespaceType::User))
        .unwrap_or(false);
    if (!uids.is_empty() || !gids.is_empty()) && !has_userns {
        return Err(
            "linux.uidMappings/gidMappings are set but linux.namespaces has no user namespace"
                .into(),
        );
    }
    if creates_userns(spec) {
        check(spec)?;
    }
    Ok(())
}

/// Checks a spec that creates a user namespace: both maps present and sane.
pub(crate) fn check(spec: &Spec) -> R {
    let (uids, gids) = mappings(spec);
    if uids.is_empty() || gids.is_empty() {
        return Err(
            "a new user namespace needs linux.uidMappings and linux.gidMappings".to_string(),
        );
    }
    for (what, m) in [("uidMappings", &uids), ("gidMappings", &gids)] {
        if m.len() > 340 {
            return Err(format!("linux.{what}: too many entries ({})", m.len()));
        }
        for e in m.iter() {
            if e.size() == 0 {
                return Err(format!("linux.{what}: an entry has size 0"));
            }
        }
    }
    Ok(())
}

/// The text written to `uid_map` / `gid_map`: one "inside outside count" line per entry.
pub(crate) fn map_text(m: &[LinuxIdMapping]) -> String {
    m.iter()
        .map(|e| format!("{} {} {}\n", e.container_id(), e.host_id(), e.size()))
        .collect()
}

/// Through the verified procfs handle (procfs.rs): a /proc the runtime's mount namespace sees
/// with something mounted or linked over `<pid>/uid_map` cannot take the map elsewhere.
fn write_proc(pid: i32, file: &str, text: &str) -> R {
    // One write(2): the kernel accepts a map only once, whole.
    crate::procfs::write_pid(pid, file, text.as_bytes())
        .map_err(|e| format!("write /proc/{pid}/{file} ({:?}): {e}", text.trim_end()))
}

/// The spawner's part, right after cloning `pid` for `req`: writes the maps and lets the
/// process go on. Nothing to do when the request creates no user namespace.
pub(crate) fn after_clone(req: &crate::spawner::Request, pid: i32, sock: &OwnedFd) -> R {
    let crate::spawner::Request::Init(r) = req else {
        return Ok(());
    };
    if !creates_userns(&r.spec) {
        return Ok(());
    }
    let (uids, gids) = mappings(&r.spec);
    write_proc(pid, "uid_map", &map_text(&uids))?;
    write_proc(pid, "gid_map", &map_text(&gids))?;
    sync::send(sock, &ParentMsg::UserNsMapped, &[])
}

/// The container process's part: waits for the maps, then becomes the namespace's root.
pub(crate) fn wait_mapped(sync_fd: RawFd, spec: &Spec) -> R {
    if !creates_userns(spec) {
        return Ok(());
    }
    // SAFETY: the sync socket stays open for the whole setup.
    let sock = unsafe { std::os::fd::BorrowedFd::borrow_raw(sync_fd) };
    match sync::recv::<ParentMsg>(&sock.as_fd())? {
        Some((ParentMsg::UserNsMapped, _)) => {}
        _ => return Err("user namespace: the runtime did not write the id maps".into()),
    }
    // SAFETY: plain id syscalls.
    if unsafe { libc::setresgid(0, 0, 0) } != 0 {
        return Err(format!(
            "become root (gid 0) of the user namespace: {}",
            Errno::last().desc()
        ));
    }
    // SAFETY: as above.
    if unsafe { libc::setresuid(0, 0, 0) } != 0 {
        return Err(format!(
            "become root (uid 0) of the user namespace: {}",
            Errno::last().desc()
        ));
    }
    Ok(())
}

/// Namespaces the spawner joins by path for the clone of a process that creates a user
/// namespace, with their names under /proc/self/ns.
const PRE_JOIN: [(LinuxNamespaceType, &str); 4] = [
    (LinuxNamespaceType::Network, "net"),
    (LinuxNamespaceType::Ipc, "ipc"),
    (LinuxNamespaceType::Uts, "uts"),
    (LinuxNamespaceType::Cgroup, "cgroup"),
];

fn ns_name(t: LinuxNamespaceType) -> Option<&'static str> {
    PRE_JOIN.iter().find(|(k, _)| *k == t).map(|(_, n)| *n)
}

fn open_ro(p: &std::path::Path) -> std::result::Result<OwnedFd, Errno> {
    nix::fcntl::open(
        p,
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
}

fn same_ns(a: &OwnedFd, b: &OwnedFd) -> bool {
    match (nix::sys::stat::fstat(a), nix::sys::stat::fstat(b)) {
        (Ok(x), Ok(y)) => x.st_dev == y.st_dev && x.st_ino == y.st_ino,
        _ => false,
    }
}

/// Whether this process already is in the namespace `f` (of kind `t`), so joining it again is
/// a no-op — or, inside a new user namespace, a refused one.
pub(crate) fn already_in(f: &OwnedFd, t: LinuxNamespaceType) -> bool {
    let Some(name) = ns_name(t) else {
        return false;
    };
    match open_ro(std::path::Path::new(&format!("/proc/self/ns/{name}"))) {
        Ok(own) => same_ns(f, &own),
        Err(_) => false,
    }
}

/// The spawner's own namespaces, to return to after the clone.
pub(crate) struct Joined(Vec<(nix::sched::CloneFlags, OwnedFd)>);

impl Joined {
    /// Back to the spawner's own namespaces. An error leaves the spawner in a container's
    /// namespaces: the caller must not go on.
    pub(crate) fn restore(self) -> R {
        for (flag, own) in self.0.iter().rev() {
            nix::sched::setns(own, *flag)
                .map_err(|e| format!("return to own namespace (fd {}): {e}", own.as_raw_fd()))?;
        }
        Ok(())
    }
}

/// The spawner's part before the clone: with a new user namespace, enters the namespaces the
/// spec gives by path (see the module doc). `None` when there is nothing to enter.
pub(crate) fn join_for_clone(req: &crate::spawner::Request) -> R<Option<Joined>> {
    let crate::spawner::Request::Init(r) = req else {
        return Ok(None);
    };
    if !creates_userns(&r.spec) {
        return Ok(None);
    }
    let nss = r
        .spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().clone())
        .unwrap_or_default();
    let mut joined = Joined(Vec::new());
    for ns in &nss {
        let (Some(name), Some(path)) = (ns_name(ns.typ()), ns.path()) else {
            continue;
        };
        let flag = crate::spawner::ns_clone_flag(ns.typ());
        let res = (|| -> R<Option<OwnedFd>> {
            let target = open_ro(path)
                .map_err(|e| format!("open {name} namespace {}: {e}", path.display()))?;
            let own = open_ro(std::path::Path::new(&format!("/proc/self/ns/{name}")))
                .map_err(|e| format!("open own {name} namespace: {e}"))?;
            if same_ns(&target, &own) {
                return Ok(None);
            }
            nix::sched::setns(&target, flag)
                .map_err(|e| format!("join {name} namespace {}: {e}", path.display()))?;
            Ok(Some(own))
        })();
        match res {
            Ok(Some(own)) => joined.0.push((flag, own)),
            Ok(None) => {}
            Err(e) => {
                joined.restore()?;
                return Err(e);
            }
        }
    }
    Ok((!joined.0.is_empty()).then_some(joined))
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{LinuxIdMappingBuilder, LinuxNamespaceBuilder};

    fn m(c: u32, h: u32, s: u32) -> LinuxIdMapping {
        LinuxIdMappingBuilder::default()
            .container_id(c)
            .host_id(h)
            .size(s)
            .build()
            .unwrap()
    }

    #[test]
    fn maps_and_checks() {
        assert_eq!(
            map_text(&[m(0, 100000, 65536), m(65536, 1000, 1)]),
            "0 100000 65536\n65536 1000 1\n"
        );
        let mut spec = Spec::default();
        assert!(!creates_userns(&spec));
        let mut l = spec.linux().clone().unwrap();
        let mut nss = l.namespaces().clone().unwrap();
        nss.push(
            LinuxNamespaceBuilder::default()
                .typ(LinuxNamespaceType::User)
                .build()
                .unwrap(),
        );
        l.set_namespaces(Some(nss));
        spec.set_linux(Some(l.clone()));
        assert!(creates_userns(&spec));
        assert!(check(&spec).unwrap_err().contains("uidMappings"));
        assert!(validate(&spec).unwrap_err().contains("uidMappings"));
        l.set_uid_mappings(Some(vec![m(0, 100000, 65536)]));
        l.set_gid_mappings(Some(vec![m(0, 100000, 0)]));
        spec.set_linux(Some(l.clone()));
        assert!(check(&spec).unwrap_err().contains("size 0"));
        l.set_gid_mappings(Some(vec![m(0, 100000, 65536)]));
        spec.set_linux(Some(l.clone()));
        check(&spec).unwrap();
        validate(&spec).unwrap();
        // Mappings without a user namespace.
        l.set_namespaces(Some(vec![]));
        spec.set_linux(Some(l));
        assert!(validate(&spec).unwrap_err().contains("no user namespace"));
    }
}
