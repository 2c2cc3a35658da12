//! Address management on disk: one lease file per address under `<ipam_dir>/<bridge>/`, named
//! by the address and holding its owner (`<namespace>/<container id>`). Every change happens
//! under an exclusive flock on `<dir>/lock`, so shims on one node never hand out an address
//! twice. Addresses are handed out round-robin (the last one is kept in `<dir>/last`), so a
//! released address is not reused right away.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::Ipv4Addr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

use super::config::Subnet;
use super::NetError;
use crate::PathIoError;

pub struct Ipam {
    dir: PathBuf,
    subnet: Subnet,
}

/// Held while the lease directory is locked.
pub struct IpamLock {
    _lock: Flock<File>,
}

impl Ipam {
    pub fn new(dir: impl Into<PathBuf>, subnet: Subnet) -> Ipam {
        Ipam {
            dir: dir.into(),
            subnet,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn io(&self, op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> NetError {
        let on = PathIoError::on(op, path.to_path_buf());
        move |source| on(source).into()
    }

    /// Takes the directory's lock (blocking), creating the directory (0700: the leases name
    /// every container of the node).
    pub fn lock(&self) -> Result<IpamLock, NetError> {
        crate::fds::private_dir(&self.dir).map_err(self.io("create", &self.dir))?;
        let path = self.dir.join("lock");
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(self.io("open", &path))?;
        let lock = Flock::lock(f, FlockArg::LockExclusive)
            .map_err(|(_, e)| PathIoError::on("flock", &path)(e.into()))?;
        Ok(IpamLock { _lock: lock })
    }

    /// Every lease: (address, owner).
    pub fn leases(&self, _lock: &IpamLock) -> Result<Vec<(Ipv4Addr, String)>, NetError> {
        let mut out = Vec::new();
        let rd = match std::fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(self.io("read", &self.dir)(e)),
        };
        for ent in rd {
            let ent = ent.map_err(self.io("read", &self.dir))?;
            let Some(ip) = ent
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<Ipv4Addr>().ok())
            else {
                continue;
            };
            let owner = std::fs::read_to_string(ent.path()).unwrap_or_default();
            out.push((ip, owner.trim().to_string()));
        }
        out.sort();
        Ok(out)
    }

    /// Leases an address to `owner`. An owner that already holds one gets the same address
    /// back (a retried Create after a crash reuses its lease instead of leaking it).
    pub fn allocate(&self, lock: &IpamLock, owner: &str) -> Result<Ipv4Addr, NetError> {
        let leases = self.leases(lock)?;
        if let Some((ip, _)) = leases
            .iter()
            .find(|(ip, o)| o == owner && self.subnet.contains(*ip))
        {
            return Ok(*ip);
        }
        let (first, last) = (self.subnet.first_host(), self.subnet.last_host());
        let last_path = self.dir.join("last");
        let prev = std::fs::read_to_string(&last_path)
            .ok()
            .and_then(|s| s.trim().parse::<Ipv4Addr>().ok())
            .map(u32::from)
            .filter(|n| (first..=last).contains(n));
        let start = match prev {
            Some(p) if p < last => p + 1,
            _ => first,
        };
        let count = last - first + 1;
        for i in 0..count {
            let n = first + (start - first + i) % count;
            let ip = Ipv4Addr::from(n);
            let path = self.dir.join(ip.to_string());
            match crate::fds::private_file(&path, true) {
                Ok(mut f) => {
                    f.write_all(owner.as_bytes())
                        .map_err(self.io("write", &path))?;
                    let tmp = self.dir.join("last.tmp");
                    crate::fds::private_file(&tmp, false)
                        .and_then(|mut f| f.write_all(ip.to_string().as_bytes()))
                        .map_err(self.io("write", &tmp))?;
                    std::fs::rename(&tmp, &last_path).map_err(self.io("rename", &last_path))?;
                    return Ok(ip);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(self.io("create", &path)(e)),
            }
        }
        Err(NetError::Exhausted {
            subnet: self.subnet.to_string(),
            dir: self.dir.clone(),
        })
    }

    /// Releases every lease of `owner`; returns the addresses released.
    pub fn release_owner(&self, lock: &IpamLock, owner: &str) -> Result<Vec<Ipv4Addr>, NetError> {
        let mut out = Vec::new();
        for (ip, o) in self.leases(lock)? {
            if o == owner {
                let path = self.dir.join(ip.to_string());
                match std::fs::remove_file(&path) {
                    Ok(()) => out.push(ip),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(self.io("remove", &path)(e)),
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn ipam(dir: &Path, subnet: &str) -> Ipam {
        Ipam::new(dir.join("amphit0"), subnet.parse().unwrap())
    }

    #[test]
    fn allocate_release_persist() {
        let d = tempfile::tempdir().unwrap();
        let a = ipam(d.path(), "10.213.0.0/24");
        let l = a.lock().unwrap();
        let x = a.allocate(&l, "ns/a").unwrap();
        let y = a.allocate(&l, "ns/b").unwrap();
        assert_eq!(x, Ipv4Addr::new(10, 213, 0, 2));
        assert_eq!(y, Ipv4Addr::new(10, 213, 0, 3));
        // Same owner: same address.
        assert_eq!(a.allocate(&l, "ns/a").unwrap(), x);
        drop(l);
        // Persisted: a new Ipam on the same dir sees them.
        let b = ipam(d.path(), "10.213.0.0/24");
        let l = b.lock().unwrap();
        assert_eq!(
            b.leases(&l).unwrap(),
            vec![(x, "ns/a".to_string()), (y, "ns/b".to_string())]
        );
        assert_eq!(b.release_owner(&l, "ns/a").unwrap(), vec![x]);
        assert!(b.release_owner(&l, "ns/a").unwrap().is_empty());
        // Round robin: the released address is not the next one handed out.
        assert_eq!(
            b.allocate(&l, "ns/c").unwrap(),
            Ipv4Addr::new(10, 213, 0, 4)
        );
        assert_eq!(b.leases(&l).unwrap().len(), 2);
    }

    #[test]
    fn exhaustion_and_wraparound() {
        let d = tempfile::tempdir().unwrap();
        // /29: .0 network, .1 gateway, .2-.6 hosts, .7 broadcast.
        let a = ipam(d.path(), "10.9.0.0/29");
        let l = a.lock().unwrap();
        let got: Vec<Ipv4Addr> = (0..5)
            .map(|i| a.allocate(&l, &format!("ns/{i}")).unwrap())
            .collect();
        assert_eq!(got.first(), Some(&Ipv4Addr::new(10, 9, 0, 2)));
        assert_eq!(got.last(), Some(&Ipv4Addr::new(10, 9, 0, 6)));
        let e = a.allocate(&l, "ns/x").unwrap_err();
        assert!(matches!(e, NetError::Exhausted { .. }), "{e}");
        assert!(e.to_string().contains("10.9.0.0/29"), "{e}");
        a.release_owner(&l, "ns/1").unwrap();
        assert_eq!(a.allocate(&l, "ns/x").unwrap(), Ipv4Addr::new(10, 9, 0, 3));
    }

    #[test]
    fn concurrent_allocations_never_collide() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().to_path_buf();
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let dir = dir.clone();
                std::thread::spawn(move || {
                    let mut mine = Vec::new();
                    for i in 0..25 {
                        // A fresh Ipam (and lock fd) per call, like separate shims.
                        let a = ipam(&dir, "10.213.0.0/24");
                        let l = a.lock().unwrap();
                        mine.push(a.allocate(&l, &format!("ns/{t}-{i}")).unwrap());
                    }
                    mine
                })
            })
            .collect();
        let all: Vec<Ipv4Addr> = threads
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        assert_eq!(all.len(), 200);
        let set: HashSet<_> = all.iter().collect();
        assert_eq!(set.len(), 200, "duplicate addresses handed out");
        let a = ipam(&dir, "10.213.0.0/24");
        let l = a.lock().unwrap();
        assert_eq!(a.leases(&l).unwrap().len(), 200);
    }
}
