//! What a containerd with the CRI plugin needs to run pods here, offline: its config (the
//! `amphi` and `runc` runtime handlers, for 1.6/1.7 `io.containerd.grpc.v1.cri`, for 2.x
//! `io.containerd.cri.v1.{images,runtime}`), a private CNI network (Debian's
//! containernetworking-plugins: bridge + host-local on a private subnet and bridge), and a
//! pause image built from a tiny static C program.

use crate::cmd;
use crate::containerd::{config_head, Containerd};
use crate::images;
use crate::paths;
use crate::versions::Version;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

/// A short content hash for cache file names (so a changed input is rebuilt).
fn short_hash(data: &[u8]) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    data.hash(&mut h);
    format!("{:012x}", h.finish() & 0xffff_ffff_ffff)
}

/// Serialises the one-time builds of this module (tests run in threads of one process).
static BUILD_LOCK: Mutex<()> = Mutex::new(());

/// The pause image every CRI daemon of the tests uses as its sandbox image.
pub const PAUSE_IMAGE: &str = "docker.io/amphi/pause:e2e";
/// Where Debian's containernetworking-plugins install the CNI plugins.
pub const CNI_BIN_DIR: &str = "/usr/lib/cni";
/// The CRI runtime handler served by amphi.
pub const AMPHI_HANDLER: &str = "amphi";
/// A second amphi handler with runtime options (`ConfigPath` to a bridge-mode shim config,
/// which pods must ignore: they join the CNI netns by path).
pub const AMPHI_OPTS_HANDLER: &str = "amphi-opts";
/// The CRI runtime handler served by runc (for comparison).
pub const RUNC_HANDLER: &str = "runc";

/// A private CNI network for one daemon.
#[derive(Debug, Clone)]
pub struct CriNet {
    /// Linux bridge name (at most 15 bytes), unique per daemon.
    pub bridge: String,
    /// IPv4 /24 subnet, e.g. `10.214.7.0/24`.
    pub subnet: String,
    /// The network name in the CNI conflist.
    pub name: String,
}

impl CriNet {
    /// A bridge and a /24 in 10.214.0.0/16 no route of this host uses yet.
    pub fn pick(tag: &str) -> Result<CriNet> {
        let pid = std::process::id();
        let bridge = format!("acri{}{tag}", pid % 100_000);
        anyhow::ensure!(bridge.len() <= 15, "bridge name {bridge} too long");
        let routes = Command::new("ip")
            .args(["-4", "route", "show"])
            .output()
            .context("ip route show")?;
        let routes = String::from_utf8_lossy(&routes.stdout).into_owned();
        let start = (pid as usize * 7 + tag.bytes().map(|b| b as usize).sum::<usize>()) % 250;
        for i in 0..250 {
            let octet = (start + i) % 250 + 1;
            let subnet = format!("10.214.{octet}.0/24");
            if !routes.contains(&format!("10.214.{octet}.")) {
                return Ok(CriNet {
                    name: format!("amphi-e2e-{bridge}"),
                    bridge,
                    subnet,
                });
            }
        }
        anyhow::bail!("no free /24 in 10.214.0.0/16")
    }

    /// The bridge's own address (the pods' gateway): `.1` of the subnet.
    pub fn gateway(&self) -> String {
        self.subnet.trim_end_matches("0/24").to_string() + "1"
    }

    /// The CNI conflist: bridge (no masquerade, no default route: traffic stays on this host)
    /// and host-local with its leases in `data_dir`.
    pub fn conflist(&self, data_dir: &Path) -> String {
        serde_json::json!({
            "cniVersion": "0.4.0",
            "name": self.name,
            "plugins": [{
                "type": "bridge",
                "bridge": self.bridge,
                "isGateway": true,
                "ipMasq": false,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": self.subnet}]],
                    "dataDir": data_dir.display().to_string()
                }
            }]
        })
        .to_string()
    }

    /// Deletes the bridge (the bridge plugin creates it and never removes it).
    pub fn remove_bridge(&self) {
        if Path::new("/sys/class/net").join(&self.bridge).exists() {
            let _ = Command::new("ip")
                .args(["link", "del", &self.bridge])
                .status();
        }
    }

    /// Interfaces still attached to the bridge (pods' host-side veths).
    pub fn bridge_ports(&self) -> Vec<String> {
        std::fs::read_dir(Path::new("/sys/class/net").join(&self.bridge).join("brif"))
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Everything the CRI flavour of [`Containerd`] adds.
#[derive(Debug, Clone)]
pub struct CriConfig {
    pub net: CriNet,
    /// The pods' cgroup parent (cgroupfs driver), unique per daemon, e.g. `/amphi-cri-123-0`.
    pub cgroup_parent: String,
    /// Runtime handlers: (name, runtime_type).
    pub handlers: Vec<(String, String)>,
    /// The bridge named in the `amphi-opts` handler's shim config (must never be created).
    pub opts_bridge: String,
}

impl CriConfig {
    pub fn new(tag: &str) -> Result<CriConfig> {
        anyhow::ensure!(
            Path::new(CNI_BIN_DIR).join("bridge").is_file() && Path::new(CNI_BIN_DIR).join("host-local").is_file(),
            "CNI plugins missing in {CNI_BIN_DIR}: apt-get install containernetworking-plugins (scripts/setup.sh does)"
        );
        Ok(CriConfig {
            net: CriNet::pick(tag)?,
            cgroup_parent: format!("/amphi-cri-{}-{tag}", std::process::id()),
            handlers: vec![
                (AMPHI_HANDLER.into(), "io.containerd.amphi.v1".into()),
                (RUNC_HANDLER.into(), "io.containerd.runc.v2".into()),
                (AMPHI_OPTS_HANDLER.into(), "io.containerd.amphi.v1".into()),
            ],
            opts_bridge: format!("aopt{}x{tag}", std::process::id() % 100_000),
        })
    }
}

impl CriConfig {
    /// Deletes the CNI bridge, and the options handler's bridge should a shim have made it.
    pub fn remove_bridges(&self) {
        self.net.remove_bridge();
        if Path::new("/sys/class/net").join(&self.opts_bridge).exists() {
            let _ = Command::new("ip")
                .args(["link", "del", &self.opts_bridge])
                .status();
        }
    }
}

/// Directory of the CNI config for the daemon in `dir`.
pub fn cni_conf_dir(dir: &Path) -> PathBuf {
    dir.join("cni/net.d")
}

/// Directory of host-local's leases for the daemon in `dir`.
pub fn cni_data_dir(dir: &Path) -> PathBuf {
    dir.join("cni/ipam")
}

/// The shim config the `amphi-opts` handler's `ConfigPath` names.
pub fn opts_config_path(dir: &Path) -> PathBuf {
    dir.join("amphi-opts.toml")
}

/// Writes the CNI conflist and the `amphi-opts` shim config for the daemon in `dir`.
pub fn write_cni_conf(dir: &Path, cri: &CriConfig) -> Result<()> {
    std::fs::write(
        opts_config_path(dir),
        format!("[network]\nmode = \"bridge\"\nbridge = \"{}\"\nsubnet = \"10.215.{}.0/24\"\nmasquerade = false\n", cri.opts_bridge, std::process::id() % 250 + 1),
    )?;
    std::fs::create_dir_all(cni_conf_dir(dir))?;
    std::fs::create_dir_all(cni_data_dir(dir))?;
    std::fs::write(
        cni_conf_dir(dir).join("10-amphi-e2e.conflist"),
        cri.net.conflist(&cni_data_dir(dir)),
    )?;
    Ok(())
}

/// The runtime handler tables under the TOML table `runtimes`, strings quoted with `q`, each
/// with the `extra` lines; the options handler also with its `ConfigPath`.
fn runtime_tables(cri: &CriConfig, dir: &Path, runtimes: &str, q: char, extra: &str) -> String {
    let mut out = String::new();
    for (name, ty) in &cri.handlers {
        out.push_str(&format!(
            "[{runtimes}.{name}]\n  runtime_type = {q}{ty}{q}\n{extra}"
        ));
        if name == AMPHI_OPTS_HANDLER {
            out.push_str(&format!(
                "[{runtimes}.{name}.options]\n  ConfigPath = {q}{}{q}\n",
                opts_config_path(dir).display()
            ));
        }
    }
    out
}

/// The containerd config of a CRI daemon: root/state/socket of `dir`, the runtime handlers,
/// the pause image, the private CNI network, and the settings this VM needs
/// (`restrict_oom_score_adj`: no CAP_SYS_RESOURCE; no AppArmor; no SELinux).
pub fn containerd_config(version: Version, dir: &Path, cri: &CriConfig) -> String {
    let root = dir.join("root");
    let state = dir.join("state");
    let sock = dir.join("c.sock");
    let cni_conf = cni_conf_dir(dir);
    if version.is_v2() {
        let runtimes = runtime_tables(
            cri,
            dir,
            "plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes",
            '\'',
            "  sandboxer = 'podsandbox'\n",
        );
        format!(
            r#"{head}
[plugins.'io.containerd.cri.v1.images']
  snapshotter = 'overlayfs'

[plugins.'io.containerd.cri.v1.images'.pinned_images]
  sandbox = '{pause}'

[plugins.'io.containerd.cri.v1.runtime']
  enable_selinux = false
  disable_apparmor = true
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  enable_cdi = false

[plugins.'io.containerd.cri.v1.runtime'.containerd]
  default_runtime_name = 'runc'

{runtimes}
[plugins.'io.containerd.cri.v1.runtime'.cni]
  bin_dirs = ['{cni_bin}']
  conf_dir = '{cni_conf}'
  max_conf_num = 1

[plugins.'io.containerd.grpc.v1.cri']
  stream_server_address = '127.0.0.1'
  stream_server_port = '0'
"#,
            head = config_head(3, '\'', &root, &state, &sock, ""),
            pause = PAUSE_IMAGE,
            cni_bin = CNI_BIN_DIR,
            cni_conf = cni_conf.display(),
        )
    } else {
        let runtimes = runtime_tables(
            cri,
            dir,
            "plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes",
            '"',
            "",
        );
        format!(
            r#"{head}
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause}"
  enable_selinux = false
  disable_apparmor = true
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"

[plugins."io.containerd.grpc.v1.cri".containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"

{runtimes}
[plugins."io.containerd.grpc.v1.cri".cni]
  bin_dir = "{cni_bin}"
  conf_dir = "{cni_conf}"
  max_conf_num = 1
"#,
            head = config_head(2, '"', &root, &state, &sock, ""),
            pause = PAUSE_IMAGE,
            cni_bin = CNI_BIN_DIR,
            cni_conf = cni_conf.display(),
        )
    }
}

/// A pause process: sleeps until SIGTERM/SIGINT (as pid 1 it needs handlers for those), reaps
/// every child it inherits.
const PAUSE_C: &str = r#"
#include <signal.h>
#include <stddef.h>
#include <sys/wait.h>
#include <unistd.h>
static void on_term(int s) { (void)s; _exit(0); }
static void on_chld(int s) { (void)s; while (waitpid(-1, NULL, WNOHANG) > 0) {} }
int main(void) {
    struct sigaction a = {0};
    a.sa_handler = on_term;
    sigaction(SIGTERM, &a, NULL);
    sigaction(SIGINT, &a, NULL);
    a.sa_handler = on_chld;
    a.sa_flags = SA_NOCLDSTOP | SA_RESTART;
    sigaction(SIGCHLD, &a, NULL);
    for (;;) pause();
}
"#;

/// Compiles the pause program (`gcc -static`) into the cache dir, once.
pub fn pause_binary() -> Result<PathBuf> {
    compile_once("pause", "", "c", PAUSE_C, |src, tmp| {
        let mut c = Command::new("gcc");
        c.args(["-static", "-Os", "-s", "-o"]).arg(tmp).arg(src);
        cmd::run(c, Duration::from_secs(120))?
            .ok()
            .context("compiling the pause program (needs gcc and libc6-dev)")?;
        Ok(())
    })
}

/// `<cache>/<name>-<hash of source><ext>`, compiled from `source` (written to a `.<src_ext>`
/// file) by `compile(src, tmp)` into `tmp` on the first call, then renamed into place: a
/// changed source is compiled again, an interrupted compile leaves no half-written output.
fn compile_once(
    name: &str,
    ext: &str,
    src_ext: &str,
    source: &str,
    compile: impl FnOnce(&Path, &Path) -> Result<()>,
) -> Result<PathBuf> {
    let _g = BUILD_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let dir = paths::cache_dir();
    let out = dir.join(format!("{name}-{}{ext}", short_hash(source.as_bytes())));
    if out.is_file() {
        return Ok(out);
    }
    let pid = std::process::id();
    let src = dir.join(format!("{name}.{pid}.{src_ext}"));
    let tmp = dir.join(format!("{name}.{pid}.partial{ext}"));
    std::fs::write(&src, source)?;
    compile(&src, &tmp)?;
    let _ = std::fs::remove_file(&src);
    std::fs::rename(&tmp, &out)?;
    Ok(out)
}

/// The pause image archive: a busybox rootfs with `/pause` as its entrypoint.
pub fn pause_archive() -> Result<PathBuf> {
    let pause = pause_binary()?;
    let f = format!("{}:/pause", pause.display());
    let name = format!(
        "pause-e2e-{}.tar",
        short_hash(pause.to_string_lossy().as_bytes())
    );
    images::build_archive(
        &name,
        &[
            "rootfs",
            PAUSE_IMAGE,
            "--file",
            &f,
            "--entrypoint",
            "/pause",
            "--cmd",
        ],
    )
}

/// An image with busybox and the wasm module `module` at `/<dest>`, which is its entrypoint
/// (so the container runs wasm, and ExecSync can still run busybox inside it).
pub fn wasm_rootfs_archive(module: &Path, image: &str, dest: &str) -> Result<PathBuf> {
    anyhow::ensure!(
        module.is_file(),
        "{} missing: run examples/wasm/build.sh",
        module.display()
    );
    let f = format!("{}:/{dest}", module.display());
    let entry = format!("/{dest}");
    let stem = image.rsplit('/').next().unwrap_or(image).replace(':', "-");
    let hash = short_hash(&std::fs::read(module)?);
    images::build_archive(
        &format!("cri-{stem}-{hash}.tar"),
        &[
            "rootfs",
            image,
            "--file",
            &f,
            "--entrypoint",
            &entry,
            "--cmd",
        ],
    )
}

/// A wasm32-wasip2 command: `wget.wasm HOST:PORT PATH` prints the HTTP response it gets
/// (a wasm client for the mixed pod: wasm -> native over the pod's localhost).
const WGET_RS: &str = r#"
use std::io::{Read, Write};
fn main() {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:80".into());
    let path = args.next().unwrap_or_else(|| "/".into());
    let mut last = String::new();
    for _ in 0..50 {
        match std::net::TcpStream::connect(&addr) {
            Ok(mut s) => {
                write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
                let mut out = String::new();
                s.read_to_string(&mut out).unwrap();
                println!("{out}");
                return;
            }
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    eprintln!("wget.wasm: connect {addr}: {last}");
    std::process::exit(7);
}
"#;

/// Compiles [`WGET_RS`] with `rustc --target wasm32-wasip2` into the cache dir, once.
pub fn wget_wasm() -> Result<PathBuf> {
    compile_once("wget", ".wasm", "rs", WGET_RS, |src, tmp| {
        let mut c = Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()));
        c.args([
            "--edition",
            "2021",
            "-O",
            "--crate-name",
            "wget",
            "--target",
            "wasm32-wasip2",
            "-o",
        ])
        .arg(tmp)
        .arg(src);
        cmd::run(c, Duration::from_secs(300))?
            .ok()
            .context("compiling wget.wasm (needs the wasm32-wasip2 rust target)")?;
        Ok(())
    })
}

/// Imports the pause image into the daemon's (CRI) namespace.
pub fn import_pause(cd: &Containerd) -> Result<()> {
    images::import(cd, &pause_archive()?, &[])
}
