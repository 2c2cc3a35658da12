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

use std::fmt;
use std::path::Path;

use containerd_shim_protos::protobuf::well_known_types::any::Any;
use oci_spec::runtime::Spec;
use runtime_native::network::{self, Mode, NetError, NetnsKind, NetworkConfig, NetworkLease};

use crate::record::ContainerRecord;

/// Why networking failed in Create; `invalid_input` when the user's config or annotations are
/// at fault (InvalidArgument), else the host failed (Internal).
#[derive(Debug)]
pub struct SetupError {
    pub invalid_input: bool,
    pub message: String,
}

impl fmt::Display for SetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl SetupError {
    fn new(id: &str, e: NetError) -> SetupError {
        SetupError {
            invalid_input: e.is_config(),
            message: format!("network of task {id}: {e}"),
        }
    }
}

/// The fields of containerd's `runtimeoptions.v1.Options`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RuntimeOptions {
    pub type_url: String,
    pub config_path: String,
    pub config_body: Vec<u8>,
}

/// Decodes `runtimeoptions.v1.Options { string type_url = 1; string config_path = 2;
/// bytes config_body = 3; }` from protobuf wire bytes (unknown fields skipped).
pub fn decode_runtime_options(mut b: &[u8]) -> Result<RuntimeOptions, String> {
    fn varint(b: &mut &[u8]) -> Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = b.split_first().ok_or("truncated varint")?;
            *b = rest;
            v |= ((byte & 0x7f) as u64) << shift;
            if byte & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint too long".into())
    }
    let mut o = RuntimeOptions::default();
    while !b.is_empty() {
        let key = varint(&mut b)?;
        let (field, wire) = (key >> 3, key & 7);
        match wire {
            0 => {
                varint(&mut b)?;
            }
            1 | 5 => {
                let n = if wire == 1 { 8 } else { 4 };
                if b.len() < n {
                    return Err("truncated field".into());
                }
                b = &b[n..];
            }
            2 => {
                let n = varint(&mut b)? as usize;
                if b.len() < n {
                    return Err("truncated field".into());
                }
                let (v, rest) = b.split_at(n);
                b = rest;
                match field {
                    1 => o.type_url = String::from_utf8_lossy(v).into_owned(),
                    2 => o.config_path = String::from_utf8_lossy(v).into_owned(),
                    3 => o.config_body = v.to_vec(),
                    _ => {}
                }
            }
            w => return Err(format!("unsupported wire type {w}")),
        }
    }
    Ok(o)
}

/// The shim-wide network config from the Create request's options: the TOML in `config_body`,
/// or the file at `config_path`; defaults without either (or with other option types, such as
/// runc's).
pub fn config_from_options(options: Option<&Any>) -> Result<NetworkConfig, NetError> {
    let Some(any) = options else {
        return Ok(NetworkConfig::default());
    };
    if !any.type_url.ends_with("runtimeoptions.v1.Options") {
        log::debug!("runtime options of type {:?} ignored", any.type_url);
        return Ok(NetworkConfig::default());
    }
    let o = decode_runtime_options(&any.value)
        .map_err(|e| NetError::Config(format!("runtime options: {e}")))?;
    if !o.config_body.is_empty() {
        let text = String::from_utf8(o.config_body)
            .map_err(|_| NetError::Config("config_body is not UTF-8".into()))?;
        return NetworkConfig::from_toml(&text);
    }
    if !o.config_path.is_empty() {
        let text = std::fs::read_to_string(&o.config_path)
            .map_err(|e| NetError::Config(format!("read config file {}: {e}", o.config_path)))?;
        return NetworkConfig::from_toml(&text)
            .map_err(|e| NetError::Config(format!("{}: {e}", o.config_path)));
    }
    Ok(NetworkConfig::default())
}

/// Create's network step, once `record.init_pid` exists and before Start. Bridge mode saves
/// the planned lease (via `save`) before touching anything, then the completed one.
pub fn setup<E: fmt::Display>(
    record: &mut ContainerRecord,
    spec: &Spec,
    options: Option<&Any>,
    save: impl Fn(&ContainerRecord) -> Result<(), E>,
) -> Result<(), SetupError> {
    let id = record.id.clone();
    if network::netns_kind(spec) != NetnsKind::New || record.init_pid <= 0 {
        return Ok(());
    }
    let cfg = config_from_options(options)
        .and_then(|c| c.with_annotations(spec.annotations().as_ref()))
        .map_err(|e| SetupError::new(&id, e))?;
    let pid = record.init_pid;
    match cfg.mode {
        // The container process set `lo` up itself (runtime-native child.rs), in parallel
        // with its cgroup join, saving a netns thread here.
        Mode::None => Ok(()),
        Mode::Bridge => {
            let mut lease = network::plan(&cfg, &network::owner(&record.namespace, &id));
            record.network = Some(lease.clone());
            save(record).map_err(|e| SetupError {
                invalid_input: false,
                message: e.to_string(),
            })?;
            let hostname = spec
                .hostname()
                .clone()
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| id.chars().take(63).collect());
            let rootfs = runtime_native::spec::root_path(spec, &record.bundle);
            network::setup_bridge(&cfg, &mut lease, pid, &rootfs, &hostname)
                .map_err(|e| SetupError::new(&id, e))?;
            log::info!(
                "task {id}: {} on {} ({}), veth {}",
                lease.address.map(|a| a.to_string()).unwrap_or_default(),
                lease.bridge,
                lease.subnet,
                lease.host_veth
            );
            record.network = Some(lease);
            save(record).map_err(|e| SetupError {
                invalid_input: false,
                message: e.to_string(),
            })
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

    fn encode(fields: &[(u8, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (f, v) in fields {
            out.push((f << 3) | 2);
            assert!(v.len() < 128);
            out.push(v.len() as u8);
            out.extend_from_slice(v);
        }
        out
    }

    #[test]
    fn decodes_runtime_options() {
        let mut b = encode(&[(1, b"x"), (2, b"/etc/amphi.toml")]);
        b.extend_from_slice(&[0x20, 0x96, 0x01]); // field 4 varint 150: skipped
        b.extend(encode(&[(3, b"[network]")]));
        let o = decode_runtime_options(&b).unwrap();
        assert_eq!(o.type_url, "x");
        assert_eq!(o.config_path, "/etc/amphi.toml");
        assert_eq!(o.config_body, b"[network]");
        assert!(decode_runtime_options(&[0x12, 0x05, b'a']).is_err());
    }

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
