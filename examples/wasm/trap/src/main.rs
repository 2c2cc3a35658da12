//! Traps: prints a line, then executes `unreachable` (a Rust panic aborts the same way).
fn main() {
    println!("about to trap");
    if std::env::args().nth(1).as_deref() == Some("panic") {
        panic!("trap example panicked on purpose");
    }
    #[cfg(target_family = "wasm")]
    core::arch::wasm32::unreachable();
    #[cfg(not(target_family = "wasm"))]
    std::process::abort();
}
