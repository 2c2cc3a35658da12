//! Root-only integration test: mounts and masks through file descriptors (rootfs/inroot.rs).
//!
//! Two real containers share a volume (a host directory bind-mounted at /vol in both). One
//! loops, inside its container, swapping `/vol/x` between a directory and a symlink to a host
//! canary directory; the other is started 200 times with mounts whose destinations pass
//! through `/vol/x` (a directory bind, a file bind, a tmpfs). Whatever the timing, nothing may
//! be made in, or mounted on, the host canary: each start either works (the mount lands in
//! the volume or inside its rootfs) or fails with an error that names the mount. Then the
//! masked paths: a container whose /dev/null is a regular file, or a symlink to a procfs file,
//! is refused rather than having that file bound over its masked paths.
//!
//! `harness = false`: the spawner must be forked before any thread exists.

mod common;

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use common::{assert_nothing_mounted, init_request, pipe, read_all, rootfs, spec, stdio_to, wait};
use oci_spec::runtime::{Mount, MountBuilder, Spec};
use runtime_native::{PreparedWorkload, ProcessContext, Spawner, Workload, WorkloadRunner};

const STARTS: usize = 200;

/// The racer's workload, running inside its container: swap `/vol/x` between a directory
/// and a symlink to the host canary path (given as the payload), until `/vol/stop` appears.
struct Swapper;
struct SwapLoop(PathBuf);

impl WorkloadRunner for Swapper {
    fn prepare(
        &self,
        _: &ProcessContext,
        payload: &[u8],
        _: runtime_native::SetupFds,
    ) -> Result<Box<dyn PreparedWorkload>, runtime_native::RunnerError> {
        let canary = PathBuf::from(String::from_utf8_lossy(payload).into_owned());
        Ok(Box::new(SwapLoop(canary)))
    }
}

impl PreparedWorkload for SwapLoop {
    fn run(self: Box<Self>, _: &ProcessContext) -> i32 {
        let vol = Path::new("/vol");
        let (x, alt) = (vol.join("x"), vol.join("x.alt"));
        // `x` a directory, `x.alt` a symlink to the canary, exchanged atomically
        // (renameat2 RENAME_EXCHANGE) as fast as the kernel goes.
        let _ = std::fs::create_dir(&x);
        let _ = symlink(&self.0, &alt);
        let cx = std::ffi::CString::new(x.as_os_str().as_encoded_bytes()).unwrap();
        let calt = std::ffi::CString::new(alt.as_os_str().as_encoded_bytes()).unwrap();
        let stop = vol.join("stop");
        let mut swaps: u64 = 0;
        loop {
            for _ in 0..1000 {
                // SAFETY: two NUL-terminated paths that outlive the call.
                let r = unsafe {
                    libc::renameat2(
                        libc::AT_FDCWD,
                        cx.as_ptr(),
                        libc::AT_FDCWD,
                        calt.as_ptr(),
                        libc::RENAME_EXCHANGE,
                    )
                };
                if r != 0 {
                    eprintln!("exchange: {}", std::io::Error::last_os_error());
                    return 1;
                }
                swaps += 1;
            }
            if stop.exists() {
                break;
            }
        }
        println!("swaps {swaps}");
        0
    }
}

static RUNNERS: &[(&str, &dyn WorkloadRunner)] = &[("swap", &Swapper)];

fn bind(src: &Path, dest: &str, opts: &[&str]) -> Mount {
    MountBuilder::default()
        .destination(dest)
        .typ("bind")
        .source(src)
        .options(opts.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .build()
        .unwrap()
}

fn with_mounts(mut s: Spec, extra: Vec<Mount>) -> Spec {
    let mut m = s.mounts().clone().unwrap_or_default();
    m.extend(extra);
    s.set_mounts(Some(m));
    s
}

/// Everything below `dir`, for the assertion messages.
fn listing(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                todo.push(p.clone());
            }
            out.push(p);
        }
    }
    out
}

fn race_case(sp: &Spawner, root: &Path, bundle: &Path) {
    let shared = bundle.join("shared");
    let canary = bundle.join("canary");
    let payload = bundle.join("payload");
    std::fs::create_dir_all(&shared).unwrap();
    std::fs::create_dir_all(&canary).unwrap();
    std::fs::create_dir_all(&payload).unwrap();
    std::fs::write(canary.join("marker"), "host").unwrap();
    std::fs::write(payload.join("file"), "payload").unwrap();
    let canary = canary.canonicalize().unwrap();

    // The racer: a real container with the volume at /vol.
    let racer_spec = with_mounts(
        spec(root, &["swap"]),
        vec![bind(&shared, "/vol", &["rbind", "rw"])],
    );
    let racer_req = init_request(
        "racer",
        root,
        bundle,
        racer_spec,
        &[],
        Workload::Custom {
            runner: "swap".into(),
            payload: canary.to_string_lossy().as_bytes().to_vec(),
        },
    );
    let (rd, w) = pipe();
    let racer = sp
        .spawn_init(racer_req, stdio_to(&w))
        .expect("spawn the racer");
    drop(w);
    let racer_pid = racer.pid;
    racer.start().expect("start the racer");

    let victim_mounts = || {
        let tmpfs = MountBuilder::default()
            .destination("/vol/x/t/tmp")
            .typ("tmpfs")
            .source("tmpfs")
            .options(vec!["size=64k".to_string()])
            .build()
            .unwrap();
        vec![
            bind(&shared, "/vol", &["rbind", "rw"]),
            bind(&payload, "/vol/x/d/dir", &["rbind", "ro"]),
            bind(&payload.join("file"), "/vol/x/f/file", &["bind", "ro"]),
            tmpfs,
            // Last: onto the swapped entry itself.
            bind(&payload, "/vol/x", &["rbind", "ro"]),
        ]
    };
    let (mut ok, mut refused) = (0, Vec::new());
    for i in 0..STARTS {
        let s = with_mounts(spec(root, &["true"]), victim_mounts());
        let req = init_request(&format!("victim{i}"), root, bundle, s, &[], Workload::Exec);
        let (vrd, vw) = pipe();
        match sp.spawn_init(req, stdio_to(&vw)) {
            Ok(p) => {
                drop(vw);
                let pid = p.pid;
                match p.start() {
                    Ok(()) => {
                        let out = read_all(vrd);
                        assert_eq!(wait(pid), 0, "victim {i}: {out}");
                        ok += 1;
                    }
                    Err(e) => {
                        wait(pid);
                        refused.push(e.to_string());
                    }
                }
            }
            Err(e) => refused.push(e.to_string()),
        }
        let now = listing(&canary);
        assert_eq!(
            now,
            vec![canary.join("marker")],
            "start {i} made something in the host canary"
        );
    }
    std::fs::write(shared.join("stop"), "").unwrap();
    let racer_out = read_all(rd);
    assert_eq!(wait(racer_pid), 0, "racer: {racer_out}");
    let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mi.contains(canary.to_str().unwrap()),
        "canary mounted on: {mi}"
    );
    for e in &refused {
        // A lost race fails the start with an error that names the mount, nothing else.
        assert!(
            e.contains("mount ") && e.contains("/vol"),
            "unclear refusal: {e}"
        );
    }
    println!(
        "race: {STARTS} starts against a swapping volume ({}), {ok} started, {} refused \
         (e.g. {:?}); the host canary untouched",
        racer_out.trim(),
        refused.len(),
        refused.first()
    );
    assert!(ok > 0, "no start got through: {refused:?}");
}

/// A spec without the /dev tmpfs, so the rootfs's own /dev is what the container has.
fn image_dev_spec(root: &Path, args: &[&str]) -> Spec {
    let mut s = spec(root, args);
    let m: Vec<Mount> = s
        .mounts()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|m| !m.destination().starts_with("/dev"))
        .collect();
    s.set_mounts(Some(m));
    let mut l = s.linux().clone().unwrap();
    l.set_masked_paths(Some(vec!["/proc/timer_list".into()]));
    l.set_readonly_paths(Some(vec![]));
    s.set_linux(Some(l));
    s
}

/// Puts something that is not the null device at a container's /dev/null.
type MakeNull = fn(&Path);

fn masked_null_cases(sp: &Spawner, dir: &Path) {
    let core_pattern = std::fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap();
    let cases: [(&str, MakeNull); 3] = [
        ("a regular file", |null: &Path| {
            std::fs::write(null, "not a device").unwrap()
        }),
        ("a symlink to a procfs file", |null: &Path| {
            symlink("/proc/sys/kernel/core_pattern", null).unwrap()
        }),
        ("/dev/zero", |null: &Path| {
            nix::sys::stat::mknod(
                null,
                nix::sys::stat::SFlag::S_IFCHR,
                nix::sys::stat::Mode::from_bits_truncate(0o666),
                nix::sys::stat::makedev(1, 5),
            )
            .unwrap()
        }),
    ];
    for (i, (what, make)) in cases.iter().enumerate() {
        let bundle = dir.join(format!("mask{i}"));
        std::fs::create_dir_all(&bundle).unwrap();
        let root = rootfs(&bundle);
        make(&root.join("dev/null"));
        let s = image_dev_spec(&root, &["sh", "-c", "cat /proc/timer_list; echo ran"]);
        let req = init_request(&format!("mask{i}"), &root, &bundle, s, &[], Workload::Exec);
        let (rd, w) = pipe();
        let res = sp.spawn_init(req, stdio_to(&w));
        drop(w);
        let err = match res {
            Ok(p) => {
                let pid = p.pid;
                let r = p.start();
                let out = read_all(rd);
                wait(pid);
                match r {
                    Ok(()) => panic!("/dev/null as {what}: the container ran: {out}"),
                    Err(e) => e.to_string(),
                }
            }
            Err(e) => e.to_string(),
        };
        assert!(
            err.contains(
                "mask path /proc/timer_list: /dev/null in the container is not the null device"
            ),
            "/dev/null as {what}: {err}"
        );
        assert_nothing_mounted(&bundle);
        println!("masked paths with /dev/null as {what}: refused ({err})");
    }
    // And with a real null device there, masking works and the masked file reads empty.
    let bundle = dir.join("mask-ok");
    std::fs::create_dir_all(&bundle).unwrap();
    let root = rootfs(&bundle);
    nix::sys::stat::mknod(
        &root.join("dev/null"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o666),
        nix::sys::stat::makedev(1, 3),
    )
    .unwrap();
    let s = image_dev_spec(&root, &["sh", "-c", "cat /proc/timer_list; echo ran"]);
    let (code, out) = common::run(
        sp,
        init_request("mask-ok", &root, &bundle, s, &[], Workload::Exec),
    )
    .unwrap();
    assert_eq!((code, out.trim()), (0, "ran"));
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap(),
        core_pattern
    );
    println!("masked paths with a real /dev/null: masked");
}

fn main() {
    common::main("mount_race", RUNNERS, |spawner, root, bundle| {
        race_case(spawner, root, bundle);
        masked_null_cases(spawner, bundle);
    });
}
