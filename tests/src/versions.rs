//! The containerd versions the tests run against, and where their binaries are.

use crate::paths::workspace_root;
use anyhow::Result;
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    /// Debian bookworm's own `containerd` package, at /usr/bin.
    V1_6,
    /// Debian trixie's package, unpacked by tests/scripts/fetch-containerd.sh.
    V1_7,
    /// Debian sid's package, unpacked by tests/scripts/fetch-containerd.sh.
    V2_1,
}

pub const ALL: [Version; 3] = [Version::V1_6, Version::V1_7, Version::V2_1];

impl Version {
    pub fn label(self) -> &'static str {
        match self {
            Version::V1_6 => "1.6",
            Version::V1_7 => "1.7",
            Version::V2_1 => "2.1",
        }
    }

    pub fn is_v2(self) -> bool {
        self == Version::V2_1
    }

    /// The directory holding `containerd`, `ctr` (and that version's runc shim, if shipped).
    pub fn bin_dir(self) -> PathBuf {
        match self {
            Version::V1_6 => PathBuf::from("/usr/bin"),
            _ => {
                let base = std::env::var_os("AMPHI_CONTAINERD_DIR")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| workspace_root().join(".cache/containerd"));
                base.join(self.label()).join("usr/bin")
            }
        }
    }

    pub fn containerd(self) -> PathBuf {
        self.bin_dir().join("containerd")
    }

    pub fn ctr(self) -> PathBuf {
        self.bin_dir().join("ctr")
    }

    /// Fails (never skips) when this version's binaries are missing, saying how to get them.
    pub fn require(self) -> Result<()> {
        for b in [self.containerd(), self.ctr()] {
            if !b.is_file() {
                let how = match self {
                    Version::V1_6 => "install Debian's containerd package (`apt-get install containerd`, or run scripts/setup.sh)".to_string(),
                    _ => format!("run {}/tests/scripts/fetch-containerd.sh (or scripts/setup.sh)", workspace_root().display()),
                };
                anyhow::bail!(
                    "containerd {} is not present: {} is missing; {how}",
                    self.label(),
                    b.display()
                );
            }
        }
        Ok(())
    }
}
