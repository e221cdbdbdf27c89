//! Diagnostics through `tracing`, to stderr (stdout stays for results: tables, generated
//! text, JSON).
//!
//! Without `RUST_LOG`, the engine's own crates speak at `info` and everything else at
//! `warn`, as plain lines (`loading ...`, `ceilings ...`; warnings start with
//! `warning:`), which is what a person at a terminal wants to read. With `RUST_LOG` set
//! (`RUST_LOG=debug`, `RUST_LOG=engine_model=trace,info`), its filter applies and each
//! line carries tracing's usual time stamp, level and target, which is what a log wants.
//! The plain format is a small hand-written `FormatEvent` because tracing-subscriber's
//! compact format still prints a level column on every line.

use std::fmt;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::{FormatEvent, FormatFields, Writer};
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

/// Our crates (`engine`, `engine_model`, `engine_profiler`, ...) at info, others at warn.
const DEFAULT_FILTER: &str = "warn,engine=info";

/// Install the subscriber; a bad `RUST_LOG` is reported and the default used.
pub fn init() {
    let from_env = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty());
    let builder = tracing_subscriber::fmt().with_writer(std::io::stderr);
    if let Some(spec) = from_env {
        match EnvFilter::try_new(&spec) {
            Ok(filter) => {
                builder.with_env_filter(filter).init();
                return;
            }
            Err(e) => eprintln!(
                "warning: RUST_LOG={spec:?} is not a valid filter ({e}); using {DEFAULT_FILTER:?}"
            ),
        }
    }
    builder
        .with_env_filter(EnvFilter::new(DEFAULT_FILTER))
        .event_format(Plain)
        .init();
}

/// Info lines as they are; other levels prefixed (`warning: `, `error: `, `debug: `).
struct Plain;

impl<S, N> FormatEvent<S, N> for Plain
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        match *event.metadata().level() {
            Level::INFO => {}
            Level::WARN => write!(writer, "warning: ")?,
            Level::ERROR => write!(writer, "error: ")?,
            _ => write!(
                writer,
                "{}: ",
                event.metadata().level().as_str().to_lowercase()
            )?,
        }
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}
