//! The `delete` action: containerd runs it (cwd and `-bundle` = the bundle, 5 s budget) after a
//! shim died and on teardown, to clean up from on-disk state alone: kill the init if still
//! alive, destroy the cgroup, unmount the rootfs, remove the record. It prints a protobuf
//! `DeleteResponse` (pid, exit status 137 = killed, now) on stdout. A missing record is fine:
//! the server cleaned up already, or never got that far.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use containerd_shim_protos::api::DeleteResponse;
use containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp;

use crate::args::Flags;
use crate::error::{encode, Result, ShimError};
use crate::record::{self, ContainerRecord};

/// 128 + SIGKILL, what containerd reports for a task the shim could not wait for.
pub const KILLED_STATUS: u32 = 128 + libc::SIGKILL as u32;

pub fn run(flags: &Flags) -> Result<()> {
    let bundle = crate::start::bundle_dir(flags)?;
    let root = record::state_root();
    let (pid, errors) = cleanup(&root, &flags.namespace, &flags.id, &bundle);
    for e in &errors {
        eprintln!("amphi delete {}/{}: {e}", flags.namespace, flags.id);
    }
    if let Some(e) = errors.into_iter().next() {
        return Err(e);
    }
    let bytes = response(pid, SystemTime::now())?;
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(&bytes)
        .and_then(|_| out.flush())
        .map_err(ShimError::io("write response to", "stdout"))
}

/// Does every cleanup step even if one fails; returns the init pid (0 if unknown) and what went
/// wrong. The record is only removed when everything it describes is gone, so a failed delete
/// can be retried.
pub fn cleanup(root: &Path, namespace: &str, id: &str, bundle: &Path) -> (i32, Vec<ShimError>) {
    let mut errors = Vec::new();
    let mut pid = 0;
    let mut rootfs_dirs: Vec<PathBuf> = vec![bundle.join("rootfs")];
    let record_file = record::record_path(root, namespace, id);

    match ContainerRecord::load(root, namespace, id) {
        Ok(rec) => {
            pid = rec.init_pid;
            if pid > 0 {
                kill(pid, rec.init_start_time, id);
            }
            if let Some(lease) = &rec.network {
                errors.extend(
                    crate::network::teardown_lease(lease)
                        .into_iter()
                        .map(ShimError::Network),
                );
            }
            if let Some(cg) = &rec.cgroup {
                if let Err(source) = cg.destroy() {
                    errors.push(ShimError::Runtime {
                        what: format!("destroy cgroup of {id}"),
                        source,
                    });
                }
            }
            if let Some(m) = rec.mounted_rootfs {
                if !rootfs_dirs.contains(&m) {
                    rootfs_dirs.insert(0, m);
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => errors.push(ShimError::io("load record", &record_file)(e)),
    }

    for dir in &rootfs_dirs {
        if let Err(source) = runtime_native::rootfs::unmount_all(dir) {
            errors.push(ShimError::Runtime {
                what: format!("unmount {}", dir.display()),
                source,
            });
        }
    }

    if errors.is_empty() {
        if let Err(e) = ContainerRecord::remove(root, namespace, id) {
            errors.push(ShimError::io("remove record", record_file)(e));
        }
    }
    (pid, errors)
}

/// SIGKILL to the recorded init, only while `pid` is still that process (its start time is the
/// recorded one): after a shim crash the pid may have been reaped and reused by a stranger.
fn kill(pid: i32, start_time: u64, id: &str) {
    use runtime_native::identity::{signal_recorded, Signalled};
    match signal_recorded(pid, start_time, libc::SIGKILL) {
        Ok(Signalled::Sent) | Ok(Signalled::Gone) => {}
        Ok(Signalled::NotTheSame) => eprintln!(
            "amphi delete {id}: pid {pid} is no longer the container's init (start time \
             {start_time} recorded): not signalled"
        ),
        Err(e) => eprintln!("amphi delete {id}: signal pid {pid}: {e}"),
    }
}

pub fn response(pid: i32, now: SystemTime) -> Result<Vec<u8>> {
    let d = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    encode(
        &DeleteResponse {
            pid: pid.max(0) as u32,
            exit_status: KILLED_STATUS,
            exited_at: Some(Timestamp {
                seconds: d.as_secs() as i64,
                nanos: d.subsec_nanos() as i32,
                ..Default::default()
            })
            .into(),
            ..Default::default()
        },
        "DeleteResponse",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use containerd_shim_protos::protobuf::Message;
    use std::time::Duration;

    #[test]
    fn delete_response_bytes() {
        let now = UNIX_EPOCH + Duration::new(1_700_000_000, 42);
        let bytes = response(1234, now).unwrap();
        let r = DeleteResponse::parse_from_bytes(&bytes).unwrap();
        assert_eq!(r.pid, 1234);
        assert_eq!(r.exit_status, 137);
        assert_eq!(r.exited_at.seconds, 1_700_000_000);
        assert_eq!(r.exited_at.nanos, 42);
        // Hand-checked wire bytes: field 1 varint, field 2 varint, field 3 message.
        assert_eq!(&bytes[..6], &[0x08, 0xd2, 0x09, 0x10, 0x89, 0x01]);
        assert_eq!(bytes[6], 0x1a);
    }

    #[test]
    fn missing_record_is_not_an_error() {
        let root = tempfile::tempdir().unwrap();
        let bundle = tempfile::tempdir().unwrap();
        // unmount_all on a directory that is not mounted is success per its contract.
        let (pid, errors) = cleanup(root.path(), "default", "nosuch", bundle.path());
        assert_eq!(pid, 0);
        assert!(errors.is_empty(), "{errors:?}");
    }

    /// After a crash the recorded pid may belong to a stranger: delete leaves it alone, and
    /// kills the recorded process while it is still that one.
    #[test]
    fn delete_never_kills_a_reused_pid() {
        let root = tempfile::tempdir().unwrap();
        let bundle = tempfile::tempdir().unwrap();
        let mut stranger = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = stranger.id() as i32;
        let start = runtime_native::identity::start_time(pid).unwrap();
        let record = |start_time: u64| ContainerRecord {
            id: "c2".into(),
            namespace: "default".into(),
            bundle: bundle.path().to_path_buf(),
            mounted_rootfs: None,
            cgroup: None,
            init_pid: pid,
            init_start_time: start_time,
            network: None,
        };
        // The init that had this pid started at another time: the pid was reused.
        record(start - 1).save(root.path()).unwrap();
        let (got, errors) = cleanup(root.path(), "default", "c2", bundle.path());
        assert_eq!(got, pid);
        assert!(errors.is_empty(), "{errors:?}");
        assert!(
            stranger.try_wait().unwrap().is_none(),
            "a reused pid was killed"
        );
        // A record from before start times were kept: not signalled either.
        record(0).save(root.path()).unwrap();
        cleanup(root.path(), "default", "c2", bundle.path());
        assert!(
            stranger.try_wait().unwrap().is_none(),
            "an unverified pid was killed"
        );
        // The recorded process itself: killed.
        record(start).save(root.path()).unwrap();
        cleanup(root.path(), "default", "c2", bundle.path());
        let status = stranger.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(libc::SIGKILL)
        );
    }

    #[test]
    fn record_is_removed_and_pid_reported() {
        let root = tempfile::tempdir().unwrap();
        let bundle = tempfile::tempdir().unwrap();
        let rec = ContainerRecord {
            id: "c1".into(),
            namespace: "default".into(),
            bundle: bundle.path().to_path_buf(),
            mounted_rootfs: None,
            cgroup: None,
            // A pid that cannot exist (above pid_max), so nothing real is killed.
            init_pid: i32::MAX,
            init_start_time: 1,
            network: None,
        };
        rec.save(root.path()).unwrap();
        let (pid, errors) = cleanup(root.path(), "default", "c1", bundle.path());
        assert_eq!(pid, i32::MAX);
        assert!(errors.is_empty(), "{errors:?}");
        assert!(!record::record_path(root.path(), "default", "c1").exists());
    }
}
