//! seccomp through containerd: `ctr run --seccomp` gives the container containerd's own default
//! profile (the one Docker and Kubernetes' RuntimeDefault use). A native process runs under it
//! (filter mode 2 in /proc/self/status), and so does a wasm module, which the container process
//! runs in-process with wasmtime (mmap, mprotect, futex, signals, threads must be allowed).

use amphi_tests::wasm_images::{self, Target};
use amphi_tests::{e2e, Case, Runtime};
use anyhow::Result;

fn native_default_profile(c: &mut Case) -> Result<()> {
    let id = c.id("sc");
    let out = c
        .run_rm(
            &["--seccomp"],
            &id,
            &["sh", "-c", "grep Seccomp: /proc/self/status; echo done"],
        )?
        .ok()?;
    anyhow::ensure!(
        out.stdout.contains("Seccomp:\t2") && out.stdout.contains("done"),
        "expected filter mode 2: {}",
        out.describe()
    );
    // Without --seccomp ctr sets no profile.
    let id = c.id("nosc");
    let out = c
        .run_rm(&[], &id, &["grep", "Seccomp:", "/proc/self/status"])?
        .ok()?;
    anyhow::ensure!(out.stdout.contains("Seccomp:\t0"), "{}", out.describe());
    Ok(())
}

e2e!(seccomp_default_profile, native_default_profile);

fn wasm_default_profile(c: &mut Case) -> Result<()> {
    if c.runtime != Runtime::Amphi {
        return Ok(());
    }
    // The same image names as wasm.rs: the harness caches an image archive per module file.
    for (target, tag, name) in [
        (Target::P1, "p1", "docker.io/amphi/hello-wasm:e2e"),
        (Target::P2, "p2", "docker.io/amphi/hello-p2-wasm:e2e"),
    ] {
        let module = wasm_images::module("hello", target)?;
        let image = wasm_images::import_rootfs_module(&c.cd, &module, name)?;
        let id = c.id(&format!("wsc{tag}"));
        let out = c
            .with_image(&image)
            .run_rm(&["--seccomp"], &id, &[])?
            .ok()?;
        anyhow::ensure!(
            out.stdout.contains("hello from wasm"),
            "wasm ({tag}) under the default seccomp profile: {}",
            out.describe()
        );
    }
    // A running wasm task: the host sees its container process in filter mode.
    let module = wasm_images::module("sleeper", Target::P1)?;
    let image =
        wasm_images::import_rootfs_module(&c.cd, &module, "docker.io/amphi/sleeper-wasm:e2e")?;
    let id = c.id("wscsleep");
    c.with_image(&image)
        .run_detached(&["--seccomp"], &id, &[])?;
    let (pid, _) = c
        .task(&id)?
        .ok_or_else(|| anyhow::anyhow!("task {id} not listed"))?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let mode = status
        .lines()
        .find(|l| l.starts_with("Seccomp:"))
        .unwrap_or("");
    c.remove(&id)?;
    anyhow::ensure!(mode == "Seccomp:\t2", "wasm task {pid}: {mode:?}");
    Ok(())
}

mod wasm_seccomp {
    use super::*;
    fn run(v: amphi_tests::Version) {
        amphi_tests::require_root();
        amphi_tests::run_case(v, Runtime::Amphi, "wasm_seccomp", wasm_default_profile)
    }
    #[test]
    fn containerd_1_7() {
        run(amphi_tests::Version::V1_7)
    }
    #[test]
    fn containerd_2_1() {
        run(amphi_tests::Version::V2_1)
    }
}

// ENOSYS for syscalls newer than the profile (DESIGN.md, runtime-native/src/security/seccomp/
// `enosys_stub`): under an allow-list profile whose default is ERRNO(EPERM), a syscall number
// above the largest one the profile names fails with ENOSYS (so glibc falls back from clone3,
// faccessat2, ...), one below it that the profile does not name keeps the default EPERM, and
// the named ones work. A static C probe (tests/scripts/syscall-probe.c, compiled at test time)
// makes the raw syscalls; runc applies the same patch, so the runc variant passes too.

/// What a static binary needs to start and the runtime needs between loading the filter and
/// execve. Found by trial (containerd 2.1): amphi needs write, close, statx, access, mprotect,
/// brk, getpid, sendmsg, recvmsg, execve, exit_group and arch_prctl (close_range is not
/// listed: above the maximum it gets ENOSYS and the runtime falls back), runc also fstatfs;
/// the rest is the usual start-up of a static glibc binary, so that an unrelated change in
/// either runtime does not break this test. Nothing above rseq (334) is named.
const PROBE_SYSCALLS: &[&str] = &[
    "read",
    "write",
    "close",
    "stat",
    "fstat",
    "lstat",
    "newfstatat",
    "statx",
    "access",
    "faccessat",
    "mmap",
    "mprotect",
    "munmap",
    "brk",
    "rt_sigaction",
    "rt_sigprocmask",
    "rt_sigreturn",
    "ioctl",
    "fstatfs",
    "writev",
    "getpid",
    "sendmsg",
    "recvmsg",
    "execve",
    "exit",
    "exit_group",
    "uname",
    "fcntl",
    "getdents64",
    "readlink",
    "arch_prctl",
    "gettid",
    "futex",
    "set_tid_address",
    "openat",
    "set_robust_list",
    "dup3",
    "prlimit64",
    "getrandom",
    "rseq",
];

/// getppid: harmless, and not in [`PROBE_SYSCALLS`] though below their maximum.
const UNLISTED_BELOW: u32 = 110;
/// faccessat2 and a number past it: above the profile's maximum.
const ABOVE: [u32; 2] = [439, 450];

/// Compiles tests/scripts/syscall-probe.c with `cc -static` into the cache dir (once per
/// source content), returning the binary's path.
fn syscall_probe() -> Result<std::path::PathBuf> {
    use anyhow::Context;
    use std::hash::{Hash, Hasher};
    let src = amphi_tests::paths::workspace_root().join("tests/scripts/syscall-probe.c");
    let text = std::fs::read(&src).with_context(|| format!("reading {}", src.display()))?;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut h);
    let out = amphi_tests::paths::cache_dir().join(format!("syscall-probe-{:016x}", h.finish()));
    if out.is_file() {
        return Ok(out);
    }
    // Concurrent cases each compile to their own name; the rename is atomic.
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let tmp = format!("{}.{}-{n}.partial", out.display(), std::process::id());
    let mut cmd = std::process::Command::new("cc");
    cmd.args(["-static", "-O2", "-o", &tmp]).arg(&src);
    let r = amphi_tests::cmd::run(cmd, std::time::Duration::from_secs(120));
    let r = match r {
        Err(e)
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::NotFound)
            }) =>
        {
            anyhow::bail!(
                "`cc` not found: the seccomp ENOSYS test compiles a static C probe; \
                 apt-get install gcc libc6-dev (scripts/setup.sh installs build-essential)"
            )
        }
        r => r?,
    };
    r.ok().context(
        "compiling tests/scripts/syscall-probe.c with `cc -static` \
         (needs gcc and libc6-dev's libc.a)",
    )?;
    std::fs::rename(&tmp, &out)?;
    Ok(out)
}

fn enosys_above_profile(c: &mut Case) -> Result<()> {
    let probe = syscall_probe()?;
    let image = wasm_images::import_rootfs_files(
        &c.cd,
        &[(probe.as_path(), "/probe")],
        "docker.io/amphi/syscall-probe:e2e",
        None,
    )?;
    let profile = serde_json::json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": 1,
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": [{ "names": PROBE_SYSCALLS, "action": "SCMP_ACT_ALLOW" }],
    });
    let file = c.cd.dir.join("enosys-profile.json");
    std::fs::write(&file, serde_json::to_vec_pretty(&profile)?)?;
    let file = file.to_string_lossy().into_owned();
    let id = c.id("enosys");
    let nrs: Vec<String> = std::iter::once(39)
        .chain([UNLISTED_BELOW])
        .chain(ABOVE)
        .map(|n| n.to_string())
        .collect();
    let mut args = vec![
        "run",
        "--rm",
        "--runtime",
        c.runtime.name(),
        "--seccomp",
        "--seccomp-profile",
        &file,
        &image,
        &id,
        "/probe",
    ];
    args.extend(nrs.iter().map(String::as_str));
    let out = c.ctr(&args)?.ok()?;
    let line = |nr: u32| {
        out.stdout
            .lines()
            .find(|l| l.starts_with(&format!("nr={nr} ")))
            .unwrap_or("")
            .to_string()
    };
    out.expect_stdout("probe pid=1\n", "the probe did not start under the profile")?;
    // getpid is listed: the container's init is pid 1.
    anyhow::ensure!(
        line(39) == "nr=39 ret=1 errno=0",
        "listed getpid: {}",
        out.describe()
    );
    anyhow::ensure!(
        line(UNLISTED_BELOW).ends_with(" errno=EPERM"),
        "unlisted syscall {UNLISTED_BELOW} below the profile's maximum must get the default \
         EPERM: {}",
        out.describe()
    );
    for nr in ABOVE {
        anyhow::ensure!(
            line(nr).ends_with(" errno=ENOSYS"),
            "syscall {nr} above the profile's maximum must get ENOSYS: {}",
            out.describe()
        );
    }
    Ok(())
}

e2e!(seccomp_enosys_above_profile, enosys_above_profile);
