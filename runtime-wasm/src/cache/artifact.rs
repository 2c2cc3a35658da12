//! The format of a cache entry: wasmtime's serialized artifact (an ELF file, mapped as is by
//! `deserialize_open_file`, which ignores bytes past the ELF's sections) followed by a
//! fixed-size trailer that says what the artifact is and carries its sha256:
//!
//! ```text
//! [artifact: len bytes][sha256(artifact): 32][len: u64 LE][kind: u8][0; 7]["amphiwa2"]
//! ```
//!
//! The digest is checked before the shim hands the entry to a container, where it is loaded
//! with wasmtime's unsafe deserialize; the kind lets a cache hit skip deserializing and linking
//! in the shim (the container links it once, when it loads it).

use std::fs::File;
use std::os::unix::fs::FileExt;

use sha2::{Digest, Sha256};

use crate::WasmKind;

const MAGIC: &[u8; 8] = b"amphiwa2";
pub(crate) const TRAILER_LEN: usize = 32 + 8 + 1 + 7 + 8;
/// Read size while hashing an entry.
const CHUNK: usize = 256 << 10;

fn kind_byte(kind: WasmKind) -> u8 {
    match kind {
        WasmKind::CoreModule => 1,
        WasmKind::ComponentCommand => 2,
        WasmKind::HttpProxy => 3,
    }
}

fn byte_kind(b: u8) -> Option<WasmKind> {
    Some(match b {
        1 => WasmKind::CoreModule,
        2 => WasmKind::ComponentCommand,
        3 => WasmKind::HttpProxy,
        _ => return None,
    })
}

/// The trailer for `artifact` of `kind`.
pub(crate) fn trailer(artifact: &[u8], kind: WasmKind) -> [u8; TRAILER_LEN] {
    let mut t = [0u8; TRAILER_LEN];
    t[..32].copy_from_slice(&Sha256::digest(artifact));
    t[32..40].copy_from_slice(&(artifact.len() as u64).to_le_bytes());
    t[40] = kind_byte(kind);
    t[TRAILER_LEN - 8..].copy_from_slice(MAGIC);
    t
}

/// Why a cache entry is not to be trusted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum Untrusted {
    #[error("{0} bytes is too short for an entry")]
    TooShort(u64),
    #[error("read trailer: {0}")]
    ReadTrailer(String),
    #[error("no amphi trailer")]
    NoTrailer,
    #[error("trailer says {trailer} artifact bytes, the file has {file}")]
    Length { trailer: u64, file: u64 },
    #[error("unknown kind {0}")]
    Kind(u8),
    #[error("read at {offset}: {error}")]
    Read { offset: u64, error: String },
    #[error("sha256 of the artifact does not match its trailer")]
    Digest,
}

/// Checks the entry `file` of `size` bytes: a well-formed trailer whose digest matches the
/// artifact. Returns the kind, or why the entry is not to be trusted.
pub(crate) fn verify(file: &File, size: u64) -> Result<WasmKind, Untrusted> {
    let body = size
        .checked_sub(TRAILER_LEN as u64)
        .ok_or(Untrusted::TooShort(size))?;
    let mut t = [0u8; TRAILER_LEN];
    // The read errors are kept as text: an entry that fails is discarded with a log line,
    // and the variants stay comparable in the tests.
    file.read_exact_at(&mut t, body)
        .map_err(|e| Untrusted::ReadTrailer(e.to_string()))?;
    if &t[TRAILER_LEN - 8..] != MAGIC || t[41..TRAILER_LEN - 8].iter().any(|b| *b != 0) {
        return Err(Untrusted::NoTrailer);
    }
    let len = u64::from_le_bytes(t[32..40].try_into().expect("8 bytes"));
    if len != body {
        return Err(Untrusted::Length {
            trailer: len,
            file: body,
        });
    }
    let kind = byte_kind(t[40]).ok_or(Untrusted::Kind(t[40]))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut off = 0u64;
    while off < body {
        let n = CHUNK.min((body - off) as usize);
        file.read_exact_at(&mut buf[..n], off)
            .map_err(|e| Untrusted::Read {
                offset: off,
                error: e.to_string(),
            })?;
        h.update(&buf[..n]);
        off += n as u64;
    }
    if h.finalize()[..] != t[..32] {
        return Err(Untrusted::Digest);
    }
    Ok(kind)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn entry(body: &[u8], kind: WasmKind) -> (tempfile::NamedTempFile, u64) {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(body).unwrap();
        f.write_all(&trailer(body, kind)).unwrap();
        let size = f.as_file().metadata().unwrap().len();
        (f, size)
    }

    #[test]
    fn round_trip_every_kind() {
        let body: Vec<u8> = (0..700_000u32).map(|i| (i % 251) as u8).collect();
        for kind in [
            WasmKind::CoreModule,
            WasmKind::ComponentCommand,
            WasmKind::HttpProxy,
        ] {
            let (f, size) = entry(&body, kind);
            assert_eq!(verify(f.as_file(), size), Ok(kind));
        }
    }

    #[test]
    fn a_changed_byte_anywhere_is_refused() {
        let body = vec![7u8; 300_000];
        let (f, size) = entry(&body, WasmKind::CoreModule);
        for off in [0u64, 4096, 299_999, 300_000, size - 9, size - 1] {
            let mut b = [0u8; 1];
            f.as_file().read_exact_at(&mut b, off).unwrap();
            f.as_file().write_all_at(&[b[0] ^ 0x40], off).unwrap();
            assert!(verify(f.as_file(), size).is_err(), "flip at {off} accepted");
            f.as_file().write_all_at(&b, off).unwrap();
        }
        assert!(verify(f.as_file(), size).is_ok());
    }

    #[test]
    fn short_or_foreign_files_are_refused() {
        let (f, size) = entry(b"abc", WasmKind::CoreModule);
        f.as_file().set_len(size - 1).unwrap();
        assert!(verify(f.as_file(), size - 1).is_err());
        let mut g = tempfile::NamedTempFile::new().unwrap();
        g.write_all(b"\x7fELF plain wasmtime artifact without a trailer, long enough")
            .unwrap();
        let len = g.as_file().metadata().unwrap().len();
        let e = verify(g.as_file(), len).unwrap_err().to_string();
        assert!(e.contains("trailer"), "{e}");
        assert!(verify(g.as_file(), 3).is_err());
    }
}
