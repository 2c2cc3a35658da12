//! What this runtime's seccomp support can do, for the OCI features `-info` answers with
//! (`crate::features`): the spec's actions, operators and architectures `compile` translates,
//! and the filter flags this host can apply.

use oci_spec::runtime::{Arch, LinuxSeccompAction, LinuxSeccompFilterFlag, LinuxSeccompOperator};

/// Every action, operator and architecture of the spec: `compile.rs`'s `action`, `condition` and `arch`
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
