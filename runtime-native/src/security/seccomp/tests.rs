//! Unit tests of the seccomp modules: compiling, the ENOSYS stub (run in forked children
//! under the filter), loading flags, and the agent message.

use std::os::fd::AsRawFd;
use std::path::Path;

use libseccomp::ScmpArch;
use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompFilterFlag, LinuxSeccompOperator, Spec,
};

use super::enosys::*;
use super::load::export;
use super::*;
use oci_spec::runtime::{LinuxSeccompArgBuilder, LinuxSeccompBuilder, LinuxSyscallBuilder};

fn rule(names: &[&str], act: LinuxSeccompAction) -> oci_spec::runtime::LinuxSyscall {
    LinuxSyscallBuilder::default()
        .names(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .action(act)
        .build()
        .unwrap()
}

fn profile(
    default: LinuxSeccompAction,
    calls: Vec<oci_spec::runtime::LinuxSyscall>,
) -> LinuxSeccomp {
    LinuxSeccompBuilder::default()
        .default_action(default)
        .syscalls(calls)
        .build()
        .unwrap()
}

/// Errno by default, `names` allowed.
fn allow_list(names: &[&str]) -> LinuxSeccomp {
    profile(
        LinuxSeccompAction::ScmpActErrno,
        vec![rule(names, LinuxSeccompAction::ScmpActAllow)],
    )
}

/// x86 in its three modes and aarch64: a profile for both kinds of host.
const X86_AND_AARCH64: [Arch; 4] = [
    Arch::ScmpArchX86_64,
    Arch::ScmpArchX86,
    Arch::ScmpArchX32,
    Arch::ScmpArchAarch64,
];

/// Runs `f` in a forked child with the filter loaded (no_new_privs set, so no privilege
/// needed); returns the child's exit code. Only raw syscalls after the fork.
fn run_filtered(bpf: &[u8], f: fn() -> i32) -> i32 {
    let prog = libc::sock_fprog {
        len: (bpf.len() / 8) as u16,
        filter: bpf.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: the child only makes raw syscalls and _exits.
    unsafe {
        let pid = libc::fork();
        assert!(pid >= 0);
        if pid == 0 {
            libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
            if libc::syscall(libc::SYS_seccomp, 1, 0, &prog) != 0 {
                libc::_exit(100);
            }
            libc::_exit(f());
        }
        let mut st = 0;
        libc::waitpid(pid, &mut st, 0);
        if libc::WIFEXITED(st) {
            libc::WEXITSTATUS(st)
        } else {
            128 + libc::WTERMSIG(st)
        }
    }
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

#[test]
fn deny_list_blocks_with_errno() {
    let mut mkdir = rule(&["mkdir", "mkdirat"], LinuxSeccompAction::ScmpActErrno);
    mkdir.set_errno_ret(Some(libc::EROFS as u32));
    let p = profile(
        LinuxSeccompAction::ScmpActAllow,
        vec![
            mkdir,
            rule(&["no_such_syscall_xyz"], LinuxSeccompAction::ScmpActErrno),
            // Same as the default: skipped.
            rule(&["getpid"], LinuxSeccompAction::ScmpActAllow),
        ],
    );
    let f = compile(&p).unwrap();
    assert_eq!(f.unknown, vec!["no_such_syscall_xyz".to_string()]);
    assert!(!f.notify);
    assert_eq!(f.rules, 2);
    let bpf = f.bpf().unwrap();
    assert!(!bpf.is_empty() && bpf.len().is_multiple_of(8));
    let code = run_filtered(&bpf, || unsafe {
        let r = libc::syscall(
            libc::SYS_mkdirat,
            libc::AT_FDCWD,
            c"/nonexistent-dir/x".as_ptr(),
            0o755,
        );
        if r == -1 && errno() == libc::EROFS {
            // getpid still works.
            if libc::getpid() > 0 {
                return 0;
            }
        }
        1
    });
    assert_eq!(code, 0);
}

#[test]
fn allow_list_with_default_errno_and_args() {
    // Default: ENOSYS... except what is allowed; personality only with arg0 == 0xffffffff
    // (a query), and dup3 only with arg2 masked-equal to 0.
    let mut allowed = rule(BASICS, LinuxSeccompAction::ScmpActAllow);
    allowed.set_args(None);
    let mut pers = rule(&["personality"], LinuxSeccompAction::ScmpActAllow);
    pers.set_args(Some(vec![LinuxSeccompArgBuilder::default()
        .index(0usize)
        .value(0xffff_ffffu64)
        .op(LinuxSeccompOperator::ScmpCmpEq)
        .build()
        .unwrap()]));
    let mut dup3 = rule(&["dup3"], LinuxSeccompAction::ScmpActAllow);
    dup3.set_args(Some(vec![LinuxSeccompArgBuilder::default()
        .index(2usize)
        .value(libc::O_CLOEXEC as u64)
        .value_two(0u64)
        .op(LinuxSeccompOperator::ScmpCmpMaskedEq)
        .build()
        .unwrap()]));
    let mut p = profile(LinuxSeccompAction::ScmpActErrno, vec![allowed, pers, dup3]);
    p.set_default_errno_ret(Some(libc::ENOSYS as u32));
    p.set_architectures(Some(vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86]));
    let f = compile(&p).unwrap();
    let bpf = f.bpf().unwrap();
    let code = run_filtered(&bpf, || unsafe {
        // Not in the list: the default errno.
        if libc::syscall(libc::SYS_getppid) != -1 || errno() != libc::ENOSYS {
            return 1;
        }
        // Allowed only for the query value.
        if libc::syscall(libc::SYS_personality, 0xffff_ffffu64) == -1 {
            return 2;
        }
        if libc::syscall(libc::SYS_personality, 0u64) != -1 || errno() != libc::ENOSYS {
            return 3;
        }
        // Allowed without O_CLOEXEC only.
        if libc::syscall(libc::SYS_dup3, 1, 50, 0) != 50 {
            return 4;
        }
        if libc::syscall(libc::SYS_dup3, 1, 51, libc::O_CLOEXEC) != -1 {
            return 5;
        }
        0
    });
    assert_eq!(code, 0);
}

#[test]
fn same_argument_twice_becomes_separate_rules() {
    let arg = |v: u64| {
        LinuxSeccompArgBuilder::default()
            .index(0usize)
            .value(v)
            .op(LinuxSeccompOperator::ScmpCmpEq)
            .build()
            .unwrap()
    };
    let mut r = rule(&["personality"], LinuxSeccompAction::ScmpActErrno);
    r.set_args(Some(vec![arg(8), arg(0x20000)]));
    let f = compile(&profile(LinuxSeccompAction::ScmpActAllow, vec![r])).unwrap();
    assert_eq!(f.rules, 2);
}

#[test]
fn errors_are_clear() {
    let mut r = rule(&["read"], LinuxSeccompAction::ScmpActAllow);
    r.set_args(Some(vec![LinuxSeccompArgBuilder::default()
        .index(6usize)
        .value(1u64)
        .build()
        .unwrap()]));
    let e = compile(&profile(LinuxSeccompAction::ScmpActErrno, vec![r]))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("argument index 6"), "{e}");

    let e = compile(&profile(
        LinuxSeccompAction::ScmpActAllow,
        vec![rule(&["sendmsg"], LinuxSeccompAction::ScmpActNotify)],
    ))
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("sendmsg"), "{e}");

    // Notify without a listener: refused before anything is loaded.
    let mut spec = Spec::default();
    let mut linux = spec.linux().clone().unwrap();
    linux.set_seccomp(Some(profile(
        LinuxSeccompAction::ScmpActAllow,
        vec![rule(&["mkdir"], LinuxSeccompAction::ScmpActNotify)],
    )));
    spec.set_linux(Some(linux));
    let e = prepare(&spec, "c1", Path::new("/b"), "creating")
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("listenerPath"), "{e}");

    // An unknown action is refused when the spec is read.
    let bad = r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["read"],"action":"SCMP_ACT_NOPE"}]}"#;
    assert!(serde_json::from_str::<LinuxSeccomp>(bad).is_err());
}

#[test]
fn flags_and_arches() {
    let mut p = allow_list(&["read", "write"]);
    p.set_flags(Some(vec![
        LinuxSeccompFilterFlag::SeccompFilterFlagLog,
        LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow,
        LinuxSeccompFilterFlag::SeccompFilterFlagTsync,
    ]));
    p.set_architectures(Some(X86_AND_AARCH64.to_vec()));
    let f = compile(&p).unwrap();
    assert!(f.ctx.get_ctl_log().unwrap());
    assert!(f.ctx.get_ctl_ssb().unwrap());
    assert!(!f.ctx.get_ctl_nnp().unwrap());
    assert!(f.ctx.is_arch_present(ScmpArch::Aarch64).unwrap());
    // A JSON profile as containerd writes it, with an unknown flag: refused on read.
    let bad = r#"{"defaultAction":"SCMP_ACT_ALLOW","flags":["SECCOMP_FILTER_FLAG_NOPE"]}"#;
    assert!(serde_json::from_str::<LinuxSeccomp>(bad).is_err());
}

/// WAIT_KILLABLE_RECV, which libseccomp 2.5 cannot set, is loaded through seccomp(2):
/// the filter with a NOTIFY rule loads with the flag and hands back a listener fd.
#[test]
fn wait_killable_recv_without_libseccomp_2_6() {
    let mut p = profile(
        LinuxSeccompAction::ScmpActAllow,
        vec![rule(&["getppid"], LinuxSeccompAction::ScmpActNotify)],
    );
    p.set_flags(Some(vec![
        LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv,
    ]));
    let f = compile(&p).unwrap();
    assert!(f.wait_killable && f.notify && f.patched.is_none());
    // In a child: no_new_privs (no privilege needed), load, expect a listener fd.
    // SAFETY: the child only loads the filter and _exits.
    let code = unsafe {
        let pid = libc::fork();
        assert!(pid >= 0);
        if pid == 0 {
            libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
            let code = match f.load() {
                Ok(Some(fd)) if fd.as_raw_fd() > 2 => 0,
                Ok(_) => 2,
                Err(e) if e.to_string().contains("5.19") => 3,
                Err(_) => 4,
            };
            libc::_exit(code);
        }
        let mut st = 0;
        libc::waitpid(pid, &mut st, 0);
        libc::WEXITSTATUS(st)
    };
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let mut numbers = release
        .split(['.', '-'])
        .map(|n| n.trim().parse::<u32>().unwrap_or(0));
    let version = (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0));
    let new_kernel = version >= (5, 19);
    assert_eq!(code, if new_kernel { 0 } else { 3 }, "kernel {release}");
}

/// The largest native syscall number among `names` (all must be known).
fn native_max(names: &[&str]) -> i64 {
    names
        .iter()
        .map(|n| {
            libseccomp::ScmpSyscall::from_name(n)
                .unwrap()
                .as_raw_syscall() as i64
        })
        .max()
        .unwrap()
}

/// What a child needs to run, exit and report under an allow-list.
const BASICS: &[&str] = &[
    "exit",
    "exit_group",
    "getpid",
    "write",
    "rt_sigreturn",
    "brk",
    "mmap",
    "munmap",
];

// The numbers the child below probes, computed before the fork.
static PROBE_ABOVE: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);
static PROBE_BELOW: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);

/// Child: 0 when `PROBE_ABOVE` (and a far larger number) give ENOSYS and `PROBE_BELOW`
/// gives the default EPERM.
fn probe_enosys_eperm() -> i32 {
    use std::sync::atomic::Ordering::Relaxed;
    let above = PROBE_ABOVE.load(Relaxed);
    let below = PROBE_BELOW.load(Relaxed);
    // SAFETY: raw syscalls with no pointer arguments.
    unsafe {
        if libc::syscall(above as libc::c_long) != -1 || errno() != libc::ENOSYS {
            return 1;
        }
        if libc::syscall(above as libc::c_long + 1000) != -1 || errno() != libc::ENOSYS {
            return 2;
        }
        if libc::syscall(below as libc::c_long) != -1 || errno() != libc::EPERM {
            return 3;
        }
        // Listed syscalls still work.
        if libc::getpid() <= 0 {
            return 4;
        }
    }
    0
}

#[test]
fn newer_syscalls_get_enosys_known_ones_the_default() {
    use std::sync::atomic::Ordering::Relaxed;
    let max = native_max(BASICS);
    // getppid is unlisted and (x86_64: 110 < exit_group 231) below the largest listed.
    assert!(libc::SYS_getppid < max as libc::c_long);
    PROBE_ABOVE.store(max + 7, Relaxed);
    PROBE_BELOW.store(libc::SYS_getppid, Relaxed);
    for arches in [
        None,
        Some(vec![Arch::ScmpArchNative]),
        Some(vec![
            Arch::ScmpArchX86_64,
            Arch::ScmpArchX86,
            Arch::ScmpArchX32,
        ]),
        Some(vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86]),
    ] {
        let mut p = allow_list(BASICS);
        p.set_architectures(arches.clone());
        let f = compile(&p).unwrap();
        assert!(f.stub_len > 0, "{arches:?}");
        let code = run_filtered(&f.bpf().unwrap(), probe_enosys_eperm);
        assert_eq!(code, 0, "{arches:?}");
    }
}

#[test]
fn kill_default_also_gets_enosys_above() {
    use std::sync::atomic::Ordering::Relaxed;
    static KILL_ABOVE: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);
    let max = native_max(BASICS);
    KILL_ABOVE.store(max + 1, Relaxed);
    let p = profile(
        LinuxSeccompAction::ScmpActKillProcess,
        vec![rule(BASICS, LinuxSeccompAction::ScmpActAllow)],
    );
    let bpf = compile(&p).unwrap().bpf().unwrap();
    let code = run_filtered(&bpf, || {
        let above = KILL_ABOVE.load(Relaxed);
        // SAFETY: raw syscall without arguments.
        if unsafe { libc::syscall(above as libc::c_long) } != -1 || errno() != libc::ENOSYS {
            return 1;
        }
        // Unlisted and known: the default action (killed by SIGSYS).
        // SAFETY: as above.
        unsafe { libc::syscall(libc::SYS_getppid) };
        0
    });
    assert_eq!(code, 128 + libc::SIGSYS);
}

#[test]
fn stub_only_where_it_matters() {
    let allow = || vec![rule(BASICS, LinuxSeccompAction::ScmpActAllow)];
    // Default allow (and log): nothing is denied by default, nothing to patch.
    for d in [
        LinuxSeccompAction::ScmpActAllow,
        LinuxSeccompAction::ScmpActLog,
    ] {
        let p = profile(d, vec![rule(&["mkdir"], LinuxSeccompAction::ScmpActErrno)]);
        assert_eq!(compile(&p).unwrap().stub_len, 0, "{d:?}");
    }
    // Default already ENOSYS.
    let mut p = profile(LinuxSeccompAction::ScmpActErrno, allow());
    p.set_default_errno_ret(Some(libc::ENOSYS as u32));
    let f = compile(&p).unwrap();
    assert_eq!(f.stub_len, 0);
    assert!(f.patched.is_none());
    // No rules, or only names libseccomp does not know: no largest syscall.
    let p = profile(LinuxSeccompAction::ScmpActErrno, vec![]);
    assert_eq!(compile(&p).unwrap().stub_len, 0);
    let p = allow_list(&["no_such_syscall_xyz"]);
    assert_eq!(compile(&p).unwrap().stub_len, 0);
    // Default EPERM with rules: patched, the stub in front of libseccomp's program.
    let f = compile(&profile(LinuxSeccompAction::ScmpActErrno, allow())).unwrap();
    let plain = export(&f.ctx).unwrap();
    let patched = f.patched.as_ref().unwrap();
    assert_eq!(patched.len(), f.stub_len + plain.len());
    assert_eq!(patched[f.stub_len].code, plain[0].code);
    assert_eq!(patched[f.stub_len].k, plain[0].k);
    // A rule whose action is the default still counts as named.
    let mut p = profile(LinuxSeccompAction::ScmpActErrno, allow());
    p.set_syscalls(Some(vec![
        rule(&["getpid"], LinuxSeccompAction::ScmpActAllow),
        rule(&["exit_group"], LinuxSeccompAction::ScmpActErrno),
    ]));
    let largest = largest_syscalls(&p);
    assert_eq!(largest[0].1 as i64, native_max(&["exit_group"]));
}

#[test]
fn largest_syscall_per_architecture() {
    let mut p = allow_list(&["read", "openat2"]);
    p.set_architectures(Some(X86_AND_AARCH64.to_vec()));
    let largest = largest_syscalls(&p);
    let get = |a: ScmpArch| largest.iter().find(|(x, _)| *x == a).map(|x| x.1);
    // openat2 is 437 everywhere (the unified numbering); x32 numbers carry the x32 bit.
    assert_eq!(get(ScmpArch::X8664), Some(437));
    assert_eq!(get(ScmpArch::X86), Some(437));
    assert_eq!(get(ScmpArch::Aarch64), Some(437));
    assert_eq!(get(ScmpArch::X32), Some(X32_SYSCALL_BIT | 437));
    // One x86_64 section covering both modes, one each for x86 and aarch64.
    let stub = enosys_stub(&largest).unwrap();
    let arch_checks = stub
        .iter()
        .filter(|i| i.code as u32 == libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K && i.k != 0)
        .count();
    assert_eq!(arch_checks, 3);
    assert!(stub.len() < 20, "{}", stub.len());
    assert_eq!(stub.last().unwrap().k, RET_ENOSYS);
}

#[test]
fn large_allow_list_stays_small() {
    // Every syscall libseccomp knows up to pkey_free (x86_64: 331), as an old profile
    // would list them, for the three x86 modes: the stub adds a constant handful.
    let names: Vec<String> = (0..=331)
        .filter_map(|n| libseccomp::ScmpSyscall::from(n).get_name().ok())
        .collect();
    let names: Vec<&str> = names.iter().map(|s| s.as_str()).collect();
    let mut p = allow_list(&names);
    p.set_architectures(Some(vec![
        Arch::ScmpArchX86_64,
        Arch::ScmpArchX86,
        Arch::ScmpArchX32,
    ]));
    let f = compile(&p).unwrap();
    let plain = export(&f.ctx).unwrap().len();
    println!(
        "{} names: libseccomp {plain} + stub {}",
        names.len(),
        f.stub_len
    );
    assert!(f.stub_len <= 16, "{}", f.stub_len);
}

#[test]
fn agent_message_is_runc_shaped() {
    let mut spec = Spec::default();
    spec.set_annotations(Some([("a".to_string(), "b".to_string())].into()));
    let mut s = profile(LinuxSeccompAction::ScmpActAllow, vec![]);
    s.set_listener_metadata(Some("meta".into()));
    let m = agent_message(
        &spec,
        &s,
        &Who {
            id: "c1",
            bundle: Path::new("/b"),
            pid: 42,
            status: "creating",
        },
    );
    let v: serde_json::Value = serde_json::from_slice(&m).unwrap();
    assert_eq!(v["fds"][0], "seccompFd");
    assert_eq!(v["pid"], 42);
    assert_eq!(v["metadata"], "meta");
    assert_eq!(v["state"]["id"], "c1");
    assert_eq!(v["state"]["status"], "creating");
    assert_eq!(v["state"]["bundle"], "/b");
    assert_eq!(v["state"]["annotations"]["a"], "b");
}
