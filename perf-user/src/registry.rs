//! Every collector in one table, in the spirit of node_exporter's collector
//! registry: its name, whether it runs by default, its configuration
//! section, what it loads and attaches, which signals it feeds, which
//! commands use it, and how the daemon starts it. The daemon and `advise`
//! pick collectors from here; docs/adding-a-collector.md says what a new
//! entry needs.

use std::sync::Arc;

use crate::{
    alerts::signals::Signal,
    config::CollectorsConfig,
    daemon::{block, cpu, leaks, offcpu, scrape::Source, tcp},
};

/// One collector.
pub struct CollectorSpec {
    /// Name, as in `[collectors.NAME]`, `--collectors` and the `collector` label.
    pub name: &'static str,
    /// Whether the daemon runs it unless told otherwise.
    pub default_enabled: bool,
    /// Its configuration section.
    pub section: &'static str,
    /// What it loads and attaches in the kernel.
    pub loads: &'static str,
    /// The alert signals it feeds.
    pub signals: &'static [Signal],
    /// The commands that run it (besides `run`).
    pub commands: &'static [&'static str],
    /// Whether `advise` samples it by default.
    pub advise: bool,
    /// Whether `[collectors.NAME]` enables it.
    pub enabled: fn(&CollectorsConfig) -> bool,
    /// Whether its section is the same in both (a reload keeps it attached).
    pub same_section: fn(&CollectorsConfig, &CollectorsConfig) -> bool,
    /// Loads, attaches and starts it for the daemon, logging what it runs.
    pub start: fn(&CollectorsConfig) -> Result<Arc<dyn Source>, String>,
}

/// The collectors, in the order the daemon starts and reports them.
pub static COLLECTORS: &[CollectorSpec] = &[
    CollectorSpec {
        name: "cpu",
        default_enabled: true,
        section: "collectors.cpu",
        loads: "perf_event cpu-clock per online CPU running cpu_sample (stacks, per-CPU counts)",
        signals: &[Signal::CpuSelfRatio],
        commands: &["profile", "advise"],
        advise: true,
        enabled: |c| c.cpu.enabled,
        same_section: |a, b| a.cpu == b.cpu,
        start: start_cpu,
    },
    CollectorSpec {
        name: "block",
        default_enabled: true,
        section: "collectors.block",
        loads: "block_rq_issue, block_rq_complete (and block_io_start) as BTF or classic tracepoints",
        signals: &Signal::BLOCK,
        commands: &["latency", "advise"],
        advise: true,
        enabled: |c| c.block.enabled,
        same_section: |a, b| a.block == b.block,
        start: start_block,
    },
    CollectorSpec {
        name: "tcp",
        default_enabled: true,
        section: "collectors.tcp",
        loads: "tcp_probe, inet_sock_set_state, tcp_retransmit_skb as BTF or classic tracepoints",
        signals: &Signal::TCP,
        commands: &["latency", "advise"],
        advise: true,
        enabled: |c| c.tcp.enabled,
        same_section: |a, b| a.tcp == b.tcp,
        start: start_tcp,
    },
    CollectorSpec {
        name: "leaks",
        default_enabled: false,
        section: "collectors.leaks",
        loads: "uprobes and uretprobes on the allocator of each traced process, sched_process_exec",
        signals: &Signal::LEAKS,
        commands: &["leaks", "advise --pid"],
        advise: false,
        enabled: |c| c.leaks.enabled,
        same_section: |a, b| a.leaks == b.leaks,
        start: start_leaks,
    },
    CollectorSpec {
        name: "offcpu",
        default_enabled: false,
        section: "collectors.offcpu",
        loads: "sched_switch as a BTF or classic tracepoint (stacks and state at every switch-out, time at every switch-in)",
        signals: &[Signal::OffCpuSeconds],
        commands: &["profile --off-cpu", "profile --wall"],
        advise: false,
        enabled: |c| c.offcpu.enabled,
        same_section: |a, b| a.offcpu == b.offcpu,
        start: start_offcpu,
    },
];

/// The collector called `name`.
pub fn get(name: &str) -> Option<&'static CollectorSpec> {
    COLLECTORS.iter().find(|c| c.name == name)
}

/// Names of the collectors `advise` samples by default, sorted.
pub fn advise_names() -> Vec<&'static str> {
    let mut names: Vec<&'static str> = COLLECTORS
        .iter()
        .filter(|c| c.advise)
        .map(|c| c.name)
        .collect();
    names.sort_unstable();
    names
}

fn start_cpu(c: &CollectorsConfig) -> Result<Arc<dyn Source>, String> {
    let source = cpu::CpuSource::start(&c.cpu).map_err(|e| e.to_string())?;
    tracing::info!(
        collector = "cpu",
        frequency_hz = c.cpu.frequency_hz,
        window_seconds = c.cpu.window.as_secs_f64(),
        top = c.cpu.top,
        cpus = source.cpus(),
        "collector attached"
    );
    Ok(Arc::new(source))
}

fn start_block(c: &CollectorsConfig) -> Result<Arc<dyn Source>, String> {
    let source = block::BlockSource::start(&c.block).map_err(|e| e.to_string())?;
    tracing::info!(
        collector = "block",
        devices = ?c.block.devices,
        queue_time = c.block.queue_time,
        "collector attached"
    );
    Ok(Arc::new(source))
}

fn start_tcp(c: &CollectorsConfig) -> Result<Arc<dyn Source>, String> {
    let source = tcp::TcpSource::start(&c.tcp).map_err(|e| e.to_string())?;
    tracing::info!(
        collector = "tcp",
        ports = ?c.tcp.ports,
        max_ports = c.tcp.max_ports,
        "collector attached"
    );
    Ok(Arc::new(source))
}

fn start_leaks(c: &CollectorsConfig) -> Result<Arc<dyn Source>, String> {
    let source = leaks::LeaksSource::start(&c.leaks).map_err(|e| e.to_string())?;
    tracing::info!(
        collector = "leaks",
        processes = ?c.leaks.processes,
        sample_every = c.leaks.sample_every,
        "collector started; attaching to matching processes"
    );
    Ok(Arc::new(source))
}

fn start_offcpu(c: &CollectorsConfig) -> Result<Arc<dyn Source>, String> {
    let source = offcpu::OffCpuSource::start(&c.offcpu).map_err(|e| e.to_string())?;
    tracing::info!(
        collector = "offcpu",
        tracepoints = source.tracepoints().name(),
        window_seconds = c.offcpu.window.as_secs_f64(),
        top = c.offcpu.top,
        min_block_us = c.offcpu.min_block.as_micros() as u64,
        "collector attached"
    );
    Ok(Arc::new(source))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{COLLECTOR_NAMES, Config};

    #[test]
    fn the_table_agrees_with_the_configuration_and_the_signals() {
        let names: Vec<&str> = COLLECTORS.iter().map(|c| c.name).collect();
        assert_eq!(names, COLLECTOR_NAMES);
        let defaults = Config::parse("", std::path::Path::new("t.toml")).unwrap();
        let on: Vec<&str> = COLLECTORS
            .iter()
            .filter(|c| c.default_enabled)
            .map(|c| c.name)
            .collect();
        assert_eq!(on, defaults.enabled_collectors());
        for c in COLLECTORS {
            assert_eq!((c.enabled)(&defaults.collectors), c.default_enabled);
            assert_eq!(c.section, format!("collectors.{}", c.name));
            for s in c.signals {
                assert_eq!(s.collector(), c.name, "{s}");
            }
        }
        for s in Signal::ALL {
            assert!(get(s.collector()).is_some_and(|c| c.signals.contains(&s)));
        }
        assert_eq!(advise_names(), ["block", "cpu", "tcp"]);
    }
}
