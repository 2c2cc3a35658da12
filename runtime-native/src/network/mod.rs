//! Networking for standalone containers (`ctr run`): loopback in a new network namespace and
//! an optional bridge mode (veth into a host bridge, an address from an on-disk IPAM, default
//! route, /etc/hosts and /etc/resolv.conf, masquerade, published ports).
//!
//! Containers that join a network namespace by path (CRI pods) are left alone: their network
//! belongs to whoever made that namespace.
//!
//! Namespace work never runs on the caller's thread: [`in_netns`] starts a fresh thread that
//! enters the container's netns, does its work with its own netlink socket, and exits. Every
//! step can be undone from a [`NetworkLease`] alone (what `delete` finds on disk after a crash):
//! the host veth by name, the firewall rules by their comment, the address by its owner.

pub mod config;
pub mod files;
pub mod ipam;
pub mod iptables;
pub mod netlink;

use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use nix::sched::CloneFlags;
use oci_spec::runtime::{LinuxNamespaceType, Spec};
use serde::{Deserialize, Serialize};

pub use config::{Mode, NetworkConfig, PortMapping, Protocol, Subnet};

use crate::PathIoError;
use ipam::Ipam;
use iptables::Iptables;
use netlink::Netlink;

/// The interface name of the container's end of the veth pair.
pub const CONTAINER_IFNAME: &str = "eth0";

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("network config: {0}")]
    Config(String),
    #[error(transparent)]
    Io(#[from] PathIoError),
    #[error("netlink: {what}: {source}")]
    Netlink {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("firewall: {0}")]
    Firewall(String),
    #[error("no free address left in {subnet} (leases in {dir})")]
    Exhausted { subnet: String, dir: PathBuf },
    #[error("network namespace of pid {pid}: {what}: {source}")]
    Netns {
        pid: i32,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

impl NetError {
    /// True for errors caused by the user's configuration (bad file, bad annotation).
    pub fn is_config(&self) -> bool {
        matches!(self, NetError::Config(_))
    }
}

/// What a bridged container holds, as saved in the shim's record: enough to undo everything.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkLease {
    /// `<namespace>/<container id>`: the IPAM owner and the firewall tag.
    pub owner: String,
    pub bridge: String,
    pub subnet: String,
    /// The IPAM directory of the bridge (`<ipam_dir>/<bridge>`).
    pub lease_dir: PathBuf,
    /// Host end of the veth pair.
    pub host_veth: String,
    /// The container's address, once leased.
    #[serde(default)]
    pub address: Option<Ipv4Addr>,
    /// Published ports (their rules are tagged with the owner).
    #[serde(default)]
    pub ports: Vec<PortMapping>,
}

/// The owner key of a container.
pub fn owner(namespace: &str, id: &str) -> String {
    format!("{namespace}/{id}")
}

/// `amphi` + 10 hex digits of a hash of the owner: 15 bytes, the longest name Linux allows.
pub fn host_veth_name(owner: &str) -> String {
    // FNV-1a, 64 bit: stable across builds and platforms.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in owner.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    // FNV's low bits hardly depend on the last bytes: finish with a 64-bit mixer (murmur3's)
    // so ids that differ in one character get unrelated names.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    format!("amphi{:010x}", h >> 24)
}

/// What the spec asks of the network namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetnsKind {
    /// No network namespace entry: the host's network.
    Host,
    /// Joins an existing namespace by path (CRI pod): not ours to configure.
    Joined,
    /// A new, empty namespace: ours to configure.
    New,
}

pub fn netns_kind(spec: &Spec) -> NetnsKind {
    let ns = crate::spec::namespaces(spec)
        .iter()
        .find(|n| n.typ() == LinuxNamespaceType::Network);
    match ns {
        None => NetnsKind::Host,
        Some(n) if n.path().is_some() => NetnsKind::Joined,
        Some(_) => NetnsKind::New,
    }
}

/// Runs `f` on a fresh thread that has entered the network namespace of `pid`; the thread
/// exits afterwards, so no other code ever runs in that namespace by accident.
pub fn in_netns<T: Send + 'static>(
    pid: i32,
    f: impl FnOnce() -> Result<T, NetError> + Send + 'static,
) -> Result<T, NetError> {
    let path = PathBuf::from(format!("/proc/{pid}/ns/net"));
    let ns = std::fs::File::open(&path).map_err(|source| NetError::Netns {
        pid,
        what: "open /proc/<pid>/ns/net",
        source,
    })?;
    let handle = std::thread::Builder::new()
        .name("amphi-netns".into())
        .spawn(move || -> Result<T, NetError> {
            nix::sched::setns(&ns, CloneFlags::CLONE_NEWNET).map_err(|e| NetError::Netns {
                pid,
                what: "setns",
                source: e.into(),
            })?;
            drop(ns);
            f()
        })
        .map_err(|source| NetError::Netns {
            pid,
            what: "spawn thread",
            source,
        })?;
    handle.join().unwrap_or_else(|_| {
        Err(NetError::Netns {
            pid,
            what: "netns thread",
            source: std::io::Error::other("panicked"),
        })
    })
}

/// Sets `lo` up in the network namespace of `pid` (what a new netns needs, as with runc).
pub fn loopback_up(pid: i32) -> Result<(), NetError> {
    in_netns(pid, || {
        let mut nl = Netlink::open()?;
        let lo = nl
            .link_index("lo")?
            .ok_or_else(|| NetError::Config("no loopback interface in the netns".into()))?;
        nl.set_up(lo, None)
    })
}

/// The lease a container would hold under `cfg`, before anything is done: saved first, so
/// that a crash at any later point can still be cleaned up.
pub fn plan(cfg: &NetworkConfig, owner: &str) -> NetworkLease {
    NetworkLease {
        owner: owner.to_string(),
        bridge: cfg.bridge.clone(),
        subnet: cfg.subnet.to_string(),
        lease_dir: cfg.lease_dir(),
        host_veth: host_veth_name(owner),
        address: None,
        ports: cfg.ports.clone(),
    }
}

/// Bridge mode for the container whose init is `pid` (already in its new netns, not started):
/// bridge, address, veth, in-namespace config, firewall, /etc files under `rootfs`. Fills
/// `lease.address`. On failure everything done so far is undone before returning.
pub fn setup_bridge(
    cfg: &NetworkConfig,
    lease: &mut NetworkLease,
    pid: i32,
    rootfs: &Path,
    hostname: &str,
) -> Result<(), NetError> {
    let r = connect(cfg, lease, pid).and_then(|ip| {
        open_firewall(cfg, &lease.owner, ip)?;
        write_etc_files(cfg, &lease.owner, ip, rootfs, hostname)
    });
    if r.is_err() {
        for e in teardown(lease) {
            log::warn!("network cleanup of {}: {e}", lease.owner);
        }
    }
    r
}

/// The container's link to the bridge: its address (into `lease`), the veth pair, and in the
/// container's netns loopback, eth0 and the default route. Returns the address.
fn connect(cfg: &NetworkConfig, lease: &mut NetworkLease, pid: i32) -> Result<Ipv4Addr, NetError> {
    let subnet = cfg.subnet;
    let gateway = subnet.gateway();
    let mut nl = Netlink::open()?;
    let ipam = Ipam::new(&lease.lease_dir, subnet);
    let ip = {
        let lock = ipam.lock()?;
        ensure_bridge(&mut nl, &cfg.bridge, gateway, subnet.prefix_len)?;
        ipam.allocate(&lock, &lease.owner)?
    };
    lease.address = Some(ip);

    // veth: the peer is created directly in the container's netns, as eth0.
    let ns_path = format!("/proc/{pid}/ns/net");
    let ns = std::fs::File::open(&ns_path).map_err(|source| NetError::Netns {
        pid,
        what: "open /proc/<pid>/ns/net",
        source,
    })?;
    // The name derives from namespace/id, unique in containerd: one that exists is a leftover
    // of an earlier container of that id whose cleanup never ran.
    if nl.delete_link(&lease.host_veth)? {
        log::warn!("removed a stale {} of {}", lease.host_veth, lease.owner);
    }
    nl.create_veth(&lease.host_veth, CONTAINER_IFNAME, ns.as_raw_fd())?;
    drop(ns);
    let bridge_idx = nl
        .link_index(&cfg.bridge)?
        .ok_or_else(|| NetError::Config(format!("bridge {} vanished", cfg.bridge)))?;
    let host_idx = nl
        .link_index(&lease.host_veth)?
        .ok_or_else(|| NetError::Config(format!("veth {} vanished", lease.host_veth)))?;
    nl.set_up(host_idx, Some(bridge_idx))?;

    let prefix = subnet.prefix_len;
    in_netns(pid, move || {
        let mut nl = Netlink::open()?;
        if let Some(lo) = nl.link_index("lo")? {
            nl.set_up(lo, None)?;
        }
        let eth = nl.link_index(CONTAINER_IFNAME)?.ok_or_else(|| {
            NetError::Config(format!("{CONTAINER_IFNAME} missing in the container netns"))
        })?;
        nl.add_address(eth, ip, prefix)?;
        nl.set_up(eth, None)?;
        nl.add_default_route(gateway, eth)
    })?;
    Ok(ip)
}

/// Forwarding, masquerade and the published ports of the container `owner` at `ip`, when the
/// config asks for any (without iptables: a warning, the container runs unpublished).
fn open_firewall(cfg: &NetworkConfig, owner: &str, ip: Ipv4Addr) -> Result<(), NetError> {
    if cfg.masquerade || !cfg.ports.is_empty() {
        match Iptables::find() {
            None => log::warn!("iptables not found: no masquerade / published ports for {owner}"),
            Some(ipt) => {
                iptables::enable_ip_forward()?;
                for rule in iptables::forward_rules(&cfg.bridge) {
                    ipt.ensure("filter", "FORWARD", &rule, true)?;
                }
                if cfg.masquerade {
                    ipt.ensure(
                        "nat",
                        "POSTROUTING",
                        &iptables::masquerade_rule(cfg.subnet, &cfg.bridge),
                        false,
                    )?;
                }
                let tag = iptables::tag(owner);
                if !cfg.ports.is_empty() {
                    ipt.delete_tagged("nat", &tag)?; // leftovers of an earlier container of this id
                }
                for p in &cfg.ports {
                    for (chain, rule) in iptables::port_rules(p, ip, &tag) {
                        ipt.append("nat", chain, &rule)?;
                    }
                }
            }
        }
    }
    Ok(())
}

/// The container's /etc/hosts and /etc/resolv.conf under `rootfs`; a read-only rootfs keeps
/// the image's.
fn write_etc_files(
    cfg: &NetworkConfig,
    owner: &str,
    ip: Ipv4Addr,
    rootfs: &Path,
    hostname: &str,
) -> Result<(), NetError> {
    let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    for (name, content) in [
        ("hosts", files::hosts_content(hostname, ip)),
        ("resolv.conf", files::resolv_content(&cfg.dns, &host_resolv)),
    ] {
        match files::write_in_rootfs(rootfs, name, &content) {
            // A read-only rootfs keeps the image's files.
            Err(NetError::Io(PathIoError { source, .. }))
                if source.raw_os_error() == Some(libc::EROFS) =>
            {
                log::warn!("{owner}: read-only rootfs, /etc/{name} not written")
            }
            r => r?,
        }
    }
    Ok(())
}

/// Creates the bridge if missing, with the subnet's first address, and sets it up.
fn ensure_bridge(
    nl: &mut Netlink,
    bridge: &str,
    gateway: Ipv4Addr,
    prefix: u8,
) -> Result<(), NetError> {
    if nl.link_index(bridge)?.is_none() {
        nl.create_bridge(bridge)?;
    }
    let idx = nl
        .link_index(bridge)?
        .ok_or_else(|| NetError::Config(format!("bridge {bridge} vanished")))?;
    nl.add_address(idx, gateway, prefix)?;
    nl.set_up(idx, None)
}

/// Undoes a lease: removes the host veth (and so its peer), the container's firewall rules,
/// and the address. Idempotent; every step runs even if one fails.
pub fn teardown(lease: &NetworkLease) -> Vec<NetError> {
    let mut errors = Vec::new();
    match Netlink::open().and_then(|mut nl| nl.delete_link(&lease.host_veth)) {
        Ok(_) => {}
        Err(e) => errors.push(e),
    }
    if !lease.ports.is_empty() {
        if let Some(ipt) = Iptables::find() {
            if let Err(e) = ipt.delete_tagged("nat", &iptables::tag(&lease.owner)) {
                errors.push(e);
            }
        }
    }
    // The subnet is only used to bound allocation; release goes by owner.
    let subnet = lease
        .subnet
        .parse()
        .unwrap_or_else(|_| config::DEFAULT_SUBNET.parse().expect("valid"));
    let ipam = Ipam::new(&lease.lease_dir, subnet);
    match ipam
        .lock()
        .and_then(|l| ipam.release_owner(&l, &lease.owner))
    {
        Ok(_) => {}
        Err(e) => errors.push(e),
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn veth_names_fit_and_differ() {
        let a = host_veth_name("default/web");
        let b = host_veth_name("default/web2");
        assert_eq!(a.len(), 15);
        assert!(a.starts_with("amphi"));
        assert_ne!(a, b);
        assert_eq!(a, host_veth_name("default/web"));
        // Ids differing only at the end share no long common prefix of hash digits.
        let names: std::collections::HashSet<String> = (0..1000)
            .map(|i| host_veth_name(&format!("ns/cy{i}"))[5..9].to_string())
            .collect();
        assert!(
            names.len() > 900,
            "{} distinct 4-digit prefixes",
            names.len()
        );
        config::validate_ifname(&a).unwrap();
    }

    #[test]
    fn netns_kinds() {
        let mut spec = Spec::default();
        assert_eq!(netns_kind(&spec), NetnsKind::New);
        let mut linux = spec.linux().clone().unwrap();
        let mut nss: Vec<_> = linux
            .namespaces()
            .clone()
            .unwrap()
            .into_iter()
            .filter(|n| n.typ() != LinuxNamespaceType::Network)
            .collect();
        linux.set_namespaces(Some(nss.clone()));
        spec.set_linux(Some(linux.clone()));
        assert_eq!(netns_kind(&spec), NetnsKind::Host);
        let mut n = oci_spec::runtime::LinuxNamespace::default();
        n.set_typ(LinuxNamespaceType::Network);
        n.set_path(Some("/var/run/netns/pod".into()));
        nss.push(n);
        linux.set_namespaces(Some(nss));
        spec.set_linux(Some(linux));
        assert_eq!(netns_kind(&spec), NetnsKind::Joined);
    }

    #[test]
    fn plan_and_lease_round_trip() {
        let cfg = NetworkConfig::from_toml(
            "[network]\nmode=\"bridge\"\nbridge=\"amphit0\"\nsubnet=\"10.213.0.0/24\"\nipam_dir=\"/x\"\nports=[\"8080:80\"]\n",
        )
        .unwrap();
        let mut l = plan(&cfg, "ns/c1");
        assert_eq!(l.lease_dir, PathBuf::from("/x/amphit0"));
        assert_eq!(l.host_veth, host_veth_name("ns/c1"));
        l.address = Some(Ipv4Addr::new(10, 213, 0, 2));
        let j = serde_json::to_string(&l).unwrap();
        let back: NetworkLease = serde_json::from_str(&j).unwrap();
        assert_eq!(back, l);
    }
}
