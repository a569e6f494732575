//! JSON log lines (`--log-format json`): one JSON object per line, for log pipelines
//! (journald's `MESSAGE`, Loki, Elasticsearch, `jq`).
//!
//! # One line
//!
//! ```json
//! {"time":"2026-05-01T12:00:00.123Z","level":"INFO","id":7,"event":"open","message":"open 203.0.113.7:51234 → 127.0.0.1:5900 via RFC 6455","peer":"203.0.113.7:51234","target":"127.0.0.1:5900"}
//! ```
//!
//! - `time`: RFC 3339 in UTC with milliseconds (env_logger's timestamp, the same instant the
//!   text format prints);
//! - `level`: `ERROR`, `WARN`, `INFO`, `DEBUG` or `TRACE`, spelled as in the text lines;
//! - `id` and `event`, when the log site gives them: the connection id and a short name for
//!   what happened (`open`, `close`, `refused`, …), first so that a pipeline can index them;
//! - `message`: the text line's message, exactly;
//! - every other structured field of the log site, in the order it was written, with its type:
//!   numbers stay numbers, booleans booleans, values captured with `%` (Display) or `?` (Debug)
//!   are strings.
//!
//! The fields are the `log` crate's key-values (its `kv` feature): a log site writes
//! `info!(id = 7, event = "open", peer:% = peer; "open {peer} → …")`, and the value of each
//! field is serialized by `serde` (the `kv_serde` feature) straight into the line. A field
//! named like one of the fixed keys (`time`, `level`, `message`) is written as `field.time`
//! etc., so it cannot overwrite them.
//!
//! # Text lines and JSON lines carry the same fields
//!
//! A log site writes each fact as a field *and* mentions it in its message: the message is
//! the sentence a person reads in the text format, the fields are the same facts, typed, for
//! machines. The rule for log sites is "every value interpolated into the message is also a
//! field", so switching the format loses nothing, and neither format has information the
//! other lacks. The one exception is the connection id: it is the field `id`, and the text
//! format prints it as its `[#id]` prefix (read with [`connection_id`]) instead of every
//! message repeating it, so the JSON `message` does not carry `[#7]` either.
//!
//! # Client text
//!
//! Messages and fields often contain client text (paths, header values, user names). JSON
//! strings escape quotes, backslashes and the control characters below U+0020 (`\n`,
//! `\u001b`, …; RFC 8259 §7), so such text cannot break the line or forge another one;
//! `serde_json` does that. (DEL, U+007F, is valid unescaped in JSON and is written as it is;
//! see [`configure`]. The text format needs the escape helper of `logging.rs` for the same
//! guarantee.)
//!
//! # How the proxy uses this
//!
//! `--log-format json` (default `text`) makes `main`'s logger setup call
//! `json_log::configure(&mut builder)` instead of `builder.format(…)` with the text format;
//! nothing else changes (filters, `-v`/`-d`, `RUST_LOG`). The text format prints
//! `connection_id(record)` as `[#id]` before the message. Log sites gain fields as they are
//! converted (`id`, `event`, then what their message mentions).

use std::io::{self, Write};

use env_logger::fmt::Formatter;
use log::Record;
use log::kv::{self, Key, Value, VisitSource};
use serde::ser::{SerializeMap, Serializer};

/// The keys every line has, in this order; fields with these names are renamed.
const FIXED_KEYS: [&str; 3] = ["time", "level", "message"];

/// The fields written right after `level`, when present.
const LEADING_FIELDS: [&str; 2] = ["id", "event"];

/// Sets `builder` up for JSON lines: this format, and bytes written as they are.
///
/// env_logger's default write style strips what looks like terminal escape sequences when
/// the output is not a terminal, which would silently drop bytes of client text that
/// `serde_json` leaves as they are (DEL, `\u{7f}`). The JSON format writes no styles, so
/// passing everything through (`WriteStyle::Always`) changes nothing else.
pub fn configure(builder: &mut env_logger::Builder) -> &mut env_logger::Builder {
    builder
        .format(format)
        .write_style(env_logger::WriteStyle::Always)
}

/// The env_logger format function for JSON lines (see [`configure`]).
pub fn format(out: &mut Formatter, record: &Record<'_>) -> io::Result<()> {
    let time = out.timestamp_millis().to_string();
    write_line(out, &time, record)
}

/// Writes one record as one JSON object and a newline, with `time` as given.
pub fn write_line(out: &mut impl Write, time: &str, record: &Record<'_>) -> io::Result<()> {
    // One write for the whole line, so lines of different threads cannot interleave.
    let mut line = Vec::with_capacity(256);
    let mut serializer = serde_json::Serializer::new(&mut line);
    let mut map = serializer.serialize_map(None)?;
    map.serialize_entry("time", time)?;
    map.serialize_entry("level", record.level().as_str())?;
    let fields = record.key_values();
    for key in LEADING_FIELDS {
        if let Some(value) = fields.get(Key::from_str(key)) {
            map.serialize_entry(key, &value)?;
        }
    }
    map.serialize_entry("message", record.args())?;
    fields
        .visit(&mut OtherFields(&mut map))
        .map_err(io::Error::other)?;
    map.end()?;
    line.push(b'\n');
    out.write_all(&line)
}

/// The connection id field (`id = 7` at the log site), if the record has one.
pub fn connection_id(record: &Record<'_>) -> Option<u64> {
    record
        .key_values()
        .get(Key::from_str("id"))
        .and_then(|value| value.to_u64())
}

/// Writes the fields not written already, renaming those that would collide.
struct OtherFields<'m, M>(&'m mut M);

impl<'kvs, M: SerializeMap<Error = serde_json::Error>> VisitSource<'kvs> for OtherFields<'_, M> {
    fn visit_pair(&mut self, key: Key<'kvs>, value: Value<'kvs>) -> Result<(), kv::Error> {
        let name = key.as_str();
        if LEADING_FIELDS.contains(&name) {
            return Ok(());
        }
        let result = if FIXED_KEYS.contains(&name) {
            self.0.serialize_entry(&format!("field.{name}"), &value)
        } else {
            self.0.serialize_entry(name, &value)
        };
        result.map_err(kv::Error::boxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    use log::{Level, info, log, warn};
    use serde_json::{Map, Value as Json, json};

    /// A writer the tests can read back: what a real env_logger wrote through `format`.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        /// Every line written so far, each parsed as a JSON object.
        fn lines(&self) -> Vec<Map<String, Json>> {
            let bytes = self.0.lock().unwrap().clone();
            let text = String::from_utf8(bytes).unwrap();
            assert!(text.ends_with('\n'), "{text:?}");
            text.lines()
                .map(|line| match serde_json::from_str::<Json>(line) {
                    Ok(Json::Object(object)) => object,
                    other => panic!("not a JSON object: {line:?} ({other:?})"),
                })
                .collect()
        }
    }

    /// A real env_logger with the JSON format, writing into a `Captured`.
    fn json_logger() -> (env_logger::Logger, Captured) {
        let captured = Captured::default();
        let mut builder = env_logger::Builder::new();
        configure(&mut builder)
            .filter_level(log::LevelFilter::Trace)
            .target(env_logger::Target::Pipe(Box::new(captured.clone())));
        let logger = builder.build();
        // The `log!` macros check the global maximum level even with a `logger:` argument.
        log::set_max_level(log::LevelFilter::Trace);
        (logger, captured)
    }

    #[test]
    fn a_line_has_the_fixed_keys_then_the_fields_in_order() {
        let (logger, captured) = json_logger();
        let peer: std::net::SocketAddr = "203.0.113.7:51234".parse().unwrap();
        let target = "127.0.0.1:5900";
        info!(logger: logger, event = "open", id = 7, peer:% = peer, target, bytes = 1024u64,
              tls = false, ratio = 0.5; "open {peer} → {target}");
        let lines = captured.lines();
        assert_eq!(lines.len(), 1);
        let line = &lines[0];
        let mut keys: Vec<&str> = line.keys().map(String::as_str).collect();
        keys.sort_unstable();
        // (The order on the wire is checked below.)
        assert_eq!(
            keys,
            [
                "bytes", "event", "id", "level", "message", "peer", "ratio", "target", "time",
                "tls"
            ]
        );
        assert_eq!(line["level"], "INFO");
        assert_eq!(line["id"], 7);
        assert_eq!(line["event"], "open");
        assert_eq!(line["message"], "open 203.0.113.7:51234 → 127.0.0.1:5900");
        assert_eq!(line["peer"], "203.0.113.7:51234");
        assert_eq!(line["target"], target);
        assert_eq!(line["bytes"], 1024);
        assert_eq!(line["tls"], false);
        assert_eq!(line["ratio"], 0.5);

        let raw = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        let order: Vec<usize> = [
            "\"time\"",
            "\"level\"",
            "\"id\"",
            "\"event\"",
            "\"message\"",
            "\"peer\"",
            "\"target\"",
            "\"bytes\"",
            "\"tls\"",
            "\"ratio\"",
        ]
        .iter()
        .map(|key| raw.find(key).unwrap_or_else(|| panic!("{key} in {raw}")))
        .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{raw}");
    }

    #[test]
    fn time_is_rfc3339_with_milliseconds_in_utc() {
        let (logger, captured) = json_logger();
        warn!(logger: logger, "no fields at all");
        let line = &captured.lines()[0];
        let time = line["time"].as_str().unwrap();
        // 2026-05-01T12:00:00.123Z
        let bytes = time.as_bytes();
        assert_eq!(time.len(), 24, "{time}");
        for (i, c) in bytes.iter().enumerate() {
            let expected_digit = !matches!(i, 4 | 7 | 10 | 13 | 16 | 19 | 23);
            assert_eq!(c.is_ascii_digit(), expected_digit, "{time} at {i}");
        }
        assert_eq!(&time[4..5], "-");
        assert_eq!(&time[10..11], "T");
        assert_eq!(&time[19..20], ".");
        assert_eq!(&time[23..], "Z");
        assert_eq!(line["level"], "WARN");
        assert_eq!(line["message"], "no fields at all");
        assert!(!line.contains_key("id") && !line.contains_key("event"));
    }

    #[test]
    fn client_text_cannot_break_the_line() {
        let (logger, captured) = json_logger();
        let path = "/\"quoted\"\\back\nINFO forged line\r\u{1b}[31mred\u{0}\u{7f}\u{2028}é";
        info!(logger: logger, id = 1, path; "refused {path}");
        info!(logger: logger, id = 2, header:? = path; "next");
        let lines = captured.lines();
        assert_eq!(
            lines.len(),
            2,
            "a newline in client text is escaped, not a new line"
        );
        assert_eq!(lines[0]["path"], path, "the text survives exactly");
        assert_eq!(lines[0]["message"], format!("refused {path}"));
        assert_eq!(lines[1]["header"], format!("{path:?}"));
        let raw = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        assert!(
            !raw.contains('\u{1b}') && !raw.contains('\r') && !raw.contains('\0'),
            "{raw:?}"
        );
        assert_eq!(raw.matches('\n').count(), 2);
    }

    #[test]
    fn fields_named_like_fixed_keys_are_renamed() {
        let (logger, captured) = json_logger();
        log!(logger: logger, Level::Debug, time = "spoofed", level = "ERROR",
             message = "spoofed", id = 3; "real");
        let line = &captured.lines()[0];
        assert_eq!(line["level"], "DEBUG");
        assert_eq!(line["message"], "real");
        assert_ne!(line["time"], "spoofed");
        assert_eq!(line["field.time"], "spoofed");
        assert_eq!(line["field.level"], "ERROR");
        assert_eq!(line["field.message"], "spoofed");
        assert_eq!(line["id"], 3);
    }

    #[test]
    fn write_line_and_connection_id_on_a_plain_record() {
        let fields: &[(&str, Value)] =
            &[("id", Value::from(42u64)), ("event", Value::from("close"))];
        let record = Record::builder()
            .level(Level::Info)
            .args(format_args!("closed"))
            .key_values(&fields)
            .build();
        assert_eq!(connection_id(&record), Some(42));
        let mut out = Vec::new();
        write_line(&mut out, "2026-05-01T12:00:00.000Z", &record).unwrap();
        assert_eq!(
            serde_json::from_slice::<Json>(&out).unwrap(),
            json!({"time": "2026-05-01T12:00:00.000Z", "level": "INFO", "id": 42,
                   "event": "close", "message": "closed"})
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"time\":\"2026-05-01T12:00:00.000Z\",\"level\":\"INFO\",\"id\":42,\
             \"event\":\"close\",\"message\":\"closed\"}\n"
        );
        let bare = Record::builder().args(format_args!("x")).build();
        assert_eq!(connection_id(&bare), None);
    }
}
