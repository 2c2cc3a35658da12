//! containerd's runtime options of a Create (`runtimeoptions.v1.Options`: `ctr
//! --runtime-config-path FILE`, or the CRI runtime's `ConfigPath` / `ConfigBody`): decoded from
//! protobuf wire bytes, and the TOML text they carry (the body, or the file the path names),
//! which holds the `[network]`, `[tenant_files]` and `[wasm]` tables. Options of another type
//! (runc's) carry nothing for amphi.

use containerd_shim_protos::protobuf::well_known_types::any::Any;

/// The fields of containerd's `runtimeoptions.v1.Options`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RuntimeOptions {
    pub type_url: String,
    pub config_path: String,
    pub config_body: Vec<u8>,
}

/// Protobuf wire bytes that are not a `runtimeoptions.v1.Options`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("truncated varint")]
    TruncatedVarint,
    #[error("varint too long")]
    VarintTooLong,
    #[error("truncated field")]
    TruncatedField,
    #[error("unsupported wire type {0}")]
    WireType(u64),
}

/// Runtime options that could not be read: the user's (or the node admin's) config is at
/// fault.
#[derive(Debug, thiserror::Error)]
pub enum OptionsError {
    #[error("runtime options: {0}")]
    Decode(#[from] DecodeError),
    #[error("runtime options: config_body is not UTF-8")]
    NotUtf8(#[source] std::string::FromUtf8Error),
    #[error("read config file {path}: {source}")]
    ReadFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// A Create's config that cannot be used: the options, or one of the tables their text holds
/// (the user's or the node admin's fault).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    Options(#[from] OptionsError),
    /// The `[tenant_files]` table; `origin` is the config file, or "runtime options" for the
    /// options' body.
    #[error("{origin}: {source}")]
    TenantFiles {
        origin: String,
        #[source]
        source: runtime_native::fs::tenant_file::LimitsError,
    },
    /// The `[wasm]` table or an `io.amphi.wasm.*` annotation.
    #[error(transparent)]
    Wasm(runtime_wasm::Error),
}

/// Decodes `runtimeoptions.v1.Options { string type_url = 1; string config_path = 2;
/// bytes config_body = 3; }` from protobuf wire bytes (unknown fields skipped).
pub fn decode(mut b: &[u8]) -> Result<RuntimeOptions, DecodeError> {
    fn varint(b: &mut &[u8]) -> Result<u64, DecodeError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = b.split_first().ok_or(DecodeError::TruncatedVarint)?;
            *b = rest;
            v |= ((byte & 0x7f) as u64) << shift;
            if byte & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(DecodeError::VarintTooLong)
    }
    fn skip(b: &[u8], n: usize) -> Result<(&[u8], &[u8]), DecodeError> {
        if b.len() < n {
            return Err(DecodeError::TruncatedField);
        }
        Ok(b.split_at(n))
    }
    let mut o = RuntimeOptions::default();
    while !b.is_empty() {
        let key = varint(&mut b)?;
        let (field, wire) = (key >> 3, key & 7);
        match wire {
            0 => {
                varint(&mut b)?;
            }
            1 | 5 => b = skip(b, if wire == 1 { 8 } else { 4 })?.1,
            2 => {
                let n = varint(&mut b)? as usize;
                let (v, rest) = skip(b, n)?;
                b = rest;
                match field {
                    1 => o.type_url = String::from_utf8_lossy(v).into_owned(),
                    2 => o.config_path = String::from_utf8_lossy(v).into_owned(),
                    3 => o.config_body = v.to_vec(),
                    _ => {}
                }
            }
            w => return Err(DecodeError::WireType(w)),
        }
    }
    Ok(o)
}

/// The TOML text the options carry.
pub struct ConfigText {
    pub text: String,
    /// The file it was read from; `None` for the options' body.
    pub path: Option<String>,
}

/// The config text of a Create's `options`: `None` without options, with options of another
/// type, or with neither a body nor a path. The file is the node admin's (containerd's config
/// names it), not a tenant's.
pub fn config_text(options: Option<&Any>) -> Result<Option<ConfigText>, OptionsError> {
    let Some(any) = options else {
        return Ok(None);
    };
    if !any.type_url.ends_with("runtimeoptions.v1.Options") {
        log::debug!("runtime options of type {:?} ignored", any.type_url);
        return Ok(None);
    }
    let o = decode(&any.value)?;
    if !o.config_body.is_empty() {
        let text = String::from_utf8(o.config_body).map_err(OptionsError::NotUtf8)?;
        return Ok(Some(ConfigText { text, path: None }));
    }
    if !o.config_path.is_empty() {
        let text =
            std::fs::read_to_string(&o.config_path).map_err(|source| OptionsError::ReadFile {
                path: o.config_path.clone(),
                source,
            })?;
        return Ok(Some(ConfigText {
            text,
            path: Some(o.config_path),
        }));
    }
    Ok(None)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn encode(fields: &[(u8, &[u8])]) -> Vec<u8> {
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
        let o = decode(&b).unwrap();
        assert_eq!(o.type_url, "x");
        assert_eq!(o.config_path, "/etc/amphi.toml");
        assert_eq!(o.config_body, b"[network]");
        assert_eq!(
            decode(&[0x12, 0x05, b'a']),
            Err(DecodeError::TruncatedField)
        );
        assert_eq!(decode(&[0x0b]), Err(DecodeError::WireType(3)));
    }

    #[test]
    fn config_text_names_what_it_could_not_read() {
        let any = |value| Any {
            type_url: "runtimeoptions.v1.Options".into(),
            value,
            ..Default::default()
        };
        assert!(config_text(None).unwrap().is_none());
        let c = config_text(Some(&any(encode(&[(3, b"[wasm]")]))))
            .unwrap()
            .unwrap();
        assert_eq!((c.text.as_str(), c.path), ("[wasm]", None));
        let e = config_text(Some(&any(encode(&[(3, b"\xff")]))))
            .err()
            .unwrap();
        assert_eq!(e.to_string(), "runtime options: config_body is not UTF-8");
        let e = config_text(Some(&any(encode(&[(2, b"/nonexistent/amphi.toml")]))))
            .err()
            .unwrap();
        assert!(
            e.to_string()
                .starts_with("read config file /nonexistent/amphi.toml: "),
            "{e}"
        );
    }
}
