//! Logging: readable text in dev, one JSON object per line in prod, always on stderr so
//! commands that print documents to stdout stay clean.

use tracing::{Level, Metadata};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::settings::{LogFormat, Settings};

/// Libraries whose debug and trace output prints wire data that can carry secrets:
/// tungstenite logs every WebSocket frame it reads or writes (a chat frame's `api_key`,
/// `memory_key`, a `?token=`), and reqwest's verbose connection logging prints request
/// bytes (the provider's `Authorization` header). Above `info` they are dropped whatever
/// the filter says. (hyper logs no header values and h2 leaves header fields and data out
/// of its frame `Debug`; poem and sqlx log no bodies or bound values.)
const WIRE_TARGETS: &[&str] = &[
    "tungstenite",
    "tokio_tungstenite",
    "reqwest::connect::verbose",
];

/// Dropped at every level: sqlx's PostgreSQL URL parser warns about a parameter it does
/// not know with its value, and `sslpassword` is one it does not know.
const ALWAYS_SILENT: &[&str] = &["sqlx_postgres::options"];

/// Whether `meta` may be logged at all: the part of the filter no `RUST_LOG` can lift.
pub fn may_log(meta: &Metadata<'_>) -> bool {
    let target = meta.target();
    let under = |prefix: &&str| {
        target
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
    };
    if ALWAYS_SILENT.iter().any(under) {
        return false;
    }
    !WIRE_TARGETS.iter().any(under) || *meta.level() <= Level::INFO
}

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
    // `may_log` is a second, global filter beside the user's: an event must pass both.
    let result = match format {
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .finish()
            .with(filter_fn(may_log))
            .try_init(),
        LogFormat::Text | LogFormat::Auto => {
            // Colour only on a terminal: escape codes in a log file are noise.
            let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
            builder
                .with_target(false)
                .with_ansi(ansi)
                .finish()
                .with(filter_fn(may_log))
                .try_init()
        }
    };
    // Already installed (a second Application in one test process): keep the first.
    let _ = result;
}
