//! The shim's bounds on what it reads of tenant files, from the Create request's runtime
//! options: the `[tenant_files]` table (`runtime_native::tenant_file::Limits`) of the same TOML
//! the `[network]` table lives in (`config_body`, or the file at `config_path`; see
//! `crate::network`). No options, or options of another type, give the defaults.

use containerd_shim_protos::protobuf::well_known_types::any::Any;
use runtime_native::tenant_file::Limits;

use crate::network::decode_runtime_options;

/// The limits for a container created with `options`.
pub fn from_options(options: Option<&Any>) -> Result<Limits, String> {
    let Some(any) = options else {
        return Ok(Limits::default());
    };
    if !any.type_url.ends_with("runtimeoptions.v1.Options") {
        return Ok(Limits::default());
    }
    let o = decode_runtime_options(&any.value).map_err(|e| format!("runtime options: {e}"))?;
    if !o.config_body.is_empty() {
        let text = std::str::from_utf8(&o.config_body)
            .map_err(|_| "runtime options: config_body is not UTF-8".to_string())?;
        return Limits::from_toml(text).map_err(|e| format!("runtime options: {e}"));
    }
    if !o.config_path.is_empty() {
        // The file is the node admin's (containerd's config names it), not a tenant's.
        let text = std::fs::read_to_string(&o.config_path)
            .map_err(|e| format!("read config file {}: {e}", o.config_path))?;
        return Limits::from_toml(&text).map_err(|e| format!("{}: {e}", o.config_path));
    }
    Ok(Limits::default())
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
        let e = from_options(Some(&bad)).unwrap_err();
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
}
