//! Wasm end-to-end cases. The support code is in `amphi_tests::wasm_images` (modules from
//! examples/wasm/out, wrapped into wasm-layer images). More cases (components, wasi:http,
//! traps, limits, signals, mixed pods) belong here.

use amphi_tests::wasm_images::{self, Target};
use amphi_tests::{Case, Runtime};
use anyhow::Result;

/// Only amphi runs wasm; these cases have no runc variant.
macro_rules! wasm_e2e {
    ($name:ident, $f:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            fn run(v: amphi_tests::Version) {
                amphi_tests::require_root();
                amphi_tests::run_case(v, Runtime::Amphi, stringify!($name), $f)
            }
            #[test]
            fn containerd_1_6() {
                run(amphi_tests::Version::V1_6)
            }
            #[test]
            fn containerd_1_7() {
                run(amphi_tests::Version::V1_7)
            }
            #[test]
            fn containerd_2_1() {
                run(amphi_tests::Version::V2_1)
            }
        }
    };
}

/// A WASI p1 module as the entrypoint of a rootfs image: prints, and its exit code comes back.
fn hello_module(c: &mut Case) -> Result<()> {
    let module = wasm_images::module("hello", Target::P1)?;
    let image =
        wasm_images::import_rootfs_module(&c.cd, &module, "docker.io/amphi/hello-wasm:e2e")?;
    let id = c.id("hello");
    let out = c
        .ctr(&["run", "--rm", "--runtime", c.runtime.name(), &image, &id])?
        .ok()?;
    anyhow::ensure!(
        out.stdout.contains("hello from wasm"),
        "wasm output: {}",
        out.describe()
    );
    let module = wasm_images::module("exit-code", Target::P1)?;
    let image =
        wasm_images::import_rootfs_module(&c.cd, &module, "docker.io/amphi/exit-code-wasm:e2e")?;
    let id = c.id("exit");
    // ctr's args replace the image's entrypoint, so the module is named again.
    c.ctr(&[
        "run",
        "--rm",
        "--runtime",
        c.runtime.name(),
        &image,
        &id,
        "/exit-code.wasm",
        "7",
    ])?
    .expect_code(7)?;
    Ok(())
}

wasm_e2e!(wasm_hello_module, hello_module);
