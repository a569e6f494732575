//! Token targets: websockify's `TokenFile` format, so existing token files keep working.
//!
//! websockify (`--token-plugin TokenFile --token-source PATH`, implemented in
//! `websockify/token_plugins.py`, classes `ReadOnlyTokenFile` / `TokenFile`) maps a secret token
//! from the WebSocket URL to the TCP target it may reach. The source is a file, or a directory
//! whose every regular file is read, with lines like:
//!
//! ```text
//! # comment lines start with '#'
//! vnc1: 10.1.1.1:5901
//! vnc2:  192.168.0.5:5900     (any whitespace after the colon, a tab too)
//! v6:   ::1:5900              (unbracketed IPv6: the port is after the LAST colon)
//! v6b:  [::1]:5900            (bracketed IPv6, accepted by wsproxy as well)
//! ```
//!
//! How a line is read (websockify's rules, with the differences marked):
//! - The line is trimmed; blank lines and lines starting with `#` are skipped.
//! - The token is everything before the first colon that is followed by whitespace (websockify
//!   splits with the regex `:\s`), so `vnc1:host:5900` without a space is a syntax error.
//! - The target is trimmed and split at its *last* colon (`rsplit(':', 1)`) into host and port,
//!   which is why `::1:5900` works. `[::1]:5900` is accepted too.
//! - wsproxy checks more than websockify: host and port go through the one target parser
//!   ([`crate::target::target_from_parts`]), the same that reads `/<host>:<port>` paths and
//!   `--target`, and are stored as a typed [`Target`]. So a host with characters no name has
//!   (`ho$t`), an IPv6 address that is not one (`a:b:c`), an IPv4 address in an odd spelling
//!   (`127.1`), or a port outside 1–65535 is refused when the file is read — never at a
//!   connection. A bad line is an error that names the file and the line (websockify logs it
//!   and skips the line; we refuse the whole source, so a typo is noticed rather than
//!   silently turning into "token not found").
//! - A token defined twice: the later line wins (files of a directory are read in name order).
//! - In a directory, names starting with `.` are skipped (editor swap files, `.git`), as are
//!   subdirectories.
//!
//! websockify's `TokenFile` re-reads the source on every lookup. We do the same thing lazily: each
//! [`TokenTargets::lookup`] compares the modification times and sizes of the source file (or of
//! the directory's files) with the ones seen at the last load, and parses again only if they
//! changed. That costs a `stat` per file per connection, which is negligible next to a TCP connect.
//!
//! The token itself comes from the request ([`token_from_request`]): the `token` query parameter
//! (noVNC: `vnc.html?path=websockify?token=vnc1`), or with `--host-token` the Host header's name.
//!
//! This module uses only `std`, so it can be read and tested on its own.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use crate::target::{self, Target};

/// A token source (file or directory) plus a cache of its parsed contents.
///
/// Cheap to share between threads: put it in an `Arc`; [`lookup`](Self::lookup) takes `&self`.
#[derive(Debug)]
pub struct TokenTargets {
    /// The `--token-file` argument, as given.
    path: PathBuf,
    /// The last load: what the source looked like and what it parsed to.
    cache: Mutex<Loaded>,
}

/// One load of the source, remembered together with the stamp it was loaded at.
#[derive(Debug)]
struct Loaded {
    stamp: Stamp,
    /// `token → target`, or the error that made the source unusable (cached so that a broken
    /// file is not re-parsed on every connection; it is retried as soon as it changes).
    targets: Result<HashMap<String, Target>, String>,
}

/// What the source looks like on disk: one entry per file that is read, in reading order.
/// If any file's modification time or size changes, or files appear or vanish, the stamp differs.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Stamp(Vec<FileStamp>);

#[derive(Clone, Debug, PartialEq, Eq)]
struct FileStamp {
    path: PathBuf,
    modified: Option<SystemTime>,
    len: u64,
}

impl TokenTargets {
    /// Opens a token file or directory and loads it once, so that a missing file or a syntax
    /// error is reported at startup rather than at the first connection.
    pub fn open(path: &Path) -> Result<Self, String> {
        let stamp = stamp_source(path)?;
        let targets = load(&stamp)?;
        Ok(TokenTargets {
            path: path.to_path_buf(),
            cache: Mutex::new(Loaded {
                stamp,
                targets: Ok(targets),
            }),
        })
    }

    /// The target for `token`, re-reading the source if it changed.
    ///
    /// `Ok(None)` means the token is not defined. `Err` means the source cannot be used right now
    /// (it vanished, cannot be read, or has a syntax error); the message names the file and line.
    pub fn lookup(&self, token: &str) -> Result<Option<Target>, String> {
        // The stat calls happen outside the lock; only comparing and (rarely) re-parsing inside it.
        let stamp = stamp_source(&self.path)?;
        let mut cache = self
            .cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if cache.stamp != stamp {
            // Stamp first, then read: if a file changes while we read it, its new mtime will
            // differ from the stamp we store, and the next lookup reads it again.
            let targets = load(&stamp);
            *cache = Loaded { stamp, targets };
        }
        match &cache.targets {
            Ok(map) => Ok(map.get(token).cloned()),
            Err(e) => Err(e.clone()),
        }
    }
}

/// Lists the files that make up the source, with their modification times and sizes.
fn stamp_source(path: &Path) -> Result<Stamp, String> {
    let meta = fs::metadata(path).map_err(|e| format!("token source {}: {e}", path.display()))?;
    if !meta.is_dir() {
        return Ok(Stamp(vec![file_stamp(path.to_path_buf(), &meta)]));
    }
    let entries =
        fs::read_dir(path).map_err(|e| format!("token directory {}: {e}", path.display()))?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| format!("token directory {}: {e}", path.display()))?;
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let file = entry.path();
        // `fs::metadata` follows symlinks, so a link to a regular file counts as one.
        match fs::metadata(&file) {
            Ok(m) if m.is_file() => files.push(file_stamp(file, &m)),
            Ok(_) => {} // subdirectory, socket…
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {} // removed meanwhile, or a dangling link
            Err(e) => return Err(format!("token file {}: {e}", file.display())),
        }
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(Stamp(files))
}

fn file_stamp(path: PathBuf, meta: &fs::Metadata) -> FileStamp {
    FileStamp {
        path,
        modified: meta.modified().ok(),
        len: meta.len(),
    }
}

/// Reads and parses every file of the stamp, in order; later definitions override earlier ones.
fn load(stamp: &Stamp) -> Result<HashMap<String, Target>, String> {
    let mut targets = HashMap::new();
    for file in &stamp.0 {
        let text = fs::read_to_string(&file.path)
            .map_err(|e| format!("token file {}: {e}", file.path.display()))?;
        parse_into(&text, &file.path, &mut targets)?;
    }
    Ok(targets)
}

/// Parses one file's text in websockify's TokenFile format into `targets`.
fn parse_into(
    text: &str,
    file: &Path,
    targets: &mut HashMap<String, Target>,
) -> Result<(), String> {
    for (index, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let syntax_error = |why: &str| {
            format!(
                "syntax error in {} on line {}: {why} (expected `token: host:port`)",
                file.display(),
                index + 1
            )
        };
        let (token, target) =
            split_at_colon_space(line).ok_or_else(|| syntax_error("no `: ` after the token"))?;
        let token = token.trim();
        if token.is_empty() {
            return Err(syntax_error("empty token"));
        }
        let target = parse_target(target.trim()).map_err(|why| syntax_error(&why))?;
        targets.insert(token.to_string(), target);
    }
    Ok(())
}

/// Splits `line` at its first colon that is followed by a whitespace character, like Python's
/// `re.split(r':\s', line)` does for the first match. The whitespace character is consumed.
fn split_at_colon_space(line: &str) -> Option<(&str, &str)> {
    line.match_indices(':').find_map(|(i, _)| {
        let next = line[i + 1..].chars().next()?;
        let after = i + 1 + next.len_utf8();
        next.is_whitespace().then(|| (&line[..i], &line[after..]))
    })
}

/// Reads a trimmed `host:port` (port after the last colon, so `::1:5900` works, or
/// `[v6]:port`) with the one target parser.
fn parse_target(target: &str) -> Result<Target, String> {
    if target.is_empty() {
        return Err("empty target".into());
    }
    if target.contains(char::is_whitespace) {
        return Err(format!("whitespace in target `{target}`"));
    }
    let (host, port) = if let Some(rest) = target.strip_prefix('[') {
        let (host, port) = rest
            .split_once("]:")
            .ok_or_else(|| format!("target `{target}` should be `[ipv6]:port`"))?;
        if !host.contains(':') {
            return Err(format!(
                "target `{target}`: only IPv6 addresses go in brackets"
            ));
        }
        (host, port)
    } else {
        target
            .rsplit_once(':')
            .ok_or_else(|| format!("target `{target}` has no `:port`"))?
    };
    if host.is_empty() {
        return Err(format!("target `{target}` has no host"));
    }
    target::target_from_parts(host, port).map_err(|why| format!("target `{target}`: {why}"))
}

/// The token from a request: `?token=XYZ` in the query (percent-decoded, first occurrence), or with
/// `host_token` the Host header's name without its port.
///
/// Matches websockify's `get_target`: with `host_token` only the Host header counts, otherwise only
/// the query. The query is read like Python's `parse_qs`: pairs split on `&`, `+` means a space,
/// empty values are ignored (so `?token=&token=a` gives `a`), and a trailing newline is removed.
/// `raw_path` is the request target as sent (`/websockify?token=vnc1`); `None` means no token.
pub fn token_from_request(
    raw_path: &str,
    host_header: Option<&str>,
    host_token: bool,
) -> Option<String> {
    if host_token {
        return host_header.and_then(host_name);
    }
    let without_fragment = raw_path.split('#').next().unwrap_or("");
    let (_, query) = without_fragment.split_once('?')?;
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .filter(|(key, _)| percent_decode(key) == "token")
        .map(|(_, value)| percent_decode(value).trim_end_matches('\n').to_string())
        .find(|value| !value.is_empty())
}

/// `example.com:8080` → `example.com`; `[::1]:8080` → `[::1]`; empty → `None`.
fn host_name(host: &str) -> Option<String> {
    let host = host.trim();
    let name = if host.starts_with('[') {
        match host.find(']') {
            Some(end) => &host[..=end],
            None => host,
        }
    } else {
        host.split(':').next().unwrap_or("")
    };
    (!name.is_empty()).then(|| name.to_string())
}

/// Decodes `%XX` escapes and `+` (a space, as in HTML form encoding). A `%` not followed by two
/// hex digits stays as it is; bytes that are not UTF-8 become U+FFFD, as with Python's `unquote`.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => match (
                bytes.get(i + 1).and_then(hex),
                bytes.get(i + 2).and_then(hex),
            ) {
                (Some(high), Some(low)) => {
                    out.push(high * 16 + low);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: &u8) -> Option<u8> {
    (*b as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// A fresh directory under the system temp dir, removed when dropped.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> Self {
            static COUNTER: AtomicUsize = AtomicUsize::new(0);
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let nanos = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
            let dir = std::env::temp_dir().join(format!(
                "wsproxy-tokens-test-{}-{n}-{nanos}",
                std::process::id()
            ));
            fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }

        /// Writes `name` and pushes its mtime forward by `bump` seconds, so that a rewrite is
        /// noticed even on file systems with coarse timestamps.
        fn write(&self, name: &str, text: &str, bump: u64) -> PathBuf {
            let path = self.0.join(name);
            fs::write(&path, text).unwrap();
            let file = fs::File::options().write(true).open(&path).unwrap();
            file.set_modified(SystemTime::now() + Duration::from_secs(bump))
                .unwrap();
            path
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn lookup(t: &TokenTargets, token: &str) -> Option<String> {
        t.lookup(token).unwrap().map(|target| target.to_string())
    }

    #[test]
    fn reads_websockify_format() {
        let dir = TempDir::new();
        let file = dir.write(
            "tokens",
            "# a comment\n\
             \n\
             vnc1: 10.1.1.1:5901\n\
             vnc2:\t192.168.0.5:5900\r\n\
             \x20  indented:   host.example:22   \n\
             \x20  # indented comment\n\
             v6: ::1:5900\n\
             v6b: [fe80::1]:5901\n",
            0,
        );
        let t = TokenTargets::open(&file).unwrap();
        assert_eq!(lookup(&t, "vnc1").as_deref(), Some("10.1.1.1:5901"));
        assert_eq!(lookup(&t, "vnc2").as_deref(), Some("192.168.0.5:5900"));
        assert_eq!(lookup(&t, "indented").as_deref(), Some("host.example:22"));
        assert_eq!(lookup(&t, "v6").as_deref(), Some("[::1]:5900"));
        assert_eq!(lookup(&t, "v6b").as_deref(), Some("[fe80::1]:5901"));
        assert_eq!(lookup(&t, "nope"), None);
        assert_eq!(lookup(&t, "# a comment"), None);
    }

    #[test]
    fn later_definition_wins() {
        let dir = TempDir::new();
        let file = dir.write("tokens", "a: h1:1\na: h2:2\n", 0);
        let t = TokenTargets::open(&file).unwrap();
        assert_eq!(lookup(&t, "a").as_deref(), Some("h2:2"));
    }

    #[test]
    fn syntax_errors_name_file_and_line() {
        let cases = [
            ("vnc1:10.1.1.1:5901\n", "no `: `"), // websockify needs whitespace after the colon
            (": host:1\n", "empty token"),
            ("t: host\n", "no `:port`"),
            ("t: host:port\n", "bad port"),
            ("t: host:0\n", "bad port"),
            ("t: host:65536\n", "bad port"),
            ("t: :5900\n", "no host"),
            ("t: [::1]5900\n", "[ipv6]:port"),
            ("t: host: 5900\n", "whitespace"),
            // The target parser's own checks, at load time rather than at a connection.
            ("t: ho$t:80\n", "not a valid host name"),
            ("t: a:b:c:80\n", "not an IPv6 address"),
            ("t: [a:b:c]:80\n", "not an IPv6 address"),
            ("t: [10.0.0.1]:80\n", "only IPv6"),
            ("t: 127.1:80\n", "dotted-decimal"),
            ("t: a..b:80\n", "not a valid host name"),
        ];
        for (text, why) in cases {
            let dir = TempDir::new();
            let file = dir.write("tokens", &format!("# first line\n\n{text}"), 0);
            let err = TokenTargets::open(&file).expect_err(text);
            assert!(err.contains(&file.display().to_string()), "{err}");
            assert!(err.contains("line 3"), "{err}");
            assert!(err.contains(why), "{text:?}: {err}");
        }
    }

    #[test]
    fn missing_source_is_an_error() {
        let dir = TempDir::new();
        let err = TokenTargets::open(&dir.0.join("absent")).unwrap_err();
        assert!(err.contains("absent"), "{err}");
    }

    #[test]
    fn rereads_a_changed_file() {
        let dir = TempDir::new();
        let file = dir.write("tokens", "a: h1:1\n", 0);
        let t = TokenTargets::open(&file).unwrap();
        assert_eq!(lookup(&t, "a").as_deref(), Some("h1:1"));
        assert_eq!(lookup(&t, "b"), None);

        dir.write("tokens", "a: h9:9\nb: h2:2\n", 10);
        assert_eq!(lookup(&t, "a").as_deref(), Some("h9:9"));
        assert_eq!(lookup(&t, "b").as_deref(), Some("h2:2"));

        // A broken edit makes lookups fail (naming the line) until it is fixed.
        dir.write("tokens", "a: h9:9\nb h2:2\n", 20);
        let err = t.lookup("a").unwrap_err();
        assert!(err.contains("line 2"), "{err}");
        dir.write("tokens", "b: h3:3\n", 30);
        assert_eq!(lookup(&t, "a"), None);
        assert_eq!(lookup(&t, "b").as_deref(), Some("h3:3"));

        // The source vanishing is an error, not "unknown token".
        fs::remove_file(&file).unwrap();
        assert!(t.lookup("b").is_err());
    }

    #[test]
    fn unchanged_file_is_not_reparsed() {
        // Keep the stamp but change the content behind its back: the cache must answer.
        let dir = TempDir::new();
        let file = dir.write("tokens", "a: h1:1\n", 0);
        let t = TokenTargets::open(&file).unwrap();
        let modified = fs::metadata(&file).unwrap().modified().unwrap();
        fs::write(&file, "a: h2:2\n").unwrap(); // same length
        fs::File::options()
            .write(true)
            .open(&file)
            .unwrap()
            .set_modified(modified)
            .unwrap();
        assert_eq!(lookup(&t, "a").as_deref(), Some("h1:1"));
    }

    #[test]
    fn directory_reads_every_regular_file() {
        let dir = TempDir::new();
        dir.write("one", "a: h1:1\n", 0);
        dir.write("two.conf", "b: h2:2\n", 0);
        dir.write(".hidden.swp", "garbage that would not parse\n", 0);
        fs::create_dir(dir.0.join("subdir")).unwrap();
        let t = TokenTargets::open(&dir.0).unwrap();
        assert_eq!(lookup(&t, "a").as_deref(), Some("h1:1"));
        assert_eq!(lookup(&t, "b").as_deref(), Some("h2:2"));

        // A new file appears, an old one goes away.
        dir.write("three", "c: h3:3\n", 10);
        fs::remove_file(dir.0.join("one")).unwrap();
        assert_eq!(lookup(&t, "a"), None);
        assert_eq!(lookup(&t, "c").as_deref(), Some("h3:3"));

        // An error in one file names that file.
        let bad = dir.write("zz-bad", "ok: h:1\noops\n", 20);
        let err = t.lookup("b").unwrap_err();
        assert!(
            err.contains(&bad.display().to_string()) && err.contains("line 2"),
            "{err}"
        );
    }

    #[test]
    fn empty_directory_has_no_tokens() {
        let dir = TempDir::new();
        let t = TokenTargets::open(&dir.0).unwrap();
        assert_eq!(lookup(&t, "a"), None);
    }

    #[test]
    fn lookups_from_many_threads() {
        let dir = TempDir::new();
        let file = dir.write("tokens", "a: h1:1\n", 0);
        let t = Arc::new(TokenTargets::open(&file).unwrap());
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let t = Arc::clone(&t);
                std::thread::spawn(move || {
                    for _ in 0..100 {
                        assert_eq!(lookup(&t, "a").as_deref(), Some("h1:1"));
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
    }

    #[test]
    fn token_from_query() {
        let f = |path| token_from_request(path, Some("example.com:8080"), false);
        assert_eq!(f("/websockify?token=vnc1").as_deref(), Some("vnc1"));
        assert_eq!(f("/?a=1&token=x%20y&token=second").as_deref(), Some("x y"));
        assert_eq!(f("/?token=a+b").as_deref(), Some("a b"));
        assert_eq!(f("/?token=%E2%9C%93").as_deref(), Some("✓"));
        assert_eq!(f("/?token=100%").as_deref(), Some("100%"));
        assert_eq!(f("/?token=%zz").as_deref(), Some("%zz"));
        assert_eq!(f("/?token=abc%0A").as_deref(), Some("abc")); // websockify's rstrip('\n')
        assert_eq!(f("/?token=&token=late").as_deref(), Some("late")); // blank values skipped
        assert_eq!(f("/?%74oken=enc").as_deref(), Some("enc"));
        assert_eq!(f("/?token=frag#token=no").as_deref(), Some("frag"));
        assert_eq!(f("/?token"), None);
        assert_eq!(f("/?token="), None);
        assert_eq!(f("/?tokens=x"), None);
        assert_eq!(f("/websockify"), None);
        assert_eq!(f("/path#?token=x"), None);
    }

    #[test]
    fn token_from_host() {
        let f = |host| token_from_request("/?token=ignored", host, true);
        assert_eq!(
            f(Some("vnc1.example.com:6080")).as_deref(),
            Some("vnc1.example.com")
        );
        assert_eq!(f(Some("vnc1")).as_deref(), Some("vnc1"));
        assert_eq!(f(Some("[::1]:6080")).as_deref(), Some("[::1]"));
        assert_eq!(f(Some(":6080")), None);
        assert_eq!(f(Some("")), None);
        assert_eq!(f(None), None);
    }

    #[test]
    fn percent_decoding_edges() {
        assert_eq!(percent_decode("%41%4a%4B"), "AJK");
        assert_eq!(percent_decode("%4"), "%4");
        assert_eq!(percent_decode("%"), "%");
        assert_eq!(percent_decode("%ff"), "\u{FFFD}");
    }
}
