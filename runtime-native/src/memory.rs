//! Keeping long-lived helper processes (the shim server, the spawner) small in memory.
//!
//! The shim binary carries wasmtime, tokio and the protobuf code: ~26 MB of text, of which an
//! idle shim needs almost none. The kernel maps file pages around every fault
//! (fault-around, 64 KB) and by readahead, so after start-up a shim has megabytes of text
//! mapped that it will not run again. Those pages live in the page cache either way (shared by
//! every shim on the node); what costs per shim is having them mapped: they count in its
//! Rss/Pss and its page tables.
//!
//! `trim_text`, called when a process goes idle, drops the mappings of the executable's text
//! with MADV_DONTNEED (and marks it MADV_RANDOM: no readahead). Only the read-execute mapping
//! of our own binary is touched: text is never written, so dropping it loses nothing — the
//! next call faults its pages back in from the page cache (a minor fault, no I/O). relro and
//! data mappings are left alone.

use std::path::PathBuf;

/// Address ranges of our executable's read-only mappings that hold only clean file pages
/// (never written: `Anonymous: 0 kB` in smaps), which are safe to drop and fault back in.
fn clean_readonly_ranges() -> Vec<(usize, usize)> {
    let exe: PathBuf = match std::fs::read_link("/proc/self/exe") {
        Ok(p) => p,
        Err(_) => return Vec::new(),
    };
    let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
        return Vec::new();
    };
    parse_clean_readonly(&smaps, &exe.to_string_lossy())
}

fn parse_clean_readonly(smaps: &str, exe: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut current: Option<(usize, usize)> = None;
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        let Some(first) = fields.next() else { continue };
        if let Some((start, end)) = first.split_once('-').filter(|_| !first.ends_with(':')) {
            let perms = fields.next().unwrap_or("");
            let path = fields.nth(3).unwrap_or("");
            current = None;
            // Read-only (r--p, r-xp) private mappings of our own executable only.
            if perms.starts_with('r') && !perms.contains('w') && path == exe {
                if let (Ok(s), Ok(e)) = (
                    usize::from_str_radix(start, 16),
                    usize::from_str_radix(end, 16),
                ) {
                    current = Some((s, e));
                }
            }
        } else if first == "Anonymous:" {
            // A relocated (RELRO) page is anonymous: dropping it would lose the relocation.
            if let (Some(range), Some("0")) = (current.take(), fields.next()) {
                out.push(range);
            }
        }
    }
    out
}

/// Unmaps the code and read-only data pages this process is not using right now (see module
/// docs).
pub fn trim_text() {
    for (start, end) in clean_readonly_ranges() {
        // SAFETY: the range is a read-only private file mapping of our own executable holding
        // only clean page-cache pages; after MADV_DONTNEED the next access faults the same
        // bytes back in from the page cache.
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_RANDOM);
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED);
        }
    }
}

/// What an idle process gives back: [`trim_text`], and the free memory inside malloc's heap
/// (`malloc_trim`: a compile or a burst of requests leaves freed chunks that the heap top alone
/// would never return).
pub fn trim_idle() {
    trim_text();
    // SAFETY: malloc_trim only releases free memory; any thread may call it.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_clean_readonly_mappings_of_our_executable_are_selected() {
        let smaps = "\
00200000-00400000 r--p 00000000 fe:00 12                                 /usr/bin/shim
Size:               2048 kB
Anonymous:             0 kB
00500000-02000000 r-xp 00100000 fe:00 12                                 /usr/bin/shim
Size:              27648 kB
Anonymous:             0 kB
02000000-02100000 r--p 01c00000 fe:00 12                                 /usr/bin/shim
Size:               1024 kB
Anonymous:            48 kB
02100000-02200000 rw-p 01d00000 fe:00 12                                 /usr/bin/shim
Anonymous:            12 kB
7f0000000000-7f0000100000 r-xp 00000000 fe:00 13                         /usr/lib/libc.so.6
Anonymous:             0 kB
";
        assert_eq!(
            parse_clean_readonly(smaps, "/usr/bin/shim"),
            vec![(0x0020_0000, 0x0040_0000), (0x0050_0000, 0x0200_0000)]
        );
    }

    #[test]
    fn trimming_keeps_the_process_working() {
        trim_text();
        // This code runs again after its pages were dropped: they fault back in.
        assert!(parse_clean_readonly("", "x").is_empty());
        trim_text();
    }
}
