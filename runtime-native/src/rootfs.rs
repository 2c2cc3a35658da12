//! Mounting the rootfs containerd prepared (`CreateTaskRequest.rootfs`, usually one overlay
//! mount from the snapshotter) on `bundle/rootfs`, in the caller's mount namespace, and
//! unmounting it again on delete.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::Result;

/// One mount as containerd describes it (`containerd.types.Mount`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MountSpec {
    pub kind: String,
    pub source: String,
    pub target: String,
    pub options: Vec<String>,
}

/// Mounts `mounts` on `rootfs` in order. On failure, unmounts what it mounted.
pub fn mount_all(mounts: &[MountSpec], rootfs: &Path) -> Result<()> {
    todo!()
}

/// Unmounts everything at or under `rootfs` (lazily if busy). Missing or unmounted is success.
pub fn unmount_all(rootfs: &Path) -> Result<()> {
    todo!()
}
