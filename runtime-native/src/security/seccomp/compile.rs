//! The spec's `linux.seccomp` compiled into a libseccomp filter (nothing is loaded here).

use std::collections::HashMap;

use libseccomp::{ScmpAction, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext};
use oci_spec::runtime::{
    LinuxSeccomp, LinuxSeccompAction, LinuxSeccompFilterFlag, LinuxSeccompOperator,
};

use super::arch;
use super::enosys::{enosys_stub, largest_syscalls, wants_enosys_stub};
use super::load::export;
use super::notify::NO_NOTIFY;
use super::{SeccompError, R};

/// A compiled filter, ready to load.
pub(crate) struct Filter {
    pub(super) ctx: ScmpFilterContext,
    /// Some rule uses `SCMP_ACT_NOTIFY`.
    pub(crate) notify: bool,
    /// Number of rules added (for tests and logs).
    pub(crate) rules: usize,
    /// Syscall names skipped because libseccomp does not know them.
    pub(crate) unknown: Vec<String>,
    /// The program to load when it is not libseccomp's own: the ENOSYS stub followed by
    /// libseccomp's program (see [`super::enosys`]).
    pub(super) patched: Option<Vec<libc::sock_filter>>,
    /// Instructions of the ENOSYS stub (0: none).
    pub(crate) stub_len: usize,
    /// `SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV` was asked for; libseccomp 2.5 cannot set it.
    pub(crate) wait_killable: bool,
}

fn action(a: LinuxSeccompAction, errno_ret: Option<u32>) -> R<ScmpAction, String> {
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

/// One argument condition. `SCMP_CMP_MASKED_EQ` takes the mask in `value` and the expected
/// result in `valueTwo`, as runc reads the spec.
fn condition(
    index: usize,
    op: LinuxSeccompOperator,
    value: u64,
    two: u64,
) -> R<ScmpArgCompare, String> {
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
    let err = |what: &str, source| SeccompError::Libseccomp {
        what: what.to_string(),
        source,
    };
    let default = action(s.default_action(), s.default_errno_ret())
        .map_err(|e| SeccompError::Profile(format!("defaultAction: {e}")))?;
    if default == ScmpAction::Notify {
        return Err(SeccompError::Profile(
            "SCMP_ACT_NOTIFY cannot be the default action".into(),
        ));
    }
    let mut ctx = ScmpFilterContext::new(default).map_err(|e| err("create filter", e))?;
    for a in s.architectures().iter().flatten() {
        ctx.add_arch(arch::from_spec(*a))
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
            .map_err(|e| SeccompError::Profile(format!("{:?}: {e}", call.names())))?;
        let mut conds = Vec::new();
        let mut per_arg: HashMap<usize, usize> = HashMap::new();
        for a in call.args().iter().flatten() {
            let c = condition(a.index(), a.op(), a.value(), a.value_two().unwrap_or(0))
                .map_err(|e| SeccompError::Profile(format!("{:?}: {e}", call.names())))?;
            *per_arg.entry(a.index()).or_default() += 1;
            conds.push(c);
        }
        if act == default {
            continue;
        }
        for name in call.names() {
            if act == ScmpAction::Notify && NO_NOTIFY.contains(&name.as_str()) {
                return Err(SeccompError::Profile(format!(
                    "SCMP_ACT_NOTIFY cannot be used for {name}: the runtime needs it to hand the \
                     notify fd to the agent"
                )));
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
                return Err(SeccompError::Profile(format!(
                    "the filter has {} instructions, more than the kernel's 4096",
                    prog.len()
                )));
            }
            out.patched = Some(prog);
        }
    }
    Ok(out)
}
