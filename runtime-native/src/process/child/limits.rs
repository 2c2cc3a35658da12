//! Who the process runs as and what it may do: oom_score_adj, rlimits, uid/gid and
//! supplementary groups, capabilities (bounding, ambient, then the rest after setuid).

use super::*;

/// `oom_score_adj` could not be set to `adj`.
#[derive(Debug, thiserror::Error)]
#[error("set oom_score_adj to {adj}: {}", ioerr(source))]
pub(crate) struct OomScoreAdjError {
    adj: i32,
    #[source]
    source: std::io::Error,
}

/// Writes `adj` into this process's `oom_score_adj` (through the verified procfs handle).
pub(crate) fn set_oom_score_adj(adj: i32) -> Result<(), OomScoreAdjError> {
    crate::procfs::write("self/oom_score_adj", adj.to_string().as_bytes())
        .map_err(|source| OomScoreAdjError { adj, source })
}

pub(super) fn oom_score_adj(c: &Child, process: &Process) -> Result<(), Error> {
    let Some(adj) = process.oom_score_adj() else {
        return Ok(());
    };
    let cur: i32 = fs::read_to_string("/proc/self/oom_score_adj")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    if cur == adj {
        // Already set: by the user namespace intermediate (userns_join.rs), as host root,
        // where this process could not write the file any more (it belongs to host root).
        return Ok(());
    }
    if let Err(e) = set_oom_score_adj(adj) {
        let perm = matches!(
            e.source.raw_os_error(),
            Some(libc::EPERM) | Some(libc::EACCES)
        );
        if perm && adj < cur {
            c.warn(format!(
                "setting oom_score_adj to {adj} (lower than {cur}) failed, ignored: {}",
                ioerr(&e.source)
            ));
        } else {
            return Err(e.into());
        }
    }
    Ok(())
}

pub(super) fn rlimits(process: &Process) -> Result<(), Error> {
    use oci_spec::runtime::PosixRlimitType as T;
    for rl in process.rlimits().clone().unwrap_or_default() {
        let res = match rl.typ() {
            T::RlimitCpu => libc::RLIMIT_CPU,
            T::RlimitFsize => libc::RLIMIT_FSIZE,
            T::RlimitData => libc::RLIMIT_DATA,
            T::RlimitStack => libc::RLIMIT_STACK,
            T::RlimitCore => libc::RLIMIT_CORE,
            T::RlimitRss => libc::RLIMIT_RSS,
            T::RlimitNproc => libc::RLIMIT_NPROC,
            T::RlimitNofile => libc::RLIMIT_NOFILE,
            T::RlimitMemlock => libc::RLIMIT_MEMLOCK,
            T::RlimitAs => libc::RLIMIT_AS,
            T::RlimitLocks => libc::RLIMIT_LOCKS,
            T::RlimitSigpending => libc::RLIMIT_SIGPENDING,
            T::RlimitMsgqueue => libc::RLIMIT_MSGQUEUE,
            T::RlimitNice => libc::RLIMIT_NICE,
            T::RlimitRtprio => libc::RLIMIT_RTPRIO,
            T::RlimitRttime => libc::RLIMIT_RTTIME,
        };
        let lim = libc::rlimit {
            rlim_cur: rl.soft(),
            rlim_max: rl.hard(),
        };
        // SAFETY: valid rlimit pointer.
        if unsafe { libc::setrlimit(res, &lim) } != 0 {
            let source = Errno::last();
            let name = serde_json::to_string(&rl.typ()).unwrap_or_default();
            return Err(sys(format!("setrlimit {}", name.trim_matches('"')))(source));
        }
    }
    Ok(())
}

pub(crate) const CAP_NAMES: [&str; 41] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// Number of a capability named like `CAP_NET_BIND_SERVICE` (or without the prefix).
pub(crate) fn cap_number(name: &str) -> Option<u32> {
    let n = name.trim().to_ascii_uppercase();
    let n = n.strip_prefix("CAP_").unwrap_or(&n);
    CAP_NAMES.iter().position(|c| *c == n).map(|i| i as u32)
}

pub(super) fn cap_set(set: &Option<oci_spec::runtime::Capabilities>) -> Result<u64, Error> {
    let mut bits = 0u64;
    for cap in set.iter().flatten() {
        let name = serde_json::to_string(cap).unwrap_or_default();
        let name = name.trim_matches('"');
        let n = cap_number(name).ok_or_else(|| Error::UnknownCapability(name.to_string()))?;
        bits |= 1 << n;
    }
    Ok(bits)
}

#[repr(C)]
pub(super) struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(super) struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

pub(super) fn capset(eff: u64, perm: u64, inh: u64) -> std::result::Result<(), Errno> {
    let hdr = CapHeader {
        version: 0x2008_0522,
        pid: 0,
    };
    let data = [
        CapData {
            effective: eff as u32,
            permitted: perm as u32,
            inheritable: inh as u32,
        },
        CapData {
            effective: (eff >> 32) as u32,
            permitted: (perm >> 32) as u32,
            inheritable: (inh >> 32) as u32,
        },
    ];
    // SAFETY: header and two data structs as capset(2) v3 expects.
    let r = unsafe { libc::syscall(libc::SYS_capset, &hdr, data.as_ptr()) };
    if r != 0 {
        return Err(Errno::last());
    }
    Ok(())
}

pub(super) fn identity_and_caps(c: &Child, process: &Process) -> Result<(), Error> {
    let caps = process.capabilities().clone();
    let user = process.user();
    let sets = match &caps {
        Some(cp) => Some((
            cap_set(cp.bounding())?,
            cap_set(cp.effective())?,
            cap_set(cp.permitted())?,
            cap_set(cp.inheritable())?,
            cap_set(cp.ambient())?,
        )),
        None => None,
    };
    if let Some((bounding, ..)) = sets {
        for n in 0..=c.cap_last {
            if n < 64 && bounding & (1 << n) == 0 {
                // SAFETY: prctl with integer arguments.
                let r = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, n as libc::c_ulong, 0, 0, 0) };
                if r != 0 && Errno::last() != Errno::EINVAL {
                    return Err(last(format!(
                        "drop capability CAP_{} from the bounding set",
                        CAP_NAMES.get(n as usize).unwrap_or(&"?")
                    )));
                }
            }
        }
    }
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) };
    let gids: Vec<nix::unistd::Gid> = user
        .additional_gids()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(nix::unistd::Gid::from_raw)
        .collect();
    match nix::unistd::setgroups(&gids) {
        Ok(()) => {}
        Err(Errno::EPERM) if gids.is_empty() => {}
        Err(e) => return Err(sys(format!("setgroups {:?}", user.additional_gids()))(e)),
    }
    let (uid, gid) = (user.uid(), user.gid());
    // SAFETY: plain id syscalls.
    if unsafe { libc::setresgid(gid, gid, gid) } != 0 {
        return Err(last(format!("setgid {gid}")));
    }
    // SAFETY: as above.
    if unsafe { libc::setresuid(uid, uid, uid) } != 0 {
        return Err(last(format!("setuid {uid}")));
    }
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0) };
    if let Some((_, eff, perm, inh, amb)) = sets {
        capset(eff, perm, inh).map_err(sys("set capabilities"))?;
        // SAFETY: prctl with integer arguments.
        unsafe {
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_CLEAR_ALL,
                0,
                0,
                0,
            );
        }
        for n in 0..64u32 {
            if amb & (1 << n) != 0 {
                // SAFETY: prctl with integer arguments.
                let r = unsafe {
                    libc::prctl(
                        libc::PR_CAP_AMBIENT,
                        libc::PR_CAP_AMBIENT_RAISE,
                        n as libc::c_ulong,
                        0,
                        0,
                    )
                };
                if r != 0 {
                    c.warn(format!(
                        "raise ambient capability CAP_{}: {}",
                        CAP_NAMES.get(n as usize).unwrap_or(&"?"),
                        etext(Errno::last())
                    ));
                }
            }
        }
    }
    if process.no_new_privileges().unwrap_or(false) {
        // SAFETY: prctl with integer arguments.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            return Err(last("set no_new_privs"));
        }
    }
    Ok(())
}
