//! Builds the one tracing subscriber of the process.

use tracing_subscriber::{fmt, EnvFilter};

use crate::configuration::{LogFormat, LogSettings};

/// Installs the global subscriber. Later calls are ignored, so every test can call it.
pub fn init(settings: &LogSettings) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(settings.level.as_str()));
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match settings.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
