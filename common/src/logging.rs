//! Log setup shared by the binaries: plain lines or one JSON object per line (what Kubernetes
//! log pipelines read) on stderr, `RUST_LOG` to filter; and the lines of child processes (local
//! workers) passed on in the same format.

use std::io::Write;
use std::sync::OnceLock;

use tracing_subscriber::fmt::MakeWriter;

/// Environment variable that sets `--log-format`; local workers get the coordinator's through it.
pub const LOG_FORMAT_ENV: &str = "SIAMESE_LOG_FORMAT";

/// How log lines are written.
#[derive(
    clap::ValueEnum,
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, `message` and the event's fields.
    Json,
}

impl LogFormat {
    /// The flag's spelling.
    pub fn name(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

/// Writes one finished line where the logs go.
type RawWriter = Box<dyn Fn(&[u8]) + Send + Sync>;

/// What was installed: the format, the level where `RUST_LOG` is unset, and the raw writer.
static INSTALLED: OnceLock<(LogFormat, String, RawWriter)> = OnceLock::new();

/// Installs the global subscriber on stderr; `default_level` applies where `RUST_LOG` is unset.
pub fn init(format: LogFormat, default_level: &str) {
    init_with(format, default_level, std::io::stderr);
}

/// Installs the global subscriber writing through `writer` (e.g. one that pauses progress bars
/// while a line is written). A second call does nothing.
pub fn init_with<W>(format: LogFormat, default_level: &str, writer: W)
where
    W: for<'w> MakeWriter<'w> + Clone + Send + Sync + 'static,
{
    let raw = writer.clone();
    let raw: RawWriter = Box::new(move |line| {
        // A log line that cannot be written has nowhere else to go.
        let _ = raw.make_writer().write_all(line);
    });
    if INSTALLED
        .set((format, default_level.to_string(), raw))
        .is_err()
    {
        return;
    }
    // A RUST_LOG that does not parse is reported once the subscriber is up, not dropped
    // silently: whoever set it expects its level.
    let mut bad_filter = None;
    let filter = match std::env::var(tracing_subscriber::EnvFilter::DEFAULT_ENV) {
        Ok(value) => tracing_subscriber::EnvFilter::try_new(&value).unwrap_or_else(|e| {
            bad_filter = Some(format!("RUST_LOG={value:?} is not a log filter ({e})"));
            tracing_subscriber::EnvFilter::new(default_level)
        }),
        Err(_) => tracing_subscriber::EnvFilter::new(default_level),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    let installed = match format {
        LogFormat::Text => builder.try_init(),
        // Fields at the top level rather than under "fields": what log pipelines index.
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .try_init(),
    };
    if let Err(e) = installed {
        eprintln!("logging was already set up: {e}");
    }
    if let Some(why) = bad_filter {
        tracing::warn!("{why}; logging at {default_level}");
    }
}

/// The format the installed subscriber writes (text before [`init`]).
pub fn format() -> LogFormat {
    INSTALLED.get().map_or(LogFormat::Text, |(f, _, _)| *f)
}

/// The filter child processes should log with: `RUST_LOG` when set and valid, else this
/// process's default level (so `--quiet` quiets local workers too, and a bad `RUST_LOG` is
/// reported once, not once a worker).
pub fn child_filter() -> String {
    let usable = std::env::var(tracing_subscriber::EnvFilter::DEFAULT_ENV)
        .ok()
        .filter(|v| tracing_subscriber::EnvFilter::try_new(v).is_ok());
    usable.unwrap_or_else(|| {
        INSTALLED
            .get()
            .map_or_else(|| "info".to_string(), |(_, level, _)| level.clone())
    })
}

/// Passes on a line a child process (a local worker) logged, marked with `source`: prefixed in
/// text, as a `source` field in JSON, so that every line of the coordinator's stderr parses.
pub fn forward_line(source: &str, line: &str) {
    let text = match format() {
        LogFormat::Text => format!("{source} {line}\n"),
        LogFormat::Json => format!("{}\n", json_line(source, line)),
    };
    match INSTALLED.get() {
        Some((_, _, raw)) => raw(text.as_bytes()),
        None => eprint!("{text}"),
    }
}

/// `line` as a JSON object with `source` added: the child's own object when it logged JSON,
/// else a new one holding the line as its message (a panic, say).
fn json_line(source: &str, line: &str) -> String {
    match serde_json::from_str::<serde_json::Value>(line) {
        Ok(serde_json::Value::Object(mut map)) => {
            map.insert("source".into(), source.into());
            serde_json::Value::Object(map).to_string()
        }
        _ => serde_json::json!({ "level": "INFO", "source": source, "message": line }).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn child_lines_become_json_objects_naming_their_source() {
        let own: serde_json::Value =
            serde_json::from_str(&json_line("[rank 1]", r#"{"level":"WARN","message":"m"}"#))
                .unwrap();
        assert_eq!(own["source"], "[rank 1]");
        assert_eq!(own["level"], "WARN");
        let plain: serde_json::Value =
            serde_json::from_str(&json_line("[rank 0]", "thread 'main' panicked")).unwrap();
        assert_eq!(plain["message"], "thread 'main' panicked");
        assert_eq!(plain["source"], "[rank 0]");
    }
}
