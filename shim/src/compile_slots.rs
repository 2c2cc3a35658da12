//! At most N module compiles at once per shim (N = the CPUs this shim may use).
//!
//! A compile is CPU- and memory-heavy and a tenant decides how many start at once (every exec
//! of a wasm entrypoint plans one). Waiting happens on the blocking pool (planning runs there),
//! never on an async worker; the caller's plan timeout bounds the wait.

use std::sync::{Condvar, Mutex, OnceLock};

/// A counting semaphore for blocking threads.
pub struct Slots {
    free: Mutex<usize>,
    freed: Condvar,
}

/// A held slot; dropping it frees the slot.
pub struct Slot<'a>(&'a Slots);

impl Slots {
    pub fn new(n: usize) -> Slots {
        Slots {
            free: Mutex::new(n.max(1)),
            freed: Condvar::new(),
        }
    }

    /// Blocks until a slot is free and takes it.
    pub fn take(&self) -> Slot<'_> {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        while *free == 0 {
            free = self.freed.wait(free).unwrap_or_else(|p| p.into_inner());
        }
        *free -= 1;
        Slot(self)
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        *self.0.free.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        self.0.freed.notify_one();
    }
}

/// The shim's compile slots: one per CPU it may run on.
pub fn compile_slots() -> &'static Slots {
    static SLOTS: OnceLock<Slots> = OnceLock::new();
    SLOTS.get_or_init(|| Slots::new(std::thread::available_parallelism().map_or(1, |n| n.get())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[test]
    fn never_more_than_n_holders() {
        let slots = Arc::new(Slots::new(2));
        let inside = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (slots, inside, most) = (slots.clone(), inside.clone(), most.clone());
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        let _slot = slots.take();
                        let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        std::thread::yield_now();
                        inside.fetch_sub(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let most = most.load(Ordering::SeqCst);
        assert!((1..=2).contains(&most), "{most} compiles at once");
        // All slots are back.
        let _a = slots.take();
        let _b = slots.take();
    }
}
