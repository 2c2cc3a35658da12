//! runc's command line.
//!
//! Like runc (urfave/cli): global flags come before the command; a command's flags may come
//! before or after its positional arguments (`delete ID --force`), except that for `exec`,
//! `kill` and `ps` everything after the container id is the command's (`exec ID ls -l`), as
//! runc marks them (`StopOnNthArg: 1`). The words are split by the `goflag` crate (the
//! shim's flags use it too); this module holds runc's flag tables and what each command makes
//! of them. Unlike runc, a global flag is not taken after the command. Flags runc has but we do not act on
//! (`--criu`, `--no-new-keyring`, ...) are accepted and ignored.
//!
//! Over 600 lines on purpose: runc's flag tables and commands (every command, flag and
//! alias), read and tested in one place.

use std::path::PathBuf;

use crate::Error;

pub const DEFAULT_ROOT: &str = "/run/amphi-oci";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Global {
    pub root: PathBuf,
    pub log: Option<PathBuf>,
    pub log_format: LogFormat,
    pub debug: bool,
    pub systemd_cgroup: bool,
}

impl Default for Global {
    fn default() -> Self {
        Global {
            root: PathBuf::from(DEFAULT_ROOT),
            log: None,
            log_format: LogFormat::Text,
            debug: false,
            systemd_cgroup: false,
        }
    }
}

/// The flags `create`/`run` and `exec` share: where the new process's pty master and pid
/// go, whether the command returns once it started, and the fds it inherits.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StartOpts {
    pub console_socket: Option<PathBuf>,
    pub pid_file: Option<PathBuf>,
    /// `run` and `exec` (`create` always returns once the process exists).
    pub detach: bool,
    /// Pass fds 3 .. 3+N of this process on to the container (at the same numbers).
    pub preserve_fds: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CreateOpts {
    pub id: String,
    pub bundle: Option<PathBuf>,
    /// `run` only: keep the container's state after it exits.
    pub keep: bool,
    pub start: StartOpts,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExecOpts {
    pub id: String,
    pub process: Option<PathBuf>,
    pub args: Vec<String>,
    pub tty: bool,
    pub start: StartOpts,
    pub cwd: Option<String>,
    pub env: Vec<String>,
    pub user: Option<String>,
    pub additional_gids: Vec<String>,
    pub caps: Vec<String>,
    pub no_new_privs: bool,
    pub ignore_paused: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Create(CreateOpts),
    Run(CreateOpts),
    Start {
        id: String,
    },
    State {
        id: String,
    },
    Kill {
        id: String,
        signal: i32,
        all: bool,
    },
    Delete {
        id: String,
        force: bool,
    },
    Exec(ExecOpts),
    Ps {
        id: String,
        format: Format,
        ps_args: Vec<String>,
    },
    Pause {
        id: String,
    },
    Resume {
        id: String,
    },
    List {
        format: Format,
        quiet: bool,
    },
    /// `update --resources FILE|- ID` (LinuxResources JSON, as containerd's runc shim sends).
    Update {
        id: String,
        resources: Option<PathBuf>,
    },
    Version,
    Help,
}

impl Command {
    /// Whether this invocation clones container processes itself (and so forks the spawner
    /// first thing in main). `create` and `run -d` do it in the monitor instead.
    pub fn spawns_here(&self) -> bool {
        matches!(self, Command::Run(o) if !o.start.detach) || matches!(self, Command::Exec(_))
    }

    /// `--preserve-fds N`.
    pub fn preserve_fds(&self) -> usize {
        match self {
            Command::Create(o) | Command::Run(o) => o.start.preserve_fds,
            Command::Exec(o) => o.start.preserve_fds,
            _ => 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    pub global: Global,
    pub command: Command,
}

use goflag::Kind::{Bool, Value};
use goflag::{Flag, Parsed as Flags};

const GLOBAL_FLAGS: &[Flag] = &[
    Flag(&["root"], Value),
    Flag(&["log"], Value),
    Flag(&["log-format"], Value),
    Flag(&["debug"], Bool),
    Flag(&["systemd-cgroup"], Bool),
    Flag(&["criu"], Value),
    Flag(&["rootless"], Value),
    Flag(&["help", "h"], Bool),
    Flag(&["version", "v"], Bool),
];

const CREATE_FLAGS: &[Flag] = &[
    Flag(&["bundle", "b"], Value),
    Flag(&["console-socket"], Value),
    Flag(&["pidfd-socket"], Value),
    Flag(&["pid-file"], Value),
    Flag(&["no-pivot"], Bool),
    Flag(&["no-new-keyring"], Bool),
    Flag(&["preserve-fds"], Value),
];

const RUN_FLAGS: &[Flag] = &[
    Flag(&["detach", "d"], Bool),
    Flag(&["keep"], Bool),
    Flag(&["no-subreaper"], Bool),
];

const EXEC_FLAGS: &[Flag] = &[
    Flag(&["console-socket"], Value),
    Flag(&["pidfd-socket"], Value),
    Flag(&["cwd"], Value),
    Flag(&["env", "e"], Value),
    Flag(&["tty", "t"], Bool),
    Flag(&["user", "u"], Value),
    Flag(&["additional-gids", "g"], Value),
    Flag(&["process", "p"], Value),
    Flag(&["detach", "d"], Bool),
    Flag(&["pid-file"], Value),
    Flag(&["process-label"], Value),
    Flag(&["apparmor"], Value),
    Flag(&["no-new-privs"], Bool),
    Flag(&["cap", "c"], Value),
    Flag(&["preserve-fds"], Value),
    Flag(&["cgroup"], Value),
    Flag(&["ignore-paused"], Bool),
];

fn usage(msg: impl Into<String>) -> Error {
    Error::Usage(msg.into())
}

/// Parses the global flags from the front of `args`; returns them and the rest (the command
/// and its arguments).
fn global_flags(args: &[String]) -> Result<(Flags, &[String]), Error> {
    let (flags, rest) = goflag::parse(args, &[GLOBAL_FLAGS]).map_err(|e| usage(e.to_string()))?;
    Ok((flags, &args[rest..]))
}

/// Where a command's flags end: anywhere (`None`), or once its container id was read.
const FLAGS_ANYWHERE: Option<usize> = None;
const FLAGS_BEFORE_THE_ARGS: Option<usize> = Some(1);

/// Parses a command's flags from `args`, wherever `layout` lets them stand; returns them and
/// the positional arguments.
fn command_flags(
    args: &[String],
    specs: &[&[Flag]],
    layout: Option<usize>,
) -> Result<(Flags, Vec<String>), Error> {
    goflag::parse_interspersed(args, specs, layout).map_err(|e| usage(e.to_string()))
}

/// The container id argument: exactly one (plus `extra` more allowed for kill/exec).
fn one_id(cmd: &str, rest: &[String]) -> Result<String, Error> {
    match rest {
        [id] => Ok(id.clone()),
        [] => Err(usage(format!(
            "\"{cmd}\" requires exactly 1 argument(s): container id"
        ))),
        _ => Err(usage(format!(
            "\"{cmd}\" requires exactly 1 argument(s), got {}",
            rest.len()
        ))),
    }
}

fn count_flag(f: &Flags, name: &str) -> Result<usize, Error> {
    match f.value(name) {
        None => Ok(0),
        Some(v) => v
            .parse()
            .map_err(|_| usage(format!("invalid value {v:?} for -{name}"))),
    }
}

impl StartOpts {
    fn from_flags(f: &Flags) -> Result<StartOpts, Error> {
        Ok(StartOpts {
            console_socket: f.path("console-socket"),
            pid_file: f.path("pid-file"),
            detach: f.bool("detach"),
            preserve_fds: count_flag(f, "preserve-fds")?,
        })
    }
}

fn format_flag(v: Option<&str>) -> Result<Format, Error> {
    match v {
        None | Some("table") => Ok(Format::Table),
        Some("json") => Ok(Format::Json),
        Some(o) => Err(usage(format!("invalid format option {o:?}"))),
    }
}

/// Parses the whole command line (without argv[0]).
pub fn parse(args: &[String]) -> Result<Invocation, Error> {
    let (gf, rest) = global_flags(args)?;
    let mut global = Global::default();
    if let Some(r) = gf.path("root") {
        global.root = r;
    }
    global.log = gf.path("log");
    global.log_format = match gf.value("log-format") {
        None | Some("text") => LogFormat::Text,
        Some("json") => LogFormat::Json,
        Some(o) => return Err(usage(format!("invalid log-format: {o}"))),
    };
    global.debug = gf.bool("debug");
    global.systemd_cgroup = gf.bool("systemd-cgroup");
    if gf.bool("version") {
        return Ok(Invocation {
            global,
            command: Command::Version,
        });
    }
    let Some((cmd, rest)) = rest.split_first() else {
        return Ok(Invocation {
            global,
            command: Command::Help,
        });
    };
    if gf.bool("help") {
        return Ok(Invocation {
            global,
            command: Command::Help,
        });
    }
    let command = match cmd.as_str() {
        "create" | "run" => {
            let is_run = cmd == "run";
            let specs: &[&[Flag]] = if is_run {
                &[CREATE_FLAGS, RUN_FLAGS]
            } else {
                &[CREATE_FLAGS]
            };
            let (f, rest) = command_flags(rest, specs, FLAGS_ANYWHERE)?;
            let o = CreateOpts {
                id: one_id(cmd, &rest)?,
                bundle: f.path("bundle"),
                keep: f.bool("keep"),
                start: StartOpts::from_flags(&f)?,
            };
            if is_run {
                Command::Run(o)
            } else {
                Command::Create(o)
            }
        }
        "start" | "state" | "pause" | "resume" => {
            let (_, rest) = command_flags(rest, &[], FLAGS_ANYWHERE)?;
            let id = one_id(cmd, &rest)?;
            match cmd.as_str() {
                "start" => Command::Start { id },
                "state" => Command::State { id },
                "pause" => Command::Pause { id },
                _ => Command::Resume { id },
            }
        }
        "kill" => {
            let all: &[Flag] = &[Flag(&["all", "a"], Bool)];
            let (f, rest) = command_flags(rest, &[all], FLAGS_BEFORE_THE_ARGS)?;
            let (id, signal) = match rest.as_slice() {
                [id] => (id.clone(), libc::SIGTERM),
                [id, sig] => (id.clone(), parse_signal(sig)?),
                [] => return Err(usage("\"kill\" requires a minimum of 1 argument(s)")),
                _ => return Err(usage("\"kill\" requires a maximum of 2 argument(s)")),
            };
            Command::Kill {
                id,
                signal,
                all: f.bool("all"),
            }
        }
        "delete" | "rm" => {
            let force: &[Flag] = &[Flag(&["force", "f"], Bool)];
            let (f, rest) = command_flags(rest, &[force], FLAGS_ANYWHERE)?;
            Command::Delete {
                id: one_id("delete", &rest)?,
                force: f.bool("force"),
            }
        }
        "exec" => {
            // `exec ID -- cmd args`: the `--` ends the flags and is dropped.
            let (f, rest) = command_flags(rest, &[EXEC_FLAGS], FLAGS_BEFORE_THE_ARGS)?;
            let Some((id, argv)) = rest.split_first() else {
                return Err(usage("\"exec\" requires a minimum of 1 argument(s)"));
            };
            let process = f.path("process");
            if process.is_none() && argv.is_empty() {
                return Err(usage("exec: args or --process must be given"));
            }
            Command::Exec(ExecOpts {
                id: id.clone(),
                process,
                args: argv.to_vec(),
                tty: f.bool("tty"),
                start: StartOpts::from_flags(&f)?,
                cwd: f.value("cwd").filter(|c| !c.is_empty()).map(String::from),
                env: f.values("env").to_vec(),
                user: f.value("user").filter(|u| !u.is_empty()).map(String::from),
                additional_gids: f.values("additional-gids").to_vec(),
                caps: f.values("cap").to_vec(),
                no_new_privs: f.bool("no-new-privs"),
                ignore_paused: f.bool("ignore-paused"),
            })
        }
        "ps" => {
            let format: &[Flag] = &[Flag(&["format", "f"], Value)];
            let (f, rest) = command_flags(rest, &[format], FLAGS_BEFORE_THE_ARGS)?;
            let Some((id, ps_args)) = rest.split_first() else {
                return Err(usage("\"ps\" requires a minimum of 1 argument(s)"));
            };
            Command::Ps {
                id: id.clone(),
                format: format_flag(f.value("format"))?,
                ps_args: ps_args.to_vec(),
            }
        }
        "update" => {
            let resources: &[Flag] = &[Flag(&["resources", "r"], Value)];
            let (f, rest) = command_flags(rest, &[resources], FLAGS_ANYWHERE)?;
            Command::Update {
                id: one_id(cmd, &rest)?,
                resources: f.path("resources"),
            }
        }
        "list" | "ls" => {
            let list: &[Flag] = &[Flag(&["format", "f"], Value), Flag(&["quiet", "q"], Bool)];
            let (f, rest) = command_flags(rest, &[list], FLAGS_ANYWHERE)?;
            if !rest.is_empty() {
                return Err(usage("\"list\" takes no arguments"));
            }
            Command::List {
                format: format_flag(f.value("format"))?,
                quiet: f.bool("quiet"),
            }
        }
        "help" | "h" => Command::Help,
        "version" => Command::Version,
        other => return Err(usage(format!("No help topic for '{other}'"))),
    };
    Ok(Invocation { global, command })
}

const SIGNALS: &[(&str, i32)] = &[
    ("HUP", libc::SIGHUP),
    ("INT", libc::SIGINT),
    ("QUIT", libc::SIGQUIT),
    ("ILL", libc::SIGILL),
    ("TRAP", libc::SIGTRAP),
    ("ABRT", libc::SIGABRT),
    ("IOT", libc::SIGIOT),
    ("BUS", libc::SIGBUS),
    ("FPE", libc::SIGFPE),
    ("KILL", libc::SIGKILL),
    ("USR1", libc::SIGUSR1),
    ("SEGV", libc::SIGSEGV),
    ("USR2", libc::SIGUSR2),
    ("PIPE", libc::SIGPIPE),
    ("ALRM", libc::SIGALRM),
    ("TERM", libc::SIGTERM),
    ("STKFLT", libc::SIGSTKFLT),
    ("CHLD", libc::SIGCHLD),
    ("CONT", libc::SIGCONT),
    ("STOP", libc::SIGSTOP),
    ("TSTP", libc::SIGTSTP),
    ("TTIN", libc::SIGTTIN),
    ("TTOU", libc::SIGTTOU),
    ("URG", libc::SIGURG),
    ("XCPU", libc::SIGXCPU),
    ("XFSZ", libc::SIGXFSZ),
    ("VTALRM", libc::SIGVTALRM),
    ("PROF", libc::SIGPROF),
    ("WINCH", libc::SIGWINCH),
    ("IO", libc::SIGIO),
    ("POLL", libc::SIGPOLL),
    ("PWR", libc::SIGPWR),
    ("SYS", libc::SIGSYS),
];

/// `KILL`, `SIGKILL`, `sigkill`, `9`, `RTMIN+3`.
pub fn parse_signal(s: &str) -> Result<i32, Error> {
    let bad = || usage(format!("unknown signal {s:?}"));
    if let Ok(n) = s.parse::<i32>() {
        if n <= 0 || n > libc::SIGRTMAX() {
            return Err(bad());
        }
        return Ok(n);
    }
    let up = s.to_ascii_uppercase();
    let name = up.strip_prefix("SIG").unwrap_or(&up);
    if let Some((_, n)) = SIGNALS.iter().find(|(n, _)| *n == name) {
        return Ok(*n);
    }
    let rt = |base: i32, off: &str, sign: i32| -> Result<i32, Error> {
        let o: i32 = if off.is_empty() {
            0
        } else {
            off.parse().map_err(|_| bad())?
        };
        let n = base + sign * o;
        if n < libc::SIGRTMIN() || n > libc::SIGRTMAX() {
            return Err(bad());
        }
        Ok(n)
    };
    if let Some(off) = name.strip_prefix("RTMIN") {
        return rt(libc::SIGRTMIN(), off.trim_start_matches('+'), 1);
    }
    if let Some(off) = name.strip_prefix("RTMAX") {
        return rt(libc::SIGRTMAX(), off.trim_start_matches('-'), -1);
    }
    Err(bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Invocation, Error> {
        let v: Vec<String> = s.split_whitespace().map(String::from).collect();
        parse(&v)
    }

    fn cmd(s: &str) -> Command {
        p(s).unwrap().command
    }

    #[test]
    fn globals() {
        let i = p("--root /tmp/r --log=/tmp/l --log-format json --debug --systemd-cgroup state x")
            .unwrap();
        assert_eq!(i.global.root, PathBuf::from("/tmp/r"));
        assert_eq!(i.global.log, Some(PathBuf::from("/tmp/l")));
        assert_eq!(i.global.log_format, LogFormat::Json);
        assert!(i.global.debug && i.global.systemd_cgroup);
        assert_eq!(i.command, Command::State { id: "x".into() });
        let i = p("-root /r state x").unwrap();
        assert_eq!(i.global.root, PathBuf::from("/r"));
        assert_eq!(p("state x").unwrap().global, Global::default());
        assert!(p("--log-format yaml state x").is_err());
        assert!(p("--nope state x")
            .unwrap_err()
            .to_string()
            .contains("flag provided but not defined: -nope"));
        assert_eq!(cmd("--version"), Command::Version);
        assert_eq!(cmd("-v"), Command::Version);
        assert_eq!(cmd(""), Command::Help);
        assert!(p("frobnicate x").is_err());
    }

    #[test]
    fn create_and_run() {
        let c = cmd(
            "create --bundle /b --console-socket /s --pid-file /p --no-pivot --no-new-keyring c1",
        );
        assert_eq!(
            c,
            Command::Create(CreateOpts {
                id: "c1".into(),
                bundle: Some("/b".into()),
                start: StartOpts {
                    console_socket: Some("/s".into()),
                    pid_file: Some("/p".into()),
                    ..Default::default()
                },
                ..Default::default()
            })
        );
        let Command::Run(o) = cmd("run -b=/b -d --keep --preserve-fds 2 c2") else {
            panic!()
        };
        assert!(o.start.detach && o.keep);
        assert_eq!(o.start.preserve_fds, 2);
        assert!(p("run --preserve-fds x c").is_err());
        assert_eq!(o.bundle, Some("/b".into()));
        assert!(cmd("run c").spawns_here());
        assert!(!cmd("run -d c").spawns_here());
        assert!(!cmd("create c").spawns_here());
        assert!(p("create -d c").is_err(), "detach is run-only");
        assert!(p("create").is_err());
        assert!(p("create a b").is_err());
        assert!(p("create --bundle").is_err());
    }

    #[test]
    fn kill_delete_ps_list() {
        assert_eq!(
            cmd("kill c"),
            Command::Kill {
                id: "c".into(),
                signal: libc::SIGTERM,
                all: false
            }
        );
        assert_eq!(
            cmd("kill --all c KILL"),
            Command::Kill {
                id: "c".into(),
                signal: 9,
                all: true
            }
        );
        assert_eq!(
            cmd("kill c 15"),
            Command::Kill {
                id: "c".into(),
                signal: 15,
                all: false
            }
        );
        assert!(p("kill c NOPE").is_err());
        assert!(p("kill c 1 2").is_err());
        assert_eq!(
            cmd("delete -f c"),
            Command::Delete {
                id: "c".into(),
                force: true
            }
        );
        assert_eq!(
            cmd("delete c"),
            Command::Delete {
                id: "c".into(),
                force: false
            }
        );
        // Like runc: a command's flags may follow its id...
        assert_eq!(
            cmd("delete c --force"),
            Command::Delete {
                id: "c".into(),
                force: true
            }
        );
        let Command::Create(o) = cmd("create c1 --bundle /b --pid-file=/p") else {
            panic!()
        };
        assert_eq!((o.id.as_str(), o.bundle), ("c1", Some("/b".into())));
        assert_eq!(o.start.pid_file, Some("/p".into()));
        assert!(p("delete c --nope")
            .unwrap_err()
            .to_string()
            .contains("flag provided but not defined: -nope"));
        // ...except where everything after the id is the command's (runc's StopOnNthArg).
        assert!(
            p("kill c --all").is_err(),
            "--all after the id is a signal name"
        );
        assert_eq!(
            cmd("ps c -o pid"),
            Command::Ps {
                id: "c".into(),
                format: Format::Table,
                ps_args: vec!["-o".into(), "pid".into()]
            }
        );
        assert_eq!(
            cmd("ps --format json c"),
            Command::Ps {
                id: "c".into(),
                format: Format::Json,
                ps_args: vec![]
            }
        );
        assert_eq!(
            cmd("ps c -- -o pid"),
            Command::Ps {
                id: "c".into(),
                format: Format::Table,
                ps_args: vec!["-o".into(), "pid".into()]
            }
        );
        assert_eq!(
            cmd("list -q -f json"),
            Command::List {
                format: Format::Json,
                quiet: true
            }
        );
        assert!(p("ps -f yaml c").is_err());
        assert_eq!(
            cmd("update --resources - c"),
            Command::Update {
                id: "c".into(),
                resources: Some("-".into())
            }
        );
    }

    #[test]
    fn exec() {
        let Command::Exec(o) =
            cmd("exec -t --console-socket /s -d --cwd /w -e A=1 --env B=2 --pid-file /p c sh -c x")
        else {
            panic!()
        };
        assert_eq!(o.id, "c");
        assert_eq!(o.args, vec!["sh", "-c", "x"]);
        assert!(o.tty && o.start.detach);
        assert_eq!(o.cwd.as_deref(), Some("/w"));
        assert_eq!(o.env, vec!["A=1", "B=2"]);
        assert_eq!(o.start.console_socket, Some("/s".into()));
        assert_eq!(o.start.pid_file, Some("/p".into()));
        // Flags after the id belong to the command.
        let Command::Exec(o) = cmd("exec c -- ls -l") else {
            panic!()
        };
        assert_eq!(o.args, vec!["ls", "-l"]);
        let Command::Exec(o) = cmd("exec c ls -l") else {
            panic!()
        };
        assert_eq!(o.args, vec!["ls", "-l"]);
        let Command::Exec(o) = cmd("exec -t c sh --cwd /x") else {
            panic!()
        };
        assert_eq!(
            (o.tty, o.cwd, o.args),
            (true, None, vec!["sh".into(), "--cwd".into(), "/x".into()])
        );
        let Command::Exec(o) = cmd("exec --process /p.json c") else {
            panic!()
        };
        assert_eq!(o.process, Some("/p.json".into()));
        assert!(o.args.is_empty());
        assert!(p("exec c").is_err());
        assert!(p("exec").is_err());
    }

    #[test]
    fn signals() {
        assert_eq!(parse_signal("KILL").unwrap(), 9);
        assert_eq!(parse_signal("SIGKILL").unwrap(), 9);
        assert_eq!(parse_signal("sigterm").unwrap(), 15);
        assert_eq!(parse_signal("9").unwrap(), 9);
        assert_eq!(parse_signal("USR1").unwrap(), libc::SIGUSR1);
        assert_eq!(parse_signal("RTMIN").unwrap(), libc::SIGRTMIN());
        assert_eq!(parse_signal("RTMIN+2").unwrap(), libc::SIGRTMIN() + 2);
        assert_eq!(parse_signal("SIGRTMAX-1").unwrap(), libc::SIGRTMAX() - 1);
        assert!(parse_signal("0").is_err());
        assert!(parse_signal("999").is_err());
        assert!(parse_signal("FOO").is_err());
        assert!(parse_signal("RTMIN+99").is_err());
    }
}
