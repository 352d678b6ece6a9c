//! Log set-up: JSON lines for machines, plain lines for people.
//!
//! JSON lines carry a stable set of keys: `timestamp` (RFC 3339, UTC),
//! `level` (ERROR, WARN, INFO, DEBUG, TRACE), `target` (the Rust module),
//! `message`, and the event's own fields, such as `collector`, `error`,
//! `listen`, `samples`. docs/metrics.md lists them.

use std::io::IsTerminal as _;

use tracing_subscriber::{EnvFilter, fmt};

use crate::config::{LogFormat, LogLevel};

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// RUST_LOG did not parse.
    #[error(
        "RUST_LOG={value:?} is not a valid filter ({source}); e.g. RUST_LOG=info or RUST_LOG=perf_user=debug"
    )]
    Filter {
        /// The variable's value.
        value: String,
        /// The parser's complaint.
        #[source]
        source: tracing_subscriber::filter::ParseError,
    },
    /// A global subscriber was already installed.
    #[error("logging was already set up: {0}")]
    Init(String),
}

/// The format actually used: `auto` becomes text on a terminal, JSON otherwise.
pub fn resolve(format: LogFormat, stderr_is_terminal: bool) -> LogFormat {
    match format {
        LogFormat::Auto if stderr_is_terminal => LogFormat::Text,
        LogFormat::Auto => LogFormat::Json,
        other => other,
    }
}

fn level_name(level: LogLevel) -> &'static str {
    match level {
        LogLevel::Error => "error",
        LogLevel::Warn => "warn",
        LogLevel::Info => "info",
        LogLevel::Debug => "debug",
        LogLevel::Trace => "trace",
    }
}

/// Installs the global subscriber, writing to standard error.
pub fn init(format: LogFormat, level: LogLevel) -> Result<(), LogError> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(value) if !value.is_empty() => {
            EnvFilter::try_new(&value).map_err(|source| LogError::Filter { value, source })?
        }
        _ => EnvFilter::new(level_name(level)),
    };
    let terminal = std::io::stderr().is_terminal();
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let result = match resolve(format, terminal) {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_target(true)
            .try_init(),
        _ => builder.with_ansi(terminal).with_target(false).try_init(),
    };
    result.map_err(|e| LogError::Init(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_follows_the_terminal() {
        assert_eq!(resolve(LogFormat::Auto, true), LogFormat::Text);
        assert_eq!(resolve(LogFormat::Auto, false), LogFormat::Json);
        assert_eq!(resolve(LogFormat::Json, true), LogFormat::Json);
        assert_eq!(resolve(LogFormat::Text, false), LogFormat::Text);
    }
}
