//! The commands.
//!
//! Over 600 lines: one function per runc command, in `dispatch`'s order; each is short and
//! they share the state helpers at the top.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use oci_spec::runtime::{Capability, Process};
use runtime_native::container::{self, BuildSteps, ContainerSpec, InitIo, Made};
use runtime_native::identity::Signalled;
use runtime_native::{Cgroup, ExecRequest, PathIoError, PendingProcess, Spawner, Workload};

use crate::args::{Command, CreateOpts, ExecOpts, Format, Global, StartOpts};
use crate::state::{self, State, Status};
use crate::{monitor, term, Error};

const HELP: &str = "amphi-oci: an OCI runtime (runc's command line) over amphi's runtime-native

USAGE: amphi-oci [global options] command [command options] [arguments...]

COMMANDS:
   create   create a container          (--bundle/-b, --console-socket, --pid-file)
   start    start a created container
   run      create and start a container (-d/--detach, --keep, plus create's options)
   state    print the state of a container
   kill     send a signal to the container's init (--all/-a); default SIGTERM
   delete   delete a container (--force/-f)
   exec     run a process in a container (--process/-p FILE | -- ARGS; -t, -d, --cwd, -e,
            --console-socket, --pid-file, -u)
   ps       list the container's processes (--format/-f table|json)
   pause    freeze all processes of a container
   resume   thaw a paused container
   list     list containers (--format/-f table|json, -q)
   update   set the container's cgroup resources (--resources FILE|-, LinuxResources JSON)

GLOBAL OPTIONS:
   --root DIR            state directory (default /run/amphi-oci)
   --log FILE            log file (default stderr)
   --log-format text|json
   --debug               debug logging
   --systemd-cgroup      accepted (cgroupsPath `slice:prefix:name` is understood either way)
   --version, -v
";

pub fn dispatch(g: &Global, cmd: Command, spawner: Option<Spawner>) -> Result<i32, Error> {
    match cmd {
        Command::Create(o) => create(g, &o, false),
        Command::Run(o) if o.start.detach => create(g, &o, true),
        Command::Run(o) => run_foreground(
            g,
            &o,
            spawner.ok_or_else(|| Error::Other("no spawner".into()))?,
        ),
        Command::Start { id } => start(g, &id),
        Command::State { id } => print_state(g, &id),
        Command::Kill { id, signal, all } => kill(g, &id, signal, all),
        Command::Delete { id, force } => delete(g, &id, force),
        Command::Exec(o) => exec(
            g,
            &o,
            spawner.ok_or_else(|| Error::Other("no spawner".into()))?,
        ),
        Command::Ps {
            id,
            format,
            ps_args,
        } => ps(g, &id, format, &ps_args),
        Command::Pause { id } => pause(g, &id, true),
        Command::Resume { id } => pause(g, &id, false),
        Command::List { format, quiet } => list(g, format, quiet),
        Command::Update { id, resources } => update(g, &id, resources.as_deref()),
        Command::Version => {
            print!("{}", crate::VERSION_TEXT);
            Ok(0)
        }
        Command::Help => {
            print!("{HELP}");
            Ok(0)
        }
    }
}

fn container_dir(g: &Global, id: &str) -> Result<PathBuf, Error> {
    state::validate_id(id).map_err(|_| Error::NotExist(id.to_string()))?;
    Ok(g.root.join(id))
}

/// The container's state dir and state; a missing (or half-created) one does not exist.
fn load(g: &Global, id: &str) -> Result<(PathBuf, State), Error> {
    let dir = container_dir(g, id)?;
    match State::load(&dir) {
        Ok(s) => Ok((dir, s)),
        Err(Error::Io(PathIoError { source, .. }))
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            Err(Error::NotExist(id.to_string()))
        }
        Err(e) => Err(e),
    }
}

fn cgroup_of(st: &State) -> Result<&Cgroup, Error> {
    st.cgroup
        .as_ref()
        .ok_or_else(|| Error::Other(format!("container \"{}\" has no cgroup", st.id)))
}

fn is_terminal(p: &Option<Process>) -> bool {
    p.as_ref().and_then(|p| p.terminal()).unwrap_or(false)
}

struct Prepared {
    dir: PathBuf,
    bundle: PathBuf,
    rootfs: PathBuf,
    spec: oci_spec::runtime::Spec,
}

/// Checks the request, loads the bundle and claims `<root>/<id>`.
fn prepare(g: &Global, o: &CreateOpts, detached: bool) -> Result<Prepared, Error> {
    state::validate_id(&o.id)?;
    let bundle = match &o.bundle {
        Some(b) => b.clone(),
        None => std::env::current_dir().map_err(|e| Error::io("get", Path::new("cwd"), e))?,
    };
    let bundle = std::fs::canonicalize(&bundle).map_err(|e| Error::io("bundle", &bundle, e))?;
    let spec = runtime_native::spec::load(&bundle)?;
    let rootfs = runtime_native::spec::root_path(&spec, &bundle);
    let rootfs = std::fs::canonicalize(&rootfs).map_err(|e| Error::io("rootfs", &rootfs, e))?;
    check_console(&o.start, is_terminal(spec.process()), detached)?;
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&g.root)
            .map_err(|e| Error::io("create", &g.root, e))?;
    }
    let dir = g.root.join(&o.id);
    match std::fs::create_dir(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(Error::Exists(o.id.clone()))
        }
        Err(e) => return Err(Error::io("create", &dir, e)),
    }
    Ok(Prepared {
        dir,
        bundle,
        rootfs,
        spec,
    })
}

/// `create`, and `run -d` (with `autostart`): through a monitor process.
fn create(g: &Global, o: &CreateOpts, autostart: bool) -> Result<i32, Error> {
    let p = prepare(g, o, true)?;
    let launched = monitor::launch(monitor::Launch {
        dir: p.dir.clone(),
        id: o.id.clone(),
        bundle: p.bundle,
        rootfs: p.rootfs,
        spec: p.spec,
        console_socket: o.start.console_socket.clone(),
        autostart,
        preserve_fds: o.start.preserve_fds,
    });
    let pid = match launched {
        Ok(pid) => pid,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&p.dir);
            return Err(e);
        }
    };
    // The monitor holds the pty master and sends it itself.
    hand_over(&o.start, pid, &mut None)?;
    Ok(0)
}

/// runc's rules for `--console-socket`: a process with a terminal that the command does not
/// wait for needs one; a process without a terminal may not have one.
fn check_console(o: &StartOpts, terminal: bool, detached: bool) -> Result<(), Error> {
    if terminal && detached && o.console_socket.is_none() {
        return Err(Error::Usage(
            "cannot allocate tty if runc will detach without setting console socket".into(),
        ));
    }
    if !terminal && o.console_socket.is_some() {
        return Err(Error::Usage(
            "cannot use console socket if runc will not detach or allocate tty".into(),
        ));
    }
    Ok(())
}

/// Hands the created process `pid` over as the flags ask: its pty master to the console
/// socket (`master` is then `None`), its pid into the pid file.
fn hand_over(o: &StartOpts, pid: i32, master: &mut Option<OwnedFd>) -> Result<(), Error> {
    if let (Some(cs), Some(m)) = (&o.console_socket, master.as_ref()) {
        term::send_console(cs, m)?;
        *master = None;
    }
    if let Some(pf) = &o.pid_file {
        state::write_pid_file(pf, pid)?;
    }
    Ok(())
}

/// Signals the container's init only while its pid is still that process.
fn signal_init(st: &State, signal: i32) -> std::io::Result<Signalled> {
    if st.pid_start == 0 {
        // A state from before the start time was kept: the pid as it is.
        // SAFETY: kill with plain integers.
        if unsafe { libc::kill(st.pid, signal) } != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ESRCH) {
                return Ok(Signalled::Gone);
            }
            return Err(e);
        }
        return Ok(Signalled::Sent);
    }
    runtime_native::identity::signal_recorded(st.pid, st.pid_start, signal)
}

/// Kills what was created and removes it (a failed `run`, `delete`).
fn destroy(dir: &Path, st: Option<&State>) -> Result<(), Error> {
    if let Some(st) = st {
        if st.init_alive() {
            let _ = signal_init(st, libc::SIGKILL);
        }
        if let Some(cg) = &st.cgroup {
            cg.destroy()?;
        }
        if st.monitor_pid != 0 && !monitor::wait_gone(dir, Duration::from_secs(5)) {
            log::warn!("monitor of {} did not exit", st.id);
        }
    }
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("remove", dir, e)),
    }
}

/// `run`'s steps of the container build: the CLI's stdio, then the state, console and pid
/// file once the init exists.
struct ForegroundSteps<'a> {
    o: &'a CreateOpts,
    dir: &'a Path,
    st: &'a mut State,
    terminal: bool,
    master: Option<OwnedFd>,
}

impl BuildSteps for ForegroundSteps<'_> {
    type Error = Error;

    fn init_io(&mut self, _: &Made) -> Result<InitIo, Error> {
        Ok(InitIo {
            stdio: term::container_stdio(self.terminal, self.o.start.preserve_fds)?,
            workload: Workload::Exec,
        })
    }

    fn spawned(&mut self, made: &Made, init: &mut PendingProcess) -> Result<(), Error> {
        self.st.cgroup = Some(made.cgroup.clone());
        self.st.set_pid(init.pid);
        self.st.save(self.dir)?;
        self.master = init.pty_master.take();
        hand_over(&self.o.start, init.pid, &mut self.master)
    }
}

/// `run` in the foreground: this process is the container's parent and waits for it.
fn run_foreground(g: &Global, o: &CreateOpts, spawner: Spawner) -> Result<i32, Error> {
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    let p = prepare(g, o, false)?;
    let mut st = State::new(&o.id, &p.bundle, &p.rootfs, p.spec.clone());
    let mut steps = ForegroundSteps {
        o,
        dir: &p.dir,
        st: &mut st,
        terminal: is_terminal(p.spec.process()),
        master: None,
    };
    let target = ContainerSpec::in_place(&o.id, &p.bundle, &p.spec, &p.rootfs);
    let built = container::build(&spawner, target, &mut steps);
    let master = steps.master.take();
    let started = built.and_then(|b| {
        b.init.start()?;
        st.started = true;
        st.save(&p.dir)?;
        st.poststart()
    });
    if let Err(e) = started {
        let _ = destroy(&p.dir, Some(&st));
        return Err(e);
    }
    drop(spawner);
    term::forward_signals(st.pid);
    let code = match master {
        Some(m) => term::pty_copy_and_wait(m, st.pid),
        None => term::wait_for(st.pid),
    };
    st.exit_code = Some(code);
    if o.keep {
        st.save(&p.dir)?;
    } else {
        destroy(&p.dir, Some(&st))?;
        st.poststop();
    }
    Ok(code)
}

fn start(g: &Global, id: &str) -> Result<i32, Error> {
    let (dir, st) = load(g, id)?;
    match st.status() {
        Status::Created => {}
        Status::Stopped => {
            return Err(Error::Other(
                "cannot start a container that has stopped".into(),
            ))
        }
        Status::Creating => {
            return Err(Error::Other(format!(
                "cannot start container \"{id}\": it is still being created"
            )))
        }
        Status::Running | Status::Paused => {
            return Err(Error::Other(
                "cannot start an already running container".into(),
            ))
        }
    }
    monitor::request_start(&dir)?;
    Ok(0)
}

fn print_state(g: &Global, id: &str) -> Result<i32, Error> {
    let (_, st) = load(g, id)?;
    let oci = st.oci(st.status());
    let s = serde_json::to_string_pretty(&oci).map_err(|e| Error::Other(e.to_string()))?;
    println!("{s}");
    Ok(0)
}

fn kill(g: &Global, id: &str, signal: i32, all: bool) -> Result<i32, Error> {
    let (_, st) = load(g, id)?;
    let status = st.status();
    if all {
        cgroup_of(&st)?.signal_all(signal)?;
        return Ok(0);
    }
    if status == Status::Stopped || status == Status::Creating {
        return Err(Error::Other("container not running".into()));
    }
    // Through a pidfd, only while the pid still has the recorded start time (identity.rs):
    // the check above and the signal cannot be split by a pid reuse.
    match signal_init(&st, signal) {
        Ok(Signalled::Sent) => Ok(0),
        Ok(_) => Err(Error::Other("container not running".into())),
        Err(e) => Err(Error::Other(format!("kill container {id}: {e}"))),
    }
}

fn delete(g: &Global, id: &str, force: bool) -> Result<i32, Error> {
    let dir = container_dir(g, id)?;
    let st = match State::load(&dir) {
        Ok(s) => s,
        Err(_) if !dir.exists() => {
            if force {
                return Ok(0);
            }
            return Err(Error::NotExist(id.to_string()));
        }
        Err(e) => {
            // A directory without a readable state: an aborted create.
            if force {
                destroy(&dir, None)?;
                return Ok(0);
            }
            return Err(e);
        }
    };
    let status = st.status();
    match status {
        Status::Stopped | Status::Created | Status::Creating => {}
        Status::Running | Status::Paused if force => {}
        _ => {
            return Err(Error::Other(format!(
                "cannot delete container {id} that is not stopped: {}",
                status.as_str()
            )))
        }
    }
    destroy(&dir, Some(&st))?;
    st.poststop();
    Ok(0)
}

fn parse_user(u: &str) -> Result<(u32, Option<u32>), Error> {
    let bad = || {
        Error::Usage(format!(
            "invalid --user {u:?}: only numeric uid[:gid] is supported"
        ))
    };
    let (uid, gid) = match u.split_once(':') {
        Some((a, b)) => (a, Some(b)),
        None => (u, None),
    };
    let uid = uid.parse().map_err(|_| bad())?;
    let gid = match gid {
        Some(g) => Some(g.parse().map_err(|_| bad())?),
        None => None,
    };
    Ok((uid, gid))
}

/// The process `exec` runs: `--process FILE`, or the container's process with the args and
/// options given on the command line.
pub(crate) fn exec_process(o: &ExecOpts, base: Option<&Process>) -> Result<Process, Error> {
    if let Some(f) = &o.process {
        let data = std::fs::read(f).map_err(|e| Error::io("read", f, e))?;
        let mut p: Process = serde_json::from_slice(&data)
            .map_err(|e| Error::Other(format!("invalid process spec {}: {e}", f.display())))?;
        if o.tty {
            p.set_terminal(Some(true));
        }
        return Ok(p);
    }
    let mut p = base.cloned().unwrap_or_default();
    p.set_args(Some(o.args.clone()));
    p.set_terminal(Some(o.tty));
    if let Some(c) = &o.cwd {
        p.set_cwd(PathBuf::from(c));
    }
    let mut env = p.env().clone().unwrap_or_default();
    for e in &o.env {
        let key = e.split('=').next().unwrap_or(e);
        match env.iter_mut().find(|x| x.split('=').next() == Some(key)) {
            Some(x) => *x = e.clone(),
            None => env.push(e.clone()),
        }
    }
    p.set_env(Some(env));
    if let Some(u) = &o.user {
        let (uid, gid) = parse_user(u)?;
        let mut user = p.user().clone();
        user.set_uid(uid);
        if let Some(gid) = gid {
            user.set_gid(gid);
        }
        p.set_user(user);
    }
    if !o.additional_gids.is_empty() {
        let mut user = p.user().clone();
        let gids: Result<Vec<u32>, _> = o.additional_gids.iter().map(|g| g.parse()).collect();
        user.set_additional_gids(Some(gids.map_err(|_| {
            Error::Usage(format!("invalid --additional-gids {:?}", o.additional_gids))
        })?));
        p.set_user(user);
    }
    if o.no_new_privs {
        p.set_no_new_privileges(Some(true));
    }
    if !o.caps.is_empty() {
        let mut caps = p.capabilities().clone().unwrap_or_default();
        for c in &o.caps {
            let name = if c.starts_with("CAP_") {
                c.clone()
            } else {
                format!("CAP_{c}")
            };
            let cap: Capability = serde_json::from_value(serde_json::Value::String(name))
                .map_err(|_| Error::Usage(format!("unknown capability {c:?}")))?;
            for set in [
                caps.bounding().clone(),
                caps.effective().clone(),
                caps.permitted().clone(),
            ]
            .iter()
            .enumerate()
            {
                let mut s = set.1.clone().unwrap_or_default();
                s.insert(cap);
                match set.0 {
                    0 => caps.set_bounding(Some(s)),
                    1 => caps.set_effective(Some(s)),
                    _ => caps.set_permitted(Some(s)),
                };
            }
        }
        p.set_capabilities(Some(caps));
    }
    Ok(p)
}

fn exec(g: &Global, o: &ExecOpts, spawner: Spawner) -> Result<i32, Error> {
    let (_, st) = load(g, &o.id)?;
    match st.status() {
        Status::Stopped | Status::Creating => {
            return Err(Error::Other("cannot exec in a stopped container".into()))
        }
        Status::Paused if !o.ignore_paused => {
            return Err(Error::Other("cannot exec in a paused container".into()))
        }
        _ => {}
    }
    let process = exec_process(o, st.spec.process().as_ref())?;
    let terminal = process.terminal().unwrap_or(false);
    check_console(&o.start, terminal, o.start.detach)?;
    let stdio = term::container_stdio(terminal, o.start.preserve_fds)?;
    let mut pending = spawner.spawn_exec(
        ExecRequest {
            container_id: o.id.clone(),
            exec_id: format!("exec-{}", std::process::id()),
            init_pid: st.pid,
            // The CLI holds no pidfd of an init another invocation started: by path.
            init_pidfd: None,
            process,
            spec: st.spec.clone(),
            cgroup_procs: cgroup_of(&st)?.procs_files(),
            workload: Workload::Exec,
        },
        stdio,
    )?;
    let pid = pending.pid;
    let kill_it = |e: Error| {
        // SAFETY: killing and reaping our own child.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
        e
    };
    let mut master = pending.pty_master.take();
    hand_over(&o.start, pid, &mut master).map_err(kill_it)?;
    pending.start()?;
    drop(spawner);
    if o.start.detach {
        return Ok(0);
    }
    term::forward_signals(pid);
    Ok(match master {
        Some(m) => term::pty_copy_and_wait(m, pid),
        None => term::wait_for(pid),
    })
}

fn ps(g: &Global, id: &str, format: Format, ps_args: &[String]) -> Result<i32, Error> {
    let (_, st) = load(g, id)?;
    let pids = cgroup_of(&st)?.pids()?;
    if format == Format::Json {
        println!(
            "{}",
            serde_json::to_string(&pids).map_err(|e| Error::Other(e.to_string()))?
        );
        return Ok(0);
    }
    let args: Vec<String> = if ps_args.is_empty() {
        vec!["-ef".into()]
    } else {
        ps_args.to_vec()
    };
    let out = std::process::Command::new("ps")
        .args(&args)
        .output()
        .map_err(|e| Error::Other(format!("ps: {e}")))?;
    if !out.status.success() {
        return Err(Error::Other(format!(
            "ps: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let header = lines.next().unwrap_or_default();
    let col = header
        .split_whitespace()
        .position(|c| c == "PID")
        .ok_or_else(|| Error::Other("couldn't find PID field in ps output".into()))?;
    println!("{header}");
    for l in lines {
        let pid: Option<i32> = l.split_whitespace().nth(col).and_then(|p| p.parse().ok());
        if pid.is_some_and(|p| pids.contains(&p)) {
            println!("{l}");
        }
    }
    Ok(0)
}

fn update(g: &Global, id: &str, resources: Option<&Path>) -> Result<i32, Error> {
    let (_, st) = load(g, id)?;
    let Some(path) = resources else {
        return Err(Error::Usage(
            "update: only --resources FILE|- is supported".into(),
        ));
    };
    let data = if path == Path::new("-") {
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut v)
            .map_err(|e| Error::io("read", Path::new("stdin"), e))?;
        v
    } else {
        std::fs::read(path).map_err(|e| Error::io("read", path, e))?
    };
    let res: oci_spec::runtime::LinuxResources = serde_json::from_slice(&data)
        .map_err(|e| Error::Other(format!("invalid resources: {e}")))?;
    if st.status() == Status::Stopped {
        return Err(Error::Other("container not running".into()));
    }
    cgroup_of(&st)?.update(&res)?;
    Ok(0)
}

fn pause(g: &Global, id: &str, freeze: bool) -> Result<i32, Error> {
    let (dir, st) = load(g, id)?;
    let status = st.status();
    let cg = cgroup_of(&st)?;
    if freeze {
        if status != Status::Running && status != Status::Created {
            return Err(Error::Other("container not running".into()));
        }
        cg.freeze()?;
        State::update(&dir, |s| s.paused = true)?;
    } else {
        if status != Status::Paused {
            return Err(Error::Other("container not paused".into()));
        }
        cg.thaw()?;
        State::update(&dir, |s| s.paused = false)?;
    }
    Ok(0)
}

/// Columns padded like Go's tabwriter (min width 12, padding 3) as `runc list` prints them.
pub(crate) fn table(rows: &[Vec<String>]) -> String {
    let n = rows.iter().map(|r| r.len()).max().unwrap_or(0);
    let widths: Vec<usize> = (0..n)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| (c.chars().count() + 3).max(12))
                .max()
                .unwrap_or(12)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (i, c) in r.iter().enumerate() {
            if i + 1 == r.len() {
                line.push_str(c);
            } else {
                line.push_str(&format!("{c:<w$}", w = widths[i]));
            }
        }
        out.push_str(&line);
        out.push('\n');
    }
    out
}

fn list(g: &Global, format: Format, quiet: bool) -> Result<i32, Error> {
    let mut states = Vec::new();
    if let Ok(rd) = std::fs::read_dir(&g.root) {
        for e in rd.flatten() {
            if let Ok(st) = State::load(&e.path()) {
                states.push(st);
            }
        }
    }
    states.sort_by(|a, b| a.id.cmp(&b.id));
    if quiet {
        for s in &states {
            println!("{}", s.id);
        }
        return Ok(0);
    }
    match format {
        Format::Json => {
            let v: Vec<_> = states.iter().map(|s| s.oci(s.status())).collect();
            if v.is_empty() {
                println!("null");
            } else {
                println!(
                    "{}",
                    serde_json::to_string(&v).map_err(|e| Error::Other(e.to_string()))?
                );
            }
        }
        Format::Table => {
            let mut rows = vec![["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"]
                .map(String::from)
                .to_vec()];
            for s in &states {
                let o = s.oci(s.status());
                rows.push(vec![
                    o.id,
                    o.pid.to_string(),
                    o.status,
                    o.bundle.display().to_string(),
                    o.created,
                    if o.owner.is_empty() {
                        "root".into()
                    } else {
                        o.owner
                    },
                ]);
            }
            print!("{}", table(&rows));
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_process_from_flags() {
        let mut base = Process::default();
        base.set_env(Some(vec!["PATH=/bin".into(), "A=0".into()]));
        let o = ExecOpts {
            id: "c".into(),
            args: vec!["sh".into()],
            tty: true,
            cwd: Some("/tmp".into()),
            env: vec!["A=1".into(), "B=2".into()],
            user: Some("1000:100".into()),
            caps: vec!["CAP_SYS_ADMIN".into()],
            ..Default::default()
        };
        let p = exec_process(&o, Some(&base)).unwrap();
        assert_eq!(p.args().clone().unwrap(), vec!["sh"]);
        assert_eq!(p.terminal(), Some(true));
        assert_eq!(p.cwd(), Path::new("/tmp"));
        assert_eq!(p.env().clone().unwrap(), vec!["PATH=/bin", "A=1", "B=2"]);
        assert_eq!(p.user().uid(), 1000);
        assert_eq!(p.user().gid(), 100);
        assert!(p
            .capabilities()
            .as_ref()
            .unwrap()
            .bounding()
            .as_ref()
            .unwrap()
            .contains(&Capability::SysAdmin));
        let bad = ExecOpts {
            user: Some("nobody".into()),
            args: vec!["x".into()],
            ..Default::default()
        };
        assert!(exec_process(&bad, None).is_err());

        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("p.json");
        let mut pj = Process::default();
        pj.set_args(Some(vec!["echo".into(), "hi".into()]));
        std::fs::write(&f, serde_json::to_vec(&pj).unwrap()).unwrap();
        let o = ExecOpts {
            process: Some(f),
            ..Default::default()
        };
        let p = exec_process(&o, Some(&base)).unwrap();
        assert_eq!(p.args().clone().unwrap(), vec!["echo", "hi"]);
    }

    #[test]
    fn list_table() {
        let rows = vec![
            vec!["ID".to_string(), "PID".into(), "OWNER".into()],
            vec!["a-very-long-container-id".into(), "1".into(), "root".into()],
        ];
        let t = table(&rows);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], format!("{:<27}{:<12}OWNER", "ID", "PID"));
        assert_eq!(
            lines[1],
            format!("{:<27}{:<12}root", "a-very-long-container-id", "1")
        );
    }
}
