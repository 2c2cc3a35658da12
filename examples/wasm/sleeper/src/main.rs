//! Prints a line, then sleeps forever printing a tick every second (argv[1] changes the
//! interval in milliseconds). WASI has no signals: SIGTERM is handled by the host.
use std::io::Write;
use std::time::Duration;

fn main() {
    let ms: u64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(1000);
    println!("sleeper started");
    let mut n = 0u64;
    loop {
        std::thread::sleep(Duration::from_millis(ms));
        n += 1;
        println!("tick {n}");
        let _ = std::io::stdout().flush();
    }
}
