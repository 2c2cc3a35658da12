//! Making a wasm container's process read as its module in `ps`, `top` and
//! `/proc/<pid>/cmdline`.
//!
//! The process is a clone of the shim's spawner, so without this every wasm task reads as
//! `amphi-spawner` with the shim's command line. Two things are set, in the container process
//! before the guest runs:
//! - the comm (`/proc/<pid>/comm`, what `top` shows): `PR_SET_NAME` with the module's file name;
//! - the command line: `PR_SET_MM_MAP` pointing the kernel's argument area at a new buffer
//!   holding `argv` (`/app.wasm arg…`). Unlike `PR_SET_MM_ARG_START`/`_END`, which need
//!   `CAP_SYS_RESOURCE` (a container usually lacks it), `PR_SET_MM_MAP` without a new exe fd is
//!   allowed to any process for its own mm. It needs the current layout, read from
//!   `/proc/self/stat`. When that fails (no procfs, a seccomp profile refusing prctl), the
//!   shim's original argument area is overwritten in place instead, truncated to its size.

/// `struct prctl_mm_map` of `<linux/prctl.h>`.
#[repr(C)]
#[derive(Default)]
struct PrctlMmMap {
    start_code: u64,
    end_code: u64,
    start_data: u64,
    end_data: u64,
    start_brk: u64,
    brk: u64,
    start_stack: u64,
    arg_start: u64,
    arg_end: u64,
    env_start: u64,
    env_end: u64,
    auxv: u64,
    auxv_size: u32,
    exe_fd: u32,
}

const PR_SET_MM: libc::c_int = 35;
const PR_SET_MM_MAP: libc::c_ulong = 14;

/// The comm for a module path: its file name, cut to the kernel's 15 bytes (at a char
/// boundary).
pub(crate) fn comm_for(module: &str) -> String {
    let base = module.rsplit('/').next().unwrap_or(module);
    let base = if base.is_empty() { "wasm" } else { base };
    let mut end = base.len().min(15);
    while !base.is_char_boundary(end) {
        end -= 1;
    }
    base[..end].to_string()
}

/// `args` joined by NUL bytes, NUL-terminated, without NULs inside an argument.
fn cmdline_bytes(args: &[String]) -> Vec<u8> {
    let mut v = Vec::new();
    for a in args {
        v.extend(a.bytes().filter(|b| *b != 0));
        v.push(0);
    }
    if v.is_empty() {
        v.push(0);
    }
    v
}

/// Fields 26..=28 and 45..=51 of `/proc/self/stat` (1-based), after the `(comm)`.
fn layout_from_stat(stat: &str) -> Option<PrctlMmMap> {
    let rest = &stat[stat.rfind(')')? + 2..];
    // `rest` starts at field 3 (state).
    let f: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| -> Option<u64> { f.get(n - 3)?.parse().ok() };
    Some(PrctlMmMap {
        start_code: field(26)?,
        end_code: field(27)?,
        start_stack: field(28)?,
        start_data: field(45)?,
        end_data: field(46)?,
        start_brk: field(47)?,
        arg_start: field(48)?,
        arg_end: field(49)?,
        env_start: field(50)?,
        env_end: field(51)?,
        ..Default::default()
    })
}

fn set_comm(name: &str) {
    if let Ok(c) = std::ffi::CString::new(name) {
        // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
        unsafe { libc::prctl(libc::PR_SET_NAME, c.as_ptr(), 0, 0, 0) };
    }
}

/// Points the kernel's argument area at a new buffer holding `cmdline`.
fn set_cmdline_mm_map(cmdline: Vec<u8>) -> bool {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return false;
    };
    let Some(mut map) = layout_from_stat(&stat) else {
        return false;
    };
    // The buffer must stay for the life of the process: the kernel reads it for every
    // `/proc/<pid>/cmdline`.
    let buf: &'static mut [u8] = Vec::leak(cmdline);
    map.arg_start = buf.as_ptr() as u64;
    map.arg_end = map.arg_start + buf.len() as u64;
    // SAFETY: sbrk(0) only reads the current break.
    map.brk = unsafe { libc::sbrk(0) } as u64;
    map.exe_fd = u32::MAX;
    // SAFETY: the kernel copies `map` (its size is passed) and only reads user memory later.
    let r = unsafe {
        libc::prctl(
            PR_SET_MM,
            PR_SET_MM_MAP,
            &map as *const PrctlMmMap as libc::c_ulong,
            std::mem::size_of::<PrctlMmMap>() as libc::c_ulong,
            0,
        )
    };
    r == 0
}

/// Overwrites the original argument area (the shim's `argv` strings) with as much of
/// `cmdline` as fits, NUL-padded.
fn set_cmdline_in_place(cmdline: &[u8]) -> bool {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return false;
    };
    let Some(map) = layout_from_stat(&stat) else {
        return false;
    };
    let (start, end) = (map.arg_start as usize, map.arg_end as usize);
    if start == 0 || end <= start {
        return false;
    }
    let len = end - start;
    let n = cmdline.len().min(len);
    // SAFETY: [arg_start, arg_end) is this process's argument area, mapped and writable (the
    // initial stack); nothing reads the shim's argv strings any more (std copied them).
    unsafe {
        let area = std::slice::from_raw_parts_mut(start as *mut u8, len);
        area[..n].copy_from_slice(&cmdline[..n]);
        area[n..].fill(0);
        area[len - 1] = 0;
    }
    true
}

/// Makes this process read as `args[0]` with `args` (see the module docs). Call it on the
/// main thread of the container process.
pub fn set_process_title(args: &[String]) {
    let module = args.first().map(String::as_str).unwrap_or("wasm");
    set_comm(&comm_for(module));
    let cmdline = cmdline_bytes(args);
    if !set_cmdline_mm_map(cmdline.clone()) && !set_cmdline_in_place(&cmdline) {
        log::debug!("wasm: cannot set the command line of {module}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comm_is_the_module_file_name_cut_to_15_bytes() {
        assert_eq!(comm_for("/app.wasm"), "app.wasm");
        assert_eq!(
            comm_for("bin/a-very-long-module-name.wasm"),
            "a-very-long-mod"
        );
        assert_eq!(comm_for("/dir/"), "wasm");
        assert_eq!(comm_for("/é12345678901234"), "é1234567890123");
    }

    #[test]
    fn cmdline_is_nul_separated() {
        let a = vec!["/app.wasm".to_string(), "x\0y".to_string(), "z".into()];
        assert_eq!(cmdline_bytes(&a), b"/app.wasm\0xy\0z\0");
    }

    #[test]
    fn layout_parses_our_own_stat() {
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
        let m = layout_from_stat(&stat).unwrap();
        assert!(m.start_code < m.end_code && m.arg_start < m.arg_end && m.env_start < m.env_end);
    }

    /// In a forked child (the test harness is multi-threaded, comm is per thread): after
    /// `set_process_title`, `/proc/self/cmdline` and comm read as the module.
    #[test]
    fn title_shows_in_proc() {
        let (r, w) = nix::unistd::pipe().unwrap();
        // SAFETY: the child only makes syscalls, reads procfs and exits.
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                set_process_title(&["/app.wasm".into(), "--port".into(), "9".into()]);
                let cmd = std::fs::read("/proc/self/cmdline").unwrap_or_default();
                let comm = std::fs::read("/proc/thread-self/comm").unwrap_or_default();
                let mut out = cmd;
                out.push(b'|');
                out.extend(comm);
                let _ = nix::unistd::write(&w, &out);
                unsafe { libc::_exit(0) };
            }
            nix::unistd::ForkResult::Parent { child } => {
                drop(w);
                nix::sys::wait::waitpid(child, None).unwrap();
                let mut got = Vec::new();
                std::io::Read::read_to_end(&mut std::fs::File::from(r), &mut got).unwrap();
                assert_eq!(got, b"/app.wasm\0--port\09\0|app.wasm\n");
            }
        }
    }
}
