//! Mounts from /proc/self/mountinfo, and lazily unmounting what a test left behind.

use std::path::Path;

/// Mount points (unescaped) listed in /proc/self/mountinfo.
pub fn mount_points() -> Vec<String> {
    let s = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    s.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape)
        .collect()
}

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

/// mountinfo escapes space, tab, newline and backslash as \ooo.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn unescapes_octal() {
        assert_eq!(super::unescape(r"/a\040b"), "/a b");
        assert_eq!(super::unescape("/plain"), "/plain");
    }
}
