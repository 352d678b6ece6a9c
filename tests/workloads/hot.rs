//! CPU-bound Rust workload for the profiler's integration tests.
//!
//! `main` -> `workload::outer_caller` -> `workload::middle_caller` ->
//! `workload::burn_cpu_hot`, which spins for `argv[1]` seconds (default 10).
//! The inner loop is plain integer arithmetic with no calls, so practically
//! every sample of the main thread has `burn_cpu_hot` as its leaf.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

static STOP: AtomicBool = AtomicBool::new(false);

mod workload {
    use super::{Ordering, STOP};

    #[inline(never)]
    pub fn burn_cpu_hot(seed: u64) -> u64 {
        let mut x = seed | 1;
        while !STOP.load(Ordering::Relaxed) {
            let mut i = 0u32;
            while i < (1 << 22) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                i += 1;
            }
            x = std::hint::black_box(x);
        }
        x
    }

    #[inline(never)]
    pub fn middle_caller(seed: u64) -> u64 {
        std::hint::black_box(burn_cpu_hot(seed)) | 1
    }

    #[inline(never)]
    pub fn outer_caller(seed: u64) -> u64 {
        std::hint::black_box(middle_caller(seed)) | 1
    }
}

fn main() {
    let seconds: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(seconds.max(1)));
        STOP.store(true, Ordering::Relaxed);
    });
    let seed = std::hint::black_box(0x9e37_79b9_7f4a_7c15);
    let result = workload::outer_caller(seed);
    std::process::exit(if result == 0 { 1 } else { 0 });
}
