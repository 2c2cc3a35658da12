//! Links the shim as a position-dependent executable.
//!
//! Why: a PIE of this size carries ~100k dynamic relocations; applying them at every start
//! dirties (and makes private) megabytes of `.data.rel.ro` in each shim process, which is most
//! of the shim's memory. Without PIE those pages stay clean, file-backed and shared by every
//! shim on the node, and exec is faster. The code itself is still compiled PIC, which links
//! fine into a fixed-address executable.
fn main() {
    println!("cargo:rustc-link-arg-bins=-no-pie");
}
