//! The network configuration: a `[network]` table in the shim's TOML config file (containerd
//! runtime options `config_path` / `config_body`), overridden per container by the spec
//! annotations `io.amphi.network.mode` and `io.amphi.network.ports`.
//!
//! ```toml
//! [network]
//! mode = "bridge"            # or "none" (the default): a new netns gets loopback only
//! bridge = "amphi0"
//! subnet = "10.88.0.0/16"
//! masquerade = true
//! ports = ["8080:80", "5353:53/udp"]
//! dns = ["1.1.1.1"]          # optional; default: the host's non-loopback nameservers
//! ipam_dir = "/var/lib/amphi/ipam"   # optional; also env AMPHI_IPAM_DIR
//! ```

use std::collections::HashMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::NetError;

/// Annotation selecting the mode of one container (`bridge` or `none`).
pub const ANNOTATION_MODE: &str = "io.amphi.network.mode";
/// Annotation with the published ports of one container (`8080:80,5353:53/udp`).
pub const ANNOTATION_PORTS: &str = "io.amphi.network.ports";

pub const DEFAULT_BRIDGE: &str = "amphi0";
pub const DEFAULT_SUBNET: &str = "10.88.0.0/16";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// No bridge: a new network namespace gets loopback up, as with runc.
    #[default]
    None,
    /// A veth into a host bridge, an address from the IPAM, a default route.
    Bridge,
}

impl FromStr for Mode {
    type Err = NetError;
    fn from_str(s: &str) -> Result<Mode, NetError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "bridge" => Ok(Mode::Bridge),
            "none" | "" => Ok(Mode::None),
            other => Err(NetError::Config(format!(
                "network mode {other:?}: expected \"bridge\" or \"none\""
            ))),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// One published port: connections to `host_port` on the host's addresses go to
/// `container_port` on the container's address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    pub host_port: u16,
    pub container_port: u16,
    pub protocol: Protocol,
}

impl FromStr for PortMapping {
    type Err = NetError;
    /// `HOST:CONTAINER[/tcp|/udp]`, or `PORT` for the same port on both sides.
    fn from_str(s: &str) -> Result<PortMapping, NetError> {
        let bad = |why: &str| NetError::Config(format!("port mapping {s:?}: {why}"));
        let s2 = s.trim();
        let (ports, proto) = match s2.split_once('/') {
            Some((p, "tcp")) => (p, Protocol::Tcp),
            Some((p, "udp")) => (p, Protocol::Udp),
            Some(_) => return Err(bad("protocol must be tcp or udp")),
            None => (s2, Protocol::Tcp),
        };
        let port = |p: &str| -> Result<u16, NetError> {
            match p.trim().parse::<u16>() {
                Ok(0) | Err(_) => Err(bad("ports are numbers 1-65535")),
                Ok(n) => Ok(n),
            }
        };
        let (h, c) = match ports.split_once(':') {
            Some((h, c)) => (port(h)?, port(c)?),
            None => (port(ports)?, port(ports)?),
        };
        Ok(PortMapping {
            host_port: h,
            container_port: c,
            protocol: proto,
        })
    }
}

impl fmt::Display for PortMapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}/{}",
            self.host_port,
            self.container_port,
            self.protocol.as_str()
        )
    }
}

/// An IPv4 subnet, `a.b.c.d/len`, normalised to its network address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    pub network: Ipv4Addr,
    pub prefix_len: u8,
}

impl Subnet {
    fn mask(self) -> u32 {
        if self.prefix_len == 0 {
            0
        } else {
            u32::MAX << (32 - self.prefix_len as u32)
        }
    }
    pub fn broadcast(self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) | !self.mask())
    }
    /// The bridge's address: the first one of the subnet.
    pub fn gateway(self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) + 1)
    }
    /// The addresses containers may get: after the gateway, before the broadcast address.
    pub fn first_host(self) -> u32 {
        u32::from(self.network) + 2
    }
    pub fn last_host(self) -> u32 {
        u32::from(self.broadcast()) - 1
    }
    pub fn contains(self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.network)
    }
}

impl FromStr for Subnet {
    type Err = NetError;
    fn from_str(s: &str) -> Result<Subnet, NetError> {
        let bad = |why: &str| NetError::Config(format!("subnet {s:?}: {why}"));
        let (a, l) = s
            .trim()
            .split_once('/')
            .ok_or_else(|| bad("expected a.b.c.d/len"))?;
        let addr: Ipv4Addr = a.parse().map_err(|_| bad("not an IPv4 address"))?;
        let prefix_len: u8 = l.parse().map_err(|_| bad("bad prefix length"))?;
        if !(8..=30).contains(&prefix_len) {
            return Err(bad("prefix length must be 8-30"));
        }
        let mut n = Subnet {
            network: addr,
            prefix_len,
        };
        n.network = Ipv4Addr::from(u32::from(addr) & n.mask());
        Ok(n)
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix_len)
    }
}

/// The effective network configuration of one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkConfig {
    pub mode: Mode,
    pub bridge: String,
    pub subnet: Subnet,
    pub masquerade: bool,
    pub ports: Vec<PortMapping>,
    /// Nameservers for the container's resolv.conf; empty: derived from the host's.
    pub dns: Vec<Ipv4Addr>,
    /// IPAM root; leases live in `<ipam_dir>/<bridge>/`.
    pub ipam_dir: PathBuf,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            mode: Mode::None,
            bridge: DEFAULT_BRIDGE.into(),
            subnet: DEFAULT_SUBNET.parse().expect("valid default subnet"),
            masquerade: false,
            ports: Vec::new(),
            dns: Vec::new(),
            ipam_dir: default_ipam_dir(),
        }
    }
}

/// `/var/lib/amphi/ipam`, or `AMPHI_IPAM_DIR`.
pub fn default_ipam_dir() -> PathBuf {
    std::env::var_os("AMPHI_IPAM_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/lib/amphi/ipam"))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNetwork {
    mode: Option<String>,
    bridge: Option<String>,
    subnet: Option<String>,
    masquerade: Option<bool>,
    ports: Option<Vec<String>>,
    dns: Option<Vec<String>>,
    ipam_dir: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
struct RawFile {
    #[serde(default)]
    network: Option<RawNetwork>,
}

impl NetworkConfig {
    /// Parses the shim's config file (TOML; other top-level tables are ignored). A file
    /// without a `[network]` table gives the defaults.
    pub fn from_toml(text: &str) -> Result<NetworkConfig, NetError> {
        let raw: RawFile =
            toml::from_str(text).map_err(|e| NetError::Config(format!("config: {e}")))?;
        let mut cfg = NetworkConfig::default();
        let Some(n) = raw.network else {
            return Ok(cfg);
        };
        if let Some(m) = n.mode {
            cfg.mode = m.parse()?;
        }
        if let Some(b) = n.bridge {
            validate_ifname(&b)?;
            cfg.bridge = b;
        }
        if let Some(s) = n.subnet {
            cfg.subnet = s.parse()?;
        }
        cfg.masquerade = n.masquerade.unwrap_or(false);
        if let Some(p) = n.ports {
            cfg.ports = p.iter().map(|s| s.parse()).collect::<Result<_, _>>()?;
        }
        if let Some(d) = n.dns {
            cfg.dns = d
                .iter()
                .map(|s| {
                    s.parse()
                        .map_err(|_| NetError::Config(format!("dns {s:?}: not an IPv4 address")))
                })
                .collect::<Result<_, _>>()?;
        }
        if let Some(d) = n.ipam_dir {
            cfg.ipam_dir = d;
        }
        Ok(cfg)
    }

    /// Applies the per-container annotations.
    pub fn with_annotations(
        mut self,
        annotations: Option<&HashMap<String, String>>,
    ) -> Result<NetworkConfig, NetError> {
        let Some(a) = annotations else {
            return Ok(self);
        };
        if let Some(m) = a.get(ANNOTATION_MODE) {
            self.mode = m.parse()?;
        }
        if let Some(p) = a.get(ANNOTATION_PORTS) {
            self.ports = p
                .split(',')
                .filter(|s| !s.trim().is_empty())
                .map(|s| s.parse())
                .collect::<Result<_, _>>()?;
        }
        Ok(self)
    }

    /// The lease directory of this config's bridge.
    pub fn lease_dir(&self) -> PathBuf {
        self.ipam_dir.join(&self.bridge)
    }
}

/// A Linux interface name: 1-15 bytes, no '/', no whitespace, not "." or "..".
pub fn validate_ifname(name: &str) -> Result<(), NetError> {
    let ok = !name.is_empty()
        && name.len() < 16
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'/' && b != b':');
    if ok {
        Ok(())
    } else {
        Err(NetError::Config(format!(
            "interface name {name:?}: 1-15 printable characters, no '/' or ':'"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_file() {
        let c = NetworkConfig::from_toml(
            r#"
            [other]
            x = 1
            [network]
            mode = "bridge"
            bridge = "amphit0"
            subnet = "10.213.0.7/24"
            masquerade = true
            ports = ["8080:80", "53/udp"]
            dns = ["1.1.1.1"]
            ipam_dir = "/tmp/ipam"
            "#,
        )
        .unwrap();
        assert_eq!(c.mode, Mode::Bridge);
        assert_eq!(c.bridge, "amphit0");
        assert_eq!(c.subnet.to_string(), "10.213.0.0/24");
        assert_eq!(c.subnet.gateway(), Ipv4Addr::new(10, 213, 0, 1));
        assert_eq!(c.subnet.broadcast(), Ipv4Addr::new(10, 213, 0, 255));
        assert!(c.masquerade);
        assert_eq!(
            c.ports,
            vec![
                PortMapping {
                    host_port: 8080,
                    container_port: 80,
                    protocol: Protocol::Tcp
                },
                PortMapping {
                    host_port: 53,
                    container_port: 53,
                    protocol: Protocol::Udp
                }
            ]
        );
        assert_eq!(c.dns, vec![Ipv4Addr::new(1, 1, 1, 1)]);
        assert_eq!(c.lease_dir(), PathBuf::from("/tmp/ipam/amphit0"));
    }

    #[test]
    fn defaults() {
        let c = NetworkConfig::from_toml("").unwrap();
        assert_eq!(c.mode, Mode::None);
        assert_eq!(c.bridge, "amphi0");
        assert_eq!(c.subnet.to_string(), "10.88.0.0/16");
        assert!(!c.masquerade);
        let c = NetworkConfig::from_toml("[network]\nmode = \"bridge\"\n").unwrap();
        assert_eq!(c.mode, Mode::Bridge);
        assert_eq!(c.bridge, "amphi0");
    }

    #[test]
    fn errors_name_the_problem() {
        for (text, want) in [
            ("[network]\nmode = \"host\"", "network mode"),
            ("[network]\nsubnet = \"10.0.0.0\"", "subnet"),
            ("[network]\nsubnet = \"10.0.0.0/31\"", "prefix length"),
            ("[network]\nports = [\"0:80\"]", "port mapping"),
            ("[network]\nports = [\"80:80/sctp\"]", "protocol"),
            (
                "[network]\nbridge = \"averyveryverylongname\"",
                "interface name",
            ),
            ("[network]\nnosuch = 1", "nosuch"),
            ("[network", "config"),
        ] {
            let e = NetworkConfig::from_toml(text).unwrap_err().to_string();
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }

    #[test]
    fn annotations_override() {
        let base =
            NetworkConfig::from_toml("[network]\nmode = \"bridge\"\nports=[\"1:1\"]\n").unwrap();
        let mut a = HashMap::new();
        a.insert(ANNOTATION_MODE.to_string(), "none".to_string());
        let c = base.clone().with_annotations(Some(&a)).unwrap();
        assert_eq!(c.mode, Mode::None);
        assert_eq!(c.ports.len(), 1);
        let mut a = HashMap::new();
        a.insert(
            ANNOTATION_PORTS.to_string(),
            "8080:80, 9090:90/udp".to_string(),
        );
        let c = NetworkConfig::default().with_annotations(Some(&a)).unwrap();
        assert_eq!(c.mode, Mode::None);
        assert_eq!(c.ports.len(), 2);
        assert_eq!(c.ports[1].to_string(), "9090:90/udp");
        let mut a = HashMap::new();
        a.insert(ANNOTATION_MODE.to_string(), "bogus".to_string());
        assert!(NetworkConfig::default().with_annotations(Some(&a)).is_err());
        assert_eq!(base.clone().with_annotations(None).unwrap(), base.clone());
    }

    #[test]
    fn example_file_parses() {
        let c =
            NetworkConfig::from_toml(include_str!("../../../examples/network/amphi.toml")).unwrap();
        assert_eq!(c.mode, Mode::Bridge);
        assert_eq!(c.bridge, "amphi0");
        assert!(c.masquerade);
    }

    #[test]
    fn subnet_math() {
        let s: Subnet = "192.168.7.9/30".parse().unwrap();
        assert_eq!(s.network, Ipv4Addr::new(192, 168, 7, 8));
        assert_eq!(s.gateway(), Ipv4Addr::new(192, 168, 7, 9));
        assert_eq!(
            Ipv4Addr::from(s.first_host()),
            Ipv4Addr::new(192, 168, 7, 10)
        );
        assert_eq!(
            Ipv4Addr::from(s.last_host()),
            Ipv4Addr::new(192, 168, 7, 10)
        );
        assert!(s.contains(Ipv4Addr::new(192, 168, 7, 11)));
        assert!(!s.contains(Ipv4Addr::new(192, 168, 7, 12)));
    }
}
