//! Where a container's cgroup would be (v1 hierarchies and the v2 unified tree).

use std::path::{Path, PathBuf};

const ROOT: &str = "/sys/fs/cgroup";

fn is_cgroup2_root() -> bool {
    Path::new(ROOT).join("cgroup.controllers").exists()
}

/// Every hierarchy root: `/sys/fs/cgroup` itself on pure v2, else each mounted subdirectory
/// (cpu, memory, pids, freezer, systemd, unified, ...).
pub fn hierarchy_roots() -> Vec<PathBuf> {
    if is_cgroup2_root() {
        return vec![PathBuf::from(ROOT)];
    }
    let mut v: Vec<PathBuf> = std::fs::read_dir(ROOT)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Existing cgroup directories named by `rel` (e.g. `ns/id`, as in ctr's default
/// cgroupsPath `/ns/id`) in any hierarchy.
pub fn existing(rel: &str) -> Vec<PathBuf> {
    let rel = rel.trim_start_matches('/');
    hierarchy_roots()
        .into_iter()
        .map(|r| r.join(rel))
        .filter(|p| p.is_dir())
        .collect()
}

/// Best-effort removal of the (empty) directories named by `rel` in every hierarchy,
/// children first.
pub fn remove(rel: &str) {
    for p in existing(rel) {
        remove_tree(&p);
    }
}

fn remove_tree(p: &Path) {
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.filter_map(|e| e.ok()) {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                remove_tree(&e.path());
            }
        }
    }
    let _ = std::fs::remove_dir(p);
}
