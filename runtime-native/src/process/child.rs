//! The container process, from the clone in the spawner to execve (or the custom runner).
//!
//! Runs in a fork-like clone of the single-threaded spawner, so it may allocate freely. Every
//! failure becomes a `Failed(message)` on the sync socket, naming the step and the object in
//! user terms, followed by `_exit(1)`.

use std::ffi::CString;
use std::fs;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sched::CloneFlags;
use oci_spec::runtime::{LinuxNamespaceType, Process, Spec};

use crate::fds::{close_fds_except, open_ro};
use crate::ns::ns_clone_flag;
use crate::request::{ChildFds, Request};
use crate::sync::{self, ChildMsg, ParentMsg};
use crate::workload::{ProcessContext, Workload, WorkloadTable};

pub(crate) type R<T = ()> = std::result::Result<T, String>;

/// Lower-case errno text, as runc prints it ("no such file or directory").
pub(crate) fn etext(e: Errno) -> String {
    let d = e.desc();
    let mut c = d.chars();
    match c.next() {
        Some(f) => f.to_lowercase().collect::<String>() + c.as_str(),
        None => d.to_string(),
    }
}

pub(crate) fn ioerr(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(n) => etext(Errno::from_raw(n)),
        None => e.to_string(),
    }
}

struct Child {
    sync: RawFd,
    extra: Vec<i32>,
    workloads: WorkloadTable,
    cap_last: u32,
    /// /proc/self/cgroup as read after joining the cgroups (before a cgroup namespace).
    self_cgroup: std::cell::RefCell<String>,
    /// The spawner's report on moving us into our cgroup (spawner.rs `join_cgroup`), read by
    /// `ensure_joined`; `None` once read, or with no cgroup to join.
    join: std::cell::Cell<Option<RawFd>>,
    /// The spec asks for a new cgroup namespace, created (by `ensure_joined`) once we are in
    /// our cgroup: its root is the cgroup we are in when it is created.
    unshare_cgroup: std::cell::Cell<bool>,
    /// The spec's seccomp filter, compiled up front and loaded in `finish` (seccomp.rs).
    seccomp: std::cell::Cell<Option<crate::seccomp::Seccomp>>,
    /// The spec's hooks that involve this process (hooks.rs); `None` when there are none.
    hooks: Option<crate::hooks::ChildHooks>,
    /// A detached procfs mount of our pid namespace made by the spawner (userns.rs
    /// `proc_mount_fd`), attached where the spec mounts proc; closed once the rootfs is set.
    proc_mnt: std::cell::Cell<Option<RawFd>>,
    /// The host's LSMs, read before the container's root or mount namespace is entered.
    lsm: crate::lsm::Host,
    /// An exec's: the container init's pidfd, closed once its namespaces are joined.
    init_pidfd: Option<OwnedFd>,
}

impl Child {
    fn warn(&self, msg: String) {
        let _ = sync::send(&self.sync, &ChildMsg::Log(msg), &[]);
    }
}

impl crate::rootfs::Container for Child {
    fn warn(&self, msg: String) {
        Child::warn(self, msg)
    }

    fn joined_cgroups(&self) -> R<String> {
        ensure_joined(self)?;
        read_self_cgroup(self);
        Ok(self.self_cgroup.borrow().clone())
    }

    fn take_proc_mount(&self) -> Option<RawFd> {
        self.proc_mnt.take()
    }

    fn before_pivot(&self) -> R {
        if let Some(h) = &self.hooks {
            ensure_joined(self)?; // hooks see the container in its cgroup
            h.before_pivot(self.sync)?; // createRuntime (by the caller), createContainer
        }
        Ok(())
    }
}

pub(crate) fn main(req: Request, fds: ChildFds, sync_sock: OwnedFd, workloads: WorkloadTable) -> ! {
    let sync_fd = sync_sock.into_raw_fd();
    let mut child = Child {
        sync: sync_fd,
        extra: Vec::new(),
        workloads,
        cap_last: 40,
        self_cgroup: Default::default(),
        join: Default::default(),
        unshare_cgroup: Default::default(),
        seccomp: Default::default(),
        hooks: None,
        proc_mnt: Default::default(),
        lsm: crate::lsm::Host::detect(Path::new("/")),
        init_pidfd: None,
    };
    let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(&mut child, req, fds)));
    let msg = match res {
        Ok(Ok(())) => unsafe { libc::_exit(0) },
        Ok(Err(m)) => m,
        Err(_) => "internal error: container setup panicked".to_string(),
    };
    let _ = sync::send(&child.sync, &ChildMsg::Failed(msg), &[]);
    unsafe { libc::_exit(1) }
}

fn dup_high(fd: RawFd, min: RawFd) -> R<RawFd> {
    // SAFETY: duplicating an fd we own.
    let n = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, min) };
    if n < 0 {
        return Err(format!("dup fd {fd}: {}", etext(Errno::last())));
    }
    Ok(n)
}

fn dup2(from: RawFd, to: RawFd) -> R {
    // SAFETY: plain dup2 onto a number we manage.
    if unsafe { libc::dup2(from, to) } < 0 {
        return Err(format!("dup2 {from} to {to}: {}", etext(Errno::last())));
    }
    Ok(())
}

/// Puts stdio on 0..2, the extra fds on 3.., the sync socket above them, closes the rest.
fn setup_fds(c: &mut Child, fds: ChildFds) -> R {
    let n = fds.extra.len() as RawFd;
    let min = 3 + n + 8;
    let sync = dup_high(c.sync, min)?;
    c.sync = sync;
    let devnull = nix::fcntl::open(
        "/dev/null",
        nix::fcntl::OFlag::O_RDWR | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| format!("open /dev/null: {}", etext(e)))?
    .into_raw_fd();
    let mut stdio = Vec::new();
    for f in [fds.stdin, fds.stdout, fds.stderr] {
        let raw = f.map(|f| f.into_raw_fd()).unwrap_or(devnull);
        stdio.push(dup_high(raw, min)?);
    }
    let mut extra = Vec::new();
    for f in fds.extra {
        extra.push(dup_high(f.into_raw_fd(), min)?);
    }
    for (i, f) in stdio.iter().enumerate() {
        dup2(*f, i as RawFd)?;
    }
    for (i, f) in extra.iter().enumerate() {
        dup2(*f, 3 + i as RawFd)?;
    }
    if let Some(j) = fds.join {
        c.join.set(Some(dup_high(j.into_raw_fd(), min)?));
    }
    if let Some(m) = fds.proc_mnt {
        c.proc_mnt.set(Some(dup_high(m.into_raw_fd(), min)?));
    }
    if let Some(p) = fds.init_pidfd {
        // SAFETY: dup_high returns a new fd that only this process owns.
        c.init_pidfd = Some(unsafe { OwnedFd::from_raw_fd(dup_high(p.into_raw_fd(), min)?) });
    }
    c.extra = (0..n).map(|i| 3 + i).collect();
    close_all(c);
    Ok(())
}

fn close_all(c: &Child) {
    close_all_but(c, &[]);
}

/// Closes every fd but the ones `c` needs and `also`.
fn close_all_but(c: &Child, also: &[RawFd]) {
    let mut keep = c.extra.clone();
    keep.extend_from_slice(also);
    keep.push(c.sync);
    keep.extend(c.join.get());
    keep.extend(c.proc_mnt.get());
    keep.extend(c.init_pidfd.as_ref().map(|f| f.as_raw_fd()));
    close_fds_except(&keep);
}

/// /proc/self/cgroup, once: host paths (mount_cgroup binds them), so read before any cgroup
/// namespace exists.
fn read_self_cgroup(c: &Child) {
    if c.self_cgroup.borrow().is_empty() {
        *c.self_cgroup.borrow_mut() = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    }
}

/// Waits until the spawner has moved us into our cgroup (it does so after the clone, while
/// we set up namespaces and mounts), then creates the cgroup namespace if the spec asks for
/// one. Called where the cgroup matters: before mounting cgroupfs, before the runtime hooks,
/// before dropping capabilities when a cgroup namespace is to be created (unshare needs
/// CAP_SYS_ADMIN), else once Start arrived, before the workload runs. Idempotent.
fn ensure_joined(c: &Child) -> R {
    if let Some(fd) = c.join.take() {
        let res = sync::recv_raw(fd);
        // SAFETY: closing the socket we own.
        unsafe { libc::close(fd) };
        match res.map_err(|e| format!("wait for the cgroup join: {}", etext(e)))? {
            Some((msg, _)) => match msg.split_first() {
                Some((b'J', _)) => {}
                Some((b'E', why)) => return Err(String::from_utf8_lossy(why).into_owned()),
                _ => return Err("the runtime did not place the process in its cgroup".into()),
            },
            None => return Err("the runtime did not place the process in its cgroup".into()),
        }
    }
    if c.unshare_cgroup.replace(false) {
        read_self_cgroup(c);
        nix::sched::unshare(CloneFlags::CLONE_NEWCGROUP)
            .map_err(|e| format!("create cgroup namespace: {}", etext(e)))?;
    }
    Ok(())
}

/// Sets the loopback interface up in the container's new network namespace, as runc does for
/// every new netns. Done here, in parallel with the cgroup join, rather than by the caller
/// after Ready.
fn loopback_up() -> R {
    // SAFETY: plain socket call; the fd is owned below.
    let s = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if s < 0 {
        return Err(format!("loopback: socket: {}", etext(Errno::last())));
    }
    // SAFETY: s is a fresh fd we own.
    let sock = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(s) };
    // SAFETY: ifreq is plain data; zero is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, b) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
        *d = *b as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS with a valid ifreq.
    unsafe {
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut ifr) != 0 {
            return Err(format!(
                "loopback: get flags of lo: {}",
                etext(Errno::last())
            ));
        }
        ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &ifr) != 0 {
            return Err(format!("loopback: set lo up: {}", etext(Errno::last())));
        }
    }
    Ok(())
}

fn run(c: &mut Child, req: Request, fds: ChildFds) -> R {
    // SAFETY: prctl with plain integer arguments.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    setup_fds(c, fds)?;
    c.cap_last = fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40);
    c.seccomp.set(crate::seccomp::prepare_for(&req)?);
    c.hooks = crate::hooks::ChildHooks::for_request(&req);
    match req {
        Request::Init(r) => {
            let process = r.spec.process().clone().ok_or("the spec has no process")?;
            crate::userns::wait_mapped(c.sync, &r.spec)?;
            init_namespaces(c, &r.spec)?;
            if namespaces(&r.spec)
                .iter()
                .any(|(t, p)| *t == LinuxNamespaceType::Network && p.is_none())
            {
                loopback_up()?;
            }
            // SAFETY: plain syscall.
            unsafe { libc::setsid() };
            oom_score_adj(c, &process)?;
            let nss = namespaces(&r.spec);
            let new_mnt = nss
                .iter()
                .any(|(t, p)| *t == LinuxNamespaceType::Mount && p.is_none());
            if new_mnt {
                crate::rootfs::setup(c, &r.spec, &r.rootfs)?;
            } else {
                c.warn("no new mount namespace: only chroot into the rootfs".into());
                ensure_joined(c)?;
                if let Some(h) = &c.hooks {
                    h.before_pivot(c.sync)?;
                }
                nix::unistd::chroot(&r.rootfs)
                    .map_err(|e| format!("chroot to {}: {}", r.rootfs.display(), etext(e)))?;
                std::env::set_current_dir("/").map_err(|e| format!("chdir /: {}", ioerr(&e)))?;
            }
            let new_uts = nss
                .iter()
                .any(|(t, p)| *t == LinuxNamespaceType::Uts && p.is_none());
            hostname(c, &r.spec, new_uts)?;
            sysctls(&r.spec, &nss)?;
            if new_mnt {
                crate::rootfs::finalize(&r.spec)?;
            }
            if let Some(fd) = c.proc_mnt.take() {
                // SAFETY: the spec mounts no proc: close the unused mount fd we own.
                unsafe { libc::close(fd) };
            }
            if c.unshare_cgroup.get() {
                ensure_joined(c)?; // while we still have CAP_SYS_ADMIN
            }
            finish(c, &r.spec, &process, &r.workload)
        }
        Request::Exec(r) => {
            let pidfd = c.init_pidfd.take();
            let init = crate::exec_ns::Init {
                pid: r.init_pid,
                pidfd: pidfd.as_ref(),
            };
            crate::exec_ns::join(&init, &r.spec)?;
            drop(pidfd);
            std::env::set_current_dir("/")
                .map_err(|e| format!("chdir to container root: {}", ioerr(&e)))?;
            oom_score_adj(c, &r.process)?;
            finish(c, &r.spec, &r.process, &r.workload)
        }
    }
}

fn namespaces(spec: &Spec) -> Vec<(LinuxNamespaceType, Option<PathBuf>)> {
    spec.linux()
        .as_ref()
        .and_then(|l| l.namespaces().clone())
        .unwrap_or_default()
        .into_iter()
        .map(|n| (n.typ(), n.path().clone()))
        .collect()
}

fn ns_order(t: LinuxNamespaceType) -> u8 {
    match t {
        LinuxNamespaceType::User => 0,
        LinuxNamespaceType::Cgroup => 1,
        LinuxNamespaceType::Mount => 9,
        _ => 5,
    }
}

fn init_namespaces(c: &Child, spec: &Spec) -> R {
    let mut join: Vec<(LinuxNamespaceType, PathBuf, OwnedFd)> = Vec::new();
    let mut new_cgroup = false;
    for (t, p) in namespaces(spec) {
        match (t, p) {
            (LinuxNamespaceType::Pid, _) => {}
            (LinuxNamespaceType::Cgroup, None) => new_cgroup = true,
            (_, None) => {}
            (t, Some(p)) => {
                if crate::userns::joined_by_spawner(spec, t) {
                    // Entered by the spawner for the clone (userns.rs); from inside the new
                    // user namespace the path may not even be openable (/proc/<pid>/ns/*).
                    continue;
                }
                let f = open_ro(&p)
                    .map_err(|e| format!("open {t} namespace {}: {}", p.display(), etext(e)))?;
                if crate::userns::already_in(&f, t) {
                    continue; // entered by the spawner for the clone (userns.rs)
                }
                join.push((t, p, f));
            }
        }
    }
    join.sort_by_key(|(t, _, _)| ns_order(*t));
    for (t, p, f) in &join {
        nix::sched::setns(f, ns_clone_flag(*t))
            .map_err(|e| format!("join {t} namespace {}: {}", p.display(), etext(e)))?;
    }
    // Unshared by `ensure_joined`, once the spawner has moved us into our cgroup.
    c.unshare_cgroup.set(new_cgroup);
    Ok(())
}

fn oom_score_adj(c: &Child, process: &Process) -> R {
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
    if let Err(e) = crate::procfs::write("self/oom_score_adj", adj.to_string().as_bytes()) {
        let perm = matches!(e.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES));
        if perm && adj < cur {
            c.warn(format!(
                "setting oom_score_adj to {adj} (lower than {cur}) failed, ignored: {}",
                ioerr(&e)
            ));
        } else {
            return Err(format!("set oom_score_adj to {adj}: {}", ioerr(&e)));
        }
    }
    Ok(())
}

fn hostname(c: &Child, spec: &Spec, new_uts: bool) -> R {
    let host = spec.hostname().clone().unwrap_or_default();
    let domain = spec.domainname().clone().unwrap_or_default();
    if host.is_empty() && domain.is_empty() {
        return Ok(());
    }
    if !new_uts {
        c.warn("hostname/domainname ignored: the container has no UTS namespace of its own".into());
        return Ok(());
    }
    if !host.is_empty() {
        nix::unistd::sethostname(&host)
            .map_err(|e| format!("set hostname {host:?}: {}", etext(e)))?;
    }
    if !domain.is_empty() {
        // SAFETY: valid pointer and length.
        let r = unsafe { libc::setdomainname(domain.as_ptr().cast(), domain.len()) };
        if r != 0 {
            return Err(format!(
                "set domainname {domain:?}: {}",
                etext(Errno::last())
            ));
        }
    }
    Ok(())
}

/// Which namespace a sysctl belongs to, if any.
pub(crate) fn sysctl_namespace(key: &str) -> Option<LinuxNamespaceType> {
    const IPC: [&str; 8] = [
        "kernel.msgmax",
        "kernel.msgmnb",
        "kernel.msgmni",
        "kernel.sem",
        "kernel.shmall",
        "kernel.shmmax",
        "kernel.shmmni",
        "kernel.shm_rmid_forced",
    ];
    if IPC.contains(&key) || key.starts_with("fs.mqueue.") {
        Some(LinuxNamespaceType::Ipc)
    } else if key == "kernel.hostname" || key == "kernel.domainname" {
        Some(LinuxNamespaceType::Uts)
    } else if key.starts_with("net.") {
        Some(LinuxNamespaceType::Network)
    } else {
        None
    }
}

fn sysctls(spec: &Spec, nss: &[(LinuxNamespaceType, Option<PathBuf>)]) -> R {
    let Some(map) = spec.linux().as_ref().and_then(|l| l.sysctl().clone()) else {
        return Ok(());
    };
    let mut keys: Vec<_> = map.into_iter().collect();
    keys.sort();
    for (k, v) in keys {
        let key = k.replace('/', ".");
        match sysctl_namespace(&key) {
            Some(t) if nss.iter().any(|(n, _)| *n == t) => {}
            _ => {
                return Err(format!(
                    "sysctl {k:?} is not allowed: it is not in a namespace of the container"
                ))
            }
        }
        let path = format!("sys/{}", key.replace('.', "/"));
        crate::procfs::write(&path, v.as_bytes())
            .map_err(|e| format!("write sysctl {k}: {}", ioerr(&e)))?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// process

fn setup_pty(c: &Child, process: &Process, need_setsid: bool) -> R {
    let master = nix::fcntl::open(
        "/dev/ptmx",
        nix::fcntl::OFlag::O_RDWR | nix::fcntl::OFlag::O_NOCTTY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| format!("open /dev/ptmx: {}", etext(e)))?;
    let mfd = master.as_raw_fd();
    let unlock: libc::c_int = 0;
    // SAFETY: ioctls on our own pty master with valid arguments.
    unsafe {
        if libc::ioctl(mfd, libc::TIOCSPTLCK, &unlock) != 0 {
            return Err(format!("unlock pty: {}", etext(Errno::last())));
        }
    }
    // SAFETY: TIOCGPTPEER returns a new fd for the slave.
    let slave = unsafe { libc::ioctl(mfd, libc::TIOCGPTPEER, libc::O_RDWR | libc::O_NOCTTY) };
    if slave < 0 {
        return Err(format!("open pty slave: {}", etext(Errno::last())));
    }
    if let Some(sz) = process.console_size() {
        let ws = libc::winsize {
            ws_row: sz.height() as u16,
            ws_col: sz.width() as u16,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: valid winsize pointer.
        unsafe { libc::ioctl(mfd, libc::TIOCSWINSZ, &ws) };
    }
    if need_setsid {
        // SAFETY: plain syscall.
        unsafe { libc::setsid() };
    }
    // SAFETY: make the slave our controlling terminal.
    if unsafe { libc::ioctl(slave, libc::TIOCSCTTY, 0) } != 0 {
        return Err(format!(
            "set controlling terminal: {}",
            etext(Errno::last())
        ));
    }
    for i in 0..3 {
        dup2(slave, i)?;
    }
    // SAFETY: closing the fd TIOCGPTPEER gave us.
    unsafe { libc::close(slave) };
    sync::send(&c.sync, &ChildMsg::PtyMaster, &[mfd])?;
    drop(master);
    Ok(())
}

fn rlimits(process: &Process) -> R {
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
            let name = serde_json::to_string(&rl.typ()).unwrap_or_default();
            return Err(format!(
                "setrlimit {}: {}",
                name.trim_matches('"'),
                etext(Errno::last())
            ));
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

fn cap_set(set: &Option<oci_spec::runtime::Capabilities>) -> R<u64> {
    let mut bits = 0u64;
    for cap in set.iter().flatten() {
        let name = serde_json::to_string(cap).unwrap_or_default();
        let name = name.trim_matches('"');
        let n = cap_number(name).ok_or_else(|| format!("unknown capability {name:?}"))?;
        bits |= 1 << n;
    }
    Ok(bits)
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

fn capset(eff: u64, perm: u64, inh: u64) -> std::result::Result<(), Errno> {
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

fn identity_and_caps(c: &Child, process: &Process) -> R {
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
                    return Err(format!(
                        "drop capability CAP_{} from the bounding set: {}",
                        CAP_NAMES.get(n as usize).unwrap_or(&"?"),
                        etext(Errno::last())
                    ));
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
        Err(e) => {
            return Err(format!(
                "setgroups {:?}: {}",
                user.additional_gids(),
                etext(e)
            ))
        }
    }
    let (uid, gid) = (user.uid(), user.gid());
    // SAFETY: plain id syscalls.
    if unsafe { libc::setresgid(gid, gid, gid) } != 0 {
        return Err(format!("setgid {gid}: {}", etext(Errno::last())));
    }
    // SAFETY: as above.
    if unsafe { libc::setresuid(uid, uid, uid) } != 0 {
        return Err(format!("setuid {uid}: {}", etext(Errno::last())));
    }
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0) };
    if let Some((_, eff, perm, inh, amb)) = sets {
        capset(eff, perm, inh).map_err(|e| format!("set capabilities: {}", etext(e)))?;
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
            return Err(format!("set no_new_privs: {}", etext(Errno::last())));
        }
    }
    Ok(())
}

fn env_path(env: &[String]) -> String {
    env.iter()
        .rev()
        .find_map(|e| e.strip_prefix("PATH="))
        .map(str::to_string)
        .unwrap_or_else(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into())
}

fn is_executable(p: &Path) -> std::result::Result<(), Errno> {
    let m = fs::metadata(p).map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))?;
    if m.is_dir() {
        return Err(Errno::EACCES);
    }
    nix::unistd::access(p, nix::unistd::AccessFlags::X_OK)?;
    let _ = m.permissions().mode();
    Ok(())
}

/// Resolves argv[0] inside the container: a path with a slash as is, else through `PATH`.
pub(crate) fn resolve_exe(arg0: &str, env: &[String]) -> R<PathBuf> {
    if arg0.is_empty() {
        return Err("exec: the process has an empty argv[0]".into());
    }
    if arg0.contains('/') {
        let p = PathBuf::from(arg0);
        return match is_executable(&p) {
            Ok(()) => Ok(p),
            Err(Errno::ENOENT) => Err(format!(
                "exec: \"{arg0}\": stat {arg0}: no such file or directory"
            )),
            Err(e) => Err(format!("exec: \"{arg0}\": {}", etext(e))),
        };
    }
    for dir in env_path(env).split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let p = Path::new(dir).join(arg0);
        if is_executable(&p).is_ok() {
            return Ok(p);
        }
    }
    Err(format!(
        "exec: \"{arg0}\": executable file not found in $PATH"
    ))
}

/// The runner registered as `name`.
fn runner(c: &Child, name: &str) -> R<&'static dyn crate::workload::WorkloadRunner> {
    c.workloads
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, r)| *r)
        .ok_or_else(|| format!("unknown workload runner {name:?}"))
}

fn finish(c: &Child, spec: &Spec, process: &Process, workload: &Workload) -> R {
    // A runner's setup runs while we still have every privilege we will drop below.
    let setup = match workload {
        Workload::Custom { runner: name, .. } => runner(c, name)?.setup(spec)?,
        Workload::Exec => Vec::new(),
    };
    let setup_fds: Vec<RawFd> = setup.iter().map(|(_, fd)| fd.as_raw_fd()).collect();
    crate::personality::apply(spec)?;
    // AppArmor profile and SELinux label for the exec, as runc: before no_new_privs, the
    // identity change and seccomp (lsm.rs).
    crate::lsm::apply(process, &c.lsm, crate::procfs::write)?;
    let terminal = process.terminal().unwrap_or(false);
    if terminal {
        // The init is already a session leader.
        let is_leader = nix::unistd::getsid(None).ok() == Some(nix::unistd::getpid());
        setup_pty(c, process, !is_leader)?;
    }
    rlimits(process)?;
    // seccomp as runc orders it: without no_new_privs loading needs CAP_SYS_ADMIN, so before
    // the identity and capabilities change; with it, as late as possible (below).
    if !process.no_new_privileges().unwrap_or(false) {
        if let Some(s) = c.seccomp.take() {
            s.load()?;
        }
    }
    identity_and_caps(c, process)?;
    let umask = process.user().umask().unwrap_or(0o022);
    // SAFETY: umask never fails.
    unsafe { libc::umask(umask as libc::mode_t) };
    let cwd = process.cwd().to_string_lossy().into_owned();
    let cwd = if cwd.is_empty() { "/".to_string() } else { cwd };
    if let Err(e) = std::env::set_current_dir(&cwd) {
        return Err(format!(
            "chdir to cwd ({cwd:?}) set in config.json failed: {}",
            ioerr(&e)
        ));
    }
    let args = process.args().clone().unwrap_or_default();
    if args.is_empty() {
        return Err("the process has no args in config.json".into());
    }
    let env = process.env().clone().unwrap_or_default();
    let memory_limit = spec
        .linux()
        .as_ref()
        .and_then(|l| l.resources().as_ref())
        .and_then(|r| r.memory().as_ref())
        .and_then(|m| m.limit())
        .filter(|l| *l > 0)
        .map(|l| l as u64);
    let ctx = ProcessContext {
        args: args.clone(),
        env: env.clone(),
        cwd: cwd.clone(),
        terminal,
        memory_limit,
        extra_fds: c.extra.clone(),
    };
    if let Some(s) = c.seccomp.take() {
        s.load()?;
    }
    close_all_but(c, &setup_fds);
    match workload {
        Workload::Exec => {
            let exe = resolve_exe(&args[0], &env)?;
            let cexe = CString::new(exe.as_os_str().as_encoded_bytes())
                .map_err(|_| format!("exec {}: path contains a NUL byte", exe.display()))?;
            let cargs = to_cstrings(&args, "argument")?;
            let cenv = to_cstrings(&env, "environment variable")?;
            ready_and_wait(c)?;
            if let Some(h) = &c.hooks {
                h.start_container()?;
            }
            let e = nix::unistd::execve(&cexe, &cargs, &cenv).unwrap_err();
            let _ = sync::send(
                &c.sync,
                &ChildMsg::Failed(format!("exec {}: {}", exe.display(), etext(e))),
                &[],
            );
            // SAFETY: leaving the child without running destructors.
            unsafe { libc::_exit(127) }
        }
        Workload::Custom {
            runner: name,
            payload,
        } => {
            let prepared = runner(c, name)?.prepare(&ctx, payload, setup)?;
            ready_and_wait(c)?;
            if let Some(h) = &c.hooks {
                h.start_container()?;
            }
            // SAFETY: closing our end of the sync socket: EOF tells the caller we started.
            unsafe { libc::close(c.sync) };
            let code = prepared.run(&ctx);
            // SAFETY: leaving without running the spawner's destructors.
            unsafe { libc::_exit(code & 0xff) }
        }
    }
}

fn to_cstrings(v: &[String], what: &str) -> R<Vec<CString>> {
    v.iter()
        .map(|s| {
            CString::new(s.as_bytes()).map_err(|_| format!("{what} {s:?} contains a NUL byte"))
        })
        .collect()
}

fn ready_and_wait(c: &Child) -> R {
    sync::send(&c.sync, &ChildMsg::Ready, &[])?;
    match sync::recv::<ParentMsg>(&c.sync) {
        Ok(Some((ParentMsg::Start, _))) => {}
        // The caller gave up on this process.
        _ => unsafe { libc::_exit(1) },
    }
    // Usually the join finished long ago: Ready, the reply to Create and containerd's Start
    // came in between. Nothing of the workload runs before it.
    ensure_joined(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_by_name() {
        assert_eq!(cap_number("CAP_CHOWN"), Some(0));
        assert_eq!(cap_number("CAP_NET_BIND_SERVICE"), Some(10));
        assert_eq!(cap_number("CAP_CHECKPOINT_RESTORE"), Some(40));
        assert_eq!(cap_number("CAP_NOPE"), None);
        // Every capability oci-spec knows maps to a number.
        let caps = oci_spec::runtime::LinuxCapabilities::default();
        assert_ne!(cap_set(caps.bounding()).unwrap(), 0);
    }

    #[test]
    fn resolves_through_container_path() {
        let d = tempfile::tempdir().unwrap();
        let bin = d.path().join("bin");
        fs::create_dir(&bin).unwrap();
        let exe = bin.join("tool");
        fs::write(&exe, "#!/bin/sh\n").unwrap();
        fs::set_permissions(&exe, fs::Permissions::from_mode(0o755)).unwrap();
        let env = vec![format!("PATH=/nonexistent:{}", bin.display())];
        assert_eq!(resolve_exe("tool", &env).unwrap(), exe);
        assert_eq!(
            resolve_exe("nosuchcmd", &env).unwrap_err(),
            "exec: \"nosuchcmd\": executable file not found in $PATH"
        );
        assert!(resolve_exe("/nope/x", &env)
            .unwrap_err()
            .contains("no such file or directory"));
    }

    #[test]
    fn sysctl_namespaces() {
        assert_eq!(
            sysctl_namespace("net.ipv4.ip_forward"),
            Some(LinuxNamespaceType::Network)
        );
        assert_eq!(
            sysctl_namespace("kernel.shmmax"),
            Some(LinuxNamespaceType::Ipc)
        );
        assert_eq!(
            sysctl_namespace("fs.mqueue.msg_max"),
            Some(LinuxNamespaceType::Ipc)
        );
        assert_eq!(sysctl_namespace("vm.swappiness"), None);
    }
}
