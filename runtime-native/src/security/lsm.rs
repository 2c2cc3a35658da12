//! Linux security modules for a container process, applied as runc applies them: the AppArmor
//! profile (`process.apparmorProfile`, `exec <profile>`) and the SELinux process label
//! (`process.selinuxLabel`) are written to the process's own `attr/.../exec` before execve, so
//! the kernel puts the process under them at the exec; the writes go through the verified
//! procfs writer (procfs.rs). `linux.mountLabel` becomes a `context=` mount option
//! (rootfs/mounts.rs `labelled`).
//!
//! Without the LSM, as runc 1.1 and current runc behave: an AppArmor profile is written
//! anyway, and the kernel's refusal fails the start (`unable to apply apparmor profile:
//! apparmor failed to apply profile: write /proc/self/attr/exec: invalid argument` on a
//! kernel without AppArmor); an SELinux label with SELinux disabled is refused before anything
//! is written (`selinux label is specified in config, but selinux is disabled or not
//! supported`); a mount label is passed to the kernel, which refuses `context=` without
//! SELinux.

use std::path::Path;

use oci_spec::runtime::Process;

/// What the host's LSMs offer, read from the host's view (`/` before the container's root is
/// entered, or a fake tree in tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Host {
    /// `/proc/self/attr/apparmor/exec` exists (AppArmor's own directory, Linux 5.1+); else
    /// the shared `attr/exec` takes the profile, as runc falls back.
    pub apparmor_dir: bool,
    /// SELinux is enabled: selinuxfs is mounted and the process has a label other than
    /// `kernel` (go-selinux's `GetEnabled`).
    pub selinux: bool,
}

impl Host {
    /// Reads the host under `root` (`/` in the runtime).
    pub(crate) fn detect(root: &Path) -> Host {
        let apparmor_dir = root.join("proc/self/attr/apparmor/exec").exists();
        let fs = root.join("sys/fs/selinux");
        let mounted = if root == Path::new("/") {
            nix::sys::statfs::statfs(&fs)
                .map(|s| s.filesystem_type() == nix::sys::statfs::SELINUX_MAGIC)
                .unwrap_or(false)
        } else {
            // A fake tree cannot carry a filesystem type: its selinuxfs is a directory.
            fs.join("enforce").exists()
        };
        let label =
            std::fs::read_to_string(root.join("proc/self/attr/current")).unwrap_or_default();
        let label = label.trim_end_matches(['\0', '\n']);
        Host {
            apparmor_dir,
            selinux: mounted && !label.is_empty() && label != "kernel",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Module {
    AppArmor,
    SeLinux,
}

/// One write into the process's own procfs directory: `rel` under /proc.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AttrWrite {
    module: Module,
    pub rel: String,
    pub data: Vec<u8>,
}

/// Why the process's LSM settings cannot be applied, in runc's words.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    #[error("selinux label is specified in config, but selinux is disabled or not supported")]
    NoSeLinux,
    #[error(
        "unable to apply apparmor profile: apparmor failed to apply profile: write /proc/{rel}: {}",
        crate::child::ioerr(source)
    )]
    AppArmor {
        rel: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "can't set process label: write /proc/{rel}: {}",
        crate::child::ioerr(source)
    )]
    SeLinux {
        rel: String,
        #[source]
        source: std::io::Error,
    },
}

/// The writes `process` asks for on `host`, or why it cannot run there.
pub(crate) fn plan(process: &Process, host: &Host) -> Result<Vec<AttrWrite>, Error> {
    let mut out = Vec::new();
    if let Some(p) = process
        .apparmor_profile()
        .as_deref()
        .filter(|p| !p.is_empty())
    {
        let rel = if host.apparmor_dir {
            "self/attr/apparmor/exec"
        } else {
            "self/attr/exec"
        };
        out.push(AttrWrite {
            module: Module::AppArmor,
            rel: rel.into(),
            data: format!("exec {p}").into_bytes(),
        });
    }
    if let Some(l) = process.selinux_label().as_deref().filter(|l| !l.is_empty()) {
        if !host.selinux {
            return Err(Error::NoSeLinux);
        }
        out.push(AttrWrite {
            module: Module::SeLinux,
            rel: "self/attr/exec".into(),
            data: l.as_bytes().to_vec(),
        });
    }
    Ok(out)
}

/// Makes the writes of [`plan`] with `write` (procfs.rs `write` in the runtime), in runc's
/// error words.
pub(crate) fn apply(
    process: &Process,
    host: &Host,
    mut write: impl FnMut(&str, &[u8]) -> std::io::Result<()>,
) -> Result<(), Error> {
    for w in plan(process, host)? {
        write(&w.rel, &w.data).map_err(|source| {
            let rel = w.rel.clone();
            match w.module {
                Module::AppArmor => Error::AppArmor { rel, source },
                Module::SeLinux => Error::SeLinux { rel, source },
            }
        })?;
    }
    Ok(())
}

/// A fake host tree for the tests: `proc/self/attr/...` files and, when asked, selinuxfs.
#[cfg(test)]
fn fake_host(apparmor_dir: bool, selinux: Option<&str>) -> (tempfile::TempDir, std::path::PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let attr = d.path().join("proc/self/attr");
    std::fs::create_dir_all(&attr).unwrap();
    std::fs::write(attr.join("exec"), "").unwrap();
    std::fs::write(attr.join("current"), selinux.unwrap_or("unconfined\n")).unwrap();
    if apparmor_dir {
        std::fs::create_dir_all(attr.join("apparmor")).unwrap();
        std::fs::write(attr.join("apparmor/exec"), "").unwrap();
    }
    if selinux.is_some() {
        std::fs::create_dir_all(d.path().join("sys/fs/selinux")).unwrap();
        std::fs::write(d.path().join("sys/fs/selinux/enforce"), "1").unwrap();
    }
    let p = d.path().to_path_buf();
    (d, p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::ProcessBuilder;

    fn process(profile: Option<&str>, label: Option<&str>) -> Process {
        let mut b = ProcessBuilder::default().args(vec!["true".to_string()]);
        if let Some(p) = profile {
            b = b.apparmor_profile(p);
        }
        if let Some(l) = label {
            b = b.selinux_label(l);
        }
        b.build().unwrap()
    }

    /// Runs `apply` with writes landing in the fake tree's proc directory.
    fn apply_in(root: &Path, p: &Process) -> Result<(), Error> {
        let host = Host::detect(root);
        apply(p, &host, |rel, data| {
            let f = root.join("proc").join(rel);
            // As procfs: only an attr file that exists takes a write.
            if !f.exists() {
                return Err(std::io::Error::from_raw_os_error(libc::ENOENT));
            }
            std::fs::write(f, data)
        })
    }

    #[test]
    fn detects_the_fake_hosts() {
        let (_d, r) = fake_host(true, Some("system_u:system_r:unconfined_t:s0"));
        assert_eq!(
            Host::detect(&r),
            Host {
                apparmor_dir: true,
                selinux: true
            }
        );
        let (_d, r) = fake_host(false, None);
        assert_eq!(
            Host::detect(&r),
            Host {
                apparmor_dir: false,
                selinux: false
            }
        );
        // selinuxfs mounted but the process labelled `kernel`: disabled, as go-selinux says.
        let (_d, r) = fake_host(false, Some("kernel\0"));
        assert!(!Host::detect(&r).selinux);
    }

    #[test]
    fn apparmor_profile_goes_to_its_own_attr_else_the_shared_one() {
        let (_d, r) = fake_host(true, None);
        apply_in(&r, &process(Some("amphi-test"), None)).unwrap();
        let attr = r.join("proc/self/attr");
        assert_eq!(
            std::fs::read_to_string(attr.join("apparmor/exec")).unwrap(),
            "exec amphi-test"
        );
        assert_eq!(std::fs::read_to_string(attr.join("exec")).unwrap(), "");
        let (_d, r) = fake_host(false, None);
        apply_in(&r, &process(Some("amphi-test"), None)).unwrap();
        assert_eq!(
            std::fs::read_to_string(r.join("proc/self/attr/exec")).unwrap(),
            "exec amphi-test"
        );
    }

    #[test]
    fn selinux_label_is_written_when_enabled_and_refused_when_not() {
        let label = "system_u:system_r:container_t:s0:c1,c2";
        let (_d, r) = fake_host(false, Some("system_u:system_r:unconfined_t:s0"));
        apply_in(&r, &process(None, Some(label))).unwrap();
        assert_eq!(
            std::fs::read_to_string(r.join("proc/self/attr/exec")).unwrap(),
            label
        );
        let (_d, r) = fake_host(true, None);
        let e = apply_in(&r, &process(None, Some(label))).unwrap_err();
        assert_eq!(
            e.to_string(),
            "selinux label is specified in config, but selinux is disabled or not supported"
        );
        // Nothing was written before the refusal.
        assert_eq!(
            std::fs::read_to_string(r.join("proc/self/attr/exec")).unwrap(),
            ""
        );
    }

    #[test]
    fn nothing_asked_nothing_written() {
        let (_d, r) = fake_host(false, None);
        assert!(plan(&process(None, None), &Host::detect(&r))
            .unwrap()
            .is_empty());
        assert!(plan(&process(Some(""), Some("")), &Host::detect(&r))
            .unwrap()
            .is_empty());
    }

    #[test]
    fn apparmor_refused_by_the_kernel_fails_in_runc_words() {
        // This machine has no AppArmor: the real attr/exec refuses `exec <profile>`, and the
        // start fails as runc's does.
        let host = Host::detect(Path::new("/"));
        if host.apparmor_dir {
            return; // an AppArmor host would accept or refuse by policy instead
        }
        // The test runs on a thread of its own: the attr files take writes from their own
        // thread only, so `self` becomes `thread-self` here (the container process is
        // single-threaded, where the two are one).
        let e = apply(&process(Some("amphi-test"), None), &host, |rel, data| {
            crate::procfs::write(&rel.replacen("self/", "thread-self/", 1), data)
        })
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "unable to apply apparmor profile: apparmor failed to apply profile: \
             write /proc/self/attr/exec: invalid argument"
        );
    }
}
