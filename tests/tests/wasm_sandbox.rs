//! The wasm trust boundary, end to end (issue 11 items 3-5): what a guest reaches through
//! WASI, whether a container can change the compiled code that other containers run, and
//! whether a changed cache entry is ever loaded. The guest is `examples/wasm/sandbox-probe`.

use amphi_tests::cmd::Output;
use amphi_tests::wasm_images::{self, Target};
use amphi_tests::{images, wasm_e2e, Case};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::time::Duration;

const PROBE: &str = "/sandbox-probe.wasm";

/// A busybox image with the probe, a file of its own (`/image-file.txt`) and two symlinks
/// into `/proc`: `/proc-mem` (absolute, to `/proc/self/mem`) and `/proc-up` (relative).
fn probe_image(c: &Case, image: &str) -> Result<String> {
    use std::hash::{Hash, Hasher};
    let module = wasm_images::module("sandbox-probe", Target::P1)?;
    let own = c.cd.dir.join("image-file.txt");
    std::fs::write(&own, "from the image\n")?;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    std::fs::read(&module)?.hash(&mut h);
    image.hash(&mut h);
    let file = format!("sandbox-probe-{:016x}.tar", h.finish());
    let module_spec = format!("{}:{PROBE}", module.display());
    let own_spec = format!("{}:/image-file.txt", own.display());
    let archive = images::build_archive(
        &file,
        &[
            "rootfs",
            image,
            "--file",
            &module_spec,
            "--file",
            &own_spec,
            "--symlink",
            "proc-mem:/proc/self/mem",
            "--symlink",
            "proc-up:../../../proc",
        ],
    )?;
    images::import(&c.cd, &archive, &[])?;
    Ok(image.to_string())
}

/// `ctr run --rm` of the probe (no arguments) in `image`.
fn run_probe(c: &Case, image: &str, id: &str) -> Result<Output> {
    c.with_image(image).run_rm(&[], id, &[PROBE])?.ok()
}

/// What every probe run must show: each escape attempt DENIED (none REACHED), `/proc` without
/// a process in it, the files it was given read back, and its last line.
fn check_probe(out: &Output, reads: &[(&str, &str)], extra_denials: &[&str]) -> Result<()> {
    let s = &out.stdout;
    let reached: Vec<&str> = s.lines().filter(|l| l.starts_with("REACHED")).collect();
    anyhow::ensure!(
        reached.is_empty(),
        "the guest reached what it must not: {reached:?}\n{}",
        out.describe()
    );
    let builtin = [
        "/proc/self/mem rw",
        "/proc/1/mem rw",
        "/proc/1/mem",
        "/proc/self/maps",
        "/proc/self/task",
        "/proc/sys",
        "/sys",
        "/sys/fs/cgroup",
        "/dev/kmsg",
        "/dev/pts",
        "/dev/mqueue",
        "/../proc/self/maps",
        "/../../proc/1/mem rw",
        "/.. listing",
        "symlink /proc-mem",
        "symlink /proc-up",
    ];
    for name in builtin.iter().chain(extra_denials) {
        anyhow::ensure!(
            s.lines()
                .any(|l| l.starts_with(&format!("DENIED {name}: "))),
            "no `DENIED {name}` line: {}",
            out.describe()
        );
    }
    let proc_line = s
        .lines()
        .find_map(|l| l.strip_prefix("PROC"))
        .ok_or_else(|| anyhow::anyhow!("no PROC line: {}", out.describe()))?;
    let procs: Vec<&str> = proc_line
        .split_whitespace()
        .filter(|n| *n == "self" || n.parse::<u32>().is_ok())
        .collect();
    anyhow::ensure!(
        procs.is_empty(),
        "the guest's /proc is a procfs: {procs:?}\n{}",
        out.describe()
    );
    for (file, want) in reads {
        anyhow::ensure!(
            s.lines().any(|l| l == format!("READ {file} = {want}")),
            "the guest did not read `{want}` from {file}: {}",
            out.describe()
        );
    }
    anyhow::ensure!(
        s.lines().last() == Some("probe done"),
        "the probe did not finish: {}",
        out.describe()
    );
    Ok(())
}

/// A guest sees its image's files and the spec's data mounts (a volume, a tmpfs) and nothing
/// of procfs, sysfs, devpts, mqueue or cgroupfs — not by path, not through `..`, not through
/// the image's symlinks, not through binds of the host's /proc or cgroupfs. As the init and as
/// an exec (which joins the container and must take the same view).
fn sandbox_dirs(c: &mut Case) -> Result<()> {
    let image = probe_image(c, "docker.io/amphi/sandbox-probe:e2e")?;
    let vol = c.cd.dir.join("vol");
    std::fs::create_dir_all(&vol)?;
    std::fs::write(vol.join("data.txt"), "from the volume\n")?;
    let vol_mount = format!("type=bind,src={},dst=/data,options=rbind:ro", vol.display());
    let opts = [
        "--mount",
        vol_mount.as_str(),
        "--mount",
        "type=bind,src=/proc,dst=/hostproc,options=rbind:ro",
        "--mount",
        "type=bind,src=/sys/fs/cgroup,dst=/cg,options=rbind:ro",
        "--mount",
        "type=tmpfs,src=tmpfs,dst=/scratch",
    ];
    let probe_args = [
        PROBE,
        "deny:/hostproc/self/mem",
        "deny:/hostproc/1/maps",
        "deny:/cg",
        "/image-file.txt",
        "/data/data.txt",
        "rw:/scratch/new.txt",
    ];
    let reads = [
        ("/image-file.txt", "from the image"),
        ("/data/data.txt", "from the volume"),
        ("/scratch/new.txt", "written by the guest"),
    ];
    let denials = [
        "/hostproc/self/mem",
        "/hostproc/1/maps",
        "/cg",
        "/data/../proc/self/maps (from a volume)",
    ];
    let runtime = c.runtime.name();

    let id = c.id("init");
    let mut args = vec!["run", "--rm", "--runtime", runtime];
    args.extend_from_slice(&opts);
    args.push(&image);
    args.push(&id);
    args.extend_from_slice(&probe_args);
    let out = c.ctr(&args)?.ok()?;
    check_probe(&out, &reads, &denials).context("the probe as the container's init")?;

    let id = c.id("exec");
    let mut args = vec!["run", "-d", "--runtime", runtime];
    args.extend_from_slice(&opts);
    args.extend_from_slice(&[&image, &id, PROBE, "wait"]);
    c.ctr(&args)?.ok()?;
    c.wait_status(&id, "RUNNING", Duration::from_secs(30))?;
    let mut args = vec!["task", "exec", "--exec-id", "probe", &id];
    args.extend_from_slice(&probe_args);
    let out = c.ctr(&args)?.ok()?;
    check_probe(&out, &reads, &denials).context("the probe as an exec")?;
    c.remove(&id)?;
    c.check_leaks()
}

/// The one compiled entry of the module in `cache` (the current format's name).
fn cache_entry(cache: &Path) -> Result<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(cache)
        .with_context(|| format!("{}", cache.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(".v2.cwasm"))
        .collect();
    anyhow::ensure!(
        found.len() == 1,
        "expected one entry in {}, found {found:?}",
        cache.display()
    );
    Ok(found.remove(0))
}

/// Gives the shims of this case a private compile cache (the node's is shared with other
/// sessions, and these cases look at and change its entries).
fn private_cache(c: &mut Case) -> Result<PathBuf> {
    let cache = c.cd.dir.join("wasm-cache");
    c.cd.restart_with_env("AMPHI_WASM_CACHE_DIR", &cache.to_string_lossy())?;
    Ok(cache)
}

/// Writes 8 bytes at 4096 into every fd and mapped file of the wasm container's process, the
/// way a native exec with CAP_SYS_PTRACE (and root's CAP_DAC_OVERRIDE) would try to change the
/// code other pods run. Each line: `WROTE|REFUSED <path> <link target>: <dd's error>`.
const WRITE_EVERY_FD: &str = r#"for f in /proc/1/fd/* /proc/1/map_files/*; do
  t=$(readlink "$f")
  if e=$(printf XXXXXXXX | dd of="$f" bs=1 seek=4096 conv=notrunc 2>&1 >/dev/null); then
    echo "WROTE $f $t"
  else
    echo "REFUSED $f $t: $(echo "$e" | head -n 1)"
  fi
done"#;

/// A native exec with CAP_SYS_PTRACE writes every fd of the wasm process: the compiled
/// artifact is refused (EROFS), its bytes in the node cache are unchanged, and the next run of
/// the module by another image loads the unchanged entry (a verified cache hit) and behaves.
fn sealed_artifact(c: &mut Case) -> Result<()> {
    let cache = private_cache(c)?;
    let image = probe_image(c, "docker.io/amphi/sandbox-probe:e2e")?;
    let twin = probe_image(c, "docker.io/amphi/sandbox-probe-twin:e2e")?;
    let id = c.id("sealed");
    c.with_image(&image)
        .run_detached(&["--cap-add", "CAP_SYS_PTRACE"], &id, &[PROBE, "wait"])?;
    let entry = cache_entry(&cache)?;
    let before = std::fs::read(&entry)?;
    let out = c
        .ctr(&[
            "task",
            "exec",
            "--exec-id",
            "writer",
            &id,
            "sh",
            "-c",
            WRITE_EVERY_FD,
        ])?
        .ok()?;
    let artifact_lines: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.contains(".cwasm"))
        .collect();
    anyhow::ensure!(
        artifact_lines
            .iter()
            .any(|l| l.starts_with("REFUSED /proc/1/fd/")),
        "the exec did not see the artifact among the wasm process's fds: {}",
        out.describe()
    );
    for l in &artifact_lines {
        anyhow::ensure!(
            l.starts_with("REFUSED"),
            "the artifact was written: {l}\n{}",
            out.describe()
        );
        if l.starts_with("REFUSED /proc/1/fd/") {
            anyhow::ensure!(
                l.contains("Read-only file system"),
                "the artifact's reopen failed for another reason than its read-only mount: {l}"
            );
        }
    }
    c.ctr(&["task", "kill", "-s", "SIGKILL", &id])?.ok()?;
    c.wait_status(&id, "STOPPED", Duration::from_secs(30))?;
    c.remove(&id)?;
    anyhow::ensure!(
        std::fs::read(&entry)? == before,
        "the cache entry {} changed",
        entry.display()
    );

    let id = c.id("twin");
    let out = run_probe(c, &twin, &id)?;
    check_probe(&out, &[], &[]).context("the module's next run, by another image")?;
    let log = std::fs::read_to_string(c.cd.log_path())?;
    anyhow::ensure!(
        !log.contains("discarding entry"),
        "the cache discarded an entry that nobody should have changed"
    );
    c.check_leaks()
}

/// An entry changed on disk behind the cache's back (code bytes rewritten in place, size and
/// mtime kept) is not loaded: the shim logs the digest mismatch, compiles again, and the
/// module runs as built.
fn corrupt_entry(c: &mut Case) -> Result<()> {
    use std::os::unix::fs::FileExt;
    let cache = private_cache(c)?;
    let image = probe_image(c, "docker.io/amphi/sandbox-probe:e2e")?;
    let id = c.id("first");
    let out = run_probe(c, &image, &id)?;
    check_probe(&out, &[], &[])?;
    let entry = cache_entry(&cache)?;
    let f = std::fs::OpenOptions::new().write(true).open(&entry)?;
    let mtime = f.metadata()?.modified()?;
    f.write_all_at(&[0xcc; 8], 4096)?;
    f.set_modified(mtime)?;
    drop(f);
    let corrupted = std::fs::read(&entry)?;

    let id = c.id("second");
    let out = run_probe(c, &image, &id)?;
    check_probe(&out, &[], &[]).context("the run after the corruption")?;
    let name = entry.file_name().unwrap_or_default().to_string_lossy();
    amphi_tests::cmd::wait_for(
        Duration::from_secs(5),
        "the shim's `discarding entry ... sha256` warning in the containerd log",
        || {
            let log = std::fs::read_to_string(c.cd.log_path()).unwrap_or_default();
            Ok(log
                .lines()
                .any(|l| {
                    l.contains("discarding entry") && l.contains(&*name) && l.contains("sha256")
                })
                .then_some(()))
        },
    )?;
    // Recompiled: the entry's name holds other bytes than the corrupted ones. (Not checked by
    // inode: the corrupted file was unlinked first, and the filesystem may hand its inode
    // number to the new one.)
    let now = cache_entry(&cache)?;
    anyhow::ensure!(
        std::fs::read(&now)? != corrupted,
        "the corrupted entry is still in the cache"
    );
    c.check_leaks()
}

wasm_e2e!(wasm_sandbox_dirs, sandbox_dirs);
wasm_e2e!(wasm_sealed_artifact, sealed_artifact);
wasm_e2e!(wasm_corrupt_entry, corrupt_entry);
