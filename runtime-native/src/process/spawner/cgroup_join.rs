//! How a new container process gets into its cgroup: born into it by
//! `clone3(CLONE_INTO_CGROUP)` on cgroup v2, else moved by the spawner writing its pid into
//! each `cgroup.procs` right after the reply to the caller, with the outcome reported to the
//! process on its join socket.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use crate::request::Request;

/// How the new process gets into its cgroup.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Placement {
    /// No cgroup to join.
    None,
    /// cgroup v2: clone3(CLONE_INTO_CGROUP) into this directory (no migration at all).
    IntoCgroup(PathBuf),
    /// cgroup v1 (or clone3 refused): the spawner writes the pid into these `cgroup.procs`.
    Write(Vec<PathBuf>),
}

/// Decides the [`Placement`] for a request's `cgroup.procs` files; `is_v2` tells whether a
/// directory is on a cgroup2 filesystem (a parameter so tests can use a fake tree).
pub(crate) fn placement(procs: &[PathBuf], is_v2: impl Fn(&Path) -> bool) -> Placement {
    match procs {
        [] => Placement::None,
        [one] => match one.parent() {
            Some(dir) if is_v2(dir) => Placement::IntoCgroup(dir.to_path_buf()),
            _ => Placement::Write(procs.to_vec()),
        },
        _ => Placement::Write(procs.to_vec()),
    }
}

fn on_cgroup2(dir: &Path) -> bool {
    nix::sys::statfs::statfs(dir)
        .map(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
        .unwrap_or(false)
}

/// The cgroup.procs files a request asks the process to join.
fn cgroup_procs(req: &Request) -> &[PathBuf] {
    match req {
        Request::Init(r) => &r.cgroup_procs,
        Request::Exec(r) => &r.cgroup_procs,
    }
}

/// The request's placement, with the cgroup v2 directory fd for `CLONE_INTO_CGROUP`; a
/// directory that does not open falls back to writing the pid.
pub(super) fn plan(req: &Request) -> (Placement, Option<OwnedFd>) {
    let placement = placement(cgroup_procs(req), on_cgroup2);
    let Placement::IntoCgroup(dir) = &placement else {
        return (placement, None);
    };
    use nix::fcntl::OFlag;
    match nix::fcntl::open(
        dir,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    ) {
        Ok(fd) => (placement, Some(fd)),
        Err(_) => (Placement::Write(cgroup_procs(req).to_vec()), None),
    }
}

/// Moves `pid` into its cgroup by writing it into every `cgroup.procs`. Done here, by the
/// spawner, right after the clone rather than by the new process itself, so that the slow
/// part of a migration (the first writer of cgroup_threadgroup_rwsem waits for an RCU grace
/// period, several ms per container start on cgroup v1) overlaps the process's own namespace
/// and mount setup; the process waits for the outcome only where it needs its cgroup
/// (child.rs `ensure_joined`).
pub(crate) fn join_cgroup(pid: i32, procs: &[PathBuf]) -> Result<(), JoinError> {
    let text = pid.to_string();
    for p in procs {
        std::fs::write(p, &text).map_err(|source| JoinError {
            procs: p.clone(),
            source,
        })?;
    }
    Ok(())
}

/// A `cgroup.procs` write that failed. The process learns it as text on its join socket
/// (another process), formatted in [`JoinJob::run`].
#[derive(Debug, thiserror::Error)]
#[error("join cgroup {}: {}", procs.display(), crate::child::ioerr(source))]
pub(crate) struct JoinError {
    procs: PathBuf,
    #[source]
    source: std::io::Error,
}

/// The cgroup join the spawner still owes a process it cloned: done after the reply to the
/// caller, so that neither the caller nor the process waits for it before they must.
pub(super) struct JoinJob {
    pub pid: i32,
    pub placement: Placement,
    /// clone3(CLONE_INTO_CGROUP) already placed the process.
    pub done: bool,
    pub notify: OwnedFd,
}

impl JoinJob {
    pub(super) fn run(self) {
        let outcome = match &self.placement {
            _ if self.done => Ok(()),
            Placement::Write(procs) => join_cgroup(self.pid, procs),
            Placement::IntoCgroup(dir) => join_cgroup(self.pid, &[dir.join("cgroup.procs")]),
            Placement::None => Ok(()),
        };
        let msg = match outcome {
            Ok(()) => b"J".to_vec(),
            Err(e) => [b"E".as_slice(), e.to_string().as_bytes()].concat(),
        };
        // The process reads it when it needs its cgroup; a dead process just never does.
        let _ = crate::sync::send_raw(self.notify.as_raw_fd(), &msg, &[]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placement_v1_v2_none() {
        let v2_root = Path::new("/fake/cg2");
        let is_v2 = |d: &Path| d.starts_with(v2_root);
        assert_eq!(placement(&[], is_v2), Placement::None);
        let one = vec![v2_root.join("default/c1/cgroup.procs")];
        assert_eq!(
            placement(&one, is_v2),
            Placement::IntoCgroup(v2_root.join("default/c1"))
        );
        let v1 = vec![
            PathBuf::from("/fake/cg1/memory/default/c1/cgroup.procs"),
            PathBuf::from("/fake/cg1/pids/default/c1/cgroup.procs"),
        ];
        assert_eq!(placement(&v1, is_v2), Placement::Write(v1.clone()));
        // A single v1 hierarchy is still a write.
        assert_eq!(
            placement(&v1[..1], is_v2),
            Placement::Write(v1[..1].to_vec())
        );
    }

    #[test]
    fn join_cgroup_writes_the_pid_and_names_the_file_on_error() {
        let d = tempfile::tempdir().unwrap();
        let a = d.path().join("a.procs");
        let b = d.path().join("b.procs");
        join_cgroup(4242, &[a.clone(), b.clone()]).unwrap();
        assert_eq!(std::fs::read_to_string(&a).unwrap(), "4242");
        assert_eq!(std::fs::read_to_string(&b).unwrap(), "4242");
        let missing = d.path().join("gone/cgroup.procs");
        let e = join_cgroup(1, std::slice::from_ref(&missing))
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            format!(
                "join cgroup {}: no such file or directory",
                missing.display()
            )
        );
    }
}
