//! Id mappings for idmapped mounts: the `uidmap=`/`gidmap=` options containerd's snapshotters
//! add to a user-namespaced pod's rootfs mounts (`<container>:<host>:<size>[,...]`), and a user
//! namespace carrying such mappings, whose fd `mount_setattr(MOUNT_ATTR_IDMAP)` takes.
//!
//! The kernel only idmaps through a user namespace, so one is made for the purpose: a child
//! cloned with `CLONE_NEWUSER` that does nothing but `pause(2)`; its maps are written through
//! the verified procfs handle, its `ns/user` opened, and then it is killed. The clone happens
//! in the multi-threaded shim: the child runs only `pause`, which is safe after a fork of any
//! process, and is signalled and waited for through a pidfd, so neither a reused pid nor the
//! shim's `waitpid(-1)` reaper can mix it up with a container process.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;

/// What is wrong with an id mapping, or which step of making an idmapped mount failed, on
/// what.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("id mapping {range:?}: {field:?} is not a number")]
    NotANumber { range: String, field: String },
    #[error("id mapping {range:?} is not <container id>:<host id>:<size>")]
    NotARange { range: String },
    #[error("id mapping {}:{}:{} is empty or overflows", .0.container, .0.host, .0.size)]
    EmptyOrOverflows(IdRange),
    #[error("{ranges} id mapping ranges (at most 340)")]
    TooManyRanges { ranges: usize },
    #[error("a mount with uidmap= needs gidmap= too, and the other way round")]
    OneSided,
    #[error("clone a user namespace for an idmapped mount: {}", .0.desc())]
    CloneUserNs(#[source] Errno),
    #[error("{0} for an idmapped mount")]
    WriteMap(#[source] crate::userns::MapWriteError),
    #[error("open /proc/{pid}/ns/user: {}", .source.desc())]
    OpenUserNs {
        pid: i32,
        #[source]
        source: Errno,
    },
    #[error("create {}: {source}", path.display())]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `what` names the mount: "the layer /x", "/rootfs", "/vol for /data".
    #[error("{}clone of {what}: {}", if *idmapped { "idmapped " } else { "" }, .source.desc())]
    Clone {
        idmapped: bool,
        what: String,
        #[source]
        source: Errno,
    },
    /// `what` as for [`Error::Clone`].
    #[error("attach the {what}: {}", .source.desc())]
    Attach {
        what: String,
        #[source]
        source: Errno,
    },
    #[error("idmapped mount {}: needs both uidMappings and gidMappings", dest.display())]
    NeedsBothMaps { dest: PathBuf },
    #[error("idmapped mount {}: only bind mounts can be idmapped", dest.display())]
    NotABind { dest: PathBuf },
    #[error("idmapped mount {}: no source", dest.display())]
    NoSource { dest: PathBuf },
    #[error("idmapped mount source {}: {source}", path.display())]
    VolumeSource {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// The spec or the mount's options are at fault, not the host.
    pub fn is_callers(&self) -> bool {
        matches!(
            self,
            Error::NotANumber { .. }
                | Error::NotARange { .. }
                | Error::EmptyOrOverflows(_)
                | Error::TooManyRanges { .. }
                | Error::OneSided
                | Error::NeedsBothMaps { .. }
                | Error::NotABind { .. }
                | Error::NoSource { .. }
                | Error::VolumeSource { .. }
        )
    }
}

fn create(path: &Path, made: std::io::Result<()>) -> Result<(), Error> {
    made.map_err(|source| Error::Create {
        path: path.to_path_buf(),
        source,
    })
}

/// One mapping range: `size` ids from `container` inside map to `host` outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    pub container: u32,
    pub host: u32,
    pub size: u32,
}

/// Parses `0:200000:65536` or several ranges separated by `,`.
pub fn parse_ranges(text: &str) -> Result<Vec<IdRange>, Error> {
    let ranges = text
        .split(',')
        .map(|r| {
            let n: Vec<&str> = r.split(':').collect();
            let num = |s: &str| {
                s.parse::<u32>().map_err(|_| Error::NotANumber {
                    range: r.to_string(),
                    field: s.to_string(),
                })
            };
            match n[..] {
                [c, h, s] => Ok(IdRange {
                    container: num(c)?,
                    host: num(h)?,
                    size: num(s)?,
                }),
                _ => Err(Error::NotARange {
                    range: r.to_string(),
                }),
            }
        })
        .collect::<Result<Vec<_>, Error>>()?;
    if let Some(r) = ranges.iter().find(|r| {
        r.size == 0
            || r.container.checked_add(r.size).is_none()
            || r.host.checked_add(r.size).is_none()
    }) {
        return Err(Error::EmptyOrOverflows(*r));
    }
    // The kernel takes at most 340 lines in a map.
    if ranges.len() > 340 {
        return Err(Error::TooManyRanges {
            ranges: ranges.len(),
        });
    }
    Ok(ranges)
}

/// The text of `/proc/<pid>/uid_map` for `ranges`.
fn map_text(ranges: &[IdRange]) -> String {
    ranges
        .iter()
        .map(|r| format!("{} {} {}\n", r.container, r.host, r.size))
        .collect()
}

/// A new user namespace with these mappings, as an open `ns/user` fd.
pub fn userns_fd(uids: &[IdRange], gids: &[IdRange]) -> Result<OwnedFd, Error> {
    let mut pidfd: libc::c_int = -1;
    let flags = (libc::CLONE_NEWUSER | libc::CLONE_PIDFD | libc::SIGCHLD) as libc::c_ulong;
    // SAFETY: a fork-like clone (no CLONE_VM, no new stack). The child only calls pause(2)
    // until it is killed, which is safe however many threads the parent has.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            flags,
            0usize,
            &mut pidfd as *mut libc::c_int,
            0usize,
            0usize,
        )
    };
    if pid == 0 {
        // SAFETY: see above; the child never leaves this loop but by SIGKILL.
        loop {
            unsafe { libc::pause() };
        }
    }
    if pid < 0 {
        return Err(Error::CloneUserNs(Errno::last()));
    }
    // SAFETY: CLONE_PIDFD stored a new fd that we own.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    let pid = pid as i32;
    let result = (|| {
        for (file, ranges) in [("uid_map", uids), ("gid_map", gids)] {
            crate::userns::write_map(pid, file, &map_text(ranges)).map_err(Error::WriteMap)?;
        }
        crate::fds::open_ro(Path::new(&format!("/proc/{pid}/ns/user")))
            .map_err(|source| Error::OpenUserNs { pid, source })
    })();
    // Through the pidfd: the signal reaches this child even if its pid were reused.
    // SAFETY: pidfd_send_signal on an fd we own, no siginfo.
    unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            libc::SIGKILL,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    wait_pidfd(pidfd.as_raw_fd());
    result
}

/// Waits for the child behind `pidfd` to exit; someone else having reaped it is fine.
fn wait_pidfd(pidfd: RawFd) {
    const P_PIDFD: libc::idtype_t = 3;
    loop {
        // SAFETY: a zeroed siginfo for waitid to fill.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waitid on an fd we own, into a siginfo we own.
        let r = unsafe { libc::waitid(P_PIDFD, pidfd as libc::id_t, &mut info, libc::WEXITED) };
        if r == 0 || Errno::last() != Errno::EINTR {
            return;
        }
    }
}

/// The `uidmap=`/`gidmap=` options of a mount, taken out of its options (the filesystem does
/// not know them).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct IdmapOptions {
    pub uids: Vec<IdRange>,
    pub gids: Vec<IdRange>,
}

impl IdmapOptions {
    /// Splits `options` into the id mappings (if both are given) and the rest. Only one of the
    /// two is an error: containerd maps both or none.
    pub fn take(options: &[String]) -> Result<(Option<IdmapOptions>, Vec<String>), Error> {
        let (mut uid, mut gid, mut rest) = (None, None, Vec::new());
        for o in options {
            if let Some(v) = o.strip_prefix("uidmap=") {
                uid = Some(parse_ranges(v)?);
            } else if let Some(v) = o.strip_prefix("gidmap=") {
                gid = Some(parse_ranges(v)?);
            } else {
                rest.push(o.clone());
            }
        }
        match (uid, gid) {
            (None, None) => Ok((None, rest)),
            (Some(uids), Some(gids)) => Ok((Some(IdmapOptions { uids, gids }), rest)),
            _ => Err(Error::OneSided),
        }
    }
}

/// An overlay's lower layers staged as idmapped mounts: each `lowerdir` cloned detached,
/// idmapped (and read-only), attached at `<staging>/<n>`; [`IdmappedLowers::options`] names
/// those instead. Overlayfs keeps its own references to the layers, so the staged mounts are
/// detached and their directories removed (on drop) right after the overlay is mounted.
pub struct IdmappedLowers {
    staging: std::path::PathBuf,
    attached: Vec<std::path::PathBuf>,
    /// The overlay's options with `lowerdir=` rewritten to the staged layers.
    pub options: Vec<String>,
}

impl IdmappedLowers {
    pub fn stage(
        map: &IdmapOptions,
        options: &[String],
        staging: &Path,
    ) -> Result<IdmappedLowers, Error> {
        let userns = userns_fd(&map.uids, &map.gids)?;
        let mut staged = IdmappedLowers {
            staging: staging.to_path_buf(),
            attached: Vec::new(),
            options: Vec::with_capacity(options.len()),
        };
        create(staging, std::fs::create_dir_all(staging))?;
        for o in options {
            let Some(lowers) = o.strip_prefix("lowerdir=") else {
                staged.options.push(o.clone());
                continue;
            };
            let mut new = Vec::new();
            for lower in lowers.split(':') {
                let at = staging.join(staged.attached.len().to_string());
                create(&at, std::fs::create_dir(&at))?;
                let what = || format!("the layer {lower}");
                let tree =
                    crate::mount_attr::idmapped_clone(Path::new(lower), userns.as_raw_fd(), true)
                        .map_err(|source| Error::Clone {
                        idmapped: true,
                        what: what(),
                        source,
                    })?;
                crate::mount_attr::attach(tree.as_raw_fd(), &at).map_err(|source| {
                    Error::Attach {
                        what: format!("idmapped {}", what()),
                        source,
                    }
                })?;
                staged.attached.push(at.clone());
                new.push(at.display().to_string());
            }
            staged.options.push(format!("lowerdir={}", new.join(":")));
        }
        Ok(staged)
    }
}

impl Drop for IdmappedLowers {
    fn drop(&mut self) {
        for at in &self.attached {
            let _ = nix::mount::umount2(at, nix::mount::MntFlags::MNT_DETACH);
            let _ = std::fs::remove_dir(at);
        }
        let _ = std::fs::remove_dir(&self.staging);
    }
}

/// Idmaps the mount at `target` in place: an idmapped clone of it attached on top (what a
/// single-layer rootfs, a plain bind of the snapshot, needs).
pub fn idmap_in_place(map: &IdmapOptions, target: &Path) -> Result<(), Error> {
    let userns = userns_fd(&map.uids, &map.gids)?;
    let tree =
        crate::mount_attr::idmapped_clone(target, userns.as_raw_fd(), true).map_err(|source| {
            Error::Clone {
                idmapped: true,
                what: target.display().to_string(),
                source,
            }
        })?;
    crate::mount_attr::attach(tree.as_raw_fd(), target).map_err(|source| Error::Attach {
        what: format!("idmapped {}", target.display()),
        source,
    })
}

/// The spec's idmapped bind mounts (`uidMappings`/`gidMappings` on a mount, or the `idmap`
/// and `ridmap` options, which take the container's own mappings), staged on the host before
/// the container is cloned: an idmapped clone of each source attached at `<staging>/<n>`, and
/// the spec handed to the spawner binds that instead (a bind of an idmapped mount keeps its
/// idmapping). The container process, root only in its own user namespace, could not make an
/// idmapped mount itself (that takes CAP_SYS_ADMIN over the source filesystem's user
/// namespace). A spec with a user namespace (a pod's, joined — userns_join.rs — or created)
/// gets every other bind mount staged too, as a plain clone: its root could not even reach most sources (containerd
/// keeps a pod's /dev/shm, hosts and resolv.conf under 0700 directories, kubelet its volumes),
/// whereas the bundle directory is searchable for it. Once the container reported ready its
/// copies exist in its mount namespace, and the staged mounts are detached (on drop).
pub struct StagedVolumes {
    staging: std::path::PathBuf,
    attached: Vec<std::path::PathBuf>,
}

/// A mount's own mappings, or the container's for `idmap`/`ridmap`; `None` if not idmapped.
fn mount_mappings(
    spec: &oci_spec::runtime::Spec,
    m: &oci_spec::runtime::Mount,
) -> Result<Option<IdmapOptions>, Error> {
    let conv = |v: &Option<Vec<oci_spec::runtime::LinuxIdMapping>>| -> Vec<IdRange> {
        v.iter()
            .flatten()
            .map(|e| IdRange {
                container: e.container_id(),
                host: e.host_id(),
                size: e.size(),
            })
            .collect()
    };
    let opts = m.options().clone().unwrap_or_default();
    let by_option = opts.iter().any(|o| o == "idmap" || o == "ridmap");
    let (mut uids, mut gids) = (conv(m.uid_mappings()), conv(m.gid_mappings()));
    if uids.is_empty() && gids.is_empty() {
        if !by_option {
            return Ok(None);
        }
        let l = spec.linux().clone().unwrap_or_default();
        uids = conv(l.uid_mappings());
        gids = conv(l.gid_mappings());
    }
    let dest = || m.destination().clone();
    if uids.is_empty() || gids.is_empty() {
        return Err(Error::NeedsBothMaps { dest: dest() });
    }
    if !is_bind(m) {
        return Err(Error::NotABind { dest: dest() });
    }
    Ok(Some(IdmapOptions { uids, gids }))
}

fn is_bind(m: &oci_spec::runtime::Mount) -> bool {
    m.typ().as_deref() == Some("bind")
        || m.options()
            .iter()
            .flatten()
            .any(|o| o == "bind" || o == "rbind")
}

impl StagedVolumes {
    /// Stages every idmapped mount of `spec` and rewrites it to bind the staged mount.
    pub fn stage(
        spec: &mut oci_spec::runtime::Spec,
        staging: &Path,
    ) -> Result<StagedVolumes, Error> {
        let mut staged = StagedVolumes {
            staging: staging.to_path_buf(),
            attached: Vec::new(),
        };
        let snapshot = spec.clone();
        let stage_binds =
            crate::userns_join::joins_userns(&snapshot) || crate::userns::creates_userns(&snapshot);
        let Some(mounts) = spec.mounts_mut().as_mut() else {
            return Ok(staged);
        };
        for m in mounts.iter_mut() {
            let map = mount_mappings(&snapshot, m)?;
            if map.is_none() && !(stage_binds && is_bind(m)) {
                continue;
            }
            let Some(source) = m.source().clone() else {
                return Err(Error::NoSource {
                    dest: m.destination().clone(),
                });
            };
            let opts = m.options().clone().unwrap_or_default();
            let recursive = opts.iter().any(|o| o == "rbind" || o == "ridmap")
                || m.typ().as_deref() == Some("rbind");
            if staged.attached.is_empty() {
                create(staging, std::fs::create_dir_all(staging))?;
            }
            let at = staging.join(staged.attached.len().to_string());
            let is_dir = std::fs::metadata(&source)
                .map_err(|e| Error::VolumeSource {
                    path: source.clone(),
                    source: e,
                })?
                .is_dir();
            let made = if is_dir {
                std::fs::create_dir(&at)
            } else {
                std::fs::File::create(&at).map(|_| ())
            };
            create(&at, made)?;
            let tree = match &map {
                Some(map) => {
                    let userns = userns_fd(&map.uids, &map.gids)?;
                    crate::mount_attr::idmapped_clone(&source, userns.as_raw_fd(), recursive)
                }
                None => crate::mount_attr::clone_tree(&source, recursive),
            };
            let tree = tree.map_err(|e| Error::Clone {
                idmapped: map.is_some(),
                what: format!("{} for {}", source.display(), m.destination().display()),
                source: e,
            });
            let tree = match tree {
                Ok(t) => t,
                Err(e) => {
                    let _ = std::fs::remove_file(&at).or_else(|_| std::fs::remove_dir(&at));
                    return Err(e);
                }
            };
            if let Err(e) = crate::mount_attr::attach(tree.as_raw_fd(), &at) {
                let _ = std::fs::remove_file(&at).or_else(|_| std::fs::remove_dir(&at));
                return Err(Error::Attach {
                    what: format!("staged {} at {}", source.display(), at.display()),
                    source: e,
                });
            }
            staged.attached.push(at.clone());
            m.set_source(Some(at));
            m.set_uid_mappings(None);
            m.set_gid_mappings(None);
            m.set_options(Some(
                opts.into_iter()
                    .filter(|o| o != "idmap" && o != "ridmap")
                    .collect(),
            ));
        }
        Ok(staged)
    }
}

impl Drop for StagedVolumes {
    fn drop(&mut self) {
        for at in &self.attached {
            let _ = nix::mount::umount2(at, nix::mount::MntFlags::MNT_DETACH);
            let _ = std::fs::remove_file(at).or_else(|_| std::fs::remove_dir(at));
        }
        if !self.attached.is_empty() {
            let _ = std::fs::remove_dir(&self.staging);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ranges() {
        assert_eq!(
            parse_ranges("0:200000:65536").unwrap(),
            [IdRange {
                container: 0,
                host: 200000,
                size: 65536
            }]
        );
        assert_eq!(parse_ranges("0:1000:1,1:100000:65535").unwrap().len(), 2);
        for bad in ["", "0:1", "0:x:1", "0:1:0", "4294967295:0:2", "1:2:3:4"] {
            assert!(parse_ranges(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(
            map_text(&parse_ranges("0:1000:1,1:100000:65535").unwrap()),
            "0 1000 1\n1 100000 65535\n"
        );
    }

    #[test]
    fn takes_the_idmap_options() {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let (m, rest) = IdmapOptions::take(&v(&[
            "index=off",
            "uidmap=0:200000:65536",
            "gidmap=0:300000:65536",
            "lowerdir=/a",
        ]))
        .unwrap();
        let m = m.unwrap();
        assert_eq!(m.uids[0].host, 200000);
        assert_eq!(m.gids[0].host, 300000);
        assert_eq!(rest, v(&["index=off", "lowerdir=/a"]));
        let (m, rest) = IdmapOptions::take(&v(&["ro"])).unwrap();
        assert!(m.is_none() && rest == v(&["ro"]));
        assert!(IdmapOptions::take(&v(&["uidmap=0:1:1"])).is_err());
    }

    /// As root: a user namespace with the asked mappings (its uid_map reads them back).
    #[test]
    fn makes_a_user_namespace() {
        if !nix::unistd::Uid::effective().is_root() {
            return;
        }
        let r = parse_ranges("0:200000:65536").unwrap();
        let fd = userns_fd(&r, &r).unwrap();
        let ours = std::fs::read_link("/proc/self/ns/user").unwrap();
        let theirs = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap();
        assert_ne!(ours, theirs);
        assert!(theirs.display().to_string().starts_with("user:["));
    }
}
