//! The shim's bounds on what it reads of tenant files, from the Create request's runtime
//! options: the `[tenant_files]` table (`runtime_native::fs::tenant_file::Limits`) of the same TOML
//! the `[network]` table lives in (`config_body`, or the file at `config_path`; see
//! `crate::network`). No options, or options of another type, give the defaults.

use containerd_shim_protos::protobuf::well_known_types::any::Any;
use runtime_native::fs::tenant_file::Limits;

use crate::runtime_options::{config_text, ConfigError};

/// The limits for a container created with `options`.
pub fn from_options(options: Option<&Any>) -> Result<Limits, ConfigError> {
    let Some(c) = config_text(options)? else {
        return Ok(Limits::default());
    };
    Limits::from_toml(&c.text).map_err(|source| ConfigError::TenantFiles {
        origin: c.path.unwrap_or_else(|| "runtime options".into()),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `runtimeoptions.v1.Options` with only `config_body` (field 3) set.
    fn options_with_body(body: &str) -> Any {
        let mut value = vec![0x1a, body.len() as u8];
        value.extend_from_slice(body.as_bytes());
        Any {
            type_url: "type.googleapis.com/runtimeoptions.v1.Options".into(),
            value,
            ..Default::default()
        }
    }

    #[test]
    fn limits_from_the_options_body_or_defaults() {
        assert_eq!(from_options(None).unwrap(), Limits::default());
        let runc = Any {
            type_url: "containerd.runc.v1.Options".into(),
            ..Default::default()
        };
        assert_eq!(from_options(Some(&runc)).unwrap(), Limits::default());
        let o = options_with_body("[tenant_files]\nmax_bytes = 4096\n");
        assert_eq!(from_options(Some(&o)).unwrap().max_bytes, 4096);
        let bad = options_with_body("[tenant_files]\nmax_bytes = 0\n");
        let e = from_options(Some(&bad)).unwrap_err().to_string();
        assert!(e.contains("max_bytes"), "{e}");
    }

    #[test]
    fn limits_from_the_options_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("amphi.toml");
        std::fs::write(&path, "[tenant_files]\nmax_bytes = 123\n").unwrap();
        let p = path.display().to_string();
        let mut value = vec![0x12, p.len() as u8];
        value.extend_from_slice(p.as_bytes());
        let o = Any {
            type_url: "runtimeoptions.v1.Options".into(),
            value,
            ..Default::default()
        };
        assert_eq!(from_options(Some(&o)).unwrap().max_bytes, 123);
    }

    /// Property test of the runtime options decoder (protobuf wire bytes from containerd):
    /// encoded fields come back as they were, with unknown fields around them, and random or
    /// truncated bytes are refused or decoded, never a panic.
    #[test]
    fn runtime_options_decode_round_trips_and_never_panics() {
        use runtime_native::testgen::Gen;
        const CASES: usize = 5000;
        fn field(out: &mut Vec<u8>, tag: u8, data: &[u8]) {
            out.push(tag << 3 | 2);
            runtime_native::testgen::uleb128(data.len(), out);
            out.extend_from_slice(data);
        }
        let mut g = Gen::new(0x5eed_0201);
        let mut refused = 0;
        for case in 0..CASES {
            let path = g.string("/abc.toml", 40);
            let body = g.bytes(300);
            let mut wire = Vec::new();
            if g.chance(50) {
                wire.extend_from_slice(&[0x08, 0x96, 0x01]); // field 1 as a varint: skipped
            }
            field(&mut wire, 2, path.as_bytes());
            field(&mut wire, 9, &g.bytes(20)); // unknown field
            field(&mut wire, 3, &body);
            let o = crate::runtime_options::decode(&wire)
                .unwrap_or_else(|e| panic!("case {case}: {e}"));
            assert_eq!(
                (o.config_path.as_str(), &o.config_body[..]),
                (path.as_str(), &body[..])
            );
            // Cut short anywhere inside the last field: refused, not misread.
            let cut = wire.len() - 1 - g.below(body.len().max(1).min(wire.len() - 1));
            if let Ok(o) = crate::runtime_options::decode(&wire[..cut]) {
                assert_ne!(o.config_body, body, "case {case}: truncated body accepted");
            } else {
                refused += 1;
            }
            if crate::runtime_options::decode(&g.bytes(64)).is_err() {
                refused += 1;
            }
        }
        println!("runtime options: {} cases, {refused} refused", 3 * CASES);
    }
}
