//! containerd-shim-amphi-v1: native and WebAssembly containers behind one containerd shim v2.

mod events;
mod record;

fn main() {}
