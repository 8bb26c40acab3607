//! Logs: `tracing` events on stderr, as readable lines or as JSON lines for log shippers.

use clap::ValueEnum;
use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, fields flattened.
    Json,
}

/// What is logged without `EMOSTREAM_LOG`: information and warnings, and the one line per
/// closed window (a debug-level event on its own target, so it can be silenced alone).
pub const DEFAULT_FILTER: &str = "info,emostream::windows=debug";

/// Installs the global subscriber. `EMOSTREAM_LOG` (a `tracing` filter such as `debug` or
/// `info,emostream::windows=off`) overrides [`DEFAULT_FILTER`].
pub fn init(format: LogFormat) {
    let (filter, bad_filter) = match std::env::var("EMOSTREAM_LOG") {
        Ok(spec) => match EnvFilter::try_new(&spec) {
            Ok(filter) => (filter, None),
            Err(e) => (EnvFilter::new(DEFAULT_FILTER), Some((spec, e))),
        },
        Err(_) => (EnvFilter::new(DEFAULT_FILTER), None),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
    if let Some((spec, e)) = bad_filter {
        tracing::warn!(
            "EMOSTREAM_LOG={spec:?} is not a valid filter ({e}); using {DEFAULT_FILTER:?}"
        );
    }
}
