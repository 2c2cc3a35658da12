//! Support code for amphi's end-to-end tests: private containerd daemons of each supported
//! version, offline-built images, `ctr` helpers, ptys, and leak checks.
//!
//! Tests live in `tests/tests/*.rs`; each case is written once as
//! `fn(&mut Case) -> anyhow::Result<()>` and instantiated per containerd version by [`e2e!`].
//! They need root, the containerd binaries (`tests/scripts/fetch-containerd.sh`), busybox-static,
//! runc, and a release build of the shim (`cargo build --release -p amphi-shim`).

pub mod case;
pub mod cgroups;
pub mod cmd;
pub mod containerd;
pub mod cri;
pub mod cri_case;
pub mod cri_env;
pub mod cri_stream;
pub mod images;
pub mod leaks;
pub mod mounts;
pub mod paths;
pub mod procs;
pub mod pty;
pub mod versions;
pub mod wasm_images;

pub use case::{run_case, Case, Runtime};
pub use cmd::Output;
pub use containerd::Containerd;
pub use versions::Version;

/// Fails with a clear message unless running as root (the e2e tests start daemons, mount, and
/// create cgroups).
pub fn require_root() {
    if !nix::unistd::Uid::effective().is_root() {
        panic!("end-to-end tests need root (they run containerd): run them with sudo, e.g. `sudo scripts/test.sh`");
    }
}

/// Instantiates a case for containerd 1.6, 1.7 and 2.1 with `io.containerd.amphi.v1`, plus
/// the same case with `io.containerd.runc.v2` (ignored by default: run with `--ignored` to
/// check that a test's expectations match what runc does).
///
/// `e2e!(name, case_fn);` gives tests `name::containerd_1_6`, ..., `name::runc::containerd_2_1`.
#[macro_export]
macro_rules! e2e {
    ($name:ident, $f:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            fn run(v: $crate::Version, r: $crate::Runtime) {
                $crate::require_root();
                $crate::run_case(v, r, stringify!($name), $f)
            }
            #[test]
            fn containerd_1_6() {
                run($crate::Version::V1_6, $crate::Runtime::Amphi)
            }
            #[test]
            fn containerd_1_7() {
                run($crate::Version::V1_7, $crate::Runtime::Amphi)
            }
            #[test]
            fn containerd_2_1() {
                run($crate::Version::V2_1, $crate::Runtime::Amphi)
            }
            mod runc {
                #[test]
                #[ignore = "validates the test against runc; run with --ignored"]
                fn containerd_1_6() {
                    super::run($crate::Version::V1_6, $crate::Runtime::Runc)
                }
                #[test]
                #[ignore = "validates the test against runc; run with --ignored"]
                fn containerd_1_7() {
                    super::run($crate::Version::V1_7, $crate::Runtime::Runc)
                }
                #[test]
                #[ignore = "validates the test against runc; run with --ignored"]
                fn containerd_2_1() {
                    super::run($crate::Version::V2_1, $crate::Runtime::Runc)
                }
            }
        }
    };
}

/// One case for containerd 1.6, 1.7 and 2.1 with one runtime (`Amphi` or `Runc`): what
/// [`wasm_e2e!`] and [`e2e_runc!`] expand to.
#[doc(hidden)]
#[macro_export]
macro_rules! e2e_with {
    ($name:ident, $f:expr, $runtime:ident) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            fn run(v: $crate::Version) {
                $crate::require_root();
                $crate::run_case(v, $crate::Runtime::$runtime, stringify!($name), $f)
            }
            #[test]
            fn containerd_1_6() {
                run($crate::Version::V1_6)
            }
            #[test]
            fn containerd_1_7() {
                run($crate::Version::V1_7)
            }
            #[test]
            fn containerd_2_1() {
                run($crate::Version::V2_1)
            }
        }
    };
}

/// Declares a wasm end-to-end case for containerd 1.6, 1.7 and 2.1: only amphi runs wasm, so
/// there is no runc variant.
#[macro_export]
macro_rules! wasm_e2e {
    ($name:ident, $f:expr) => {
        $crate::e2e_with!($name, $f, Amphi);
    };
}

/// Like [`e2e!`] but only with `io.containerd.runc.v2`, not ignored: validates the harness.
#[macro_export]
macro_rules! e2e_runc {
    ($name:ident, $f:expr) => {
        $crate::e2e_with!($name, $f, Runc);
    };
}
