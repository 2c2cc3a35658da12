//! `amphi-oci`: an OCI runtime command line (runc's syntax) over runtime-native.
//!
//! Process model: a command that clones container processes in this invocation (`run` in the
//! foreground, `exec`) forks runtime-native's spawner first thing in `main`, while the process
//! is single-threaded (it never starts a thread). `create` and `run -d` instead fork a small
//! detached monitor (see `monitor.rs`) that forks its own spawner, holds the created process
//! until `start`, is its parent, and records its exit.

mod args;
mod commands;
mod logger;
mod monitor;
mod state;
mod term;

use std::path::Path;

use runtime_native::PathIoError;

/// Errors of the command line; the message is what the user reads (runc's wording).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("container \"{0}\" does not exist")]
    NotExist(String),
    #[error("container \"{0}\" already exists")]
    Exists(String),
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Io(#[from] PathIoError),
    #[error(transparent)]
    Runtime(#[from] runtime_native::Error),
    #[error("{0}")]
    Other(String),
}

impl Error {
    pub fn io(op: &'static str, path: &Path, source: std::io::Error) -> Error {
        Error::Io(PathIoError::on(op, path)(source))
    }
}

pub const VERSION_TEXT: &str = concat!(
    "amphi-oci version ",
    env!("CARGO_PKG_VERSION"),
    "\nspec: 1.2.1\n"
);

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let inv = match args::parse(&argv) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    };
    // The fds to preserve must be the caller's, checked before this process opens any.
    for fd in 3..3 + inv.command.preserve_fds() as i32 {
        // SAFETY: F_GETFD only inspects the number.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
            eprintln!("--preserve-fds: fd {fd} is not open");
            std::process::exit(1);
        }
    }
    // First, while this process is single-threaded (it stays so; see ARCHITECTURE.md).
    let spawner = if inv.command.spawns_here() {
        match runtime_native::Spawner::fork_before_threads(&[]) {
            Ok(s) => Some(s),
            Err(e) => {
                eprintln!("fork the spawner: {e}");
                std::process::exit(1);
            }
        }
    } else {
        None
    };
    logger::init(&inv.global);
    let code = match commands::dispatch(&inv.global, inv.command, spawner) {
        Ok(code) => code,
        Err(e) => {
            report_error(&e.to_string());
            1
        }
    };
    std::process::exit(code);
}

/// Prints an error on stderr and, with `--log`, in the log file.
pub fn report_error(msg: &str) {
    if logger::has_file() {
        log::error!("{msg}");
    }
    eprintln!("{msg}");
}
