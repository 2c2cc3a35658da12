//! Mounts from /proc/self/mountinfo, and lazily unmounting what a test left behind.

use std::path::Path;

/// Mount points (unescaped) listed in /proc/self/mountinfo: the runtime's own reader.
pub use runtime_native::mount_points;

/// Mount points at or below `dir`.
pub fn mounts_under(dir: &Path) -> Vec<String> {
    let d = dir.to_string_lossy();
    let prefix = format!("{}/", d.trim_end_matches('/'));
    mount_points()
        .into_iter()
        .filter(|m| m == d.as_ref() || m.starts_with(&prefix))
        .collect()
}

/// Detaches every mount below `dir`, deepest first. Returns what it unmounted.
pub fn unmount_all_under(dir: &Path) -> Vec<String> {
    let mut done = Vec::new();
    for _ in 0..10 {
        let mut ms = mounts_under(dir);
        if ms.is_empty() {
            break;
        }
        ms.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in ms {
            if nix::mount::umount2(m.as_str(), nix::mount::MntFlags::MNT_DETACH).is_ok() {
                done.push(m);
            }
        }
    }
    done
}
