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
            LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => {
                ctx.set_ctl_waitkill(true).map_err(|e| {
                    err(
                        &format!("{f} (needs libseccomp >= 2.6 and Linux >= 5.19)"),
                        e,
                    )
                })?;
            }
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
    Ok(out)
}

impl Filter {
    /// The filter as the kernel gets it: `struct sock_filter` instructions (8 bytes each).
    #[cfg(test)]
    pub(crate) fn bpf(&self) -> R<Vec<u8>> {
        let f = tempfile_fd().map_err(|e| format!("seccomp: export: {e}"))?;
        self.ctx
            .export_bpf(&f)
            .map_err(|e| format!("seccomp: export: {e}"))?;
        let mut file = std::fs::File::from(f);
        use std::io::{Read, Seek};
        file.seek(std::io::SeekFrom::Start(0))
            .map_err(|e| e.to_string())?;
        let mut v = Vec::new();
        file.read_to_end(&mut v).map_err(|e| e.to_string())?;
        Ok(v)
    }

    /// Loads the filter into the calling process. With notify rules, returns the notify fd.
    fn load(&self) -> R<Option<OwnedFd>> {
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
}

#[cfg(test)]
fn tempfile_fd() -> std::io::Result<OwnedFd> {
    // SAFETY: memfd_create with a valid C string.
    let fd = unsafe { libc::memfd_create(c"amphi-seccomp".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a new fd we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
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
pub(crate) fn prepare_for(req: &crate::spawner::Request) -> R<Option<Seccomp>> {
    match req {
        crate::spawner::Request::Init(r) => prepare(&r.spec, &r.id, &r.bundle, "creating"),
        crate::spawner::Request::Exec(r) => {
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
