//! Alerts and tuning advice over what the collectors see.
//!
//! A pure library first, so that every decision can be tested without
//! privileges:
//! - [`signals`]: the values rules watch (disk latency percentiles, TCP RTT
//!   and retransmits, outstanding heap bytes per stack, CPU share per
//!   function), each with its evidence.
//! - [`baseline`]: robust statistics (median, MAD, Theil–Sen slope).
//! - [`rules`]: the four rule kinds (threshold, rate, baseline, hotspot)
//!   and the built-in rule set; [`config`]: `[alerts]` in the TOML file.
//! - [`engine`]: the lifecycle pending → firing → resolved, deduplicated by
//!   a fingerprint of rule and labels.
//! - [`advice`]: what the alert means, the settings in force, what to try;
//!   [`actions`]: the allowlisted reversible settings, apply and revert.
//! - [`webhook`]: Alertmanager API v2; [`report`]: `advise`'s output.
//!
//! The engine inside `perf-user run` and its metrics are the daemon's
//! (`daemon::alerts`, `daemon::alert_metrics`): this module knows signals
//! and rules, not the daemon.
//!
//! Observations are built from the collectors' typed snapshots by
//! [`crate::observe`], for the daemon and `advise` alike.
//!
//! docs/alerts.md describes the whole for users.

pub mod actions;
pub mod advice;
pub mod baseline;
pub mod config;
pub mod engine;
pub mod report;
pub mod rules;
pub mod signals;
pub mod webhook;
