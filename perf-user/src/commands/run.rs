//! `run`: configuration from file and flags, then the daemon until a signal.

use anyhow::Context as _;
use std::path::Path;

use crate::{
    cli::RunArgs,
    collectors::cpu::MAX_FREQUENCY_HZ,
    config::{self, Config, ConfigError, MAX_TOP},
    daemon,
};

/// Runs `run`.
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let config = effective_config(&args)?;
    // Checked here too, so that a bad file is one error before anything starts.
    let web = match &config.exporter.web_config_file {
        Some(path) => Some(daemon::web::Loaded::load(path)?),
        None => None,
    };
    if args.check_config {
        let source = args.config.as_deref().map_or_else(
            || "built-in defaults".to_string(),
            |p| p.display().to_string(),
        );
        println!("configuration OK ({source}): {}", config.summary());
        if let (Some(path), Some(web)) = (&config.exporter.web_config_file, &web) {
            println!("web config OK ({}): {}", path.display(), web.summary());
        }
        return Ok(());
    }
    daemon::log::init(config.log.format, config.log.level)?;
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        config = args.config.as_deref().map(|p| p.display().to_string()).unwrap_or_default(),
        summary = %config.summary(),
        "perf-user daemon starting"
    );
    let path = args.config.clone();
    let reload_from = daemon::ReloadFrom {
        path,
        // As at start-up: the file again, then the same flags on top.
        load: Box::new(move || effective_config(&args)),
    };
    let result = daemon::run(config, reload_from, shutdown_signal()).await;
    match &result {
        Ok(()) => tracing::info!("perf-user daemon stopped"),
        Err(e) => tracing::error!(error = %e, "perf-user daemon failed"),
    }
    result.context("perf-user run failed")
}

/// The file's configuration (or the defaults) with the flags applied, checked.
pub fn effective_config(args: &RunArgs) -> Result<Config, ConfigError> {
    let mut config = match &args.config {
        Some(path) => {
            let mut config = Config::load(path)?;
            // Relative to the configuration file, as paths in the web config
            // file are to it.
            if let Some(web) = &mut config.exporter.web_config_file
                && web.is_relative()
            {
                *web = path.parent().unwrap_or(Path::new(".")).join(&*web);
            }
            config
        }
        None => Config::default(),
    };
    apply_flags(&mut config, args)?;
    let origin = args
        .config
        .as_deref()
        .unwrap_or(Path::new("<defaults and flags>"));
    config.check(origin)?;
    Ok(config)
}

/// Flags win over the file.
fn apply_flags(config: &mut Config, args: &RunArgs) -> Result<(), ConfigError> {
    let flag_error = |flag: &str, message: String| ConfigError::Conflict {
        path: flag.into(),
        message,
    };
    if let Some(listen) = args.listen {
        config.exporter.listen = listen;
    }
    if args.allow_non_loopback {
        config.exporter.allow_non_loopback = true;
    }
    if let Some(web) = &args.web_config_file {
        config.exporter.web_config_file = Some(web.clone());
    }
    if let Some(format) = args.log_format {
        config.log.format = format;
    }
    if let Some(level) = args.log_level {
        config.log.level = level;
    }
    if let Some(names) = &args.collectors {
        config.only_collectors(names)?;
    }
    let cpu = &mut config.collectors.cpu;
    if let Some(hz) = args.cpu_frequency {
        if !(1..=MAX_FREQUENCY_HZ).contains(&hz) {
            return Err(flag_error(
                "--cpu-frequency",
                format!("must be from 1 to {MAX_FREQUENCY_HZ} Hz, not {hz}"),
            ));
        }
        cpu.frequency_hz = hz;
    }
    if let Some(window) = args.cpu_window {
        cpu.window = config::check_window(window).map_err(|m| flag_error("--cpu-window", m))?;
    }
    if let Some(top) = args.cpu_top {
        if !(1..=MAX_TOP).contains(&top) {
            return Err(flag_error(
                "--cpu-top",
                format!("must be from 1 to {MAX_TOP}, not {top}"),
            ));
        }
        cpu.top = top;
    }
    Ok(())
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (mut int, mut term) = match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(i), Ok(t)) => (i, t),
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!(error = %e, "cannot install signal handlers; stop with SIGKILL");
            return std::future::pending().await;
        }
    };
    let name = tokio::select! {
        _ = int.recv() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    };
    tracing::info!(signal = name, "stopping: detaching collectors");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_file() {
        let dir = std::env::temp_dir().join(format!("perf-user-run-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.toml");
        std::fs::write(&file, "[collectors.cpu]\nfrequency_hz = 99\ntop = 7\n").unwrap();
        let args = RunArgs {
            config: Some(file),
            cpu_frequency: Some(19),
            ..RunArgs::default()
        };
        let c = effective_config(&args).unwrap();
        assert_eq!(c.collectors.cpu.frequency_hz, 19);
        assert_eq!(c.collectors.cpu.top, 7);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_flags_are_refused() {
        let args = RunArgs {
            cpu_frequency: Some(0),
            ..RunArgs::default()
        };
        let e = effective_config(&args).unwrap_err().to_string();
        assert!(e.contains("--cpu-frequency"), "{e}");
        let args = RunArgs {
            listen: Some("0.0.0.0:9464".parse().unwrap()),
            ..RunArgs::default()
        };
        let e = effective_config(&args).unwrap_err().to_string();
        assert!(e.contains("--allow-non-loopback"), "{e}");
        let args = RunArgs {
            collectors: Some(vec!["gpu".into()]),
            ..RunArgs::default()
        };
        let e = effective_config(&args).unwrap_err().to_string();
        assert!(e.contains("unknown collector \"gpu\""), "{e}");
    }
}
