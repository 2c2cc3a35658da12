//! `-info`: the protobuf `containerd.types.RuntimeInfo` containerd asks a shim binary for
//! (introspection's `PluginInfo` on the task runtime plugin runs `<shim> -info`, with the
//! handler's runtime options on stdin).
//!
//! Besides name and version it carries the runtime's OCI features (`features`, an `Any` whose
//! value is the JSON `runc features` prints, under the type URL containerd registers for
//! runtime-spec's `features.Features`). containerd 2.x reads them: its CRI reports
//! `recursive_read_only_mounts` for a handler whose `mountOptions` list `rro`, user
//! namespaces for one with `user` and `mountExtensions.idmap` (required before such pods from
//! 2.2.7/2.3), and its task manager refuses idmapped volumes without `idmap`. What is claimed
//! is built by `runtime_native::features` from the runtime's own tables.

use std::collections::HashMap;

use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::types::introspection::{RuntimeInfo, RuntimeVersion};

use crate::error::{encode, Result, ShimError};
use crate::{REVISION, RUNTIME_NAME, VERSION};

/// containerd's type URL for runtime-spec's `features.Features` (typeurl registers it under
/// `types.containerd.io` + `opencontainers/runtime-spec/<major>/features/Features`; a non-proto
/// type travels as JSON).
pub const FEATURES_TYPE_URL: &str =
    "types.containerd.io/opencontainers/runtime-spec/1/features/Features";

/// Annotation of the features with the shim's version.
pub const VERSION_ANNOTATION: &str = "io.amphi.version";

/// Reads the runtime options (a protobuf `Any`) containerd may pass on stdin, bounded.
pub fn read_options() -> Option<Any> {
    use std::io::{IsTerminal, Read};
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        return None;
    }
    let mut buf = Vec::new();
    stdin.lock().take(10 << 20).read_to_end(&mut buf).ok()?;
    if buf.is_empty() {
        return None;
    }
    Any::parse_from_bytes(&buf)
        .ok()
        .filter(|a| !a.type_url.is_empty())
}

/// The runtime's features as the `Any` containerd unpacks.
fn features_any() -> Result<Any> {
    let annotations = HashMap::from([(VERSION_ANNOTATION.to_string(), VERSION.to_string())]);
    let features = runtime_native::features::features(annotations);
    let value = serde_json::to_vec(&features).map_err(|source| ShimError::Json {
        what: "the runtime features",
        source,
    })?;
    Ok(Any {
        type_url: FEATURES_TYPE_URL.to_string(),
        value,
        ..Default::default()
    })
}

/// `containerd.types.RuntimeInfo`: name, version, the options echoed back, the features.
pub fn runtime_info(options: Option<Any>) -> Result<Vec<u8>> {
    encode(
        &RuntimeInfo {
            name: RUNTIME_NAME.to_string(),
            version: Some(RuntimeVersion {
                version: VERSION.to_string(),
                revision: REVISION.to_string(),
                ..Default::default()
            })
            .into(),
            options: options.into(),
            features: Some(features_any()?).into(),
            ..Default::default()
        },
        "RuntimeInfo",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_info_bytes() {
        let bytes = runtime_info(None).unwrap();
        let info = RuntimeInfo::parse_from_bytes(&bytes).unwrap();
        assert_eq!(info.name, "io.containerd.amphi.v1");
        assert_eq!(info.version.version, VERSION);
        assert!(info.options.is_none());
        // field 1 (name), length-delimited, then field 2 (version) message.
        let mut expect = vec![0x0a, RUNTIME_NAME.len() as u8];
        expect.extend_from_slice(RUNTIME_NAME.as_bytes());
        assert_eq!(&bytes[..expect.len()], &expect[..]);
        assert_eq!(bytes[expect.len()], 0x12);

        let opts = Any {
            type_url: "x.Options".into(),
            value: vec![1, 2],
            ..Default::default()
        };
        let info =
            RuntimeInfo::parse_from_bytes(&runtime_info(Some(opts.clone())).unwrap()).unwrap();
        assert_eq!(info.options.unwrap(), opts);
    }

    /// What containerd's CRI and task manager look for in the reply.
    #[test]
    fn features_in_the_reply() {
        let info = RuntimeInfo::parse_from_bytes(&runtime_info(None).unwrap()).unwrap();
        let any = info
            .features
            .into_option()
            .expect("features in RuntimeInfo");
        assert_eq!(any.type_url, FEATURES_TYPE_URL);

        let f: serde_json::Value = serde_json::from_slice(&any.value).unwrap();
        let opts = f["mountOptions"].as_array().unwrap();
        assert!(opts.iter().any(|o| o == "rro"), "{opts:?}");
        let nss = f["linux"]["namespaces"].as_array().unwrap();
        assert!(nss.iter().any(|n| n == "user"), "{nss:?}");
        assert!(f["linux"]["mountExtensions"]["idmap"]["enabled"].is_boolean());
        assert_eq!(f["annotations"][VERSION_ANNOTATION], VERSION);
        assert_eq!(f["ociVersionMin"], "1.0.0");
        assert!(f["ociVersionMax"].is_string());
    }
}
