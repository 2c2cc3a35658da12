//! The blocking-pool halves of Create and Delete: building a container (record, cgroup,
//! rootfs, stdio, spawn, network), undoing all of it when a step fails, and tearing it down.

use std::collections::HashMap;
use std::path::PathBuf;

use runtime_native::{idmap, rootfs, spec, Cgroup, InitRequest, Spawner};

use super::error::{ServiceError, ServiceResult};
use super::state::{Container, Phase, Process};
use super::stdio::StdioPaths;
use super::{logger, stdio, workload};
use crate::record::ContainerRecord;
use crate::wasm_layers::LayerSource;

/// Everything Create does on the blocking pool: record, rootfs, cgroup, stdio, spawn. On any
/// failure it undoes what it did, so a bad request leaves nothing behind.
pub(super) fn create_container(
    mut record: ContainerRecord,
    mounts: Vec<rootfs::MountSpec>,
    stdio_paths: StdioPaths,
    spawner: &Spawner,
    state_root: &std::path::Path,
    net_opts: Option<containerd_shim_protos::protobuf::well_known_types::any::Any>,
    layers: &LayerSource,
) -> ServiceResult<(Container, ContainerRecord)> {
    let save = |r: &ContainerRecord| {
        r.save(state_root)
            .map_err(|e| ServiceError::Internal(format!("save state of task {}: {e}", r.id)))
    };
    let spec = spec::load(&record.bundle)?;
    let rootfs_dir = record.bundle.join("rootfs");
    let undo = |r: &ContainerRecord| {
        if let Some(cg) = &r.cgroup {
            if let Err(e) = cg.destroy() {
                log::warn!("cleanup of task {}: {e}", r.id);
            }
        }
        if let Some(root) = &r.mounted_rootfs {
            if let Err(e) = rootfs::unmount_all(root) {
                log::warn!("cleanup of task {}: {e}", r.id);
            }
        }
        crate::network::teardown_record(r); // amphi network
        let _ = ContainerRecord::remove(state_root, &r.namespace, &r.id);
    };
    let result = (|| -> ServiceResult<(Container, ContainerRecord)> {
        // One save of the record before anything exists, naming all that Create may leave
        // behind (cleanup of what was never made is a no-op); each save is a file write and a
        // rename on the start path.
        let cgroup = Cgroup::plan(&record.id, &spec)?;
        record.cgroup = Some(cgroup.clone());
        if !mounts.is_empty() {
            record.mounted_rootfs = Some(rootfs_dir.clone());
        }
        save(&record)?;
        // The cgroup first: its slow part, the kernel's grace period on the first migration,
        // then runs while the rootfs is mounted and the process is spawned (cgroup.rs
        // `warm_attach_lock`; after the mkdirs, which would wait for it).
        if let Err(e) = cgroup.make(&spec) {
            record.cgroup = None; // not ours to remove if it was there before
            return Err(e.into());
        }
        Cgroup::warm_attach_lock();
        if !mounts.is_empty() {
            std::fs::create_dir_all(&rootfs_dir).map_err(|e| {
                ServiceError::Internal(format!("create {}: {e}", rootfs_dir.display()))
            })?;
            rootfs::mount_all(&mounts, &rootfs_dir)?;
        }
        let rootfs_path = spec_root(&spec, &record.bundle);
        let workload = workload::plan_init(&rootfs_path, &spec, Some(layers))?;
        let (stdio, holders) = if stdio_paths.terminal {
            (runtime_native::Stdio::default(), Default::default())
        } else {
            let owner = logger::Owner {
                container_id: record.id.clone(),
                namespace: record.namespace.clone(),
            };
            stdio::open_direct(&stdio_paths, &owner)?
        };
        let mut stdio = stdio;
        stdio.extra_fds = workload.extra_fds;
        let own_pid_ns = has_new_namespace(&spec, "pid");
        // Idmapped volumes are made here, as host root, and bound by the container; they are
        // detached again once it reported ready (its mount namespace holds its copies).
        let mut init_spec = spec.clone();
        let volumes =
            idmap::StagedVolumes::stage(&mut init_spec, &record.bundle.join("idmapped-volumes"))
                .map_err(ServiceError::InvalidArgument)?;
        let pending = spawner.spawn_init(
            InitRequest {
                id: record.id.clone(),
                bundle: record.bundle.clone(),
                rootfs: rootfs_path,
                spec: init_spec,
                cgroup_procs: cgroup.procs_files(),
                workload: workload.workload,
            },
            stdio,
        );
        drop(volumes);
        let mut pending = pending?;
        record.init_pid = pending.pid;
        save(&record)?;
        // amphi network (shim/src/network.rs): loopback or bridge in the init's new netns.
        crate::network::setup(&mut record, &spec, net_opts.as_ref(), save).map_err(|e| {
            if e.invalid_input {
                ServiceError::InvalidArgument(e.message)
            } else {
                ServiceError::Internal(e.message)
            }
        })?;
        let mut init = Process::new("", stdio_paths.clone());
        init.pid = pending.pid;
        init.phase = Phase::Created;
        init.holders = holders;
        if let Some(master) = pending.pty_master.take() {
            init.pty_master = master.try_clone().ok();
            let (done, pty_holders) = stdio::spawn_pty_copy(master, &stdio_paths)?;
            init.io_done = Some(done);
            init.holders = pty_holders;
        }
        init.pending = Some(pending);
        let container = Container {
            id: record.id.clone(),
            bundle: record.bundle.clone(),
            spec,
            cgroup,
            mounted_rootfs: record.mounted_rootfs.clone(),
            init,
            execs: HashMap::new(),
            paused: false,
            own_pid_ns,
            oom_kills: 0,
        };
        Ok((container, record.clone()))
    })();
    if result.is_err() {
        undo(&record);
    }
    result
}

/// The rootfs directory the spec names (relative to the bundle), `bundle/rootfs` by default.
fn spec_root(spec: &oci_spec::runtime::Spec, bundle: &std::path::Path) -> PathBuf {
    match spec.root() {
        Some(r) if r.path().is_absolute() => r.path().clone(),
        Some(r) => bundle.join(r.path()),
        None => bundle.join("rootfs"),
    }
}

fn has_new_namespace(spec: &oci_spec::runtime::Spec, kind: &str) -> bool {
    spec.linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .map(|nss| {
            nss.iter()
                .any(|n| format!("{:?}", n.typ()).eq_ignore_ascii_case(kind) && n.path().is_none())
        })
        .unwrap_or(false)
}

/// Delete's cleanup: kill leftovers, remove the cgroup, unmount the rootfs, drop the record.
pub(super) fn teardown(container: Container, state_root: &std::path::Path, namespace: &str) {
    if container.init.is_alive() && container.init.pid > 0 {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(container.init.pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    if let Err(e) = container.cgroup.destroy() {
        log::warn!("delete task {}: {e}", container.id);
    }
    if let Some(root) = &container.mounted_rootfs {
        if let Err(e) = rootfs::unmount_all(root) {
            log::warn!("delete task {}: {e}", container.id);
        }
    }
    crate::network::teardown_recorded(state_root, namespace, &container.id); // amphi network
    if let Err(e) = ContainerRecord::remove(state_root, namespace, &container.id) {
        log::warn!("delete task {}: remove state: {e}", container.id);
    }
}
