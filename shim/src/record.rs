//! What the shim writes to disk about each container, so that `delete` (run by containerd after
//! the shim died, or on every teardown) can clean up from on-disk state alone: kill what is
//! left, unmount the rootfs, remove the cgroup, release leases, and remove the record.
//!
//! Location: `<state root>/<namespace>/<id>.json`, state root `/run/amphi` (overridable with the
//! `AMPHI_STATE_DIR` env for tests). Written atomically (temp + rename).

use std::path::{Path, PathBuf};

use runtime_native::Cgroup;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub id: String,
    pub namespace: String,
    pub bundle: PathBuf,
    /// The rootfs the shim mounted (None when containerd mounted it / no rootfs mounts).
    pub mounted_rootfs: Option<PathBuf>,
    pub cgroup: Option<Cgroup>,
    /// Host pid of the init process, 0 before it exists.
    pub init_pid: i32,
    /// The init's start time (`/proc/<pid>/stat` field 22), 0 when unknown: `delete` signals
    /// the recorded pid only while it still has this start time (a reused pid is left alone).
    #[serde(default)]
    pub init_start_time: u64,
    /// The bridge network lease (amphi network, shim/src/network.rs), None without one.
    #[serde(default)]
    pub network: Option<runtime_native::network::NetworkLease>,
}

/// Root of the shim's own state.
pub fn state_root() -> PathBuf {
    std::env::var_os("AMPHI_STATE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/run/amphi"))
}

pub fn record_path(root: &Path, namespace: &str, id: &str) -> PathBuf {
    root.join(namespace).join(format!("{id}.json"))
}

impl ContainerRecord {
    pub fn save(&self, root: &Path) -> std::io::Result<()> {
        use std::io::Write;
        let path = record_path(root, &self.namespace, &self.id);
        // 0700 dirs, 0600 files: a record names pids, cgroups and mounts of the node.
        runtime_native::private_dir(root)?;
        if let Some(dir) = path.parent() {
            runtime_native::private_dir(dir)?;
        }
        let tmp = path.with_extension("json.tmp");
        runtime_native::private_file(&tmp, false)?
            .write_all(&serde_json::to_vec(self).map_err(std::io::Error::other)?)?;
        std::fs::rename(&tmp, &path)
    }

    pub fn load(root: &Path, namespace: &str, id: &str) -> std::io::Result<ContainerRecord> {
        let data = std::fs::read(record_path(root, namespace, id))?;
        serde_json::from_slice(&data).map_err(std::io::Error::other)
    }

    pub fn remove(root: &Path, namespace: &str, id: &str) -> std::io::Result<()> {
        match std::fs::remove_file(record_path(root, namespace, id)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}
