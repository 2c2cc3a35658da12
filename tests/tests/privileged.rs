//! `ctr run --privileged`: the same probe through amphi and through runc, in one daemon, must
//! print the same. A privileged spec lists every host device (devpts's own `/dev/pts/ptmx`
//! among them), every capability, no seccomp, no masked or read-only paths, a writable /sys.

use amphi_tests::{e2e, Case, Runtime};
use anyhow::Result;

/// What a privileged container sees of itself, one fact a line, without numbers that differ
/// between two runs (pids, mount ids, pty numbers).
const PROBE: &str = r#"
id
grep -E '^(Cap(Inh|Prm|Eff|Bnd|Amb)|NoNewPrivs|Seccomp):' /proc/self/status
echo ptmx=$(readlink /dev/ptmx)
ls -A /dev | grep -v -E '^(pts|shm|mqueue)$' | sort | tr '\n' ' '; echo
awk '$2 ~ "^/(proc|sys|dev)(/|$)" { print $2, $3, $4 }' /proc/self/mounts | sort
echo 1 > /proc/sys/net/ipv4/ip_forward && echo sysctl-write=$(cat /proc/sys/net/ipv4/ip_forward)
touch /sys/fs/cgroup/.probe 2>/dev/null; echo cgroupfs-write=$?
"#;

fn probe(c: &mut Case, runtime: Runtime, suffix: &str) -> Result<String> {
    let saved = c.runtime;
    c.runtime = runtime;
    let id = c.id(suffix);
    let out = c.run_rm(&["--privileged"], &id, &["sh", "-c", PROBE]);
    c.runtime = saved;
    let out = out?.ok()?;
    Ok(out.stdout)
}

fn privileged_like_runc(c: &mut Case) -> Result<()> {
    let amphi = probe(c, Runtime::Amphi, "amphi")?;
    let runc = probe(c, Runtime::Runc, "runc")?;
    // Every capability the host has (this host itself may lack some, e.g. CAP_SYS_RESOURCE).
    let status = std::fs::read_to_string("/proc/self/status")?;
    let host_bnd = status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .map(str::trim)
        .unwrap_or_default();
    anyhow::ensure!(
        amphi.contains(&format!("CapEff:\t{host_bnd}\n")),
        "a privileged container has every capability of the host ({host_bnd}):\n{amphi}"
    );
    anyhow::ensure!(
        amphi.contains("Seccomp:\t0") && amphi.contains("sysctl-write=1"),
        "a privileged container has no seccomp filter and a writable /proc/sys:\n{amphi}"
    );
    let (a, r): (Vec<&str>, Vec<&str>) = (amphi.lines().collect(), runc.lines().collect());
    let only_amphi: Vec<&&str> = a.iter().filter(|l| !r.contains(l)).collect();
    let only_runc: Vec<&&str> = r.iter().filter(|l| !a.contains(l)).collect();
    anyhow::ensure!(
        only_amphi.is_empty() && only_runc.is_empty(),
        "--privileged differs from runc\nonly amphi: {only_amphi:#?}\nonly runc: {only_runc:#?}\n\
         ===== amphi =====\n{amphi}===== runc =====\n{runc}"
    );
    Ok(())
}

e2e!(privileged_same_as_runc, privileged_like_runc);
