//! Root-only integration test: the cgroup v2 device program on this kernel. A child cgroup is
//! made in the cgroup2 hierarchy (the unified one beside v1 on hybrid hosts), a device program
//! is attached and updated with `runtime_native::security::devices_bpf::apply`, and forked children moved
//! into that cgroup try to open /dev/null (c 1:3) and /dev/zero (c 1:5). `harness = false`:
//! the test forks, so it stays single-threaded.

mod common;

use std::ffi::CStr;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceCgroupBuilder, LinuxDeviceType};
use runtime_native::security::devices_bpf;

fn rule(
    allow: bool,
    typ: LinuxDeviceType,
    dev: Option<(i64, i64)>,
    access: &str,
) -> LinuxDeviceCgroup {
    let mut b = LinuxDeviceCgroupBuilder::default()
        .allow(allow)
        .typ(typ)
        .access(access);
    if let Some((major, minor)) = dev {
        b = b.major(major).minor(minor);
    }
    b.build().unwrap()
}

fn deny_all() -> LinuxDeviceCgroup {
    rule(false, LinuxDeviceType::A, None, "rwm")
}

/// Where cgroup2 is mounted (`/sys/fs/cgroup` on v2 hosts, `/sys/fs/cgroup/unified` on hybrid).
fn cgroup2_mount() -> Option<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    text.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        let mount = left.split_whitespace().nth(4)?;
        (right.split_whitespace().next()? == "cgroup2").then(|| PathBuf::from(mount))
    })
}

const NULL: &CStr = c"/dev/null";
const ZERO: &CStr = c"/dev/zero";

/// Opens each `(path, flags)` in a child moved into the cgroup `dir`; 0 or the errno, per open.
fn probe(dir: &Path, opens: &[(&CStr, i32)]) -> Vec<i32> {
    let mut go = [0; 2];
    let mut out = [0; 2];
    // SAFETY: pipe fills the arrays with two new fds each.
    assert_eq!(unsafe { libc::pipe2(go.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    assert_eq!(unsafe { libc::pipe2(out.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    let paths: Vec<(*const libc::c_char, i32)> =
        opens.iter().map(|(p, f)| (p.as_ptr(), *f)).collect();
    // SAFETY: this process has a single thread; the child only makes raw syscalls and _exits.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        unsafe {
            let mut b = 0u8;
            if libc::read(go[0], &mut b as *mut u8 as *mut libc::c_void, 1) != 1 {
                libc::_exit(2);
            }
            for (p, f) in &paths {
                let fd = libc::open(*p, *f | libc::O_CLOEXEC);
                let r: i32 = if fd >= 0 {
                    libc::close(fd);
                    0
                } else {
                    *libc::__errno_location()
                };
                libc::write(out[1], &r as *const i32 as *const libc::c_void, 4);
            }
            libc::_exit(0);
        }
    }
    unsafe {
        libc::close(go[0]);
        libc::close(out[1]);
    }
    let joined = std::fs::write(dir.join("cgroup.procs"), pid.to_string());
    let b = 1u8;
    // SAFETY: plain writes/reads on our pipe ends.
    unsafe { libc::write(go[1], &b as *const u8 as *const libc::c_void, 1) };
    let mut res = Vec::new();
    for _ in opens {
        let mut r = 0i32;
        let n = unsafe { libc::read(out[0], &mut r as *mut i32 as *mut libc::c_void, 4) };
        assert_eq!(n, 4, "child reported nothing");
        res.push(r);
    }
    unsafe {
        libc::close(go[1]);
        libc::close(out[0]);
    }
    let mut status = 0;
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    joined.unwrap_or_else(|e| panic!("move {pid} into {}: {e}", dir.display()));
    res
}

fn run(dir: &Path) {
    let (rd, rdwr) = (libc::O_RDONLY, libc::O_RDWR);
    let eperm = libc::EPERM;
    let null = || rule(true, LinuxDeviceType::C, Some((1, 3)), "rwm");

    // No program yet: both open.
    assert_eq!(probe(dir, &[(NULL, rdwr), (ZERO, rdwr)]), [0, 0]);

    // Only /dev/null.
    devices_bpf::apply(dir, &[deny_all(), null()]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(devices_bpf::attached(dir).unwrap().len(), 1);
    assert_eq!(
        probe(dir, &[(NULL, rdwr), (ZERO, rd), (ZERO, rdwr)]),
        [0, eperm, eperm]
    );
    println!("devices_bpf: only c 1:3 allowed: /dev/null opens, /dev/zero EPERM");

    // Update: /dev/zero too. The old program is gone, the new one alone is attached.
    let zero = rule(true, LinuxDeviceType::C, Some((1, 5)), "rwm");
    devices_bpf::apply(dir, &[deny_all(), null(), zero.clone()]).unwrap();
    assert_eq!(devices_bpf::attached(dir).unwrap().len(), 1);
    assert_eq!(probe(dir, &[(NULL, rdwr), (ZERO, rdwr)]), [0, 0]);
    println!("devices_bpf: updated to c 1:3 and c 1:5: both open, one program attached");

    // A later deny of w: /dev/zero still opens for reading, not for read-write.
    let no_write = rule(false, LinuxDeviceType::C, Some((1, 5)), "w");
    devices_bpf::apply(dir, &[deny_all(), null(), zero, no_write]).unwrap();
    assert_eq!(devices_bpf::attached(dir).unwrap().len(), 1);
    assert_eq!(
        probe(dir, &[(ZERO, rd), (ZERO, rdwr), (NULL, rdwr)]),
        [0, eperm, 0]
    );
    println!("devices_bpf: deny c 1:5 w: /dev/zero read-only opens, read-write EPERM");

    // Errors say what failed where.
    let e = devices_bpf::apply(Path::new("/nonexistent-cgroup"), &[deny_all()])
        .unwrap_err()
        .to_string();
    assert!(e.contains("/nonexistent-cgroup"), "{e}");
}

fn main() {
    if !common::root_or_skip("devices_bpf") {
        return;
    }
    let Some(mount) = cgroup2_mount() else {
        println!("devices_bpf: skipped, no cgroup2 hierarchy mounted");
        return;
    };
    let dir = mount.join(format!("amphi-devtest-{}", std::process::id()));
    std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    let result = std::panic::catch_unwind(|| run(&dir));
    let removed = std::fs::remove_dir(&dir);
    if let Err(p) = result {
        std::panic::resume_unwind(p);
    }
    removed.unwrap_or_else(|e| panic!("remove {}: {e}", dir.display()));
    println!("devices_bpf: ok");
}
