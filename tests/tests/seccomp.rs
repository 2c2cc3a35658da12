//! seccomp through containerd: `ctr run --seccomp` gives the container containerd's own default
//! profile (the one Docker and Kubernetes' RuntimeDefault use). A native process runs under it
//! (filter mode 2 in /proc/self/status), and so does a wasm module, which the container process
//! runs in-process with wasmtime (mmap, mprotect, futex, signals, threads must be allowed).

use amphi_tests::wasm_images::{self, Target};
use amphi_tests::{e2e, Case, Runtime};
use anyhow::Result;

fn native_default_profile(c: &mut Case) -> Result<()> {
    let id = c.id("sc");
    let out = c
        .run_rm(
            &["--seccomp"],
            &id,
            &["sh", "-c", "grep Seccomp: /proc/self/status; echo done"],
        )?
        .ok()?;
    anyhow::ensure!(
        out.stdout.contains("Seccomp:\t2") && out.stdout.contains("done"),
        "expected filter mode 2: {}",
        out.describe()
    );
    // Without --seccomp ctr sets no profile.
    let id = c.id("nosc");
    let out = c
        .run_rm(&[], &id, &["grep", "Seccomp:", "/proc/self/status"])?
        .ok()?;
    anyhow::ensure!(out.stdout.contains("Seccomp:\t0"), "{}", out.describe());
    Ok(())
}

e2e!(seccomp_default_profile, native_default_profile);

fn wasm_default_profile(c: &mut Case) -> Result<()> {
    if c.runtime != Runtime::Amphi {
        return Ok(());
    }
    // The same image names as wasm.rs: the harness caches an image archive per module file.
    for (target, tag, name) in [
        (Target::P1, "p1", "docker.io/amphi/hello-wasm:e2e"),
        (Target::P2, "p2", "docker.io/amphi/hello-p2-wasm:e2e"),
    ] {
        let module = wasm_images::module("hello", target)?;
        let image = wasm_images::import_rootfs_module(&c.cd, &module, name)?;
        let id = c.id(&format!("wsc{tag}"));
        let out = c
            .ctr(&[
                "run",
                "--rm",
                "--seccomp",
                "--runtime",
                c.runtime.name(),
                &image,
                &id,
            ])?
            .ok()?;
        anyhow::ensure!(
            out.stdout.contains("hello from wasm"),
            "wasm ({tag}) under the default seccomp profile: {}",
            out.describe()
        );
    }
    // A running wasm task: the host sees its container process in filter mode.
    let module = wasm_images::module("sleeper", Target::P1)?;
    let image =
        wasm_images::import_rootfs_module(&c.cd, &module, "docker.io/amphi/sleeper-wasm:e2e")?;
    let id = c.id("wscsleep");
    c.ctr(&[
        "run",
        "-d",
        "--seccomp",
        "--runtime",
        c.runtime.name(),
        &image,
        &id,
    ])?
    .ok()?;
    c.wait_status(&id, "RUNNING", std::time::Duration::from_secs(30))?;
    let (pid, _) = c
        .task(&id)?
        .ok_or_else(|| anyhow::anyhow!("task {id} not listed"))?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let mode = status
        .lines()
        .find(|l| l.starts_with("Seccomp:"))
        .unwrap_or("");
    c.remove(&id)?;
    anyhow::ensure!(mode == "Seccomp:\t2", "wasm task {pid}: {mode:?}");
    Ok(())
}

mod wasm_seccomp {
    use super::*;
    fn run(v: amphi_tests::Version) {
        amphi_tests::require_root();
        amphi_tests::run_case(v, Runtime::Amphi, "wasm_seccomp", wasm_default_profile)
    }
    #[test]
    fn containerd_1_7() {
        run(amphi_tests::Version::V1_7)
    }
    #[test]
    fn containerd_2_1() {
        run(amphi_tests::Version::V2_1)
    }
}
