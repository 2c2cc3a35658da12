//! Stress: 200 containers created and deleted through one containerd, 50 at a time; then no
//! leaked mount, cgroup, shim process, zombie, containerd fd, or shim state record.

use amphi_tests::cmd;
use amphi_tests::{leaks, Case, Runtime};
use anyhow::{Context, Result};
use std::path::Path;
use std::time::{Duration, Instant};

const BATCHES: usize = 4;
const AT_ONCE: usize = 50;
/// containerd may open a few fds lazily (a plugin's db, a metrics client); more than this
/// after 200 containers is a leak.
const FD_SLACK: usize = 8;

/// One case per containerd version (about 20s each), and a runc validation run on 1.6.
macro_rules! stress_e2e {
    ($name:ident, $f:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            fn run(v: amphi_tests::Version, r: Runtime) {
                amphi_tests::require_root();
                amphi_tests::run_case(v, r, stringify!($name), $f)
            }
            #[test]
            fn containerd_1_6() {
                run(amphi_tests::Version::V1_6, Runtime::Amphi)
            }
            #[test]
            fn containerd_1_7() {
                run(amphi_tests::Version::V1_7, Runtime::Amphi)
            }
            #[test]
            fn containerd_2_1() {
                run(amphi_tests::Version::V2_1, Runtime::Amphi)
            }
            #[test]
            #[ignore = "validates the test against runc; run with --ignored"]
            fn runc_containerd_1_6() {
                run(amphi_tests::Version::V1_6, Runtime::Runc)
            }
        }
    };
}

fn fd_count(pid: u32) -> Result<usize> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))
        .with_context(|| format!("/proc/{pid}/fd"))?
        .count())
}

fn fd_list(pid: u32) -> String {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|rd| {
            let mut v: Vec<String> = rd
                .filter_map(|e| e.ok())
                .map(|e| {
                    format!(
                        "{} -> {}",
                        e.file_name().to_string_lossy(),
                        std::fs::read_link(e.path())
                            .map(|p| p.display().to_string())
                            .unwrap_or_default()
                    )
                })
                .collect();
            v.sort();
            v.join("\n    ")
        })
        .unwrap_or_default()
}

/// Every file below `dir` (the shim's state and socket dirs must end up empty of records).
fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.filter_map(|e| e.ok()) {
        let p = e.path();
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            out.extend(files_under(&p));
        } else {
            out.push(p.display().to_string());
        }
    }
    out
}

/// Runs `f(i)` for each i in 0..n on its own thread; all errors, joined.
fn parallel(n: usize, f: impl Fn(usize) -> Result<()> + Sync) -> Result<()> {
    let errs: Vec<String> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..n)
            .map(|i| {
                let f = &f;
                s.spawn(move || f(i))
            })
            .collect();
        hs.into_iter()
            .filter_map(|h| match h.join() {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(format!("{e:#}")),
                Err(_) => Some("thread panicked".into()),
            })
            .collect()
    });
    anyhow::ensure!(
        errs.is_empty(),
        "{} of {n} failed; first: {}",
        errs.len(),
        errs[0]
    );
    Ok(())
}

fn stress(c: &mut Case) -> Result<()> {
    let daemon =
        c.cd.pid()
            .ok_or_else(|| anyhow::anyhow!("no containerd pid"))?;
    // Warm up (containerd opens some things on first use), then take the baseline.
    let warm = c.id("warm");
    c.run_rm(&[], &warm, &["true"])?.ok()?;
    std::thread::sleep(Duration::from_secs(1));
    let fds_before = fd_count(daemon)?;
    let list_before = fd_list(daemon);

    let t0 = Instant::now();
    let rt = c.runtime.name();
    let image = c.image();
    for batch in 0..BATCHES {
        let ids: Vec<String> = (0..AT_ONCE)
            .map(|i| c.id(&format!("{batch}-{i}")))
            .collect();
        let cd = &c.cd;
        parallel(AT_ONCE, |i| {
            let id = &ids[i];
            cmd::run(
                cd.ctr_command(&["run", "-d", "--runtime", rt, image, id, "sleep", "100"]),
                Duration::from_secs(120),
            )?
            .ok()?;
            Ok(())
        })
        .with_context(|| format!("batch {batch}: ctr run -d"))?;
        let out = c.ctr(&["task", "ls"])?.ok()?;
        let running = ids
            .iter()
            .filter(|id| {
                amphi_tests::case::parse_task_ls(&out.stdout, id)
                    .is_some_and(|(_, s)| s == "RUNNING")
            })
            .count();
        anyhow::ensure!(
            running == AT_ONCE,
            "batch {batch}: {running} of {AT_ONCE} RUNNING:\n{}",
            out.stdout
        );
        if c.runtime == Runtime::Amphi && batch == 0 {
            // The emptiness check at the end means something: records exist while running.
            let recs = files_under(&c.cd.dir.join("amphi/state"))
                .iter()
                .filter(|f| f.ends_with(".json"))
                .count();
            anyhow::ensure!(
                recs >= AT_ONCE,
                "expected a state record per running container, found {recs}"
            );
        }
        parallel(AT_ONCE, |i| {
            let id = &ids[i];
            cmd::run(
                cd.ctr_command(&["task", "kill", "-s", "SIGKILL", id]),
                Duration::from_secs(60),
            )?
            .ok()?;
            cmd::wait_for(Duration::from_secs(60), &format!("{id} STOPPED"), || {
                let o = cmd::run(cd.ctr_command(&["task", "ls"]), Duration::from_secs(60))?.ok()?;
                Ok(amphi_tests::case::parse_task_ls(&o.stdout, id)
                    .filter(|(_, s)| s == "STOPPED")
                    .map(|_| ()))
            })?;
            cmd::run(
                cd.ctr_command(&["task", "delete", id]),
                Duration::from_secs(60),
            )?
            .ok()?;
            cmd::run(
                cd.ctr_command(&["containers", "delete", id]),
                Duration::from_secs(60),
            )?
            .ok()?;
            Ok(())
        })
        .with_context(|| format!("batch {batch}: kill + delete"))?;
        eprintln!("stress: batch {batch} done at {:?}", t0.elapsed());
    }
    anyhow::ensure!(
        c.containers()?.is_empty(),
        "containers left: {:?}",
        c.containers()?
    );

    // Mounts, cgroups, shim processes, zombies (shims get a little time to exit).
    leaks::check(&c.cd, &[], c.runtime.shim_binary(), Duration::from_secs(20))?;
    c.check_leaks()?;

    // containerd's fds come back to (about) the baseline; closing may lag the shims' exit.
    let fds_after = cmd::wait_for(Duration::from_secs(20), "containerd's fd count to settle", || {
        let n = fd_count(daemon)?;
        Ok((n <= fds_before + FD_SLACK).then_some(n))
    })
    .with_context(|| {
        format!(
            "containerd fds: {fds_before} before, {} after 200 containers\n  before:\n    {list_before}\n  after:\n    {}",
            fd_count(daemon).unwrap_or(0),
            fd_list(daemon)
        )
    })?;
    eprintln!(
        "stress: containerd fds {fds_before} before, {fds_after} after; total {:?}",
        t0.elapsed()
    );

    // No leftover records in the shim's state dir, nor sockets.
    if c.runtime == Runtime::Amphi {
        for d in ["amphi/state", "amphi/sockets"] {
            let left = files_under(&c.cd.dir.join(d));
            anyhow::ensure!(
                left.is_empty(),
                "files left in the shim's {d} dir: {left:#?}"
            );
        }
    }
    Ok(())
}

stress_e2e!(stress_200, stress);
