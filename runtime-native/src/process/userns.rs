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
//! joins them before it unshares the user namespace, the spawner enters the network, IPC, UTS,
//! cgroup and time namespaces given by path just for the clone ([`join_for_clone`]) and returns
//! to its own right after; the process then skips them (already in). A pid namespace given by
//! path is entered by the spawner for every init (spawner/enter.rs; `setns(CLONE_NEWPID)` changes
//! only its `pid_for_children`, saved and restored), so the process is born in it whatever its
//! user namespace. Its /proc cannot be mounted by the new user namespace's root (procfs asks
//! for CAP_SYS_ADMIN over the pid namespace's owner, the host's user namespace): the spawner
//! has a short-lived helper, forked in that pid namespace as host root, make a detached procfs
//! mount (`fsopen`/`fsmount`) that the process attaches with `move_mount` (proc_mount.rs).
//! A time namespace changes both `time` and `time_for_children` on `setns`; the spawner
//! refuses to enter one when its own two differ (it could not return to both). A mount namespace given by path cannot be combined with a new user namespace: the
//! rootfs would be set up in a mount namespace the host's user namespace owns, where the new
//! namespace's root may not mount; [`validate`] refuses such a spec before anything is created.
//! With a user namespace, an exec joins the container's other namespaces as host root first
//! and its user namespace last (child.rs `exec_namespaces`), so namespaces the host owns
//! stay joinable.
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;

use nix::errno::Errno;
use oci_spec::runtime::{LinuxIdMapping, LinuxNamespaceType, Spec};

use crate::fds::{open_ro, same_file};
use crate::sync::{self, ParentMsg};

/// What is wrong with a spec's user namespace, or what failed while the spawner made or the
/// process entered it. The spawner's and the process's errors reach the caller as text (in
/// the spawner's reply, on the sync socket), formatted right before they are sent.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("linux.uidMappings/gidMappings are set but linux.namespaces has no user namespace")]
    MappingsWithoutUserNs,
    #[error(
        "mount namespace joined by path cannot be combined with a new user namespace: {} \
         belongs to another user namespace, where the container's root could not mount its \
         rootfs",
        path.display()
    )]
    MountNsByPath { path: PathBuf },
    #[error("linux.namespaces: the {kind} namespace is listed more than once")]
    ListedTwice { kind: LinuxNamespaceType },
    #[error("a new user namespace needs linux.uidMappings and linux.gidMappings")]
    MapsMissing,
    #[error("linux.{what}: too many entries ({entries})")]
    TooManyEntries { what: &'static str, entries: usize },
    #[error("linux.{what}: an entry has size 0")]
    EmptyEntry { what: &'static str },
    #[error(transparent)]
    WriteMap(#[from] MapWriteError),
    #[error("tell the container process its id maps are written: {0}")]
    NotifyMapped(#[source] sync::Error),
    #[error("user namespace: wait for the id maps: {0}")]
    WaitMapped(#[source] sync::Error),
    #[error("user namespace: the runtime did not write the id maps")]
    NotMapped,
    #[error("become root ({id} 0) of the user namespace: {}", crate::child::etext(*source))]
    BecomeRoot {
        id: &'static str,
        #[source]
        source: Errno,
    },
    #[error("return to own namespace (fd {fd}): {source}")]
    Restore {
        fd: RawFd,
        #[source]
        source: Errno,
    },
    #[error("open {name} namespace {}: {source}", path.display())]
    OpenNs {
        name: &'static str,
        path: PathBuf,
        #[source]
        source: Errno,
    },
    #[error("open own {name} namespace: {source}")]
    OpenOwnNs {
        name: &'static str,
        #[source]
        source: Errno,
    },
    #[error(
        "join time namespace {}: the runtime's time and time_for_children namespaces \
         differ, it could not return to both",
        path.display()
    )]
    TimeNsDiffer { path: PathBuf },
    #[error("join {name} namespace {}: {source}", path.display())]
    JoinNs {
        name: &'static str,
        path: PathBuf,
        #[source]
        source: Errno,
    },
}

type R<T = ()> = std::result::Result<T, Error>;

/// An id map (`uid_map`/`gid_map` of `pid`) that could not be written.
#[derive(Debug, thiserror::Error)]
#[error("write /proc/{pid}/{file} ({text:?}): {source}")]
pub struct MapWriteError {
    pid: i32,
    file: &'static str,
    text: String,
    #[source]
    source: std::io::Error,
}

/// Writes the id map `text` into `/proc/<pid>/<file>` through the verified procfs handle
/// (procfs.rs): a /proc the runtime's mount namespace sees with something mounted or linked
/// over `<pid>/uid_map` cannot take the map elsewhere. One write(2): the kernel accepts a map
/// only once, whole.
pub(crate) fn write_map(pid: i32, file: &'static str, text: &str) -> Result<(), MapWriteError> {
    crate::procfs::write_pid(pid, file, text.as_bytes()).map_err(|source| MapWriteError {
        pid,
        file,
        text: text.trim_end().to_string(),
        source,
    })
}

/// The spec asks for a new user namespace.
pub(crate) fn creates_userns(spec: &Spec) -> bool {
    crate::spec::namespaces(spec)
        .iter()
        .any(|n| n.typ() == LinuxNamespaceType::User && n.path().is_none())
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
    let has_userns = crate::spec::namespaces(spec)
        .iter()
        .any(|n| n.typ() == LinuxNamespaceType::User);
    if (!uids.is_empty() || !gids.is_empty()) && !has_userns {
        return Err(Error::MappingsWithoutUserNs);
    }
    if creates_userns(spec) {
        check(spec)?;
        if let Some(p) = crate::spec::namespaces(spec)
            .iter()
            .find(|n| n.typ() == LinuxNamespaceType::Mount)
            .and_then(|n| n.path().clone())
        {
            return Err(Error::MountNsByPath { path: p });
        }
    }
    Ok(())
}

/// Each namespace type at most once in `linux.namespaces` (as runc checks).
pub(crate) fn validate_namespaces(spec: &Spec) -> R {
    let mut seen = Vec::new();
    for n in crate::spec::namespaces(spec) {
        if seen.contains(&n.typ()) {
            return Err(Error::ListedTwice { kind: n.typ() });
        }
        seen.push(n.typ());
    }
    Ok(())
}

/// Checks a spec that creates a user namespace: both maps present and sane.
pub(crate) fn check(spec: &Spec) -> R {
    let (uids, gids) = mappings(spec);
    if uids.is_empty() || gids.is_empty() {
        return Err(Error::MapsMissing);
    }
    for (what, m) in [("uidMappings", &uids), ("gidMappings", &gids)] {
        if m.len() > 340 {
            return Err(Error::TooManyEntries {
                what,
                entries: m.len(),
            });
        }
        if m.iter().any(|e| e.size() == 0) {
            return Err(Error::EmptyEntry { what });
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

/// The spawner's part, right after cloning `pid` for `req`: writes the maps and lets the
/// process go on. Nothing to do when the request creates no user namespace.
pub(crate) fn after_clone(req: &crate::request::Request, pid: i32, sock: &OwnedFd) -> R {
    let crate::request::Request::Init(r) = req else {
        return Ok(());
    };
    if !creates_userns(&r.spec) {
        return Ok(());
    }
    let (uids, gids) = mappings(&r.spec);
    write_map(pid, "uid_map", &map_text(&uids))?;
    write_map(pid, "gid_map", &map_text(&gids))?;
    sync::send(sock, &ParentMsg::UserNsMapped, &[]).map_err(Error::NotifyMapped)
}

/// The container process's part: waits for the maps, then becomes the namespace's root.
pub(crate) fn wait_mapped(sync_fd: RawFd, spec: &Spec) -> R {
    if !creates_userns(spec) {
        return Ok(());
    }
    // SAFETY: the sync socket stays open for the whole setup.
    let sock = unsafe { std::os::fd::BorrowedFd::borrow_raw(sync_fd) };
    match sync::recv::<ParentMsg>(&sock.as_fd()).map_err(Error::WaitMapped)? {
        Some((ParentMsg::UserNsMapped, _)) => {}
        _ => return Err(Error::NotMapped),
    }
    become_root()
}

/// Becomes uid and gid 0 of the user namespace this process is in (created or joined).
pub(crate) fn become_root() -> R {
    // SAFETY: plain id syscalls.
    if unsafe { libc::setresgid(0, 0, 0) } != 0 {
        let source = Errno::last();
        return Err(Error::BecomeRoot { id: "gid", source });
    }
    // SAFETY: as above.
    if unsafe { libc::setresuid(0, 0, 0) } != 0 {
        let source = Errno::last();
        return Err(Error::BecomeRoot { id: "uid", source });
    }
    Ok(())
}

/// Namespaces the spawner joins by path for the clone of a process that creates a user
/// namespace, with their names under /proc/self/ns. (A pid namespace by path is entered by
/// the spawner for every init: spawner/enter.rs.)
const PRE_JOIN: [(LinuxNamespaceType, &str); 5] = [
    (LinuxNamespaceType::Network, "net"),
    (LinuxNamespaceType::Ipc, "ipc"),
    (LinuxNamespaceType::Uts, "uts"),
    (LinuxNamespaceType::Cgroup, "cgroup"),
    (LinuxNamespaceType::Time, "time"),
];

fn ns_name(t: LinuxNamespaceType) -> Option<&'static str> {
    PRE_JOIN.iter().find(|(k, _)| *k == t).map(|(_, n)| *n)
}

/// A namespace of type `t` given by path was entered before the process was cloned — by the
/// spawner for a new user namespace ([`join_for_clone`], or spawner/enter.rs for a pid namespace),
/// by the intermediate for a joined one (every type: userns_join.rs) — so the process must
/// not join it again.
pub(crate) fn joined_by_spawner(spec: &Spec, t: LinuxNamespaceType) -> bool {
    (creates_userns(spec) && (t == LinuxNamespaceType::Pid || ns_name(t).is_some()))
        || crate::userns_join::joins_userns(spec)
}

/// Whether this process already is in the namespace `f` (of kind `t`), so joining it again is
/// a no-op — or, inside a new user namespace, a refused one.
pub(crate) fn already_in(f: &OwnedFd, t: LinuxNamespaceType) -> bool {
    let Some(name) = ns_name(t) else {
        return false;
    };
    match open_ro(std::path::Path::new(&format!("/proc/self/ns/{name}"))) {
        Ok(own) => same_file(f, &own),
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
            nix::sched::setns(own, *flag).map_err(|source| Error::Restore {
                fd: own.as_raw_fd(),
                source,
            })?;
        }
        Ok(())
    }
}

/// The spawner's part before the clone: with a new user namespace, enters the namespaces the
/// spec gives by path (see the module doc). `None` when there is nothing to enter.
pub(crate) fn join_for_clone(req: &crate::request::Request) -> R<Option<Joined>> {
    let crate::request::Request::Init(r) = req else {
        return Ok(None);
    };
    if !creates_userns(&r.spec) {
        return Ok(None);
    }
    let mut joined = Joined(Vec::new());
    for ns in crate::spec::namespaces(&r.spec) {
        let (Some(name), Some(path)) = (ns_name(ns.typ()), ns.path()) else {
            continue;
        };
        let flag = crate::ns::ns_clone_flag(ns.typ());
        let res = (|| -> R<Option<OwnedFd>> {
            let target = open_ro(path).map_err(|source| Error::OpenNs {
                name,
                path: path.clone(),
                source,
            })?;
            let open_own = |name: &'static str| {
                open_ro(std::path::Path::new(&format!("/proc/self/ns/{name}")))
                    .map_err(|source| Error::OpenOwnNs { name, source })
            };
            let own = open_own(name)?;
            if same_file(&target, &own) {
                return Ok(None);
            }
            // setns moves both `time` and `time_for_children`; returning to `own` is exact
            // only when they were the same.
            if ns.typ() == LinuxNamespaceType::Time
                && !same_file(&own, &open_own("time_for_children")?)
            {
                return Err(Error::TimeNsDiffer { path: path.clone() });
            }
            nix::sched::setns(&target, flag).map_err(|source| Error::JoinNs {
                name,
                path: path.clone(),
                source,
            })?;
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
    use crate::testgen::{edit_namespaces, join_namespace, new_namespace};
    use oci_spec::runtime::LinuxIdMappingBuilder;

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
        edit_namespaces(&mut spec, |nss| {
            nss.push(new_namespace(LinuxNamespaceType::User))
        });
        assert!(creates_userns(&spec));
        assert!(check(&spec)
            .unwrap_err()
            .to_string()
            .contains("uidMappings"));
        assert!(validate(&spec)
            .unwrap_err()
            .to_string()
            .contains("uidMappings"));
        let mut l = spec.linux().clone().unwrap();
        l.set_uid_mappings(Some(vec![m(0, 100000, 65536)]));
        l.set_gid_mappings(Some(vec![m(0, 100000, 0)]));
        spec.set_linux(Some(l.clone()));
        assert!(check(&spec).unwrap_err().to_string().contains("size 0"));
        l.set_gid_mappings(Some(vec![m(0, 100000, 65536)]));
        spec.set_linux(Some(l.clone()));
        check(&spec).unwrap();
        validate(&spec).unwrap();
        // A mount namespace by path with the new user namespace; then the same type twice.
        let mut s2 = spec.clone();
        join_namespace(
            &mut s2,
            LinuxNamespaceType::Mount,
            "/proc/1/ns/mnt".as_ref(),
        );
        let e = validate(&s2).unwrap_err().to_string();
        assert!(
            e.starts_with("mount namespace joined by path cannot be combined with a new user")
                && e.contains("/proc/1/ns/mnt"),
            "{e}"
        );
        validate_namespaces(&s2).unwrap();
        edit_namespaces(&mut s2, |nss| {
            nss.push(new_namespace(LinuxNamespaceType::Mount))
        });
        let e = validate_namespaces(&s2).unwrap_err().to_string();
        assert!(
            e.contains("the mnt namespace is listed more than once"),
            "{e}"
        );
        assert!(joined_by_spawner(&spec, LinuxNamespaceType::Time));
        assert!(joined_by_spawner(&spec, LinuxNamespaceType::Pid));
        assert!(!joined_by_spawner(&spec, LinuxNamespaceType::Mount));
        // Mappings without a user namespace.
        l.set_namespaces(Some(vec![]));
        spec.set_linux(Some(l));
        assert!(validate(&spec)
            .unwrap_err()
            .to_string()
            .contains("no user namespace"));
    }
}
