//! What containerd told the `start` action, and how to reply to it.
//!
//! containerd has spoken four dialects over the versions we support:
//!
//! | containerd | input                                             | reply on stdout                       |
//! |------------|---------------------------------------------------|---------------------------------------|
//! | 1.6        | flags, `TTRPC_ADDRESS`; no `MAX_SHIM_VERSION`     | the plain address `unix:///...`       |
//! | 1.7 - 2.2  | flags + env, `MAX_SHIM_VERSION=N`                 | JSON `{"version","address","protocol"}` |
//! | 2.3+       | a protobuf `BootstrapParams` on stdin             | a protobuf `BootstrapResult`          |
//!
//! Older daemons may also write the runtime options as a protobuf `Any` on stdin; it decodes as
//! a `BootstrapParams` too (type URL in field 1 = `instance_id`, value in field 2 =
//! `namespace`), so a decoded message is only taken for bootstrap params when its identity
//! matches the command line.
//!
//! Task API version in the reply: the server registers the Task service under both
//! `containerd.task.v2.Task` and `containerd.task.v3.Task` (same messages), so either works.
//! We reply `2` unless containerd says it accepts 3 (`MAX_SHIM_VERSION>=3`); with bootstrap
//! params (2.3+, which speaks v3 natively) we reply `3`.

use containerd_shim_protos::bootstrap_api::{BootstrapParams, BootstrapResult, LogLevel};
use containerd_shim_protos::protobuf::{Enum, Message};

use crate::args::Flags;
use crate::error::{encode, Result, ShimError};

pub const PROTOCOL: &str = "ttrpc";

/// Environment the legacy dialects pass.
#[derive(Debug, Default, Clone)]
pub struct StartEnv {
    pub ttrpc_address: Option<String>,
    pub grpc_address: Option<String>,
    pub max_shim_version: Option<String>,
}

impl StartEnv {
    pub fn from_process() -> StartEnv {
        StartEnv {
            ttrpc_address: std::env::var("TTRPC_ADDRESS").ok(),
            grpc_address: std::env::var("GRPC_ADDRESS").ok(),
            max_shim_version: std::env::var("MAX_SHIM_VERSION").ok(),
        }
    }
}

/// Everything `start` needs, whichever dialect delivered it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartParams {
    pub namespace: String,
    pub id: String,
    pub ttrpc_address: String,
    pub grpc_address: String,
    pub publish_binary: String,
    pub debug: bool,
    /// Where containerd wants the socket (bootstrap params only).
    pub socket_dir: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyFormat {
    /// containerd 1.6: `unix:///run/...`.
    PlainAddress,
    /// containerd 1.7 - 2.2: JSON with the task API version.
    Json { version: i32 },
    /// containerd 2.3+: protobuf `BootstrapResult`.
    Bootstrap { version: i32 },
}

/// Works out what containerd asked and how it wants the answer. `stdin` is everything
/// containerd wrote to the shim's stdin (possibly nothing).
pub fn resolve(stdin: &[u8], flags: &Flags, env: &StartEnv) -> Result<(StartParams, ReplyFormat)> {
    if let Some(p) = bootstrap_params(stdin, flags)? {
        let level = p.log_level.value();
        let params = StartParams {
            namespace: p.namespace,
            id: p.instance_id,
            ttrpc_address: p.containerd_ttrpc_address,
            grpc_address: if p.containerd_grpc_address.is_empty() {
                flags.address.clone()
            } else {
                p.containerd_grpc_address
            },
            publish_binary: if p.containerd_binary.is_empty() {
                flags.publish_binary.clone()
            } else {
                p.containerd_binary
            },
            debug: flags.debug || level <= LogLevel::LOG_LEVEL_DEBUG.value(),
            socket_dir: p.socket_dir.filter(|d| !d.is_empty()),
        };
        if params.ttrpc_address.is_empty() {
            return Err(ShimError::Bootstrap(
                "bootstrap params carry no containerd ttrpc address".into(),
            ));
        }
        return Ok((params, ReplyFormat::Bootstrap { version: 3 }));
    }

    let ttrpc_address = env
        .ttrpc_address
        .clone()
        .filter(|a| !a.is_empty())
        .ok_or_else(|| ShimError::Bootstrap("TTRPC_ADDRESS is not set".into()))?;
    let params = StartParams {
        namespace: flags.namespace.clone(),
        id: flags.id.clone(),
        ttrpc_address,
        grpc_address: if flags.address.is_empty() {
            env.grpc_address.clone().unwrap_or_default()
        } else {
            flags.address.clone()
        },
        publish_binary: flags.publish_binary.clone(),
        debug: flags.debug,
        socket_dir: None,
    };
    let format = match env.max_shim_version.as_deref().map(str::trim) {
        None | Some("") => ReplyFormat::PlainAddress,
        Some(v) => {
            let max: i32 = v.parse().map_err(|_| {
                ShimError::Bootstrap(format!("MAX_SHIM_VERSION={v:?} is not a number"))
            })?;
            ReplyFormat::Json {
                version: if max >= 3 { 3 } else { 2 },
            }
        }
    };
    Ok((params, format))
}

/// `Some` when `stdin` is a `BootstrapParams` for this shim; `None` when it is empty or the
/// legacy runtime options `Any`; an error when it is bootstrap params for someone else.
fn bootstrap_params(stdin: &[u8], flags: &Flags) -> Result<Option<BootstrapParams>> {
    if stdin.is_empty() {
        return Ok(None);
    }
    let Ok(params) = BootstrapParams::parse_from_bytes(stdin) else {
        return Ok(None);
    };
    if params.instance_id == flags.id && params.namespace == flags.namespace {
        return Ok(Some(params));
    }
    let only_identity = BootstrapParams {
        instance_id: params.instance_id.clone(),
        namespace: params.namespace.clone(),
        ..Default::default()
    };
    if params == only_identity {
        // An `Any` (type_url, value) decoded as (instance_id, namespace).
        return Ok(None);
    }
    Err(ShimError::Bootstrap(format!(
        "bootstrap params are for {}/{}, but this shim was started for {}/{}",
        params.namespace, params.instance_id, flags.namespace, flags.id
    )))
}

/// The bytes to print on stdout.
pub fn encode_reply(format: ReplyFormat, address: &str) -> Result<Vec<u8>> {
    match format {
        ReplyFormat::PlainAddress => Ok(address.as_bytes().to_vec()),
        ReplyFormat::Json { version } => Ok(serde_json::json!({
            "version": version,
            "address": address,
            "protocol": PROTOCOL,
        })
        .to_string()
        .into_bytes()),
        ReplyFormat::Bootstrap { version } => encode(
            &BootstrapResult {
                version,
                address: address.to_string(),
                protocol: PROTOCOL.to_string(),
                ..Default::default()
            },
            "BootstrapResult",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use containerd_shim_protos::protobuf::well_known_types::any::Any;
    use containerd_shim_protos::protobuf::EnumOrUnknown;

    const ADDR: &str = "unix:///run/containerd/s/0123abcd";

    fn flags() -> Flags {
        Flags {
            namespace: "default".into(),
            id: "t1".into(),
            address: "/run/containerd/containerd.sock".into(),
            publish_binary: "/usr/bin/containerd".into(),
            action: "start".into(),
            ..Default::default()
        }
    }

    fn env(max: Option<&str>) -> StartEnv {
        StartEnv {
            ttrpc_address: Some("/run/containerd/containerd.sock.ttrpc".into()),
            grpc_address: Some("/run/containerd/containerd.sock".into()),
            max_shim_version: max.map(String::from),
        }
    }

    #[test]
    fn containerd_1_6_gets_the_plain_address() {
        let e = StartEnv {
            ttrpc_address: Some("/run/containerd/containerd.sock.ttrpc".into()),
            ..Default::default()
        };
        let (p, f) = resolve(b"", &flags(), &e).unwrap();
        assert_eq!(f, ReplyFormat::PlainAddress);
        assert_eq!(p.ttrpc_address, "/run/containerd/containerd.sock.ttrpc");
        assert_eq!(p.grpc_address, "/run/containerd/containerd.sock");
        assert_eq!(p.namespace, "default");
        assert_eq!(p.id, "t1");
        assert_eq!(encode_reply(f, ADDR).unwrap(), ADDR.as_bytes());
    }

    #[test]
    fn containerd_1_7_and_2_1_get_json_v2() {
        let (_, f) = resolve(b"", &flags(), &env(Some("2"))).unwrap();
        assert_eq!(f, ReplyFormat::Json { version: 2 });
        let v: serde_json::Value = serde_json::from_slice(&encode_reply(f, ADDR).unwrap()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"version": 2, "address": ADDR, "protocol": "ttrpc"})
        );
    }

    #[test]
    fn json_v3_only_when_containerd_accepts_it() {
        let (_, f) = resolve(b"", &flags(), &env(Some("3"))).unwrap();
        assert_eq!(f, ReplyFormat::Json { version: 3 });
        assert!(resolve(b"", &flags(), &env(Some("two"))).is_err());
    }

    #[test]
    fn missing_ttrpc_address_is_an_error() {
        assert!(resolve(b"", &flags(), &StartEnv::default()).is_err());
    }

    fn params() -> BootstrapParams {
        BootstrapParams {
            instance_id: "t1".into(),
            namespace: "default".into(),
            log_level: EnumOrUnknown::new(LogLevel::LOG_LEVEL_DEBUG),
            containerd_version: "v2.3.0".into(),
            containerd_ttrpc_address: "/run/c/c.sock.ttrpc".into(),
            containerd_grpc_address: "/run/c/c.sock".into(),
            containerd_binary: "/usr/local/bin/containerd".into(),
            socket_dir: Some("/run/c/s".into()),
            ..Default::default()
        }
    }

    #[test]
    fn containerd_2_3_bootstrap_params_on_stdin() {
        let stdin = params().write_to_bytes().unwrap();
        // No env at all: 2.3 passes everything in the message.
        let (p, f) = resolve(&stdin, &flags(), &StartEnv::default()).unwrap();
        assert_eq!(f, ReplyFormat::Bootstrap { version: 3 });
        assert_eq!(
            p,
            StartParams {
                namespace: "default".into(),
                id: "t1".into(),
                ttrpc_address: "/run/c/c.sock.ttrpc".into(),
                grpc_address: "/run/c/c.sock".into(),
                publish_binary: "/usr/local/bin/containerd".into(),
                debug: true,
                socket_dir: Some("/run/c/s".into()),
            }
        );
        let reply = BootstrapResult::parse_from_bytes(&encode_reply(f, ADDR).unwrap()).unwrap();
        assert_eq!(reply.version, 3);
        assert_eq!(reply.address, ADDR);
        assert_eq!(reply.protocol, "ttrpc");
    }

    #[test]
    fn info_level_is_not_debug() {
        let mut p = params();
        p.log_level = EnumOrUnknown::new(LogLevel::LOG_LEVEL_INFO);
        let (sp, _) =
            resolve(&p.write_to_bytes().unwrap(), &flags(), &StartEnv::default()).unwrap();
        assert!(!sp.debug);
    }

    #[test]
    fn runtime_options_any_is_not_bootstrap_params() {
        // What containerd 1.7 / 2.x write when the runtime has options: an Any.
        let any = Any {
            type_url: "containerd.runc.v1.Options".into(),
            value: b"\x0a\x05/shim".to_vec(),
            ..Default::default()
        };
        let stdin = any.write_to_bytes().unwrap();
        // It does decode as BootstrapParams...
        assert!(BootstrapParams::parse_from_bytes(&stdin).is_ok());
        // ...but is recognised for what it is.
        let (p, f) = resolve(&stdin, &flags(), &env(Some("2"))).unwrap();
        assert_eq!(f, ReplyFormat::Json { version: 2 });
        assert_eq!(p.ttrpc_address, "/run/containerd/containerd.sock.ttrpc");
        // An Any whose value is not UTF-8 does not even decode as BootstrapParams.
        let any = Any {
            type_url: "x.Options".into(),
            value: vec![0x12, 0x02, 0xff, 0xfe],
            ..Default::default()
        };
        let (_, f) = resolve(&any.write_to_bytes().unwrap(), &flags(), &env(None)).unwrap();
        assert_eq!(f, ReplyFormat::PlainAddress);
    }

    #[test]
    fn bootstrap_params_for_another_shim_are_rejected() {
        let mut p = params();
        p.instance_id = "other".into();
        assert!(resolve(&p.write_to_bytes().unwrap(), &flags(), &env(Some("2"))).is_err());
    }
}
