//! Pure cgroup v2, end to end: boots a QEMU guest (`tests/vm/`, Debian's kernel with only
//! cgroup2 mounted) with Debian's containerd 1.6 and runc and the freshly built shim, and runs
//! `tests/vm/guest-tests.sh` there: native cases with amphi and with runc, wasm cases, clone3
//! placement, CRI pods, a leak check after each. Fails with the failing cases' logs and the
//! guest's console. `AMPHI_E2E_KEEP=1` keeps the run directory (payload, logs).

use amphi_tests::cri_env;
use amphi_tests::wasm_images::{self, Target};
use amphi_tests::{cmd, images, paths, require_root};
use anyhow::{Context, Result};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The wasm image of the guest: busybox plus the example modules and a spinning `.wat`.
const WASM_IMAGE: &str = "docker.io/amphi/wasm-vm:e2e";

/// Every case the guest must report, with the runtimes it runs under ("compare": amphi's
/// output against runc's). A case missing from the results is a failure, like a failed one.
const EXPECTED: &[(&str, &[&str])] = &[
    ("run_exit", &["amphi", "runc"]),
    ("exec_pause", &["amphi", "runc"]),
    ("kill_all", &["amphi", "runc"]),
    ("metrics", &["amphi", "runc", "compare"]),
    ("limits", &["amphi", "runc", "compare"]),
    ("oom", &["amphi", "runc"]),
    ("devices", &["amphi", "runc", "compare"]),
    ("privileged", &["amphi", "runc", "compare"]),
    ("cri_pod", &["amphi", "runc"]),
    ("clone3_into_cgroup", &["amphi"]),
    ("wasm_run_exit", &["amphi"]),
    ("wasm_exec_pause", &["amphi"]),
    ("wasm_kill_limits", &["amphi"]),
];

/// QEMU's own deadline (run.sh); the command's is a little longer.
const GUEST_TIMEOUT_SECS: u64 = 540;

fn copy_into(src: &Path, dir: &Path, name: &str) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::copy(src, dir.join(name))
        .with_context(|| format!("copying {} into {}", src.display(), dir.display()))?;
    Ok(())
}

/// The guest's input: the binaries, the image archives and the case script.
fn payload(run: &Path) -> Result<()> {
    let p = run.join("payload");
    let vm = paths::workspace_root().join("tests/vm");
    copy_into(&vm.join("guest-tests.sh"), &p, "guest-tests.sh")?;
    let bin = p.join("bin");
    copy_into(&paths::shim_binary()?, &bin, paths::SHIM_BINARY)?;
    copy_into(Path::new(env!("CARGO_BIN_EXE_vm-cri")), &bin, "vm-cri")?;
    let imgs = p.join("images");
    copy_into(&images::busybox_archive()?, &imgs, "busybox.tar")?;
    copy_into(&cri_env::pause_archive()?, &imgs, "pause.tar")?;
    let mut files = Vec::new();
    for name in ["exit-code", "hello", "sleeper"] {
        let m = wasm_images::module(name, Target::P1)?;
        files.push(format!("{}:/{name}.wasm", m.display()));
    }
    files.push(format!("{}:/spin.wat", vm.join("spin.wat").display()));
    let mut args = vec!["rootfs", WASM_IMAGE];
    for f in &files {
        args.extend(["--file", f.as_str()]);
    }
    // Cached under a name of the modules' contents: they may have been rebuilt since.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for f in &files {
        let src = f.split(':').next().unwrap_or_default();
        std::fs::read(src)
            .with_context(|| format!("reading {src}"))?
            .hash(&mut h);
    }
    let wasm = images::build_archive(&format!("wasm-vm-{:016x}.tar", h.finish()), &args)?;
    copy_into(&wasm, &imgs, "wasm.tar")?;
    Ok(())
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| format!("({e})"));
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// One `RESULT case runtime PASS|FAIL seconds [reason]` line.
struct CaseResult {
    case: String,
    runtime: String,
    passed: bool,
    line: String,
}

fn parse_results(text: &str) -> Vec<CaseResult> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            (it.next()? == "RESULT").then_some(())?;
            Some(CaseResult {
                case: it.next()?.to_string(),
                runtime: it.next()?.to_string(),
                passed: it.next()? == "PASS",
                line: l.to_string(),
            })
        })
        .collect()
}

/// What failed, with the logs that tell why; empty when every expected case passed.
fn failures(run: &Path, results: &[CaseResult], finished: bool) -> Vec<String> {
    let out = run.join("out");
    let mut bad = Vec::new();
    if !finished {
        bad.push(format!(
            "the guest's test set did not finish\n--- guest.log ---\n{}\n--- console ---\n{}",
            tail(&out.join("guest.log"), 40),
            tail(&run.join("console.log"), 40)
        ));
    }
    for (case, runtimes) in EXPECTED {
        for rt in *runtimes {
            match results.iter().find(|r| r.case == *case && r.runtime == *rt) {
                None if finished => bad.push(format!("{case} ({rt}): no result")),
                None => {}
                Some(r) if r.passed => {}
                Some(r) => bad.push(format!(
                    "{}\n--- out/cases/{case}-{rt}.log ---\n{}",
                    r.line,
                    tail(&out.join("cases").join(format!("{case}-{rt}.log")), 40)
                )),
            }
        }
    }
    for r in results.iter().filter(|r| !r.passed) {
        if !EXPECTED.iter().any(|(c, _)| *c == r.case) {
            bad.push(r.line.clone());
        }
    }
    if !bad.is_empty() {
        bad.push(format!(
            "--- containerd.log (tail) ---\n{}",
            tail(&out.join("containerd.log"), 30)
        ));
    }
    bad
}

fn run_guest() -> Result<()> {
    let vm = paths::workspace_root().join("tests/vm");
    let mut build = Command::new("bash");
    build.arg(vm.join("build.sh"));
    cmd::run(build, Duration::from_secs(900))?
        .ok()
        .context("tests/vm/build.sh (the guest's kernel, initramfs and Debian tree)")?;

    let tmp = tempfile::Builder::new().prefix("amphi-vm-").tempdir()?;
    let run: PathBuf = tmp.path().to_path_buf();
    payload(&run)?;

    let t = Instant::now();
    let mut qemu = Command::new("bash");
    qemu.arg(vm.join("run.sh"))
        .arg(&run)
        .arg(GUEST_TIMEOUT_SECS.to_string());
    let booted = cmd::run(qemu, Duration::from_secs(GUEST_TIMEOUT_SECS + 60))?;
    let wall = t.elapsed();

    let text = std::fs::read_to_string(run.join("out/results")).unwrap_or_default();
    let results = parse_results(&text);
    let finished = text.lines().any(|l| l == "END");
    let passed = results.iter().filter(|r| r.passed).count();
    eprintln!(
        "cgroup v2 guest: {} results, {passed} passed, guest booted and ran in {:.0} s\n{}",
        results.len(),
        wall.as_secs_f64(),
        results
            .iter()
            .map(|r| r.line.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
    let mut bad = failures(&run, &results, finished);
    if !booted.success() {
        bad.insert(0, booted.describe());
    }
    if std::env::var_os("AMPHI_E2E_KEEP").is_some() {
        let kept = tmp.keep();
        eprintln!("kept {}", kept.display());
    }
    anyhow::ensure!(bad.is_empty(), "cgroup v2 guest:\n{}", bad.join("\n\n"));
    Ok(())
}

#[test]
fn cgroup_v2_guest() {
    require_root();
    if let Err(e) = run_guest() {
        panic!("{e:#}");
    }
}
