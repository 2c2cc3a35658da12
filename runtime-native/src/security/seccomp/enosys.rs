//! ENOSYS for syscalls newer than the profile (runc's "patchbpf" behaviour, built our own way).
//!
//! An allow-list profile (default ERRNO(EPERM), KILL, TRAP...) written before a syscall existed
//! answers that syscall with its default action. glibc and others probe new syscalls (clone3,
//! faccessat2, openat2, close_range...) and fall back to the old ones only on ENOSYS, so EPERM
//! or a kill breaks them. Like runc, every syscall number greater than the largest number the
//! profile names (per architecture) gets ERRNO(ENOSYS); a known-but-unlisted syscall below
//! that keeps the default action.
//!
//! Rules cannot express "nr > N" (libseccomp matches syscall numbers one by one, and for a
//! non-native architecture it only accepts numbers it can translate by name), and one rule
//! per number up to some bound would add hundreds of rules per architecture. So the filter
//! libseccomp generates is exported and a small classic-BPF stub is put in front of it: load
//! the architecture; for each architecture of the filter compare the syscall number with the
//! profile's largest and return ERRNO(ENOSYS) above it; otherwise (or for an architecture
//! not in the filter) run libseccomp's program unchanged, which starts by loading what it
//! needs itself and uses only relative jumps. The stub costs a handful of instructions per
//! architecture whatever the profile; the patched program is then loaded with seccomp(2)
//! directly, with the flags libseccomp would have used.

use libseccomp::{ScmpAction, ScmpArch};
use oci_spec::runtime::LinuxSeccomp;

use super::arch;
use super::{SeccompError, R};

/// `struct seccomp_data`: offsets of the syscall number and the audit architecture.
const SECCOMP_DATA_NR: u32 = 0;
const SECCOMP_DATA_ARCH: u32 = 4;
/// x32 syscalls are x86_64 (same audit arch) syscalls with this bit set in the number.
pub(super) const X32_SYSCALL_BIT: u32 = 0x4000_0000;
pub(super) const RET_ENOSYS: u32 = libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32;

/// Whether a profile with this default action gets the stub: not when unlisted syscalls are
/// allowed anyway (ALLOW, LOG, and TRACE — a tracer is expected to handle new syscalls), nor
/// when the default already is ENOSYS.
pub(super) fn wants_enosys_stub(default: ScmpAction) -> bool {
    !matches!(
        default,
        ScmpAction::Allow | ScmpAction::Log | ScmpAction::Trace(_)
    ) && default != ScmpAction::Errno(libc::ENOSYS)
}

/// The largest syscall number the profile names on each of the filter's architectures
/// (every rule counts, whatever its action; names unknown on an architecture do not).
/// Architectures without any known name are left out.
pub(super) fn largest_syscalls(s: &LinuxSeccomp) -> Vec<(ScmpArch, u32)> {
    let native = ScmpArch::native();
    let mut arches = vec![native];
    for a in s.architectures().iter().flatten() {
        let a = match arch::from_spec(*a) {
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

/// The stub for `largest` (see the module docs); empty when there is nothing to check.
pub(super) fn enosys_stub(largest: &[(ScmpArch, u32)]) -> R<Vec<libc::sock_filter>> {
    // Architectures grouped by what the kernel reports: x86_64 and x32 share one value.
    let mut groups: Vec<(u32, Vec<(ScmpArch, u32)>)> = Vec::new();
    for &(a, max) in largest {
        let Some(token) = arch::audit(a) else {
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
        if *token == arch::audit(ScmpArch::X8664).unwrap_or(0) {
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
                return Err(SeccompError::Stub(format!(
                    "architectures {members:?} share audit arch {token:#x}"
                )));
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
                .ok_or_else(|| SeccompError::Stub("ENOSYS stub: backward jump".into()))
        };
        let is_ja = ins.code == libc::BPF_JMP | libc::BPF_JA | libc::BPF_K;
        let (k, jt, jf) = if is_ja {
            (rel(ins.jt)?, 0, 0)
        } else if ins.code & 0x07 == libc::BPF_JMP {
            let short = |t| {
                rel(t).and_then(|d| {
                    u8::try_from(d)
                        .map_err(|_| SeccompError::Stub("ENOSYS stub: jump too long".into()))
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
