//! Log set-up shared by the binaries.
//!
//! - Under systemd with stderr connected to the journal (`JOURNAL_STREAM` set), events go to
//!   journald with their structured fields (`F_…` fields, `SYSLOG_IDENTIFIER` = the binary name).
//!   If the journald socket cannot be reached, readable lines go to stderr instead.
//! - Otherwise readable lines go to stderr, with ANSI colours only when stderr is a terminal.
//! - The filter is `RUST_LOG` when set, else the configured level; [`LogControl::set_level`]
//!   changes the configured level live (the edge does it on SIGHUP).

use std::io::IsTerminal;
use std::sync::OnceLock;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::Registry;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter};

/// The levels a configuration may name without a target.
const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

/// Changes the log filter of the running process.
#[derive(Clone, Debug)]
pub struct LogControl {
    handle: reload::Handle<EnvFilter, Registry>,
    /// `RUST_LOG` was set at start-up: it stays in force over configured levels.
    env_override: bool,
    /// Where events go.
    sink: LogSink,
}

/// Where [`init`] sends events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogSink {
    /// journald, with structured fields.
    Journald,
    /// Readable lines on stderr.
    Stderr,
}

impl LogControl {
    /// Replaces the configured level (`info`, `jmdc_edge=debug,warn`, …). When `RUST_LOG` was set
    /// at start-up it stays in force and this only checks `level`. An invalid level is an error
    /// and the filter is left unchanged.
    pub fn set_level(&self, level: &str) -> Result<(), String> {
        let filter = parse_level(level)?;
        if self.env_override {
            return Ok(());
        }
        self.handle
            .reload(filter)
            .map_err(|e| format!("cannot change the log level: {e}"))
    }

    /// Whether `RUST_LOG` overrides configured levels.
    pub fn env_override(&self) -> bool {
        self.env_override
    }

    /// Where events go.
    pub fn sink(&self) -> LogSink {
        self.sink
    }
}

/// Checks a configured level: comma-separated directives, each a level (`info`) or
/// `target=level` (`jmdc_edge=debug`). A bare word that is not a level (a typo such as `infoo`)
/// is refused although `EnvFilter` would read it as a target name.
pub fn parse_level(level: &str) -> Result<EnvFilter, String> {
    for directive in level.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let bare = !directive.contains(['=', '[', ':']);
        if bare && !LEVELS.contains(&directive.to_ascii_lowercase().as_str()) {
            return Err(format!(
                "log level `{directive}` is not one of {} (or target=level)",
                LEVELS.join(", ")
            ));
        }
    }
    EnvFilter::try_new(level).map_err(|e| format!("log level `{level}`: {e}"))
}

static CONTROL: OnceLock<LogControl> = OnceLock::new();

/// Installs the global subscriber (see the module documentation) with `level` unless `RUST_LOG`
/// is set. Only the first call installs anything; later calls return the same control. An
/// invalid `level` falls back to `info` with a warning.
pub fn init(level: &str) -> LogControl {
    CONTROL.get_or_init(|| install(level)).clone()
}

fn install(level: &str) -> LogControl {
    let (filter, env_override, bad_level) = initial_filter(level);
    let (filter, handle) = reload::Layer::new(filter);
    let mut journald_error = None;
    let journald = if std::env::var_os("JOURNAL_STREAM").is_some_and(|v| !v.is_empty()) {
        match tracing_journald::layer() {
            Ok(layer) => Some(layer.with_syslog_identifier(binary_name())),
            Err(e) => {
                journald_error = Some(e);
                None
            }
        }
    } else {
        None
    };
    let sink = if journald.is_some() {
        LogSink::Journald
    } else {
        LogSink::Stderr
    };
    let stderr = journald.is_none().then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
    });
    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(journald)
        .with(stderr)
        .try_init()
        .is_ok();
    if installed {
        if let Some(e) = journald_error {
            tracing::warn!(error = %e, "JOURNAL_STREAM is set but journald cannot be reached; logging to stderr");
        }
        if let Some(e) = bad_level {
            tracing::warn!(error = %e, "using log level info");
        }
    }
    LogControl {
        handle,
        env_override,
        sink,
    }
}

/// The start-up filter: `RUST_LOG` if set and valid, else `level`, else `info` (with the reason).
fn initial_filter(level: &str) -> (EnvFilter, bool, Option<String>) {
    if std::env::var_os("RUST_LOG").is_some() {
        if let Ok(filter) = EnvFilter::try_from_default_env() {
            return (filter, true, None);
        }
    }
    match parse_level(level) {
        Ok(filter) => (filter, false, None),
        Err(e) => (EnvFilter::new("info"), false, Some(e)),
    }
}

fn binary_name() -> String {
    std::env::args_os()
        .next()
        .as_deref()
        .and_then(|p| std::path::Path::new(p).file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "jmdc".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Collects formatted events.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().expect("lock")).into_owned()
        }
    }

    /// A local subscriber built the way [`install`] builds the global one, writing to `out`.
    fn local(level: &str, out: &Captured) -> (impl tracing::Subscriber, LogControl) {
        let (filter, handle) = reload::Layer::new(parse_level(level).expect("level"));
        let writer = out.clone();
        let subscriber = tracing_subscriber::registry().with(filter).with(
            tracing_subscriber::fmt::layer()
                .with_writer(move || writer.clone())
                .with_ansi(false),
        );
        let control = LogControl {
            handle,
            env_override: false,
            sink: LogSink::Stderr,
        };
        (subscriber, control)
    }

    #[test]
    fn set_level_changes_what_is_emitted() {
        let out = Captured::default();
        let (subscriber, control) = local("info", &out);
        tracing::subscriber::with_default(subscriber, || {
            tracing::debug!("hidden-before");
            tracing::info!(answer = 42, "shown-before");
            control.set_level("debug").expect("debug is valid");
            tracing::debug!("shown-after");
            control.set_level("warn").expect("warn is valid");
            tracing::info!("hidden-after");
            assert!(control.set_level("loud").is_err());
            tracing::info!("still-hidden");
            tracing::warn!("warned");
        });
        let text = out.text();
        assert!(!text.contains("hidden-before"), "{text}");
        assert!(
            text.contains("shown-before") && text.contains("answer=42"),
            "{text}"
        );
        assert!(text.contains("shown-after"), "{text}");
        assert!(!text.contains("hidden-after"), "{text}");
        assert!(!text.contains("still-hidden"), "{text}");
        assert!(text.contains("warned"), "{text}");
        assert!(!text.contains('\u{1b}'), "no ANSI colours: {text}");
    }

    #[test]
    fn levels_are_checked() {
        assert!(parse_level("info").is_ok());
        assert!(parse_level("WARN").is_ok());
        assert!(parse_level("jmdc_edge=debug,warn").is_ok());
        let e = parse_level("infoo").expect_err("typo");
        assert!(e.contains("infoo"), "{e}");
        assert!(parse_level("jmdc_edge=loud").is_err());
    }

    #[test]
    fn init_twice_returns_the_same_control() {
        let a = init("info");
        let b = init("debug");
        assert_eq!(a.sink(), b.sink());
        assert!(a.set_level("info").is_ok());
    }
}
