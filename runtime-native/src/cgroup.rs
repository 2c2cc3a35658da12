//! The container's cgroup: create at the spec's `cgroupsPath`, apply resources, stats, freeze,
//! update, kill-all, delete. cgroup v1 (one directory per controller) and v2 (unified).
//! Paths are taken from `linux.cgroupsPath`, either a path (`/default/ctr-id`) or the systemd
//! form `slice:prefix:name` (mapped to `slice/prefix-name.scope` in the cgroupfs tree).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::Result;

/// A container's cgroup. Serializable, so `delete` can clean it up from on-disk state alone.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Cgroup {
    // implementation detail: v1 or v2 paths
    _private: (),
}

/// Resource usage, independent of containerd's protobufs (the shim converts).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CgroupStats {
    pub v2: bool,
    pub pids_current: u64,
    pub pids_limit: u64,
    pub cpu_usage_ns: u64,
    pub cpu_user_ns: u64,
    pub cpu_system_ns: u64,
    pub cpu_nr_periods: u64,
    pub cpu_nr_throttled: u64,
    pub cpu_throttled_ns: u64,
    pub memory_usage: u64,
    pub memory_limit: u64,
    pub memory_max_usage: u64,
    pub memory_swap_usage: u64,
    pub memory_cache: u64,
    pub memory_rss: u64,
    pub memory_oom_kill: u64,
    /// Raw `memory.stat` keys (v1 or v2 names).
    pub memory_stat: Vec<(String, u64)>,
}

impl Cgroup {
    /// Creates the cgroup for `spec.linux.cgroupsPath` (default `/amphi/<id>` when unset) and
    /// applies `spec.linux.resources`.
    pub fn create(id: &str, spec: &oci_spec::runtime::Spec) -> Result<Cgroup> {
        todo!()
    }
    /// The `cgroup.procs` files a process writes itself into to join.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        todo!()
    }
    pub fn pids(&self) -> Result<Vec<i32>> {
        todo!()
    }
    pub fn stats(&self) -> Result<CgroupStats> {
        todo!()
    }
    pub fn freeze(&self) -> Result<()> {
        todo!()
    }
    pub fn thaw(&self) -> Result<()> {
        todo!()
    }
    /// Applies new resources (Update RPC).
    pub fn update(&self, resources: &oci_spec::runtime::LinuxResources) -> Result<()> {
        todo!()
    }
    /// Sends `signal` to every process in the cgroup.
    pub fn signal_all(&self, signal: i32) -> Result<()> {
        todo!()
    }
    /// Kills what is left (SIGKILL, thawing first if frozen), waits briefly for the cgroup to
    /// empty, and removes it. Idempotent: a missing cgroup is success.
    pub fn destroy(&self) -> Result<()> {
        todo!()
    }
    /// An fd that becomes readable when the cgroup sees an OOM kill (v1: eventfd on
    /// memory.oom_control; v2: inotify on memory.events). `None` if not supported.
    pub fn oom_notifier(&self) -> Result<Option<std::os::fd::OwnedFd>> {
        todo!()
    }
}
