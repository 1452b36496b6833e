//! Logging: readable text in dev, one JSON object per line in prod, always on stderr so
//! commands that print documents to stdout stay clean.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

use crate::settings::{LogFormat, Settings};

/// Installs the global subscriber for these settings. Later calls are ignored (tests).
pub fn init(settings: &Settings) {
    init_with_writer(
        settings.effective_log_format(),
        &settings.log_level,
        std::io::stderr,
    );
}

/// Installs the global subscriber writing to `writer`.
pub fn init_with_writer<W>(format: LogFormat, filter: &str, writer: W)
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    let result = match format {
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .try_init(),
        LogFormat::Text | LogFormat::Auto => {
            // Colour only on a terminal: escape codes in a log file are noise.
            let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
            builder.with_target(false).with_ansi(ansi).try_init()
        }
    };
    // Already installed (a second Application in one test process): keep the first.
    let _ = result;
}
