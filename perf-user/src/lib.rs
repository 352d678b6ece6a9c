//! perf-user: loads the kernel programs, reads their maps, and turns them
//! into reports. `main.rs` only parses arguments and calls [`commands::run`].
#![warn(missing_docs)]

pub mod alerts;
pub mod blockdev;
mod bpf_sys;
pub mod btf;
pub(crate) mod btf_layout;
pub(crate) mod cgroup;
pub mod cli;
pub mod collectors;
pub mod commands;
pub(crate) mod config;
pub mod daemon;
pub(crate) mod duration;
pub(crate) mod ebpf;
pub(crate) mod histogram;
pub(crate) mod latency;
pub(crate) mod leaks;
pub(crate) mod observe;
pub mod output;
pub(crate) mod privileges;
pub(crate) mod processes;
pub mod procmaps;
pub(crate) mod profile;
pub(crate) mod progress;
pub(crate) mod progstats;
pub mod registry;
pub mod symbolize;
pub(crate) mod tracefs;
pub mod unwind;
