//! Logging: installs `env_logger` with our two line formats, `text` and `json` (one object per line),
//! at the level from the configuration. Owns the line format only; knows nothing of what is logged.
//!
//! Records carry structured fields as `log` key-values, with these names everywhere (SPEC.md §9):
//!
//! | field        | meaning                                                             |
//! |--------------|---------------------------------------------------------------------|
//! | `component`  | the part doing the work: `scanner`, `updater`, `registry`, `docker`, `api`, `scheduler`, `daemon` |
//! | `container`  | container name                                                      |
//! | `image`      | image reference as the container names it                          |
//! | `digest`     | a manifest digest (`sha256:...`)                                    |
//! | `action`     | the step: `check`, `pull`, `stop`, `rename`, `create`, `start`, `rollback`, ... |
//! | `durationMs` | elapsed milliseconds, as a number                                   |
//!
//! ```
//! log::info!(component = "updater", container = "web", image = "nginx:1.27", durationMs = 812u64;
//!            "updated");
//! ```
//! gives, in `text`:
//! `2026-11-29T06:30:00.123Z INFO updater: updated component=updater container=web image=nginx:1.27 durationMs=812`
//! and in `json`:
//! `{"ts":"2026-11-29T06:30:00.123Z","level":"info","target":"updater","msg":"updated","component":"updater",...}`.
//!
//! Timestamps are UTC with milliseconds. The level applies to this crate; other crates (HTTP, TLS)
//! log at `warn` at most unless the level is `trace`. `RUST_LOG` is not read: the level is
//! `logging.level`. Lines go to stderr (stdout belongs to command output such as `check --json`).

use std::io::Write as _;

use log::kv::{Key, Value, VisitSource};
use log::{LevelFilter, Record};

use crate::config::{LogFormat, LoggingConfig};

/// Structured field names (see the module doc).
pub mod fields {
    pub const COMPONENT: &str = "component";
    pub const CONTAINER: &str = "container";
    pub const IMAGE: &str = "image";
    pub const DIGEST: &str = "digest";
    pub const ACTION: &str = "action";
    pub const DURATION_MS: &str = "durationMs";
}

/// Installs the logger for the daemon. A second call does nothing (the first logger stays).
pub fn init(cfg: &LoggingConfig) {
    install(cfg.level, cfg.format);
}

/// Installs a `text` logger for one-shot commands (`check`, `update`, `list`, `config`).
pub fn init_for_cli(level: LevelFilter) {
    install(level, LogFormat::Text);
}

fn install(level: LevelFilter, format: LogFormat) {
    let others = if level == LevelFilter::Trace {
        LevelFilter::Trace
    } else {
        level.min(LevelFilter::Warn)
    };
    let mut builder = env_logger::Builder::new();
    builder
        .filter_level(others)
        .filter_module("watch_docker", level)
        .target(env_logger::Target::Stderr)
        .format(move |buf, record| {
            let line = format_line(format, jiff::Timestamp::now(), record);
            writeln!(buf, "{line}")
        });
    // Err only when a logger is already installed (tests, a second init): keep that one.
    let _ = builder.try_init();
}

/// One log line (without the newline) for `record` at time `ts`; pure, so the formats are tested.
pub fn format_line(format: LogFormat, ts: jiff::Timestamp, record: &Record<'_>) -> String {
    let ts = format!("{ts:.3}");
    let target = short_target(record.target());
    let msg = record.args().to_string();
    let mut kvs = Collect(Vec::new());
    // A failing visitor only truncates the fields; the line is still written.
    let _ = record.key_values().visit(&mut kvs);
    match format {
        LogFormat::Text => {
            let mut out = format!(
                "{ts} {} {target}: {}",
                record.level(),
                escape_controls(&msg)
            );
            for (key, value) in &kvs.0 {
                out.push(' ');
                out.push_str(key);
                out.push('=');
                match value {
                    Field::Str(s) => out.push_str(&text_value(s)),
                    Field::Raw(s) => out.push_str(s),
                }
            }
            out
        }
        LogFormat::Json => {
            let level = record.level().as_str().to_ascii_lowercase();
            let mut out = String::from("{");
            push_json(&mut out, "ts", &json_str(&ts));
            push_json(&mut out, "level", &json_str(&level));
            push_json(&mut out, "target", &json_str(target));
            push_json(&mut out, "msg", &json_str(&msg));
            for (key, value) in &kvs.0 {
                // A field may not shadow the fixed ones.
                let key = if matches!(key.as_str(), "ts" | "level" | "target" | "msg") {
                    format!("kv.{key}")
                } else {
                    key.clone()
                };
                let value = match value {
                    Field::Str(s) => json_str(s),
                    Field::Raw(s) => s.clone(),
                };
                push_json(&mut out, &key, &value);
            }
            out.push('}');
            out
        }
    }
}

/// `watch_docker::registry::client` → `registry::client`: the crate name adds nothing.
fn short_target(target: &str) -> &str {
    target.strip_prefix("watch_docker::").unwrap_or(target)
}

enum Field {
    Str(String),
    /// Numbers and booleans: the same text in both formats, unquoted in JSON.
    Raw(String),
}

struct Collect(Vec<(String, Field)>);

impl<'kvs> VisitSource<'kvs> for Collect {
    fn visit_pair(&mut self, key: Key<'kvs>, value: Value<'kvs>) -> Result<(), log::kv::Error> {
        let field = if let Some(b) = value.to_bool() {
            Field::Raw(b.to_string())
        } else if let Some(n) = value.to_u64() {
            Field::Raw(n.to_string())
        } else if let Some(n) = value.to_i64() {
            Field::Raw(n.to_string())
        } else if let Some(x) = value.to_f64().filter(|x| x.is_finite()) {
            Field::Raw(x.to_string())
        } else {
            Field::Str(value.to_string())
        };
        self.0.push((key.as_str().to_string(), field));
        Ok(())
    }
}

fn json_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_string())
}

fn push_json(out: &mut String, key: &str, value: &str) {
    if out.len() > 1 {
        out.push(',');
    }
    out.push_str(&json_str(key));
    out.push(':');
    out.push_str(value);
}

/// Keeps one record on one line in `text`.
fn escape_controls(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_string();
    }
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// A `text` field value, quoted (Rust string escaping) when it would be ambiguous bare.
fn text_value(s: &str) -> String {
    let bare = !s.is_empty()
        && !s
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '"' || c == '=');
    if bare {
        s.to_string()
    } else {
        format!("{s:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use log::Level;

    fn ts() -> jiff::Timestamp {
        "2026-11-29T06:30:00.123456Z".parse().expect("timestamp")
    }

    fn line(
        format: LogFormat,
        level: Level,
        target: &str,
        msg: &str,
        kvs: &[(&str, Value<'_>)],
    ) -> String {
        format_line(
            format,
            ts(),
            &Record::builder()
                .level(level)
                .target(target)
                .args(format_args!("{msg}"))
                .key_values(&kvs)
                .build(),
        )
    }

    #[test]
    fn text_lines() {
        let kvs = [
            ("component", Value::from("scanner")),
            ("container", Value::from("web")),
            ("image", Value::from("nginx:1.27")),
        ];
        assert_eq!(
            line(LogFormat::Text, Level::Info, "watch_docker::scanner", "message", &kvs),
            "2026-11-29T06:30:00.123Z INFO scanner: message component=scanner container=web image=nginx:1.27"
        );
        let kvs = [
            ("durationMs", Value::from(812u64)),
            ("ok", Value::from(true)),
            ("delta", Value::from(-3i64)),
            ("error", Value::from("tag \"x\" not found")),
            ("empty", Value::from("")),
        ];
        assert_eq!(
            line(
                LogFormat::Text,
                Level::Warn,
                "ureq::pool",
                "two\nlines",
                &kvs
            ),
            r#"2026-11-29T06:30:00.123Z WARN ureq::pool: two\nlines durationMs=812 ok=true delta=-3 error="tag \"x\" not found" empty="""#
        );
    }

    #[test]
    fn json_lines() {
        let kvs = [
            ("component", Value::from("updater")),
            ("digest", Value::from("sha256:abc")),
            ("durationMs", Value::from(5u64)),
            ("rolledBack", Value::from(false)),
            ("ratio", Value::from(0.5f64)),
            ("msg", Value::from("shadow")),
        ];
        let got = line(
            LogFormat::Json,
            Level::Error,
            "watch_docker::updater",
            "update \"web\" failed\n",
            &kvs,
        );
        assert_eq!(
            got,
            r#"{"ts":"2026-11-29T06:30:00.123Z","level":"error","target":"updater","msg":"update \"web\" failed\n","component":"updater","digest":"sha256:abc","durationMs":5,"rolledBack":false,"ratio":0.5,"kv.msg":"shadow"}"#
        );
        let parsed: serde_json::Value = serde_json::from_str(&got).expect("valid JSON");
        assert_eq!(parsed["durationMs"], 5);
        // Values captured by Display are strings.
        let err = std::io::Error::other("boom");
        let kvs = [
            ("error", Value::from_display(&err)),
            ("nan", Value::from(f64::NAN)),
        ];
        let got = line(LogFormat::Json, Level::Debug, "x", "", &kvs);
        assert_eq!(
            got,
            r#"{"ts":"2026-11-29T06:30:00.123Z","level":"debug","target":"x","msg":"","error":"boom","nan":"NaN"}"#
        );
    }
}
