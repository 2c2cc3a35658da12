//! Host firewall rules through the `iptables` command: masquerade for a bridge's subnet,
//! forwarding to and from the bridge, and DNAT rules publishing a container's ports. Rules of
//! one container carry the comment `amphi:<owner>`, so they can be removed from that tag alone
//! (by `delete` after a crash, too). Bridge-wide rules are shared and stay, like the bridge.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::config::{PortMapping, Subnet};
use super::NetError;
use crate::PathIoError;

pub struct Iptables {
    bin: PathBuf,
}

/// The comment tagging a container's rules.
pub fn tag(owner: &str) -> String {
    format!("amphi:{owner}")
}

impl Iptables {
    /// Finds `iptables` in PATH or the usual sbin directories.
    pub fn find() -> Option<Iptables> {
        let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).collect())
            .unwrap_or_default();
        for d in ["/usr/sbin", "/sbin", "/usr/local/sbin", "/usr/bin", "/bin"] {
            dirs.push(PathBuf::from(d));
        }
        dirs.into_iter()
            .map(|d| d.join("iptables"))
            .find(|p| is_executable(p))
            .map(|bin| Iptables { bin })
    }

    /// Runs iptables and returns its stdout. The shim is a child subreaper whose reaper
    /// collects every child's exit with `waitpid(-1)`, so the status of a child we spawn may be
    /// gone before we wait for it: iptables runs under `/bin/sh`, which waits for it and prints
    /// its exit code as the last line; sh's own exit status is not needed.
    fn run(&self, args: &[String]) -> Result<String, NetError> {
        use std::io::Read;
        let mut child = Command::new("/bin/sh")
            .arg("-c")
            .arg("exec 2>&1; \"$0\" \"$@\"; echo \"amphi-rc=$?\"")
            .arg(&self.bin)
            .arg("-w")
            .arg("5")
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(PathIoError::on("run", &self.bin))?;
        let mut out = String::new();
        let read = child
            .stdout
            .take()
            .map(|mut o| o.read_to_string(&mut out))
            .transpose();
        let _ = child.wait(); // may fail with ECHILD under the shim's reaper: see above
        read.map_err(PathIoError::on("read output of", &self.bin))?;
        let (body, code) = split_rc(&out);
        match code {
            Some(0) => Ok(body.to_string()),
            _ => Err(NetError::Firewall(format!(
                "iptables {}: {}",
                args.join(" "),
                body.trim()
            ))),
        }
    }

    fn exists(&self, table: &str, chain: &str, rule: &[String]) -> bool {
        let mut a = vec!["-t".into(), table.into(), "-C".into(), chain.into()];
        a.extend_from_slice(rule);
        self.run(&a).is_ok()
    }

    /// Adds a rule unless it is there already (`-I` puts it first in the chain).
    pub fn ensure(
        &self,
        table: &str,
        chain: &str,
        rule: &[String],
        insert: bool,
    ) -> Result<(), NetError> {
        if self.exists(table, chain, rule) {
            return Ok(());
        }
        let op = if insert { "-I" } else { "-A" };
        let mut a = vec!["-t".into(), table.into(), op.into(), chain.into()];
        a.extend_from_slice(rule);
        self.run(&a).map(|_| ())
    }

    pub fn append(&self, table: &str, chain: &str, rule: &[String]) -> Result<(), NetError> {
        let mut a = vec!["-t".into(), table.into(), "-A".into(), chain.into()];
        a.extend_from_slice(rule);
        self.run(&a).map(|_| ())
    }

    /// Deletes every rule of `table` carrying the comment `tag`; returns how many.
    pub fn delete_tagged(&self, table: &str, tag: &str) -> Result<usize, NetError> {
        let listing = self.run(&["-t".into(), table.into(), "-S".into()])?;
        let mut n = 0;
        for rule in tagged_rules(&listing, tag) {
            let mut a = vec!["-t".to_string(), table.to_string(), "-D".to_string()];
            a.extend(rule);
            self.run(&a)?;
            n += 1;
        }
        Ok(n)
    }
}

/// Splits `...output...\namphi-rc=N\n` into the output and N.
fn split_rc(out: &str) -> (&str, Option<i32>) {
    let t = out.trim_end_matches('\n');
    match t.rfind("amphi-rc=") {
        Some(i) if !t[i..].contains('\n') => (&t[..i], t[i + 9..].trim().parse().ok()),
        _ => (out, None),
    }
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// The `-S` lines (`-A CHAIN ...`) whose comment is exactly `tag`, as argument lists without
/// the leading `-A` (chain first).
pub fn tagged_rules(listing: &str, tag: &str) -> Vec<Vec<String>> {
    listing
        .lines()
        .filter_map(|l| {
            let words = split_words(l);
            if words.first().map(String::as_str) != Some("-A") {
                return None;
            }
            let tagged = words.windows(2).any(|w| w[0] == "--comment" && w[1] == tag);
            tagged.then(|| words[1..].to_vec())
        })
        .collect()
}

/// Splits an `iptables -S` line into words, honouring double quotes (`"a b"`, `\"`).
fn split_words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quoted = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                quoted = !quoted;
                in_word = true;
            }
            '\\' if quoted => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            c if c.is_whitespace() && !quoted => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        out.push(cur);
    }
    out
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

/// `-s SUBNET ! -o BRIDGE -j MASQUERADE` (nat POSTROUTING).
pub fn masquerade_rule(subnet: Subnet, bridge: &str) -> Vec<String> {
    s(&[
        "-s",
        &subnet.to_string(),
        "!",
        "-o",
        bridge,
        "-j",
        "MASQUERADE",
    ])
}

/// Forwarding accept rules for the bridge (filter FORWARD), for hosts whose policy is DROP.
pub fn forward_rules(bridge: &str) -> [Vec<String>; 2] {
    [
        s(&["-i", bridge, "-j", "ACCEPT"]),
        s(&["-o", bridge, "-j", "ACCEPT"]),
    ]
}

/// DNAT rules publishing `port` to `ip`: (chain, rule) in the nat table. PREROUTING for
/// traffic from elsewhere, OUTPUT for connections made on the host to one of its addresses
/// (except loopback, which the kernel will not route to another host).
pub fn port_rules(port: &PortMapping, ip: Ipv4Addr, tag: &str) -> Vec<(&'static str, Vec<String>)> {
    let proto = port.protocol.as_str();
    let hp = port.host_port.to_string();
    let dest = format!("{ip}:{}", port.container_port);
    let dnat = s(&[
        "-p",
        proto,
        "-m",
        "addrtype",
        "--dst-type",
        "LOCAL",
        "-m",
        proto,
        "--dport",
        &hp,
        "-m",
        "comment",
        "--comment",
        tag,
        "-j",
        "DNAT",
        "--to-destination",
        &dest,
    ]);
    let out = s(&["!", "-d", "127.0.0.0/8"])
        .into_iter()
        .chain(dnat.iter().cloned())
        .collect();
    vec![("PREROUTING", dnat), ("OUTPUT", out)]
}

/// Turns on IPv4 forwarding (needed for masquerade and published ports).
pub fn enable_ip_forward() -> Result<(), NetError> {
    let p = Path::new("/proc/sys/net/ipv4/ip_forward");
    if std::fs::read_to_string(p)
        .map(|v| v.trim() == "1")
        .unwrap_or(false)
    {
        return Ok(());
    }
    std::fs::write(p, "1").map_err(PathIoError::on("write", p))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::config::Protocol;

    #[test]
    fn finds_tagged_rules_only() {
        let listing = "-P PREROUTING ACCEPT\n\
            -A PREROUTING -p tcp -m addrtype --dst-type LOCAL -m tcp --dport 8080 -m comment --comment amphi:ns/a -j DNAT --to-destination 10.0.0.2:80\n\
            -A OUTPUT ! -d 127.0.0.0/8 -p tcp -m tcp --dport 8080 -m comment --comment \"amphi:ns/a\" -j DNAT --to-destination 10.0.0.2:80\n\
            -A PREROUTING -m comment --comment amphi:ns/ab -j DNAT --to-destination 10.0.0.3:80\n\
            -A POSTROUTING -s 10.0.0.0/24 ! -o br0 -j MASQUERADE\n";
        let r = tagged_rules(listing, "amphi:ns/a");
        assert_eq!(r.len(), 2);
        assert_eq!(r[0][0], "PREROUTING");
        assert_eq!(r[1][0], "OUTPUT");
        assert_eq!(r[1][1], "!");
        assert!(r[1].contains(&"amphi:ns/a".to_string()));
    }

    #[test]
    fn exit_code_line() {
        assert_eq!(split_rc("a\nb\namphi-rc=0\n"), ("a\nb\n", Some(0)));
        assert_eq!(split_rc("amphi-rc=1\n"), ("", Some(1)));
        assert_eq!(split_rc("killed"), ("killed", None));
    }

    #[test]
    fn runs_a_command_through_sh() {
        // `false`/`true` stand in for iptables: the exit code travels through the output.
        let t = Iptables {
            bin: PathBuf::from("/bin/true"),
        };
        assert!(t.run(&[]).is_ok());
        let f = Iptables {
            bin: PathBuf::from("/bin/false"),
        };
        assert!(matches!(f.run(&[]), Err(NetError::Firewall(_))));
    }

    #[test]
    fn splits_quotes() {
        assert_eq!(
            split_words(r#"-A X -m comment --comment "a b\"c" -j Y"#),
            vec!["-A", "X", "-m", "comment", "--comment", "a b\"c", "-j", "Y"]
        );
    }

    #[test]
    fn port_rule_shape() {
        let p = PortMapping {
            host_port: 8080,
            container_port: 80,
            protocol: Protocol::Udp,
        };
        let r = port_rules(&p, Ipv4Addr::new(10, 1, 0, 2), "amphi:x/y");
        assert_eq!(r[0].0, "PREROUTING");
        let joined = r[0].1.join(" ");
        assert!(joined.contains("-p udp"), "{joined}");
        assert!(joined.contains("--dport 8080"), "{joined}");
        assert!(joined.ends_with("--to-destination 10.1.0.2:80"), "{joined}");
        assert_eq!(r[1].0, "OUTPUT");
        assert_eq!(r[1].1[..3], ["!", "-d", "127.0.0.0/8"]);
        assert_eq!(
            r[1].1[3..],
            r[0].1[..],
            "OUTPUT is PREROUTING's rule off loopback"
        );
        assert_eq!(
            masquerade_rule("10.213.0.0/24".parse().unwrap(), "amphit0").join(" "),
            "-s 10.213.0.0/24 ! -o amphit0 -j MASQUERADE"
        );
    }
}
