//! The real [`Launcher`]: containers through runtime-native's spawner. Create's host half
//! (record, cgroup, rootfs, stdio, workload, spawn, network) with its undo on error, an exec's
//! spawn, Start, hooks, signals, and Delete's teardown.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use oci_spec::runtime::{LinuxNamespaceType, LinuxResources, Spec};
use runtime_native::container::{self, BuildSteps, ContainerSpec, InitIo, Made};
use runtime_native::{rootfs, spec, Cgroup, CgroupStats, ExecRequest, PendingProcess, Spawner};

use super::error::{ServiceError, ServiceResult};
use super::launcher::{
    CreateTask, ExecTask, Launched, LaunchedProcess, Launcher, ProcessIo, Removed, SignalTarget,
    TaskCgroup,
};
use super::stdio::{StdioHolders, StdioPaths};
use super::{logger, stdio, workload};
use crate::record::ContainerRecord;
use crate::wasm_layers::LayerSource;

pub struct NativeLauncher {
    spawner: Arc<Spawner>,
    /// The shim's own state (`crate::record`).
    state_root: PathBuf,
    namespace: String,
    /// containerd's gRPC socket (`-address`), asked for wasm modules carried as image layers.
    containerd_address: String,
}

impl NativeLauncher {
    pub fn new(
        spawner: Spawner,
        state_root: PathBuf,
        namespace: String,
        containerd_address: String,
    ) -> NativeLauncher {
        NativeLauncher {
            spawner: Arc::new(spawner),
            state_root,
            namespace,
            containerd_address,
        }
    }

    /// Where a task's wasm layers are looked up (see `crate::wasm_layers`).
    fn layer_source(&self, id: &str) -> LayerSource {
        LayerSource {
            address: self.containerd_address.clone(),
            namespace: self.namespace.clone(),
            container_id: id.to_string(),
        }
    }

    fn owner(&self, id: &str) -> logger::Owner {
        logger::Owner {
            container_id: id.to_string(),
            namespace: self.namespace.clone(),
        }
    }

    /// fds 0-2 of a process without a terminal (a terminal process gets a pty instead).
    fn open_stdio(
        &self,
        id: &str,
        paths: &StdioPaths,
    ) -> ServiceResult<(runtime_native::Stdio, StdioHolders)> {
        if paths.terminal {
            Ok(Default::default())
        } else {
            stdio::open_direct(paths, &self.owner(id))
        }
    }

    /// Everything Create does, through runtime-native's container builder (cgroup, rootfs,
    /// init) with the shim's steps in it ([`CreateSteps`]: record, plan, stdio, network).
    /// `record` names, before anything exists, all that Create may leave behind; the caller
    /// undoes what the shim's own steps made when this fails (the builder undid its part).
    fn build(
        &self,
        req: CreateTask,
        spec: Spec,
        record: &mut ContainerRecord,
    ) -> ServiceResult<Launched<PendingProcess, Cgroup>> {
        let limits = crate::tenant_limits::from_options(req.options.as_ref())?;
        let mut steps = CreateSteps {
            launcher: self,
            req: &req,
            spec: &spec,
            limits,
            record,
            holders: None,
            io: None,
        };
        let built = container::build(
            &self.spawner,
            ContainerSpec {
                id: &req.id,
                bundle: &req.bundle,
                spec: &spec,
                mounts: &req.mounts,
                rootfs: None,
            },
            &mut steps,
        )?;
        let io = steps.io.take().unwrap_or_default();
        let mut init = built.init;
        Ok(Launched {
            limits,
            own_pid_ns: has_new_namespace(&spec, LinuxNamespaceType::Pid),
            rootfs: built.made.rootfs,
            cgroup: built.made.cgroup,
            mounted_rootfs: built.made.mounted_rootfs,
            spec,
            init: LaunchedProcess {
                pid: init.pid,
                pidfd: init.pidfd.take().map(Arc::new),
                pending: init,
                io,
            },
        })
    }

    /// Plans a process's workload from the container's rootfs (entrypoint detection, wasm
    /// lookup and compile), bounded in time and off the async workers.
    fn plan(
        &self,
        what: String,
        of: PlanOf,
        plan: impl FnOnce(&workload::PlanInput) -> ServiceResult<workload::Plan> + Send + 'static,
    ) -> ServiceResult<workload::Plan> {
        let layers = self.layer_source(&of.container_id);
        workload::bounded(&what, move || {
            plan(&workload::PlanInput {
                rootfs: &of.rootfs,
                layers: Some(&layers),
                limits: of.limits,
                settings: of.settings,
                cgroup: Some(of.cgroup),
            })
        })
    }

    fn save(&self, r: &ContainerRecord) -> ServiceResult<()> {
        r.save(&self.state_root)
            .map_err(|source| ServiceError::SaveState {
                id: r.id.clone(),
                source,
            })
    }

    /// Create's undo of the shim's own steps: the network the init got and the record. The
    /// cgroup and the mounts the record names were undone by the builder (`Made::undo`), or
    /// were never made: a cgroup that could not be made may be someone else's, and is left.
    fn undo_own_steps(&self, record: &ContainerRecord) {
        crate::network::teardown_record(record); // amphi network
        let _ = ContainerRecord::remove(&self.state_root, &record.namespace, &record.id);
    }
}

/// Whose workload [`NativeLauncher::plan`] plans, and with what: moved onto the blocking pool.
struct PlanOf {
    container_id: String,
    rootfs: PathBuf,
    limits: runtime_native::fs::tenant_file::Limits,
    settings: workload::SettingsSource,
    cgroup: Cgroup,
}

impl PlanOf {
    /// A process of the container `container_id` whose entrypoints are under `rootfs` and
    /// whose compile helper joins `cgroup`.
    fn new(
        container_id: &str,
        rootfs: &Path,
        cgroup: &Cgroup,
        limits: runtime_native::fs::tenant_file::Limits,
        settings: workload::SettingsSource,
    ) -> PlanOf {
        PlanOf {
            container_id: container_id.to_string(),
            rootfs: rootfs.to_path_buf(),
            limits,
            settings,
            cgroup: cgroup.clone(),
        }
    }
}

/// The shim's steps inside [`container::build`].
struct CreateSteps<'a> {
    launcher: &'a NativeLauncher,
    req: &'a CreateTask,
    spec: &'a Spec,
    limits: runtime_native::fs::tenant_file::Limits,
    record: &'a mut ContainerRecord,
    /// The init's stdio, held by the shim from `init_io` until `spawned` hands it on.
    holders: Option<StdioHolders>,
    /// The init's stdio as the task keeps it, made in `spawned`.
    io: Option<ProcessIo>,
}

impl BuildSteps for CreateSteps<'_> {
    type Error = ServiceError;

    /// One save of the record before anything exists (cleanup of what was never made is a
    /// no-op); each save is a file write and a rename on the start path.
    fn planned(&mut self, made: &Made) -> ServiceResult<()> {
        self.record.cgroup = Some(made.cgroup.clone());
        self.record.mounted_rootfs = made.mounted_rootfs.clone();
        self.launcher.save(self.record)
    }

    /// The workload planned from the rootfs (bounded, off the async workers) and the stdio.
    fn init_io(&mut self, made: &Made) -> ServiceResult<InitIo> {
        let (req, launcher) = (self.req, self.launcher);
        let settings = workload::SettingsSource::new(req.options.clone(), self.spec);
        let of = PlanOf::new(&req.id, &made.rootfs, &made.cgroup, self.limits, settings);
        let spec = self.spec.clone();
        let plan = launcher.plan(format!("plan of task {}", req.id), of, move |input| {
            workload::plan_init(input, &spec)
        })?;
        let (mut stdio, holders) = launcher.open_stdio(&req.id, &req.stdio)?;
        stdio.extra_fds = plan.extra_fds;
        self.holders = Some(holders);
        Ok(InitIo {
            stdio,
            workload: plan.workload,
        })
    }

    /// The init's pid and start time into the record (a crash-time delete signals only that
    /// process), then its network and the shim's side of its stdio.
    fn spawned(&mut self, _made: &Made, init: &mut PendingProcess) -> ServiceResult<()> {
        let launcher = self.launcher;
        self.record.init_pid = init.pid;
        self.record.init_start_time = runtime_native::identity::start_time(init.pid).unwrap_or(0);
        launcher.save(self.record)?;
        // amphi network (shim/src/network.rs): loopback or bridge in the init's new netns.
        crate::network::setup(self.record, self.spec, self.req.options.as_ref(), |r| {
            launcher.save(r)
        })?;
        let holders = self.holders.take().unwrap_or_default();
        self.io = Some(process_io(init, holders, &self.req.stdio)?);
        Ok(())
    }
}

impl Launcher for NativeLauncher {
    type Pending = PendingProcess;
    type Cgroup = Cgroup;

    fn create(&self, req: CreateTask) -> ServiceResult<Launched<PendingProcess, Cgroup>> {
        let spec = spec::load(&req.bundle)?;
        let mut record = ContainerRecord {
            id: req.id.clone(),
            namespace: self.namespace.clone(),
            bundle: req.bundle.clone(),
            mounted_rootfs: None,
            cgroup: None,
            init_pid: 0,
            init_start_time: 0,
            network: None,
        };
        let result = self.build(req, spec, &mut record);
        if result.is_err() {
            self.undo_own_steps(&record);
        }
        result
    }

    fn exec(&self, req: ExecTask<Cgroup>) -> ServiceResult<LaunchedProcess<PendingProcess>> {
        // The cgroup join's grace period starts now (runtime_native::container::build says why).
        Cgroup::warm_attach_lock();
        // An exec has no runtime options of its own: the container's annotations apply.
        let settings = workload::SettingsSource::new(None, &req.spec);
        let of = PlanOf::new(
            &req.container_id,
            &req.rootfs,
            &req.cgroup,
            req.limits,
            settings,
        );
        let process = req.process.clone();
        let what = format!("plan of exec {} of task {}", req.exec_id, req.container_id);
        let plan = self.plan(what, of, move |input| workload::plan_exec(input, &process))?;
        let (mut stdio, holders) = self.open_stdio(&req.container_id, &req.stdio)?;
        stdio.extra_fds = plan.extra_fds;
        let mut pending = self.spawner.spawn_exec(
            ExecRequest {
                container_id: req.container_id,
                exec_id: req.exec_id,
                init_pid: req.init_pid,
                init_pidfd: req.init_pidfd,
                process: req.process,
                spec: req.spec,
                cgroup_procs: req.cgroup.procs_files(),
                workload: plan.workload,
            },
            stdio,
        )?;
        let io = process_io(&mut pending, holders, &req.stdio)?;
        Ok(LaunchedProcess {
            pid: pending.pid,
            pidfd: pending.pidfd.take().map(Arc::new),
            pending,
            io,
        })
    }

    fn start(&self, pending: PendingProcess) -> ServiceResult<()> {
        Ok(pending.start()?)
    }

    /// As runc does, a failing hook kills the init and fails Start with the hook's output.
    fn poststart(
        &self,
        spec: &Spec,
        id: &str,
        bundle: &Path,
        init: &SignalTarget,
    ) -> ServiceResult<()> {
        if let Err(m) = runtime_native::hooks::run_poststart(spec, id, bundle, init.pid) {
            let _ = send(init, nix::sys::signal::Signal::SIGKILL);
            return Err(runtime_native::Error::Hook(m).into());
        }
        Ok(())
    }

    fn signal(&self, target: &SignalTarget, signal: nix::sys::signal::Signal) -> ServiceResult<()> {
        let pid = target.pid;
        send(target, signal).map_err(|e| match e {
            nix::errno::Errno::ESRCH => {
                ServiceError::NotFound(format!("process {pid} already finished"))
            }
            source => ServiceError::Signal {
                pid,
                signal,
                source,
            },
        })
    }

    /// Kills leftovers, removes the cgroup, unmounts the rootfs, releases the network, drops
    /// the record; then the `poststop` hooks, whose failure is logged and Delete goes on, as
    /// the runtime spec says.
    fn delete(&self, c: Removed<Cgroup>) {
        if let Some(init) = &c.live {
            let _ = send(init, nix::sys::signal::Signal::SIGKILL);
        }
        if let Err(e) = c.cgroup.destroy() {
            log::warn!("delete task {}: {e}", c.id);
        }
        if let Some(root) = &c.mounted_rootfs {
            if let Err(e) = rootfs::unmount_all(root) {
                log::warn!("delete task {}: {e}", c.id);
            }
        }
        crate::network::teardown_recorded(&self.state_root, &self.namespace, &c.id);
        if let Err(e) = ContainerRecord::remove(&self.state_root, &self.namespace, &c.id) {
            log::warn!("delete task {}: remove state: {e}", c.id);
        }
        if runtime_native::hooks::has(&c.spec, "poststop") {
            if let Err(e) = runtime_native::hooks::run_poststop(&c.spec, &c.id, &c.bundle) {
                log::warn!("delete task {}: {e}", c.id);
            }
        }
    }
}

/// Sends `signal` through the target's pidfd when it has one (`ESRCH` once the process
/// exited, even if its pid is in use again), else to its pid.
fn send(target: &SignalTarget, signal: nix::sys::signal::Signal) -> nix::Result<()> {
    match &target.pidfd {
        Some(fd) => runtime_native::identity::pidfd_signal(&**fd, signal as i32)
            .map_err(|e| nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))),
        None => nix::sys::signal::kill(nix::unistd::Pid::from_raw(target.pid), signal),
    }
}

/// The shim's side of a new process's stdio: the fifo holders, or with a terminal the pty
/// master and its copy to the fifos.
fn process_io(
    pending: &mut PendingProcess,
    holders: StdioHolders,
    paths: &StdioPaths,
) -> ServiceResult<ProcessIo> {
    let Some(master) = pending.pty_master.take() else {
        return Ok(ProcessIo {
            holders,
            ..Default::default()
        });
    };
    let pty_master = master.try_clone().ok();
    let (done, holders) = stdio::spawn_pty_copy(master, paths)?;
    Ok(ProcessIo {
        holders,
        pty_master,
        io_done: Some(done),
    })
}

/// Whether the spec asks for a new namespace of `kind` (not one joined by path).
fn has_new_namespace(spec: &Spec, kind: LinuxNamespaceType) -> bool {
    spec::namespaces(spec)
        .iter()
        .any(|n| n.typ() == kind && n.path().is_none())
}

impl TaskCgroup for Cgroup {
    fn signal_all(&self, signal: i32) -> ServiceResult<()> {
        Ok(Cgroup::signal_all(self, signal)?)
    }
    fn freeze(&self) -> ServiceResult<()> {
        Ok(Cgroup::freeze(self)?)
    }
    fn thaw(&self) -> ServiceResult<()> {
        Ok(Cgroup::thaw(self)?)
    }
    fn pids(&self) -> ServiceResult<Vec<i32>> {
        Ok(Cgroup::pids(self)?)
    }
    fn update(&self, resources: &LinuxResources) -> ServiceResult<()> {
        Ok(Cgroup::update(self, resources)?)
    }
    fn stats(&self) -> ServiceResult<CgroupStats> {
        Ok(Cgroup::stats(self)?)
    }
    fn oom_kills(&self) -> ServiceResult<u64> {
        Ok(Cgroup::oom_kills(self)?)
    }
    fn oom_notifier(&self) -> ServiceResult<Option<std::os::fd::OwnedFd>> {
        Ok(Cgroup::oom_notifier(self)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{LinuxBuilder, LinuxNamespaceBuilder, SpecBuilder};

    #[test]
    fn a_new_namespace_is_one_without_a_path() {
        let ns = |typ, path: Option<&str>| {
            let mut b = LinuxNamespaceBuilder::default().typ(typ);
            if let Some(p) = path {
                b = b.path(p);
            }
            b.build().unwrap()
        };
        let spec = |nss| {
            SpecBuilder::default()
                .linux(LinuxBuilder::default().namespaces(nss).build().unwrap())
                .build()
                .unwrap()
        };
        let own = spec(vec![
            ns(LinuxNamespaceType::Mount, None),
            ns(LinuxNamespaceType::Pid, None),
        ]);
        assert!(has_new_namespace(&own, LinuxNamespaceType::Pid));
        assert!(!has_new_namespace(&own, LinuxNamespaceType::Network));
        let joined = spec(vec![ns(LinuxNamespaceType::Pid, Some("/proc/1/ns/pid"))]);
        assert!(!has_new_namespace(&joined, LinuxNamespaceType::Pid));
        // Compared as types, not as their Debug spellings ("Mount" is the spec's "mount").
        let mnt = spec(vec![ns(LinuxNamespaceType::Mount, None)]);
        assert!(has_new_namespace(&mnt, LinuxNamespaceType::Mount));
        assert!(!has_new_namespace(&mnt, LinuxNamespaceType::Pid));
    }
}
