#![no_std]
// Exists so that perf-user can name this crate as a build dependency; the
// programs themselves are in the binary target (main.rs).
