//! Namespace kinds as clone(2)/setns(2) flags and as files under /proc/<pid>/ns.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sched::CloneFlags;
use oci_spec::runtime::LinuxNamespaceType;

/// A namespace the spec gives by path that could not be opened or joined (`step`).
#[derive(Debug, thiserror::Error)]
#[error("{step} {kind} namespace {}: {}", path.display(), crate::child::etext(*source))]
pub(crate) struct PathError {
    step: &'static str,
    kind: LinuxNamespaceType,
    path: PathBuf,
    #[source]
    source: Errno,
}

/// Opens the namespace of kind `kind` at `path` (read-only, close-on-exec).
pub(crate) fn open_path(kind: LinuxNamespaceType, path: &Path) -> Result<OwnedFd, PathError> {
    crate::fds::open_ro(path).map_err(|source| PathError {
        step: "open",
        kind,
        path: path.to_path_buf(),
        source,
    })
}

/// Joins `ns`, the namespace of kind `kind` opened from `path`.
pub(crate) fn join_path(
    kind: LinuxNamespaceType,
    path: &Path,
    ns: &OwnedFd,
) -> Result<(), PathError> {
    nix::sched::setns(ns, ns_clone_flag(kind)).map_err(|source| PathError {
        step: "join",
        kind,
        path: path.to_path_buf(),
        source,
    })
}

/// The error of a join refused with `source` (a namespace left over after every pass).
pub(crate) fn join_error(kind: LinuxNamespaceType, path: &Path, source: Errno) -> PathError {
    PathError {
        step: "join",
        kind,
        path: path.to_path_buf(),
        source,
    }
}

/// The clone/setns flag of a namespace kind.
pub(crate) fn ns_clone_flag(t: LinuxNamespaceType) -> CloneFlags {
    match t {
        LinuxNamespaceType::Mount => CloneFlags::CLONE_NEWNS,
        LinuxNamespaceType::Cgroup => CloneFlags::CLONE_NEWCGROUP,
        LinuxNamespaceType::Uts => CloneFlags::CLONE_NEWUTS,
        LinuxNamespaceType::Ipc => CloneFlags::CLONE_NEWIPC,
        LinuxNamespaceType::User => CloneFlags::CLONE_NEWUSER,
        LinuxNamespaceType::Pid => CloneFlags::CLONE_NEWPID,
        LinuxNamespaceType::Network => CloneFlags::CLONE_NEWNET,
        LinuxNamespaceType::Time => CloneFlags::from_bits_retain(libc::CLONE_NEWTIME),
    }
}

/// The namespace's name under `/proc/<pid>/ns/`.
pub(crate) fn proc_name(t: LinuxNamespaceType) -> &'static str {
    match t {
        LinuxNamespaceType::Mount => "mnt",
        LinuxNamespaceType::Cgroup => "cgroup",
        LinuxNamespaceType::Uts => "uts",
        LinuxNamespaceType::Ipc => "ipc",
        LinuxNamespaceType::User => "user",
        LinuxNamespaceType::Pid => "pid",
        LinuxNamespaceType::Network => "net",
        LinuxNamespaceType::Time => "time",
    }
}

/// The file under `/proc/self/ns` naming the namespace of kind `t` that `setns` of a file of
/// that kind changes: for pid and time namespaces the one of the children.
pub(crate) fn ns_file_name(t: LinuxNamespaceType) -> &'static str {
    match t {
        LinuxNamespaceType::Pid => "pid_for_children",
        LinuxNamespaceType::Time => "time_for_children",
        t => proc_name(t),
    }
}
