//! Why the container process could not be set up or start its workload: [`Error`], typed up
//! to `child::main`, which sends it to the caller as the text of `ChildMsg::Failed` (the caller
//! is another process, and the user reads it as containerd's error), and the errno wording
//! runc uses ([`etext`]).

use std::path::PathBuf;

use nix::errno::Errno;

use crate::sync;

/// Why the container process could not be set up or start its workload.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    #[error(transparent)]
    Sync(#[from] sync::Error),
    #[error(transparent)]
    ExecNs(#[from] crate::exec_ns::Error),
    #[error(transparent)]
    UserNs(#[from] crate::userns::Error),
    #[error(transparent)]
    Hook(#[from] crate::hooks::Error),
    #[error(transparent)]
    Personality(#[from] crate::personality::Error),
    #[error(transparent)]
    Lsm(#[from] crate::lsm::Error),
    #[error(transparent)]
    Seccomp(#[from] crate::seccomp::SeccompError),
    #[error("the spec has no process")]
    NoProcess,
    #[error("wait for the cgroup join: {}", etext(*.0))]
    CgroupJoinWait(#[source] Errno),
    /// The spawner's `cgroup.procs` write failed (its text: another process).
    #[error("{0}")]
    CgroupJoin(String),
    #[error("the runtime did not place the process in its cgroup")]
    NotPlaced,
    #[error("create cgroup namespace: {}", etext(*.0))]
    CgroupNs(#[source] Errno),
    #[error("loopback: {step}: {}", etext(*source))]
    Loopback {
        step: &'static str,
        #[source]
        source: Errno,
    },
    #[error(transparent)]
    Namespace(#[from] crate::ns::PathError),
    /// `what`: "hostname" or "domainname".
    #[error("set {what} {name:?}: {}", etext(*source))]
    Name {
        what: &'static str,
        name: String,
        #[source]
        source: Errno,
    },
    /// A call on the process itself: `call` names it and what it was called on
    /// ("dup2 5 to 0", "setuid 1000", "setrlimit RLIMIT_NOFILE").
    #[error("{call}: {}", etext(*source))]
    Sys {
        call: String,
        #[source]
        source: Errno,
    },
    #[error(transparent)]
    OomScoreAdj(#[from] super::limits::OomScoreAdjError),
    #[error("unknown capability {0:?}")]
    UnknownCapability(String),
    #[error("exec: the process has an empty argv[0]")]
    EmptyArgv0,
    #[error("exec: \"{arg0}\": stat {arg0}: no such file or directory")]
    NoSuchExe { arg0: String },
    #[error("exec: \"{arg0}\": {}", etext(*source))]
    NotExecutable {
        arg0: String,
        #[source]
        source: Errno,
    },
    #[error("exec: \"{arg0}\": executable file not found in $PATH")]
    NotInPath { arg0: String },
    #[error("sysctl {key:?} is not allowed: it is not in a namespace of the container")]
    SysctlNotNamespaced { key: String },
    #[error("write sysctl {key}: {}", ioerr(source))]
    Sysctl {
        key: String,
        #[source]
        source: std::io::Error,
    },
    #[error("chroot to {}: {}", path.display(), etext(*source))]
    Chroot {
        path: PathBuf,
        #[source]
        source: Errno,
    },
    #[error("chdir {what}: {}", ioerr(source))]
    Chdir {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("chdir to cwd ({cwd:?}) set in config.json failed: {}", ioerr(source))]
    Cwd {
        cwd: String,
        #[source]
        source: std::io::Error,
    },
    #[error("unknown workload runner {0:?}")]
    UnknownRunner(String),
    #[error("the process has no args in config.json")]
    NoArgs,
    #[error("exec {}: path contains a NUL byte", path.display())]
    NulInPath { path: PathBuf },
    #[error("{what} {value:?} contains a NUL byte")]
    Nul { what: &'static str, value: String },
    #[error("exec {}: {}", path.display(), etext(*source))]
    Exec {
        path: PathBuf,
        #[source]
        source: Errno,
    },
    /// The workload runner's own error (the wasm runner's: runtime_wasm's).
    #[error("{0}")]
    Runner(#[source] crate::workload::RunnerError),
    #[error("internal error: container setup panicked")]
    Panicked,
    #[error(transparent)]
    Rootfs(#[from] crate::rootfs::StepError),
}

/// `map_err` for a failed call: `sys("dup2 5 to 0")`.
pub(super) fn sys(call: impl Into<String>) -> impl FnOnce(Errno) -> Error {
    let call = call.into();
    move |source| Error::Sys { call, source }
}

/// The error of the call that just failed (its errno).
pub(super) fn last(call: impl Into<String>) -> Error {
    sys(call)(Errno::last())
}

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
