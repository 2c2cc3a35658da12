//! Networking of standalone containers: loopback in a new netns (as with runc), and amphi's
//! bridge mode configured through `ctr --runtime-config-path` and annotations: two bridged
//! containers reach each other, the host reaches a server in each, published ports, and after
//! create/delete cycles, a failed Create and a SIGKILLed shim, no veth, lease, address or
//! firewall rule is left.
//!
//! Every case instance gets its own bridge (`amphit<N>`) and subnet (`10.213.<N>.0/24`), IPAM
//! dir and host ports, and removes the bridge and its shared firewall rules at the end, so the
//! cases run in parallel and never touch anything else on the host.

use amphi_tests::{Case, Runtime, Version};
use anyhow::{Context, Result};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// Instantiates a case for containerd 1.6, 1.7 and 2.1 with amphi only (bridge mode is
/// amphi's own; runc has no such config).
macro_rules! amphi_only {
    ($name:ident, $f:expr) => {
        mod $name {
            use super::*;
            fn run(v: Version) {
                amphi_tests::require_root();
                amphi_tests::run_case(v, Runtime::Amphi, stringify!($name), $f)
            }
            #[test]
            fn containerd_1_6() {
                run(Version::V1_6)
            }
            #[test]
            fn containerd_1_7() {
                run(Version::V1_7)
            }
            #[test]
            fn containerd_2_1() {
                run(Version::V2_1)
            }
        }
    };
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// One private bridge network for one case instance; removes the bridge and its rules on drop.
struct Net {
    n: u32,
    bridge: String,
    config: PathBuf,
    ipam: PathBuf,
}

impl Net {
    /// `extra` is appended to the `[network]` table (e.g. `masquerade = true`).
    fn new(c: &Case, subnet_len: u8, extra: &str) -> Result<Net> {
        let n = 10 + NEXT.fetch_add(1, Ordering::SeqCst) % 240;
        let bridge = format!("amphit{n}");
        let ipam = c.cd.dir.join("ipam");
        let config = c.cd.dir.join(format!("amphi-net-{n}.toml"));
        let net = Net {
            n,
            bridge,
            config,
            ipam,
        };
        net.remove_bridge();
        std::fs::write(
            &net.config,
            format!(
                "[network]\nmode = \"bridge\"\nbridge = \"{}\"\nsubnet = \"10.213.{n}.0/{subnet_len}\"\nipam_dir = \"{}\"\ndns = [\"192.0.2.53\"]\n{extra}\n",
                net.bridge,
                net.ipam.display()
            ),
        )?;
        Ok(net)
    }

    fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 213, self.n as u8, 1)
    }

    /// A host port unique to this instance.
    fn host_port(&self, k: u16) -> u16 {
        20000 + self.n as u16 * 10 + k
    }

    fn opts(&self) -> Vec<String> {
        vec![
            "--runtime-config-path".into(),
            self.config.display().to_string(),
        ]
    }

    /// Interfaces enslaved to our bridge (the host ends of the veth pairs).
    fn ports_on_bridge(&self) -> Vec<String> {
        let out = Command::new("ip")
            .args(["-o", "link", "show", "master", &self.bridge])
            .output();
        out.map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter_map(|l| {
                    l.split(':')
                        .nth(1)
                        .map(|s| s.trim().split('@').next().unwrap_or("").to_string())
                })
                .collect()
        })
        .unwrap_or_default()
    }

    fn leases(&self) -> Vec<String> {
        std::fs::read_dir(self.ipam.join(&self.bridge))
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.parse::<Ipv4Addr>().is_ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// NAT rules that mention our subnet's container addresses (DNAT targets).
    fn dnat_rules(&self) -> Vec<String> {
        let Ok(o) = Command::new("iptables")
            .args(["-w", "5", "-t", "nat", "-S"])
            .output()
        else {
            return Vec::new();
        };
        let prefix = format!("--to-destination 10.213.{}.", self.n);
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter(|l| l.contains(&prefix))
            .map(String::from)
            .collect()
    }

    /// Nothing of any container may be left: no veth on the bridge, no lease, no DNAT rule.
    fn check_clean(&self) -> Result<()> {
        amphi_tests::cmd::wait_for(Duration::from_secs(10), "network cleanup", || {
            let (v, l, r) = (self.ports_on_bridge(), self.leases(), self.dnat_rules());
            Ok((v.is_empty() && l.is_empty() && r.is_empty()).then_some(()))
        })
        .with_context(|| {
            format!(
                "left behind: veths {:?}, leases {:?}, dnat rules {:?}",
                self.ports_on_bridge(),
                self.leases(),
                self.dnat_rules()
            )
        })
    }

    fn remove_bridge(&self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .output();
        let subnet = format!("10.213.{}.0/", self.n);
        for (table, chain) in [("nat", "POSTROUTING"), ("filter", "FORWARD")] {
            let Ok(o) = Command::new("iptables")
                .args(["-w", "5", "-t", table, "-S", chain])
                .output()
            else {
                continue;
            };
            for l in String::from_utf8_lossy(&o.stdout).lines() {
                let ours = l.split_whitespace().any(|w| w == self.bridge) || l.contains(&subnet);
                if l.starts_with("-A ") && ours {
                    let mut args = vec!["-w", "5", "-t", table, "-D"];
                    args.extend(l[3..].split_whitespace());
                    let _ = Command::new("iptables").args(&args).output();
                }
            }
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        self.remove_bridge();
        let _ = std::fs::remove_file(&self.config);
    }
}

/// `n` containers hold a lease and a veth on the test bridge.
fn ensure_attached(net: &Net, n: usize) -> Result<()> {
    anyhow::ensure!(net.leases().len() == n, "leases: {:?}", net.leases());
    anyhow::ensure!(
        net.ports_on_bridge().len() == n,
        "veths: {:?}",
        net.ports_on_bridge()
    );
    Ok(())
}

/// Removes both containers whatever `result` says, then reports the first failure, and
/// checks that nothing of the network is left.
fn remove_both(c: &Case, net: &Net, ids: [&str; 2], result: Result<()>) -> Result<()> {
    let ra = c.remove(ids[0]);
    let rb = c.remove(ids[1]);
    result?;
    ra?;
    rb?;
    net.check_clean()
}

fn opts(net: &Net, more: &[&str]) -> Vec<String> {
    let mut o = net.opts();
    o.extend(more.iter().map(|s| s.to_string()));
    o
}

fn run_detached(c: &Case, opts: &[String], id: &str, cmd: &[&str]) -> Result<()> {
    let o: Vec<&str> = opts.iter().map(String::as_str).collect();
    c.run_detached(&o, id, cmd)
}

fn exec(c: &Case, id: &str, exec_id: &str, cmd: &[&str]) -> Result<amphi_tests::Output> {
    let mut a = vec!["task", "exec", "--exec-id", exec_id, id];
    a.extend_from_slice(cmd);
    c.ctr(&a)
}

/// The container's eth0 address, from inside (busybox `ip`).
fn address_of(c: &Case, id: &str) -> Result<Ipv4Addr> {
    let out = exec(
        c,
        id,
        "addr",
        &["ip", "-o", "-4", "addr", "show", "dev", "eth0"],
    )?
    .ok()?;
    let inet = out
        .stdout
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .with_context(|| format!("no inet address in {:?}", out.stdout))?;
    Ok(inet.split('/').next().unwrap_or("").parse()?)
}

/// HTTP GET from the host, returning the whole response.
fn http_get(addr: SocketAddr, path: &str) -> Result<String> {
    let mut last = None;
    for _ in 0..50 {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
            Ok(mut s) => {
                s.set_read_timeout(Some(Duration::from_secs(5)))?;
                write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n")?;
                let mut body = String::new();
                s.read_to_string(&mut body)?;
                return Ok(body);
            }
            Err(e) => last = Some(e),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(anyhow::anyhow!("connect {addr}: {:?}", last))
}

/// Without configuration a new netns has loopback up and nothing else, as with runc.
fn loopback_default(c: &mut Case) -> Result<()> {
    let id = c.id("lo");
    let out = c
        .run_rm(
            &[],
            &id,
            &[
                "sh",
                "-c",
                "ip -o link show; ping -c1 -W2 127.0.0.1 >/dev/null && echo PING-OK",
            ],
        )?
        .ok()?;
    let lo = out
        .stdout
        .lines()
        .find(|l| l.contains(": lo:"))
        .with_context(|| out.stdout.clone())?;
    anyhow::ensure!(
        lo.contains(",UP") || lo.contains("<UP"),
        "lo is not up: {lo}"
    );
    anyhow::ensure!(
        !out.stdout.contains("eth0"),
        "unexpected eth0 without config: {}",
        out.stdout
    );
    anyhow::ensure!(
        out.stdout.contains("PING-OK"),
        "loopback ping failed: {}",
        out.all()
    );
    Ok(())
}

/// Two bridged containers reach each other; the host reaches a server in each; each has its
/// /etc/hosts, /etc/resolv.conf and default route.
fn bridge_two_containers(c: &mut Case) -> Result<()> {
    let net = Net::new(c, 24, "")?;
    let (a, b) = (c.id("a"), c.id("b"));
    let o = net.opts();
    let result = (|| -> Result<()> {
        run_detached(c, &o, &a, &["httpd", "-f", "-p", "80", "-h", "/etc"])?;
        run_detached(c, &o, &b, &["httpd", "-f", "-p", "80", "-h", "/etc"])?;
        let (ia, ib) = (address_of(c, &a)?, address_of(c, &b)?);
        anyhow::ensure!(ia != ib, "both containers got {ia}");
        for ip in [ia, ib] {
            anyhow::ensure!(
                ip.octets()[..3] == [10, 213, net.n as u8],
                "{ip} is not in our subnet"
            );
        }
        // Host -> each container's server: its /etc/hosts names its own address.
        for ip in [ia, ib] {
            let body = http_get(SocketAddr::new(ip.into(), 80), "/hosts")?;
            anyhow::ensure!(
                body.contains(&ip.to_string()),
                "GET http://{ip}/hosts: {body}"
            );
        }
        // Container <-> container, both directions, ICMP and TCP.
        exec(c, &a, "ping", &["ping", "-c1", "-W3", &ib.to_string()])?.ok()?;
        let w = exec(
            c,
            &b,
            "wget",
            &["wget", "-q", "-O-", &format!("http://{ia}/hosts")],
        )?
        .ok()?;
        anyhow::ensure!(
            w.stdout.contains(&ia.to_string()),
            "wget from b: {}",
            w.stdout
        );
        let r = exec(c, &a, "resolv", &["cat", "/etc/resolv.conf"])?.ok()?;
        anyhow::ensure!(
            r.stdout.contains("nameserver 192.0.2.53"),
            "resolv.conf: {}",
            r.stdout
        );
        let rt = exec(c, &a, "route", &["ip", "route"])?.ok()?;
        anyhow::ensure!(
            rt.stdout
                .contains(&format!("default via {}", net.gateway())),
            "routes: {}",
            rt.stdout
        );
        ensure_attached(&net, 2)?;
        Ok(())
    })();
    remove_both(c, &net, [&a, &b], result)
}

/// Published ports (config and annotation), masquerade; rules gone after delete.
fn bridge_ports(c: &mut Case) -> Result<()> {
    if Command::new("iptables").arg("--version").output().is_err() {
        eprintln!("iptables not installed: skipping the published-ports case");
        return Ok(());
    }
    let net0 = Net::new(c, 24, "masquerade = true")?;
    let p1 = net0.host_port(1);
    let p2 = net0.host_port(2);
    std::fs::write(
        &net0.config,
        std::fs::read_to_string(&net0.config)? + &format!("ports = [\"{p1}:80\"]\n"),
    )?;
    let net = net0;
    let (a, b) = (c.id("pa"), c.id("pb"));
    let o = net.opts();
    let annotation = format!("io.amphi.network.ports={p2}:8080");
    let result = (|| -> Result<()> {
        run_detached(c, &o, &a, &["httpd", "-f", "-p", "80", "-h", "/etc"])?;
        run_detached(
            c,
            &opts(&net, &["--annotation", &annotation]),
            &b,
            &["httpd", "-f", "-p", "8080", "-h", "/etc"],
        )?;
        let (ia, ib) = (address_of(c, &a)?, address_of(c, &b)?);
        let gw = net.gateway();
        let body = http_get(SocketAddr::new(gw.into(), p1), "/hosts")?;
        anyhow::ensure!(body.contains(&ia.to_string()), "GET {gw}:{p1}: {body}");
        let body = http_get(SocketAddr::new(gw.into(), p2), "/hosts")?;
        anyhow::ensure!(body.contains(&ib.to_string()), "GET {gw}:{p2}: {body}");
        anyhow::ensure!(!net.dnat_rules().is_empty(), "no DNAT rules while running");
        Ok(())
    })();
    remove_both(c, &net, [&a, &b], result)
}

/// 100 create/delete cycles leave no veth, lease or rule.
fn bridge_cycles(c: &mut Case) -> Result<()> {
    let net = Net::new(c, 24, "")?;
    let o = net.opts();
    let o: Vec<&str> = o.iter().map(String::as_str).collect();
    for i in 0..100 {
        let id = c.id(&format!("cy{i}"));
        let out = c.run_rm(&o, &id, &["ip", "-o", "-4", "addr", "show", "dev", "eth0"])?;
        let out = out.ok().with_context(|| format!("cycle {i}"))?;
        anyhow::ensure!(
            out.stdout.contains("10.213."),
            "cycle {i}: no address: {}",
            out.stdout
        );
    }
    net.check_clean()
}

/// A Create that fails in the network step (subnet exhausted) fails with the reason and
/// leaves nothing behind; so does a bad annotation.
fn bridge_create_failure(c: &mut Case) -> Result<()> {
    // /30: one container address.
    let net = Net::new(c, 30, "")?;
    let o = net.opts();
    let (a, b) = (c.id("fa"), c.id("fb"));
    let result = (|| -> Result<()> {
        run_detached(c, &o, &a, &["sleep", "1000"])?;
        // `ctr run --rm` of b with `with` fails, naming `why`.
        let refused = |with: &[String], why: &str| -> Result<()> {
            let with: Vec<&str> = with.iter().map(String::as_str).collect();
            let out = c.run_rm(&with, &b, &["true"])?.failed()?;
            anyhow::ensure!(out.all().contains(why), "unexpected error: {}", out.all());
            Ok(())
        };
        refused(&o, "no free address")?;
        refused(
            &opts(&net, &["--annotation", "io.amphi.network.mode=bogus"]),
            "network mode",
        )?;
        ensure_attached(&net, 1)?;
        Ok(())
    })();
    remove_both(c, &net, [&a, &b], result)
}

/// The shim is SIGKILLed while a bridged container runs: containerd's cleanup (the shim's
/// `delete` action) releases the lease and removes the veth.
fn bridge_shim_killed(c: &mut Case) -> Result<()> {
    let net = Net::new(c, 24, "")?;
    let id = c.id("k");
    let o = net.opts();
    run_detached(c, &o, &id, &["sleep", "1000"])?;
    anyhow::ensure!(net.leases().len() == 1, "leases: {:?}", net.leases());
    let shims = amphi_tests::procs::top_level(&c.shim_processes());
    anyhow::ensure!(!shims.is_empty(), "no shim process found");
    for s in &shims {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(s.pid),
            nix::sys::signal::Signal::SIGKILL,
        )?;
    }
    // containerd notices the dead shim and runs `delete`; the task ends up stopped or gone.
    amphi_tests::cmd::wait_for(
        Duration::from_secs(30),
        "the task to stop after the shim died",
        || {
            Ok(c.task(&id)?
                .filter(|(_, s)| s == "RUNNING")
                .is_none()
                .then_some(()))
        },
    )?;
    let _ = c.ctr(&["task", "delete", &id]);
    c.remove(&id)?;
    net.check_clean()
}

amphi_tests::e2e!(net_loopback_default, loopback_default);
amphi_only!(net_bridge_two_containers, bridge_two_containers);
amphi_only!(net_bridge_ports, bridge_ports);
amphi_only!(net_bridge_cycles, bridge_cycles);
amphi_only!(net_bridge_create_failure, bridge_create_failure);
amphi_only!(net_bridge_shim_killed, bridge_shim_killed);
