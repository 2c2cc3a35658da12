//! Finding the entrypoint: `$PATH` lookup of `process.args[0]` inside the container's root.

use super::*;

pub(super) fn env_path(env: &[String]) -> String {
    env.iter()
        .rev()
        .find_map(|e| e.strip_prefix("PATH="))
        .map(str::to_string)
        .unwrap_or_else(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into())
}

pub(super) fn is_executable(p: &Path) -> std::result::Result<(), Errno> {
    let m = fs::metadata(p).map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))?;
    if m.is_dir() {
        return Err(Errno::EACCES);
    }
    nix::unistd::access(p, nix::unistd::AccessFlags::X_OK)?;
    let _ = m.permissions().mode();
    Ok(())
}

/// Resolves argv[0] inside the container: a path with a slash as is, else through `PATH`.
pub(crate) fn resolve_exe(arg0: &str, env: &[String]) -> Result<PathBuf, Error> {
    if arg0.is_empty() {
        return Err(Error::EmptyArgv0);
    }
    let arg0_ = || arg0.to_string();
    if arg0.contains('/') {
        let p = PathBuf::from(arg0);
        return match is_executable(&p) {
            Ok(()) => Ok(p),
            Err(Errno::ENOENT) => Err(Error::NoSuchExe { arg0: arg0_() }),
            Err(source) => Err(Error::NotExecutable {
                arg0: arg0_(),
                source,
            }),
        };
    }
    for dir in env_path(env).split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let p = Path::new(dir).join(arg0);
        if is_executable(&p).is_ok() {
            return Ok(p);
        }
    }
    Err(Error::NotInPath { arg0: arg0_() })
}
