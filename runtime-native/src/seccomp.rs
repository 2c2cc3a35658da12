//! seccomp: the spec's `linux.seccomp` compiled into a BPF filter with libseccomp (as runc and
//! crun do) and loaded in the container process.
//!
//! Compilation follows runc: the default action (with `defaultErrnoRet`, EPERM when absent),
//! extra architectures, filter flags, then one rule per syscall name. A rule whose action is
//! the default action is skipped (libseccomp refuses it); a syscall name libseccomp does not
//! know is skipped (a profile written for a newer kernel still loads); several conditions on
//! the same argument become separate rules (libseccomp cannot AND them); an unknown action,
//! operator or flag is an error.
//!
//! Syscalls newer than the profile get ENOSYS, not the default action (as runc does): with a
//! default that denies (ERRNO other than ENOSYS, KILL, TRAP), a small BPF stub in front of
//! libseccomp's program answers every syscall number above the largest one the profile names
//! (per architecture) with ERRNO(ENOSYS), so libc falls back from clone3, faccessat2, openat2
//! and the like; see [`enosys_stub`].
//!
//! Where it is loaded (see `child::finish`): without `noNewPrivileges` loading needs
//! CAP_SYS_ADMIN, so the filter goes in before the user and capabilities change; with it, as
//! late as possible (after the identity change, right before the process hands over to its
//! workload). Everything the container process does after that — the `Ready`/`Start`
//! handshake (sendmsg/recvmsg), `execve`, or for a custom workload the runner's `prepare`
//! and `run` (wasmtime: mmap, mprotect, futex, signals, clone for threads) — runs under the
//! filter, exactly as runc's init does after `InitSeccomp`.
//!
//! `SCMP_ACT_NOTIFY`: the spec must name a `listenerPath`. The process connects to it before it
//! leaves the runtime's mount namespace, and right after loading sends the notify fd by
//! SCM_RIGHTS with runc's `ContainerProcessState` JSON (`ociVersion`, `fds: ["seccompFd"]`,
//! `pid`, `metadata`, `state`), so existing seccomp agents work unchanged. Since that send is
//! a `sendmsg` under the new filter, a profile that notifies on `sendmsg` is refused (runc
//! refuses `write` for the same reason).

use std::collections::HashMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

use libseccomp::{ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext};
use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompFilterFlag, LinuxSeccompOperator, Spec,
};

type R<T = ()> = std::result::Result<T, String>;

/// Syscalls the container process itself uses between loading a notify filter and handing
/// the notify fd to the agent: notifying on them would deadlock.
const NO_NOTIFY: &[&str] = &["sendmsg"];

/// A compiled filter, ready to load.
pub(crate) struct Filter {
    ctx: ScmpFilterContext,
    /// Some rule uses `SCMP_ACT_NOTIFY`.
    pub(crate) notify: bool,
    /// Number of rules added (for tests and logs).
    pub(crate) rules: usize,
    /// Syscall names skipped because libseccomp does not know them.
    pub(crate) unknown: Vec<String>,
    /// The program to load when it is not libseccomp's own: the ENOSYS stub followed by
    /// libseccomp's program (see [`enosys_stub`]).
    patched: Option<Vec<libc::sock_filter>>,
    /// Instructions of the ENOSYS stub (0: none).
    pub(crate) stub_len: usize,
    /// `SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV` was asked for; libseccomp 2.5 cannot set it.
    pub(crate) wait_killable: bool,
}

/// Every action, operator and architecture of the spec: [`action`], [`condition`] and [`arch`]
/// translate each of them (their matches are exhaustive), so the runtime's features claim all.
pub(crate) const ACTIONS: [LinuxSeccompAction; 9] = [
    LinuxSeccompAction::ScmpActKill,
    LinuxSeccompAction::ScmpActKillThread,
    LinuxSeccompAction::ScmpActKillProcess,
    LinuxSeccompAction::ScmpActTrap,
    LinuxSeccompAction::ScmpActErrno,
    LinuxSeccompAction::ScmpActNotify,
    LinuxSeccompAction::ScmpActTrace,
    LinuxSeccompAction::ScmpActLog,
    LinuxSeccompAction::ScmpActAllow,
];
pub(crate) const OPERATORS: [LinuxSeccompOperator; 7] = [
    LinuxSeccompOperator::ScmpCmpNe,
    LinuxSeccompOperator::ScmpCmpLt,
    LinuxSeccompOperator::ScmpCmpLe,
    LinuxSeccompOperator::ScmpCmpEq,
    LinuxSeccompOperator::ScmpCmpGe,
    LinuxSeccompOperator::ScmpCmpGt,
    LinuxSeccompOperator::ScmpCmpMaskedEq,
];
pub(crate) const ARCHS: [Arch; 24] = [
    Arch::ScmpArchNative,
    Arch::ScmpArchX86,
    Arch::ScmpArchX86_64,
    Arch::ScmpArchX32,
    Arch::ScmpArchArm,
    Arch::ScmpArchAarch64,
    Arch::ScmpArchMips,
    Arch::ScmpArchMips64,
    Arch::ScmpArchMips64n32,
    Arch::ScmpArchMipsel,
    Arch::ScmpArchMipsel64,
    Arch::ScmpArchMipsel64n32,
    Arch::ScmpArchPpc,
    Arch::ScmpArchPpc64,
    Arch::ScmpArchPpc64le,
    Arch::ScmpArchS390,
    Arch::ScmpArchS390x,
    Arch::ScmpArchParisc,
    Arch::ScmpArchParisc64,
    Arch::ScmpArchRiscv64,
    Arch::ScmpArchLoongarch64,
    Arch::ScmpArchM68k,
    Arch::ScmpArchSh,
    Arch::ScmpArchSheb,
];
/// The filter flags [`compile`] takes.
pub(crate) const FLAGS: [LinuxSeccompFilterFlag; 4] = [
    LinuxSeccompFilterFlag::SeccompFilterFlagTsync,
    LinuxSeccompFilterFlag::SeccompFilterFlagLog,
    LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow,
    LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv,
];

/// The flags this host can apply: TSYNC is moot (the process is single-threaded when it loads
/// its filter), LOG and SPEC_ALLOW need libseccomp API levels 3 and 4, WAIT_KILLABLE_RECV
/// (loaded with our own seccomp(2) call) Linux 5.19.
pub(crate) fn supported_flags() -> Vec<LinuxSeccompFilterFlag> {
    let api = libseccomp::get_api();
    FLAGS
        .into_iter()
        .filter(|f| match f {
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync => true,
            LinuxSeccompFilterFlag::SeccompFilterFlagLog => api >= 3,
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => api >= 4,
            LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => kernel_at_least(5, 19),
        })
        .collect()
}

/// The running kernel's release is at least `major.minor`.
fn kernel_at_least(major: u32, minor: u32) -> bool {
    let Ok(u) = nix::sys::utsname::uname() else {
        return false;
    };
    let rel = u.release().to_string_lossy().into_owned();
    let mut it = rel
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse::<u32>());
    match (it.next(), it.next()) {
        (Some(Ok(a)), Some(Ok(b))) => (a, b) >= (major, minor),
        _ => false,
    }
}

fn action(a: LinuxSeccompAction, errno_ret: Option<u32>) -> R<ScmpAction> {
    let ret = errno_ret.map(|e| e as i32).unwrap_or(libc::EPERM);
    Ok(match a {
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            ScmpAction::KillThread
        }
        LinuxSeccompAction::ScmpActKillProcess => ScmpAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => ScmpAction::Trap,
        LinuxSeccompAction::ScmpActErrno => {
            if !(0..=u16::MAX as i32).contains(&ret) {
                return Err(format!("errnoRet {ret} is out of range"));
            }
            ScmpAction::Errno(ret)
        }
        LinuxSeccompAction::ScmpActNotify => ScmpAction::Notify,
        LinuxSeccompAction::ScmpActTrace => {
            ScmpAction::Trace(u16::try_from(ret).map_err(|_| format!("trace value {ret}"))?)
        }
        LinuxSeccompAction::ScmpActLog => ScmpAction::Log,
        LinuxSeccompAction::ScmpActAllow => ScmpAction::Allow,
    })
}

fn arch(a: Arch) -> ScmpArch {
    match a {
        Arch::ScmpArchNative => ScmpArch::Native,
        Arch::ScmpArchX86 => ScmpArch::X86,
        Arch::ScmpArchX86_64 => ScmpArch::X8664,
        Arch::ScmpArchX32 => ScmpArch::X32,
        Arch::ScmpArchArm => ScmpArch::Arm,
        Arch::ScmpArchAarch64 => ScmpArch::Aarch64,
        Arch::ScmpArchMips => ScmpArch::Mips,
        Arch::ScmpArchMips64 => ScmpArch::Mips64,
        Arch::ScmpArchMips64n32 => ScmpArch::Mips64N32,
        Arch::ScmpArchMipsel => ScmpArch::Mipsel,
        Arch::ScmpArchMipsel64 => ScmpArch::Mipsel64,
        Arch::ScmpArchMipsel64n32 => ScmpArch::Mipsel64N32,
        Arch::ScmpArchPpc => ScmpArch::Ppc,
        Arch::ScmpArchPpc64 => ScmpArch::Ppc64,
        Arch::ScmpArchPpc64le => ScmpArch::Ppc64Le,
        Arch::ScmpArchS390 => ScmpArch::S390,
        Arch::ScmpArchS390x => ScmpArch::S390X,
        Arch::ScmpArchParisc => ScmpArch::Parisc,
        Arch::ScmpArchParisc64 => ScmpArch::Parisc64,
        Arch::ScmpArchRiscv64 => ScmpArch::Riscv64,
        Arch::ScmpArchLoongarch64 => ScmpArch::Loongarch64,
        Arch::ScmpArchM68k => ScmpArch::M68k,
        Arch::ScmpArchSh => ScmpArch::Sh,
        Arch::ScmpArchSheb => ScmpArch::Sheb,
    }
}

/// One argument condition. `SCMP_CMP_MASKED_EQ` takes the mask in `value` and the expected
/// result in `valueTwo`, as runc reads the spec.
fn condition(index: usize, op: LinuxSeccompOperator, value: u64, two: u64) -> R<ScmpArgCompare> {
    if index >= 6 {
        return Err(format!("argument index {index} is out of range (0..5)"));
    }
    let op = match op {
        LinuxSeccompOperator::ScmpCmpNe => ScmpCompareOp::NotEqual,
        LinuxSeccompOperator::ScmpCmpLt => ScmpCompareOp::Less,
        LinuxSeccompOperator::ScmpCmpLe => ScmpCompareOp::LessOrEqual,
        LinuxSeccompOperator::ScmpCmpEq => ScmpCompareOp::Equal,
        LinuxSeccompOperator::ScmpCmpGe => ScmpCompareOp::GreaterEqual,
        LinuxSeccompOperator::ScmpCmpGt => ScmpCompareOp::Greater,
        LinuxSeccompOperator::ScmpCmpMaskedEq => {
            return Ok(ScmpArgCompare::new(
                index as u32,
                ScmpCompareOp::MaskedEqual(value),
                two,
            ))
        }
    };
    Ok(ScmpArgCompare::new(index as u32, op, value))
}

/// Compiles `linux.seccomp` into a libseccomp filter (nothing is loaded).
pub(crate) fn compile(s: &LinuxSeccomp) -> R<Filter> {
    let err = |what: &str, e: libseccomp::error::SeccompError| format!("seccomp: {what}: {e}");
    let default = action(s.default_action(), s.default_errno_ret())
        .map_err(|e| format!("seccomp: defaultAction: {e}"))?;
    if default == ScmpAction::Notify {
        return Err("seccomp: SCMP_ACT_NOTIFY cannot be the default action".into());
    }
    let mut ctx = ScmpFilterContext::new(default).map_err(|e| err("create filter", e))?;
    for a in s.architectures().iter().flatten() {
        ctx.add_arch(arch(*a))
            .map_err(|e| err(&format!("add architecture {a}"), e))?;
    }
    let mut wait_killable = false;
    for f in s.flags().iter().flatten() {
        match f {
            // The container process is single-threaded when it loads the filter.
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync => {}
            LinuxSeccompFilterFlag::SeccompFilterFlagLog => {
                ctx.set_ctl_log(true).map_err(|e| err(&f.to_string(), e))?;
            }
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => {
                ctx.set_ctl_ssb(true).map_err(|e| err(&f.to_string(), e))?;
            }
            // libseccomp learnt this flag in 2.6 (Debian 12 has 2.5.4): the filter is then
            // loaded by `load_own` with seccomp(2), which takes it from Linux 5.19 on.
            LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => wait_killable = true,
        }
    }
    // no_new_privs is the runtime's business (process.noNewPrivileges), not libseccomp's.
    ctx.set_ctl_nnp(false)
        .map_err(|e| err("clear the no_new_privs attribute", e))?;
    let syscalls = s.syscalls().clone().unwrap_or_default();
    if syscalls.len() > 8 {
        // A binary tree instead of a linear list of comparisons.
        let _ = ctx.set_ctl_optimize(2);
    }
    let mut out = Filter {
        ctx,
        notify: false,
        rules: 0,
        unknown: Vec::new(),
        patched: None,
        stub_len: 0,
        wait_killable,
    };
    for call in &syscalls {
        let act = action(call.action(), call.errno_ret())
            .map_err(|e| format!("seccomp: {:?}: {e}", call.names()))?;
        let mut conds = Vec::new();
        let mut per_arg: HashMap<usize, usize> = HashMap::new();
        for a in call.args().iter().flatten() {
            let c = condition(a.index(), a.op(), a.value(), a.value_two().unwrap_or(0))
                .map_err(|e| format!("seccomp: {:?}: {e}", call.names()))?;
            *per_arg.entry(a.index()).or_default() += 1;
            conds.push(c);
        }
        if act == default {
            continue;
        }
        for name in call.names() {
            if act == ScmpAction::Notify && NO_NOTIFY.contains(&name.as_str()) {
                return Err(format!(
                    "seccomp: SCMP_ACT_NOTIFY cannot be used for {name}: the runtime needs it to \
                     hand the notify fd to the agent"
                ));
            }
            let Ok(nr) = libseccomp::ScmpSyscall::from_name(name) else {
                out.unknown.push(name.clone());
                continue;
            };
            let what = || format!("add rule for {name}");
            if conds.is_empty() {
                out.ctx.add_rule(act, nr).map_err(|e| err(&what(), e))?;
                out.rules += 1;
            } else if per_arg.values().any(|n| *n > 1) {
                for c in &conds {
                    out.ctx
                        .add_rule_conditional(act, nr, std::slice::from_ref(c))
                        .map_err(|e| err(&what(), e))?;
                    out.rules += 1;
                }
            } else {
                out.ctx
                    .add_rule_conditional(act, nr, &conds)
                    .map_err(|e| err(&what(), e))?;
                out.rules += 1;
            }
            if act == ScmpAction::Notify {
                out.notify = true;
            }
        }
    }
    if wants_enosys_stub(default) {
        let mut prog = enosys_stub(&largest_syscalls(s))?;
        if !prog.is_empty() {
            out.stub_len = prog.len();
            prog.extend(export(&out.ctx)?);
            // BPF_MAXINSNS: the kernel refuses longer programs.
            if prog.len() > 4096 {
                return Err(format!(
                    "seccomp: the filter has {} instructions, more than the kernel's 4096",
                    prog.len()
                ));
            }
            out.patched = Some(prog);
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// ENOSYS for syscalls newer than the profile (runc's "patchbpf" behaviour, built our own way).
//
// An allow-list profile (default ERRNO(EPERM), KILL, TRAP...) written before a syscall existed
// answers that syscall with its default action. glibc and others probe new syscalls (clone3,
// faccessat2, openat2, close_range...) and fall back to the old ones only on ENOSYS, so EPERM
// or a kill breaks them. Like runc, every syscall number greater than the largest number the
// profile names (per architecture) gets ERRNO(ENOSYS); a known-but-unlisted syscall below
// that keeps the default action.
//
// Rules cannot express "nr > N" (libseccomp matches syscall numbers one by one, and for a
// non-native architecture it only accepts numbers it can translate by name), and one rule
// per number up to some bound would add hundreds of rules per architecture. So the filter
// libseccomp generates is exported and a small classic-BPF stub is put in front of it: load
// the architecture; for each architecture of the filter compare the syscall number with the
// profile's largest and return ERRNO(ENOSYS) above it; otherwise (or for an architecture
// not in the filter) run libseccomp's program unchanged, which starts by loading what it
// needs itself and uses only relative jumps. The stub costs a handful of instructions per
// architecture whatever the profile; the patched program is then loaded with seccomp(2)
// directly, with the flags libseccomp would have used.

/// `struct seccomp_data`: offsets of the syscall number and the audit architecture.
const SECCOMP_DATA_NR: u32 = 0;
const SECCOMP_DATA_ARCH: u32 = 4;
/// x32 syscalls are x86_64 (same audit arch) syscalls with this bit set in the number.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;
const RET_ENOSYS: u32 = libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32;

/// The kernel's `AUDIT_ARCH_*` value (what `seccomp_data.arch` holds) for an architecture:
/// the ELF machine, `__AUDIT_ARCH_64BIT`, `__AUDIT_ARCH_LE` (and MIPS n32's convention bit).
fn audit_arch(a: ScmpArch) -> Option<u32> {
    const B64: u32 = 0x8000_0000;
    const LE: u32 = 0x4000_0000;
    const N32: u32 = 0x2000_0000;
    Some(match a {
        ScmpArch::X86 => 3 | LE,
        ScmpArch::X8664 | ScmpArch::X32 => 62 | B64 | LE,
        ScmpArch::Arm => 40 | LE,
        ScmpArch::Aarch64 => 183 | B64 | LE,
        ScmpArch::Mips => 8,
        ScmpArch::Mips64 => 8 | B64,
        ScmpArch::Mips64N32 => 8 | B64 | N32,
        ScmpArch::Mipsel => 8 | LE,
        ScmpArch::Mipsel64 => 8 | B64 | LE,
        ScmpArch::Mipsel64N32 => 8 | B64 | LE | N32,
        ScmpArch::Ppc => 20,
        ScmpArch::Ppc64 => 21 | B64,
        ScmpArch::Ppc64Le => 21 | B64 | LE,
        ScmpArch::S390 => 22,
        ScmpArch::S390X => 22 | B64,
        ScmpArch::Parisc => 15,
        ScmpArch::Parisc64 => 15 | B64,
        ScmpArch::Riscv64 => 243 | B64 | LE,
        ScmpArch::Loongarch64 => 258 | B64 | LE,
        ScmpArch::M68k => 4,
        ScmpArch::Sh => 42 | LE,
        ScmpArch::Sheb => 42,
        _ => return None,
    })
}

/// Whether a profile with this default action gets the stub: not when unlisted syscalls are
/// allowed anyway (ALLOW, LOG, and TRACE — a tracer is expected to handle new syscalls), nor
/// when the default already is ENOSYS.
fn wants_enosys_stub(default: ScmpAction) -> bool {
    !matches!(
        default,
        ScmpAction::Allow | ScmpAction::Log | ScmpAction::Trace(_)
    ) && default != ScmpAction::Errno(libc::ENOSYS)
}

/// The largest syscall number the profile names on each of the filter's architectures
/// (every rule counts, whatever its action; names unknown on an architecture do not).
/// Architectures without any known name are left out.
fn largest_syscalls(s: &LinuxSeccomp) -> Vec<(ScmpArch, u32)> {
    let native = ScmpArch::native();
    let mut arches = vec![native];
    for a in s.architectures().iter().flatten() {
        let a = match arch(*a) {
            ScmpArch::Native => native,
            a => a,
        };
        if !arches.contains(&a) {
            arches.push(a);
        }
    }
    let names: Vec<&String> = s
        .syscalls()
        .iter()
        .flatten()
        .flat_map(|c| c.names().iter())
        .collect();
    arches
        .into_iter()
        .filter_map(|a| {
            names
                .iter()
                .filter_map(|n| libseccomp::ScmpSyscall::from_name_by_arch(n, a).ok())
                // Negative numbers are libseccomp's pseudo syscalls (multiplexed calls).
                .filter_map(|nr| u32::try_from(nr.as_raw_syscall()).ok())
                .max()
                .map(|max| (a, max))
        })
        .collect()
}

/// A jump target in the stub, resolved once its layout is known.
#[derive(Clone, Copy)]
enum To {
    /// The next instruction plus `n`.
    Skip(u8),
    /// The `ret ERRNO(ENOSYS)` at the end of the stub.
    Enosys,
    /// The first instruction of libseccomp's program.
    Filter,
    /// The first instruction after architecture section `i`.
    End(usize),
}

struct Ins {
    code: u32,
    k: u32,
    jt: To,
    jf: To,
}

fn ld(off: u32) -> Ins {
    Ins {
        code: libc::BPF_LD | libc::BPF_W | libc::BPF_ABS,
        k: off,
        jt: To::Skip(0),
        jf: To::Skip(0),
    }
}

fn jmp(op: u32, k: u32, jt: To, jf: To) -> Ins {
    Ins {
        code: libc::BPF_JMP | op | libc::BPF_K,
        k,
        jt,
        jf,
    }
}

/// The stub for `largest` (see the section comment); empty when there is nothing to check.
fn enosys_stub(largest: &[(ScmpArch, u32)]) -> R<Vec<libc::sock_filter>> {
    // Architectures grouped by what the kernel reports: x86_64 and x32 share one value.
    let mut groups: Vec<(u32, Vec<(ScmpArch, u32)>)> = Vec::new();
    for &(a, max) in largest {
        let Some(token) = audit_arch(a) else {
            continue;
        };
        match groups.iter_mut().find(|(t, _)| *t == token) {
            Some((_, v)) => v.push((a, max)),
            None => groups.push((token, vec![(a, max)])),
        }
    }
    if groups.is_empty() {
        return Ok(Vec::new());
    }
    let mut prog = vec![ld(SECCOMP_DATA_ARCH)];
    let mut ends = Vec::new();
    for (i, (token, members)) in groups.iter().enumerate() {
        let max_of = |want: ScmpArch| members.iter().find(|(a, _)| *a == want).map(|m| m.1);
        // Not this architecture: on to the next section (the accumulator still holds arch).
        prog.push(jmp(libc::BPF_JEQ, *token, To::Skip(0), To::End(i)));
        prog.push(ld(SECCOMP_DATA_NR));
        let gt = |max: u32| jmp(libc::BPF_JGT, max, To::Enosys, To::Filter);
        let x32_bit = |jt, jf| jmp(libc::BPF_JSET, X32_SYSCALL_BIT, jt, jf);
        if matches!(members[0].0, ScmpArch::S390 | ScmpArch::S390X) {
            // s390 passes a syscall number the kernel does not know as 0 (the old setup(2),
            // used only to multiplex large numbers): that one is "unknown" too.
            prog.push(jmp(libc::BPF_JEQ, 0, To::Enosys, To::Skip(0)));
        }
        if *token == audit_arch(ScmpArch::X8664).unwrap_or(0) {
            match (max_of(ScmpArch::X8664), max_of(ScmpArch::X32)) {
                (Some(x64), Some(x32)) => {
                    prog.push(x32_bit(To::Skip(1), To::Skip(0)));
                    prog.push(gt(x64));
                    prog.push(gt(x32));
                }
                // A mode the filter does not have: libseccomp's program decides (bad arch).
                (Some(x64), None) => {
                    prog.push(x32_bit(To::Filter, To::Skip(0)));
                    prog.push(gt(x64));
                }
                (None, Some(x32)) => {
                    prog.push(x32_bit(To::Skip(0), To::Filter));
                    prog.push(gt(x32));
                }
                (None, None) => prog.push(jmp(libc::BPF_JA, 0, To::Filter, To::Filter)),
            }
        } else {
            if members.len() != 1 {
                return Err(format!(
                    "seccomp: architectures {members:?} share audit arch {token:#x}"
                ));
            }
            prog.push(gt(members[0].1));
        }
        ends.push(prog.len());
    }
    // No section matched: libseccomp's program (its bad-architecture action).
    prog.push(jmp(libc::BPF_JA, 0, To::Filter, To::Filter));
    let enosys = prog.len();
    let filter = enosys + 1;
    let mut out = Vec::with_capacity(filter);
    for (pc, ins) in prog.iter().enumerate() {
        let rel = |t: To| -> R<u32> {
            let target = match t {
                To::Skip(n) => pc + 1 + n as usize,
                To::Enosys => enosys,
                To::Filter => filter,
                To::End(i) => ends[i],
            };
            // Classic BPF jumps only forward.
            target
                .checked_sub(pc + 1)
                .map(|d| d as u32)
                .ok_or_else(|| "seccomp: ENOSYS stub: backward jump".to_string())
        };
        let is_ja = ins.code == libc::BPF_JMP | libc::BPF_JA | libc::BPF_K;
        let (k, jt, jf) = if is_ja {
            (rel(ins.jt)?, 0, 0)
        } else if ins.code & 0x07 == libc::BPF_JMP {
            let short = |t| {
                rel(t).and_then(|d| {
                    u8::try_from(d).map_err(|_| "seccomp: ENOSYS stub: jump too long".to_string())
                })
            };
            (ins.k, short(ins.jt)?, short(ins.jf)?)
        } else {
            (ins.k, 0, 0)
        };
        out.push(libc::sock_filter {
            code: ins.code as u16,
            jt,
            jf,
            k,
        });
    }
    out.push(libc::sock_filter {
        code: (libc::BPF_RET | libc::BPF_K) as u16,
        jt: 0,
        jf: 0,
        k: RET_ENOSYS,
    });
    Ok(out)
}

/// libseccomp's program for `ctx`, as the kernel would get it from `seccomp_load`.
fn export(ctx: &ScmpFilterContext) -> R<Vec<libc::sock_filter>> {
    use std::io::{Read, Seek};
    let f = memfd().map_err(|e| format!("seccomp: export: {e}"))?;
    ctx.export_bpf(&f)
        .map_err(|e| format!("seccomp: export: {e}"))?;
    let mut file = std::fs::File::from(f);
    let mut v = Vec::new();
    file.seek(std::io::SeekFrom::Start(0))
        .and_then(|_| file.read_to_end(&mut v))
        .map_err(|e| format!("seccomp: export: {e}"))?;
    if !v.len().is_multiple_of(8) {
        return Err(format!(
            "seccomp: export: {} bytes is not a program",
            v.len()
        ));
    }
    // Host byte order, as libseccomp writes it.
    Ok(v.chunks_exact(8)
        .map(|c| libc::sock_filter {
            code: u16::from_ne_bytes([c[0], c[1]]),
            jt: c[2],
            jf: c[3],
            k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
        })
        .collect())
}

fn memfd() -> std::io::Result<OwnedFd> {
    // SAFETY: memfd_create with a valid C string.
    let fd = unsafe { libc::memfd_create(c"amphi-seccomp".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a new fd we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

impl Filter {
    /// The filter as the kernel gets it: `struct sock_filter` instructions (8 bytes each).
    #[cfg(test)]
    pub(crate) fn bpf(&self) -> R<Vec<u8>> {
        let prog = match &self.patched {
            Some(p) => p.clone(),
            None => export(&self.ctx)?,
        };
        Ok(prog
            .iter()
            .flat_map(|i| {
                let mut b = Vec::with_capacity(8);
                b.extend_from_slice(&i.code.to_ne_bytes());
                b.extend_from_slice(&[i.jt, i.jf]);
                b.extend_from_slice(&i.k.to_ne_bytes());
                b
            })
            .collect())
    }

    /// Loads the filter into the calling process. With notify rules, returns the notify fd.
    fn load(&self) -> R<Option<OwnedFd>> {
        if let Some(prog) = &self.patched {
            return self.load_own(prog);
        }
        if self.wait_killable && self.notify {
            return self.load_own(&export(&self.ctx)?);
        }
        self.ctx
            .load()
            .map_err(|e| format!("load seccomp filter: {e}"))?;
        if !self.notify {
            return Ok(None);
        }
        let fd = self
            .ctx
            .get_notify_fd()
            .map_err(|e| format!("seccomp: get the notify fd: {e}"))?;
        // SAFETY: libseccomp hands us a new fd, which we own from here on.
        Ok(Some(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Loads `prog` with seccomp(2) and the flags `seccomp_load` would pass for this context,
    /// plus the ones libseccomp 2.5 cannot set (no_new_privs stays the runtime's business, as
    /// in [`compile`]).
    fn load_own(&self, prog: &[libc::sock_filter]) -> R<Option<OwnedFd>> {
        let mut flags: libc::c_ulong = 0;
        if self.ctx.get_ctl_log().unwrap_or(false) {
            flags |= libc::SECCOMP_FILTER_FLAG_LOG;
        }
        if self.ctx.get_ctl_ssb().unwrap_or(false) {
            flags |= libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW;
        }
        // The kernel takes it only with a listener; it changes nothing without one.
        if self.wait_killable && self.notify {
            flags |= libc::SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV;
        }
        if self.notify {
            flags |= libc::SECCOMP_FILTER_FLAG_NEW_LISTENER;
        }
        let fprog = libc::sock_fprog {
            len: prog.len() as u16,
            filter: prog.as_ptr() as *mut libc::sock_filter,
        };
        // SAFETY: seccomp(2) reads the program, which outlives the call.
        let r = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                flags,
                &fprog as *const libc::sock_fprog,
            )
        };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            let hint =
                if self.wait_killable && self.notify && e.raw_os_error() == Some(libc::EINVAL) {
                    " (SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV needs Linux >= 5.19)"
                } else {
                    ""
                };
            return Err(format!("load seccomp filter: {e}{hint}"));
        }
        if !self.notify {
            return Ok(None);
        }
        // SAFETY: with NEW_LISTENER seccomp(2) returns a new fd, which we own from here on.
        Ok(Some(unsafe { OwnedFd::from_raw_fd(r as i32) }))
    }
}

/// Who the container process is, for the state a seccomp agent receives.
pub(crate) struct Who<'a> {
    pub id: &'a str,
    pub bundle: &'a Path,
    /// The process's pid as the runtime (host) sees it.
    pub pid: i32,
    /// "creating" for a container's init, "running" for an exec.
    pub status: &'a str,
}

/// The seccomp part of a container process: compiled before setup (so a bad profile fails
/// early and the listener is reached through the runtime's mount namespace), loaded at the
/// end of setup by [`Seccomp::load`].
pub(crate) struct Seccomp {
    filter: Filter,
    /// Connected to `listenerPath`, with the message to send along with the notify fd.
    listener: Option<(UnixStream, Vec<u8>)>,
}

/// The process's pid in the runtime's pid namespace: `/proc` is still the runtime's here.
pub(crate) fn host_pid() -> i32 {
    std::fs::read_link("/proc/self")
        .ok()
        .and_then(|p| p.to_str().and_then(|s| s.parse().ok()))
        .unwrap_or_else(|| std::process::id() as i32)
}

/// The JSON runc sends to a seccomp agent with the notify fd.
pub(crate) fn agent_message(spec: &Spec, s: &LinuxSeccomp, who: &Who) -> Vec<u8> {
    let state = serde_json::json!({
        "ociVersion": spec.version(),
        "id": who.id,
        "status": who.status,
        "pid": who.pid,
        "bundle": who.bundle,
        "annotations": spec.annotations().clone().unwrap_or_default(),
    });
    serde_json::to_vec(&serde_json::json!({
        "ociVersion": spec.version(),
        "fds": ["seccompFd"],
        "pid": who.pid,
        "metadata": s.listener_metadata().clone().unwrap_or_default(),
        "state": state,
    }))
    .unwrap_or_default()
}

/// Compiles the spec's profile (if any) and, for notify rules, connects to the agent.
/// `id`, `bundle` and `status` describe the container for the agent.
pub(crate) fn prepare(spec: &Spec, id: &str, bundle: &Path, status: &str) -> R<Option<Seccomp>> {
    let Some(s) = spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()) else {
        return Ok(None);
    };
    let filter = compile(s)?;
    let mut listener = None;
    if filter.notify {
        let path = s.listener_path().clone().unwrap_or_default();
        if path.as_os_str().is_empty() {
            return Err(
                "seccomp: the profile uses SCMP_ACT_NOTIFY but linux.seccomp.listenerPath is not \
                 set"
                .into(),
            );
        }
        let sock = UnixStream::connect(&path).map_err(|e| {
            format!(
                "seccomp: connect to the agent at listenerPath {}: {e}",
                path.display()
            )
        })?;
        let w = Who {
            id,
            bundle,
            pid: host_pid(),
            status,
        };
        listener = Some((sock, agent_message(spec, s, &w)));
    }
    Ok(Some(Seccomp { filter, listener }))
}

/// [`prepare`] for a spawner request: the init is "creating", an exec joins a "running" one.
pub(crate) fn prepare_for(req: &crate::request::Request) -> R<Option<Seccomp>> {
    match req {
        crate::request::Request::Init(r) => prepare(&r.spec, &r.id, &r.bundle, "creating"),
        crate::request::Request::Exec(r) => {
            prepare(&r.spec, &r.container_id, Path::new(""), "running")
        }
    }
}

impl Seccomp {
    /// Loads the filter into this process and hands the notify fd to the agent.
    pub(crate) fn load(self) -> R {
        let fd = self.filter.load()?;
        if let (Some(fd), Some((sock, msg))) = (fd, self.listener) {
            let iov = [std::io::IoSlice::new(&msg)];
            let fds = [fd.as_raw_fd()];
            let cmsg = [nix::sys::socket::ControlMessage::ScmRights(&fds)];
            nix::sys::socket::sendmsg::<()>(
                sock.as_raw_fd(),
                &iov,
                &cmsg,
                nix::sys::socket::MsgFlags::MSG_NOSIGNAL,
                None,
            )
            .map_err(|e| format!("seccomp: send the notify fd to the agent: {e}"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
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
        let mut allowed = rule(
            &[
                "exit",
                "exit_group",
                "getpid",
                "write",
                "rt_sigreturn",
                "brk",
                "mmap",
                "munmap",
            ],
            LinuxSeccompAction::ScmpActAllow,
        );
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
            .unwrap();
        assert!(e.contains("argument index 6"), "{e}");

        let e = compile(&profile(
            LinuxSeccompAction::ScmpActAllow,
            vec![rule(&["sendmsg"], LinuxSeccompAction::ScmpActNotify)],
        ))
        .err()
        .unwrap();
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
            .unwrap();
        assert!(e.contains("listenerPath"), "{e}");

        // An unknown action is refused when the spec is read.
        let bad = r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["read"],"action":"SCMP_ACT_NOPE"}]}"#;
        assert!(serde_json::from_str::<LinuxSeccomp>(bad).is_err());
    }

    #[test]
    fn flags_and_arches() {
        let mut p = profile(
            LinuxSeccompAction::ScmpActErrno,
            vec![rule(&["read", "write"], LinuxSeccompAction::ScmpActAllow)],
        );
        p.set_flags(Some(vec![
            LinuxSeccompFilterFlag::SeccompFilterFlagLog,
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow,
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync,
        ]));
        p.set_architectures(Some(vec![
            Arch::ScmpArchX86_64,
            Arch::ScmpArchX86,
            Arch::ScmpArchX32,
            Arch::ScmpArchAarch64,
        ]));
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
                    Err(e) if e.contains("5.19") => 3,
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
            let mut p = profile(
                LinuxSeccompAction::ScmpActErrno,
                vec![rule(BASICS, LinuxSeccompAction::ScmpActAllow)],
            );
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
        let p = profile(
            LinuxSeccompAction::ScmpActErrno,
            vec![rule(
                &["no_such_syscall_xyz"],
                LinuxSeccompAction::ScmpActAllow,
            )],
        );
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
        let mut p = profile(
            LinuxSeccompAction::ScmpActErrno,
            vec![rule(&["read", "openat2"], LinuxSeccompAction::ScmpActAllow)],
        );
        p.set_architectures(Some(vec![
            Arch::ScmpArchX86_64,
            Arch::ScmpArchX86,
            Arch::ScmpArchX32,
            Arch::ScmpArchAarch64,
        ]));
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
        let mut p = profile(
            LinuxSeccompAction::ScmpActErrno,
            vec![rule(&names, LinuxSeccompAction::ScmpActAllow)],
        );
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
}
