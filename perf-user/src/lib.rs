//! perf-user: loads the kernel programs, reads their maps, and turns them
//! into reports. `main.rs` only parses arguments and calls [`commands::run`].

pub mod cli;
pub mod collectors;
pub mod commands;
pub mod duration;
pub mod ebpf;
pub mod output;
pub mod privileges;
pub mod processes;
pub mod procmaps;
pub mod profile;
pub mod progress;
pub mod symbolize;
