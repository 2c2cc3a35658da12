//! The shim's side of networking (runtime-native/src/network does the work):
//! - the config comes from containerd's runtime options, a `runtimeoptions.v1.Options`
//!   (`ctr --runtime-config-path FILE`, or the CRI runtime's `ConfigPath` / `ConfigBody`) naming
//!   a TOML file with a `[network]` table, overridden per container by the
//!   `io.amphi.network.*` annotations;
//! - in Create, after the init process exists (so its netns does) and before Start: loopback up
//!   in a new netns, or bridge mode; nothing when the spec joins a netns by path (CRI pods) or
//!   uses the host's;
//! - the lease is saved in the container's record before anything is set up, so Delete, Create's
//!   own failure path and the `delete` action after a crash can all undo it from disk.

use std::path::Path;

use containerd_shim_protos::protobuf::well_known_types::any::Any;
use oci_spec::runtime::Spec;
use runtime_native::network::{self, Mode, NetError, NetnsKind, NetworkConfig, NetworkLease};

use crate::record::ContainerRecord;
use crate::service::error::{ServiceError, ServiceResult};

/// Networking in Create failed for task `id`.
fn net_err(id: &str) -> impl FnOnce(NetError) -> ServiceError + '_ {
    move |source| ServiceError::Network {
        id: id.to_string(),
        source,
    }
}

/// The shim-wide network config from the Create request's options: the TOML in `config_body`,
/// or the file at `config_path`; defaults without either (or with other option types, such as
/// runc's).
pub fn config_from_options(options: Option<&Any>) -> Result<NetworkConfig, NetError> {
    // NetError::Config takes text: the options' error is formatted here, once.
    let config = crate::runtime_options::config_text(options)
        .map_err(|e| NetError::Config(e.to_string()))?;
    match config {
        None => Ok(NetworkConfig::default()),
        Some(c) => NetworkConfig::from_toml(&c.text).map_err(|e| match c.path {
            Some(path) => NetError::Config(format!("{path}: {e}")),
            None => e,
        }),
    }
}

/// Create's network step, once `record.init_pid` exists and before Start. Bridge mode saves
/// the planned lease (via `save`) before touching anything, then the completed one.
pub fn setup(
    record: &mut ContainerRecord,
    spec: &Spec,
    options: Option<&Any>,
    save: impl Fn(&ContainerRecord) -> ServiceResult<()>,
) -> ServiceResult<()> {
    let id = record.id.clone();
    if network::netns_kind(spec) != NetnsKind::New || record.init_pid <= 0 {
        return Ok(());
    }
    let cfg = config_from_options(options)
        .and_then(|c| c.with_annotations(spec.annotations().as_ref()))
        .map_err(net_err(&id))?;
    let pid = record.init_pid;
    match cfg.mode {
        // The container process set `lo` up itself (runtime-native child.rs), in parallel
        // with its cgroup join, saving a netns thread here.
        Mode::None => Ok(()),
        Mode::Bridge => {
            let mut lease = network::plan(&cfg, &network::owner(&record.namespace, &id));
            record.network = Some(lease.clone());
            save(record)?;
            let hostname = spec
                .hostname()
                .clone()
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| id.chars().take(63).collect());
            let rootfs = runtime_native::spec::root_path(spec, &record.bundle);
            network::setup_bridge(&cfg, &mut lease, pid, &rootfs, &hostname)
                .map_err(net_err(&id))?;
            log::info!(
                "task {id}: {} on {} ({}), veth {}",
                lease.address.map(|a| a.to_string()).unwrap_or_default(),
                lease.bridge,
                lease.subnet,
                lease.host_veth
            );
            record.network = Some(lease);
            save(record)
        }
    }
}

/// Undoes a lease (veth, firewall rules, address); returns what failed.
pub fn teardown_lease(lease: &NetworkLease) -> Vec<String> {
    network::teardown(lease)
        .into_iter()
        .map(|e| format!("network of {}: {e}", lease.owner))
        .collect()
}

/// Undoes the network of a record, logging failures (Create's undo path).
pub fn teardown_record(record: &ContainerRecord) {
    if let Some(lease) = &record.network {
        for e in teardown_lease(lease) {
            log::warn!("cleanup of task {}: {e}", record.id);
        }
    }
}

/// Delete's network step: the lease recorded on disk for `namespace/id`, if any.
pub fn teardown_recorded(state_root: &Path, namespace: &str, id: &str) {
    if let Ok(rec) = ContainerRecord::load(state_root, namespace, id) {
        teardown_record(&rec);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::runtime_options::tests::encode;

    fn any(type_url: &str, value: Vec<u8>) -> Any {
        let mut a = Any::new();
        a.type_url = type_url.into();
        a.value = value;
        a
    }

    #[test]
    fn config_from_body_path_and_other_types() {
        assert_eq!(config_from_options(None).unwrap(), NetworkConfig::default());
        let body = b"[network]\nmode = \"bridge\"\nbridge = \"amphit9\"\n";
        let c = config_from_options(Some(&any(
            "runtimeoptions.v1.Options",
            encode(&[(3, body)]),
        )))
        .unwrap();
        assert_eq!(c.mode, Mode::Bridge);
        assert_eq!(c.bridge, "amphit9");

        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("amphi.toml");
        std::fs::write(
            &f,
            "[network]\nmode = \"bridge\"\nsubnet = \"10.213.5.0/24\"\n",
        )
        .unwrap();
        let c = config_from_options(Some(&any(
            "type.googleapis.com/runtimeoptions.v1.Options",
            encode(&[(2, f.to_str().unwrap().as_bytes())]),
        )))
        .unwrap();
        assert_eq!(c.subnet.to_string(), "10.213.5.0/24");

        let e = config_from_options(Some(&any(
            "runtimeoptions.v1.Options",
            encode(&[(2, b"/nonexistent/amphi.toml")]),
        )))
        .unwrap_err();
        assert!(e.is_config());
        assert!(e.to_string().contains("/nonexistent/amphi.toml"), "{e}");

        // runc's options (or anything else) do not configure amphi's network.
        let c = config_from_options(Some(&any("containerd.runc.v1.Options", vec![8, 1]))).unwrap();
        assert_eq!(c, NetworkConfig::default());
    }
}
