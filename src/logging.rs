//! Logging: the logger's setup (`-v`, `-d`, `RUST_LOG`) and the one helper that makes
//! client-controlled text safe to log.
//!
//! Whatever a client sends can end up in a log line: the request path, header values, a
//! `?token=`, subprotocol names, a Close frame's reason, the Host and Origin it claims. Printed
//! raw, a decoded `%0a` forges a whole log line and an escape sequence (`ESC [ …`) reaches the
//! operator's terminal (the classic log injection, CWE-117). So every log site that prints
//! client text wraps it in [`escape`], which writes control characters as Rust escapes:
//!
//! | the client sent | the log shows |
//! |---|---|
//! | a newline, a carriage return, a tab | `\n`, `\r`, `\t` |
//! | other C0 controls, DEL, C1 controls (`ESC`, `U+009B`) | `\u{1b}`, `\u{7f}`, `\u{9b}` |
//! | line and paragraph separators, bidirectional controls (`U+2028`, `U+202E`…) | `\u{2028}`, `\u{202e}` |
//! | a backslash | `\\` (so an escape in the log is never ambiguous) |
//!
//! Everything else, including non-ASCII text, is printed as it is.

use std::fmt::{self, Write as _};
use std::io::Write as _;

use crate::config::Verbosity;

/// `-v` shows info, `-d` debug; `RUST_LOG`, if set, is applied on top.
pub fn init_logging(verbosity: Verbosity) {
    let level = match verbosity {
        Verbosity::Quiet => log::LevelFilter::Warn,
        Verbosity::Verbose => log::LevelFilter::Info,
        Verbosity::Debug => log::LevelFilter::Debug,
    };
    let mut builder = env_logger::Builder::new();
    builder.filter_level(log::LevelFilter::Warn);
    builder.filter_module("wsproxy", level);
    if let Ok(spec) = std::env::var("RUST_LOG") {
        builder.parse_filters(&spec);
    }
    builder.format(|out, record| {
        writeln!(
            out,
            "{} {:5} {}",
            out.timestamp_millis(),
            record.level(),
            record.args()
        )
    });
    builder.init();
}

/// Client-controlled text, displayed with its control characters escaped (see the module doc).
#[derive(Debug, Clone, Copy)]
pub struct Escaped<'a>(&'a str);

/// Wraps client-controlled text for a log line: `info!("token '{}'", escape(&token))`.
pub fn escape(text: &str) -> Escaped<'_> {
    Escaped(text)
}

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            if needs_escape(c) {
                // `\n`, `\r`, `\t`, `\\`, or `\u{…}` for everything else.
                write!(f, "{}", c.escape_default())?;
            } else {
                f.write_char(c)?;
            }
        }
        Ok(())
    }
}

/// Control characters (Unicode category Cc: C0, DEL, C1), the line and paragraph separators
/// (U+2028, U+2029), the bidirectional formatting characters that reorder what a terminal
/// shows (Unicode TR9: U+061C, U+200E/F, U+202A–U+202E, U+2066–U+2069), and the backslash
/// that starts our escapes.
fn needs_escape(c: char) -> bool {
    c == '\\'
        || c.is_control()
        || matches!(
            c,
            '\u{061c}'
                | '\u{200e}'
                | '\u{200f}'
                | '\u{2028}'
                | '\u{2029}'
                | '\u{202a}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}'
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        let cases = [
            ("plain /path?x=1", "plain /path?x=1"),
            ("abc\nINFO forged", "abc\\nINFO forged"),
            ("a\r\nb\tc", "a\\r\\nb\\tc"),
            ("\u{1b}[31mred\u{1b}[0m", "\\u{1b}[31mred\\u{1b}[0m"),
            ("del\u{7f} csi\u{9b}2J", "del\\u{7f} csi\\u{9b}2J"),
            ("\u{0}nul", "\\u{0}nul"),
            ("evil\u{202e}txt.exe", "evil\\u{202e}txt.exe"),
            ("back\\slash", "back\\\\slash"),
            ("ünïcödé ✓ 'quotes' \"too\"", "ünïcödé ✓ 'quotes' \"too\""),
        ];
        for (raw, shown) in cases {
            assert_eq!(escape(raw).to_string(), shown, "{raw:?}");
        }
    }

    #[test]
    fn escaped_text_is_always_one_line() {
        let every_char: String = (0u32..0x3000).filter_map(char::from_u32).collect();
        let shown = escape(&every_char).to_string();
        assert!(!shown.contains(['\n', '\r', '\u{1b}', '\u{85}', '\u{2028}', '\u{2029}']));
    }
}
