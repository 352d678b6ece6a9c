//! perf-user: loads the kernel programs, reads their maps, and turns them
//! into reports. `main.rs` only parses arguments and calls [`commands::run`].

pub mod alerts;
pub mod blockdev;
mod bpf_sys;
pub mod btf;
pub mod btf_layout;
pub mod cgroup;
pub mod cli;
pub mod collectors;
pub mod commands;
pub mod config;
pub mod daemon;
pub mod duration;
pub mod ebpf;
pub mod histogram;
pub mod latency;
pub mod leaks;
pub mod observe;
pub mod output;
pub mod privileges;
pub mod processes;
pub mod procmaps;
pub mod profile;
pub mod progress;
pub mod progstats;
pub mod registry;
pub mod symbolize;
pub mod tracefs;
pub mod unwind;
