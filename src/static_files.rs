//! Static files for plain (non-upgrade) `GET`/`HEAD` requests on the proxy port.
//!
//! A browser that opens `http://proxy:8080/` gets the built-in demo page, and
//! `/wsproxy.js` (with `/wsproxy.mjs` and `/wsproxy.d.ts`) gets the client
//! library; both are compiled into the binary with `include_str!`, so a bare
//! `wsproxy -p 8080` serves them. `--web DIR` serves a directory instead and
//! `--no-web` turns this off. This module is std-only and knows nothing about
//! WebSockets: the caller has already parsed the request line and decided
//! that the request is not an upgrade; [`serve`] writes one complete response.
//!
//! What it implements, by section:
//! - RFC 9112 §3.2: the request-target is origin-form (`/path?query`) or
//!   absolute-form (`http://host/path`, §3.2.2, whose path we use); the query
//!   is ignored. Anything else gets `400`.
//! - RFC 9112 §4 / RFC 9110 §15: the status line and reason phrases.
//! - RFC 9110 §9.3.1–9.3.2: `GET` sends the representation, `HEAD` the same
//!   header fields without the content.
//! - RFC 9110 §15.5.6: other methods get `405 Method Not Allowed` with an
//!   `Allow: GET, HEAD` field (§10.2.1). Method names are case-sensitive (§9.1).
//! - RFC 9110 §8.3 and §8.6: `Content-Type` from the file extension,
//!   `Content-Length` always (so the body needs no chunked coding).
//! - RFC 9110 §6.6.1: a `Date` field. RFC 9112 §9.6: `Connection: close`,
//!   because the caller closes the connection after one response.
//! - RFC 9110 §15.4.2: a directory named without its trailing slash is
//!   redirected (`301`) to the slash form, so relative links in its
//!   `index.html` resolve inside the directory.
//! - RFC 3986 §2.1: the path is percent-decoded before it is checked.
//!
//! Path traversal is made impossible twice over: after percent-decoding,
//! segments `..`, backslashes and NUL bytes are refused, and dot-files
//! (segments starting with `.`) are not served; then the file found is
//! canonicalized (symlinks resolved) and must still lie inside the
//! canonicalized root, so a symlink pointing out of the directory is a `404`.
//! File bodies are streamed with [`std::io::copy`], never read whole.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};

/// Where plain `GET`/`HEAD` requests are answered from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebRoot {
    /// The demo page and client library compiled into the binary.
    Builtin,
    /// Files under this directory (`--web DIR`).
    Dir(PathBuf),
    /// No static files (`--no-web`): every request gets `404`.
    Disabled,
}

/// The files compiled into the binary: (URL path, Content-Type, content).
const BUILTIN: &[(&str, &str, &str)] = &[
    ("/", HTML, include_str!("web/index.html")),
    ("/index.html", HTML, include_str!("web/index.html")),
    ("/wsproxy.js", JS, include_str!("web/wsproxy.js")),
    ("/wsproxy.mjs", JS, include_str!("web/wsproxy.mjs")),
    ("/wsproxy.d.ts", TS, include_str!("web/wsproxy.d.ts")),
];

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const TS: &str = "application/typescript; charset=utf-8";
const TEXT: &str = "text/plain; charset=utf-8";

/// Writes a complete HTTP/1.1 response (status line, Content-Type,
/// Content-Length, Connection: close, body unless HEAD) to `out`. Returns the
/// status code written.
///
/// `method` and `raw_path` are the first two words of the request line, as
/// received (`raw_path` still percent-encoded, query included).
pub fn serve(
    root: &WebRoot,
    method: &str,
    raw_path: &str,
    out: &mut impl Write,
) -> io::Result<u16> {
    if *root == WebRoot::Disabled {
        return text_response(out, method, 404, "not found (static files are disabled)\n");
    }
    if method != "GET" && method != "HEAD" {
        return text_response(out, method, 405, "method not allowed: use GET or HEAD\n");
    }
    let Some(path) = origin_path(raw_path) else {
        return text_response(out, method, 400, "bad request target\n");
    };
    let Some(segments) = decode_segments(path) else {
        return not_found(out, method);
    };
    match root {
        WebRoot::Builtin => serve_builtin(out, method, &segments),
        WebRoot::Dir(dir) => serve_dir(out, method, dir, &segments),
        WebRoot::Disabled => unreachable!("handled above"),
    }
}

/// The path part of a request-target (RFC 9112 §3.2): origin-form as is,
/// absolute-form without scheme and authority; query and fragment dropped.
/// `None` for the authority and asterisk forms, or anything else.
fn origin_path(raw: &str) -> Option<&str> {
    let path = if raw.starts_with('/') {
        raw
    } else {
        let lower = raw.get(..8).unwrap_or(raw).to_ascii_lowercase();
        let rest = if lower.starts_with("http://") {
            &raw[7..]
        } else if lower.starts_with("https://") {
            &raw[8..]
        } else {
            return None;
        };
        match rest.find(['/', '?']) {
            Some(i) if rest[i..].starts_with('/') => &rest[i..],
            _ => "/", // "http://host" or "http://host?q" means "/"
        }
    };
    let end = path.find(['?', '#']).unwrap_or(path.len());
    Some(&path[..end])
}

/// Percent-decodes `path` and splits it into safe segments: empty and `.`
/// segments are dropped; `None` (→ 404) if any segment is `..`, starts with
/// a dot, or contains a backslash, NUL or `/` after decoding, or if the
/// percent-encoding or the UTF-8 is invalid. The result keeps whether the
/// path ended with a slash as a final empty segment.
fn decode_segments(path: &str) -> Option<Vec<String>> {
    let mut segments = Vec::new();
    let raw_segments: Vec<&str> = path.split('/').skip(1).collect();
    let last = raw_segments.len().saturating_sub(1);
    for (i, raw) in raw_segments.iter().enumerate() {
        let seg = percent_decode(raw)?;
        if seg.is_empty() || seg == "." {
            if i == last {
                segments.push(String::new()); // trailing slash: a directory
            }
            continue;
        }
        if seg.starts_with('.') || seg.contains(['/', '\\', '\0']) {
            return None; // "..", dot-files, an encoded separator, NUL
        }
        segments.push(seg);
    }
    Some(segments)
}

/// Decodes `%XX` escapes (RFC 3986 §2.1). `None` if an escape is malformed
/// or the result is not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None; // from_str_radix would also accept a sign
            }
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn serve_builtin(out: &mut impl Write, method: &str, segments: &[String]) -> io::Result<u16> {
    let key = format!("/{}", segments.join("/"));
    match BUILTIN.iter().find(|(path, _, _)| *path == key) {
        Some((_, content_type, body)) => {
            write_head(out, 200, content_type, body.len() as u64, &[])?;
            if method == "GET" {
                out.write_all(body.as_bytes())?;
            }
            out.flush()?;
            Ok(200)
        }
        None => not_found(out, method),
    }
}

fn serve_dir(
    out: &mut impl Write,
    method: &str,
    dir: &Path,
    segments: &[String],
) -> io::Result<u16> {
    let Ok(root) = dir.canonicalize() else {
        return not_found(out, method);
    };
    let mut wanted = root.clone();
    for seg in segments.iter().filter(|s| !s.is_empty()) {
        wanted.push(seg);
    }
    let Some(mut file) = contained(&root, &wanted) else {
        return not_found(out, method);
    };
    if file.is_dir() {
        if segments.last().is_some_and(|s| !s.is_empty()) {
            // "/docs" is a directory: send the browser to "/docs/".
            return redirect(out, method, &directory_location(segments));
        }
        match contained(&root, &file.join("index.html")) {
            Some(index) => file = index,
            None => return not_found(out, method),
        }
    }
    let Ok(handle) = File::open(&file) else {
        return not_found(out, method);
    };
    let meta = handle.metadata()?;
    if !meta.is_file() {
        return not_found(out, method);
    }
    let len = meta.len();
    write_head(out, 200, content_type(&file), len, &[])?;
    if method == "GET" {
        // Stream through a fixed-size buffer; `take` guards against a file
        // that grows while it is being sent.
        let copied = io::copy(&mut handle.take(len), out)?;
        if copied != len {
            // The file shrank: we promised `len` bytes and cannot deliver,
            // so fail and let the caller drop the connection.
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "file shrank while being sent",
            ));
        }
    }
    out.flush()?;
    Ok(200)
}

/// The redirect target for a directory: its path rebuilt from the decoded segments, each
/// percent-encoded again, with a trailing slash. Built this way (not from the raw request
/// path) it always starts with exactly one `/` followed by a segment, so a browser can only
/// read it as a path on this host: `//assets` or `/%2e//assets` would be a protocol-relative
/// URL naming another host (RFC 3986 §4.2, an open redirect).
fn directory_location(segments: &[String]) -> String {
    let encoded: Vec<String> = segments
        .iter()
        .filter(|s| !s.is_empty())
        .map(|s| utf8_percent_encode(s, PATH_SEGMENT).to_string())
        .collect();
    format!("/{}/", encoded.join("/"))
}

/// What must be escaped in a path segment (RFC 3986 §3.3: `pchar`), plus the backslash that
/// browsers read as a slash (WHATWG URL) and `%` itself. Non-ASCII bytes are always escaped.
const PATH_SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'\\')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

/// `path` canonicalized, if it exists and lies inside `root` (which must be
/// canonical already). Symlinks are resolved first, so one that points out
/// of `root` is refused.
fn contained(root: &Path, path: &Path) -> Option<PathBuf> {
    let real = path.canonicalize().ok()?;
    real.starts_with(root).then_some(real)
}

/// The Content-Type for a file name's extension (RFC 9110 §8.3; the types
/// are the IANA media types browsers expect, e.g. `text/javascript` for
/// modules per RFC 9239 and `application/wasm` for streaming compilation).
pub fn content_type(path: &Path) -> &'static str {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    match ext.as_str() {
        "html" | "htm" => HTML,
        "js" | "mjs" | "cjs" => JS,
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "webmanifest" => "application/manifest+json",
        "ts" => TS,
        "txt" | "md" | "log" => TEXT,
        "csv" => "text/csv; charset=utf-8",
        "xml" => "application/xml",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "avif" => "image/avif",
        "ico" => "image/vnd.microsoft.icon",
        "wasm" => "application/wasm",
        "woff" => "font/woff",
        "woff2" => "font/woff2",
        "ttf" => "font/ttf",
        "otf" => "font/otf",
        "pdf" => "application/pdf",
        "mp3" => "audio/mpeg",
        "ogg" => "audio/ogg",
        "wav" => "audio/wav",
        "mp4" => "video/mp4",
        "webm" => "video/webm",
        "zip" => "application/zip",
        "gz" => "application/gzip",
        _ => "application/octet-stream",
    }
}

fn not_found(out: &mut impl Write, method: &str) -> io::Result<u16> {
    text_response(out, method, 404, "not found\n")
}

fn redirect(out: &mut impl Write, method: &str, location: &str) -> io::Result<u16> {
    let body = format!("moved to {location}\n");
    write_head(out, 301, TEXT, body.len() as u64, &[("Location", location)])?;
    if method == "GET" {
        out.write_all(body.as_bytes())?;
    }
    out.flush()?;
    Ok(301)
}

/// A short plain-text response (errors). `405` carries `Allow`.
fn text_response(out: &mut impl Write, method: &str, status: u16, body: &str) -> io::Result<u16> {
    let extra: &[(&str, &str)] = if status == 405 {
        &[("Allow", "GET, HEAD")]
    } else {
        &[]
    };
    write_head(out, status, TEXT, body.len() as u64, extra)?;
    if method != "HEAD" {
        out.write_all(body.as_bytes())?;
    }
    out.flush()?;
    Ok(status)
}

/// The status line and header fields, up to and including the blank line.
fn write_head(
    out: &mut impl Write,
    status: u16,
    content_type: &str,
    len: u64,
    extra: &[(&str, &str)],
) -> io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {status} {}\r\nDate: {}\r\nContent-Type: {content_type}\r\nContent-Length: {len}\r\n",
        reason_phrase(status),
        http_date(SystemTime::now()),
    );
    for (name, value) in extra {
        let _ = write!(head, "{name}: {value}\r\n"); // writing to a String cannot fail
    }
    // nosniff: browsers must trust our Content-Type (a .txt is never run as
    // script); no-cache: revalidate, so a rebuilt binary's page is seen.
    head.push_str("X-Content-Type-Options: nosniff\r\nCache-Control: no-cache\r\n");
    head.push_str("Connection: close\r\n\r\n");
    out.write_all(head.as_bytes())
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        301 => "Moved Permanently",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "",
    }
}

/// An IMF-fixdate (RFC 9110 §5.6.7), e.g. `Sun, 06 Nov 1994 08:49:37 GMT`.
fn http_date(now: SystemTime) -> String {
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"]; // 1970-01-01 was a Thursday
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} GMT",
        WEEKDAYS[(days % 7) as usize],
        day,
        MONTHS[(month - 1) as usize],
        year,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Year, month (1–12) and day (1–31) of a count of days since 1970-01-01,
/// in the proleptic Gregorian calendar (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // day of era, 0..=146096
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // year of era
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // day of year, March-based
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// A response split into its parts.
    struct Response {
        status: u16,
        head: String,
        body: Vec<u8>,
    }

    impl Response {
        fn header(&self, name: &str) -> Option<&str> {
            self.head.lines().skip(1).find_map(|line| {
                let (n, v) = line.split_once(':')?;
                n.eq_ignore_ascii_case(name).then(|| v.trim())
            })
        }
        fn text(&self) -> &str {
            std::str::from_utf8(&self.body).unwrap()
        }
    }

    fn get(root: &WebRoot, method: &str, path: &str) -> Response {
        let mut out = Vec::new();
        let status = serve(root, method, path, &mut out).unwrap();
        let split = out
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("a blank line ends the head");
        let head = String::from_utf8(out[..split].to_vec()).unwrap();
        let body = out[split + 4..].to_vec();
        let status_line = head.lines().next().unwrap();
        assert_eq!(
            status_line,
            format!("HTTP/1.1 {status} {}", reason_phrase(status)),
            "status line matches the returned code"
        );
        let r = Response { status, head, body };
        if method != "HEAD" {
            let len: usize = r.header("Content-Length").unwrap().parse().unwrap();
            assert_eq!(len, r.body.len(), "Content-Length matches the body");
        } else {
            assert!(r.body.is_empty(), "HEAD has no body");
        }
        assert_eq!(r.header("Connection"), Some("close"));
        assert!(r.header("Date").unwrap().ends_with(" GMT"));
        r
    }

    /// A scratch directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> TempDir {
            static COUNTER: AtomicUsize = AtomicUsize::new(0);
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or(Duration::ZERO)
                .as_nanos();
            let name = format!(
                "wsproxy-static-test-{}-{nanos}-{}",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed)
            );
            let dir = std::env::temp_dir().join(name);
            fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
        fn write(&self, rel: &str, content: &[u8]) -> PathBuf {
            let path = self.0.join(rel);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, content).unwrap();
            path
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// A site: public/ is the web root, secret.txt sits beside it.
    fn site() -> (TempDir, WebRoot) {
        let tmp = TempDir::new();
        tmp.write("secret.txt", b"TOP SECRET");
        tmp.write("public/index.html", b"<h1>home</h1>");
        tmp.write("public/app.js", b"console.log(1)");
        tmp.write("public/mod.mjs", b"export {}");
        tmp.write("public/style.css", b"body{}");
        tmp.write("public/data.JSON", b"{}");
        tmp.write("public/logo.png", b"\x89PNG\r\n\x1a\n");
        tmp.write("public/a b.txt", b"spaced");
        tmp.write("public/caf\u{e9}.txt", b"accent");
        tmp.write("public/docs/index.html", b"<h1>docs</h1>");
        tmp.write("public/empty/.keep", b"");
        tmp.write("public/.env", b"SECRET=1");
        let root = WebRoot::Dir(tmp.0.join("public"));
        (tmp, root)
    }

    #[test]
    fn builtin_serves_page_and_library() {
        let root = WebRoot::Builtin;
        for path in ["/", "/index.html", "/?x=1"] {
            let r = get(&root, "GET", path);
            assert_eq!(r.status, 200, "{path}");
            assert_eq!(r.header("Content-Type"), Some(HTML));
            assert!(
                r.text().contains("wsproxy.js"),
                "the demo page loads the library"
            );
        }
        let js = get(&root, "GET", "/wsproxy.js");
        assert_eq!(js.header("Content-Type"), Some(JS));
        assert!(js.text().contains("globalThis"));
        let mjs = get(&root, "GET", "/wsproxy.mjs");
        assert_eq!(mjs.header("Content-Type"), Some(JS));
        assert!(mjs.text().contains("export"));
        assert_eq!(get(&root, "GET", "/wsproxy.d.ts").status, 200);
        assert_eq!(get(&root, "GET", "/nope.js").status, 404);
        assert_eq!(get(&root, "GET", "/example.com:80").status, 404);
    }

    #[test]
    fn head_has_headers_but_no_body() {
        let get_r = get(&WebRoot::Builtin, "GET", "/wsproxy.js");
        let head_r = get(&WebRoot::Builtin, "HEAD", "/wsproxy.js");
        assert_eq!(head_r.status, 200);
        assert_eq!(
            head_r.header("Content-Length"),
            get_r.header("Content-Length")
        );
        let (_tmp, root) = site();
        let r = get(&root, "HEAD", "/app.js");
        assert_eq!(r.header("Content-Length"), Some("14"));
        assert_eq!(get(&root, "HEAD", "/missing").status, 404);
    }

    #[test]
    fn other_methods_get_405_with_allow() {
        let (_tmp, dir) = site();
        for root in [WebRoot::Builtin, dir] {
            for method in ["POST", "PUT", "DELETE", "OPTIONS", "get", "TRACE"] {
                let r = get(&root, method, "/");
                assert_eq!(r.status, 405, "{method}");
                assert_eq!(r.header("Allow"), Some("GET, HEAD"));
                assert!(!r.body.is_empty());
            }
        }
    }

    #[test]
    fn disabled_is_404_for_everything() {
        for (method, path) in [
            ("GET", "/"),
            ("GET", "/wsproxy.js"),
            ("POST", "/"),
            ("HEAD", "/"),
        ] {
            assert_eq!(get(&WebRoot::Disabled, method, path).status, 404);
        }
    }

    #[test]
    fn dir_serves_files_with_content_types() {
        let (_tmp, root) = site();
        let cases = [
            ("/", HTML, "<h1>home</h1>"),
            ("/index.html", HTML, "<h1>home</h1>"),
            ("/app.js", JS, "console.log(1)"),
            ("/mod.mjs", JS, "export {}"),
            ("/style.css", "text/css; charset=utf-8", "body{}"),
            ("/data.JSON", "application/json", "{}"),
            ("/docs/", HTML, "<h1>docs</h1>"),
            ("/docs/index.html", HTML, "<h1>docs</h1>"),
            ("/a%20b.txt", TEXT, "spaced"),
            ("/caf%C3%A9.txt", TEXT, "accent"),
            ("/app.js?v=123", JS, "console.log(1)"),
            ("//app.js", JS, "console.log(1)"),
            ("/./app.js", JS, "console.log(1)"),
            ("http://example.com/app.js", JS, "console.log(1)"),
            ("HTTP://example.com", HTML, "<h1>home</h1>"),
        ];
        for (path, ctype, body) in cases {
            let r = get(&root, "GET", path);
            assert_eq!(r.status, 200, "{path}");
            assert_eq!(r.header("Content-Type"), Some(ctype), "{path}");
            assert_eq!(r.text(), body, "{path}");
        }
        let png = get(&root, "GET", "/logo.png");
        assert_eq!(png.header("Content-Type"), Some("image/png"));
        assert_eq!(png.body, b"\x89PNG\r\n\x1a\n");
        assert_eq!(png.header("X-Content-Type-Options"), Some("nosniff"));
    }

    #[test]
    fn directory_without_slash_redirects() {
        let (_tmp, root) = site();
        let r = get(&root, "GET", "/docs");
        assert_eq!(r.status, 301);
        assert_eq!(r.header("Location"), Some("/docs/"));
        // A directory without index.html is not listed.
        assert_eq!(get(&root, "GET", "/empty/").status, 404);
    }

    #[test]
    fn directory_redirects_never_name_another_host() {
        let (_tmp, root) = site();
        for path in [
            "//docs",
            "///docs",
            "/.//docs",
            "//./docs",
            "/%2e//docs",
            "/%2E/%2e//docs",
            "//docs?next=//evil.example",
            "http://proxy.example//docs",
        ] {
            let r = get(&root, "GET", path);
            assert_eq!(r.status, 301, "{path}");
            assert_eq!(r.header("Location"), Some("/docs/"), "{path}");
        }
    }

    #[test]
    fn traversal_is_impossible() {
        let (_tmp, root) = site();
        let attacks = [
            "/../secret.txt",
            "/docs/../../secret.txt",
            "/%2e%2e/secret.txt",
            "/%2E%2E/secret.txt",
            "/.%2e/secret.txt",
            "/%2e./secret.txt",
            "/..%2fsecret.txt",
            "/..%2Fsecret.txt",
            "/..%5csecret.txt",
            "/..\\secret.txt",
            "/docs/..%5c..%5csecret.txt",
            "/app.js%00.html",
            "/%00",
            "/.env",
            "/%2eenv",
            "/empty/.keep",
            "/%",
            "/%zz",
            "/%c3%28",
            "/..",
            "/...",
        ];
        for path in attacks {
            let r = get(&root, "GET", path);
            assert_eq!(r.status, 404, "{path}");
            assert!(!r.text().contains("SECRET"), "{path}");
        }
        for bad_target in ["secret.txt", "*", "example.com:80", "ftp://x/app.js", ""] {
            assert_eq!(get(&root, "GET", bad_target).status, 400, "{bad_target}");
        }
    }

    #[cfg(unix)]
    #[test]
    fn symlinks_out_of_the_root_are_404() {
        use std::os::unix::fs::symlink;
        let (tmp, root) = site();
        let public = tmp.0.join("public");
        symlink(tmp.0.join("secret.txt"), public.join("leak.txt")).unwrap();
        symlink(&tmp.0, public.join("up")).unwrap();
        symlink(public.join("app.js"), public.join("alias.js")).unwrap();
        assert_eq!(get(&root, "GET", "/leak.txt").status, 404);
        assert_eq!(get(&root, "GET", "/up/secret.txt").status, 404);
        assert_eq!(get(&root, "GET", "/up/").status, 404);
        // A symlink that stays inside the root is fine.
        let r = get(&root, "GET", "/alias.js");
        assert_eq!((r.status, r.text()), (200, "console.log(1)"));
    }

    #[test]
    fn missing_root_is_404() {
        let root = WebRoot::Dir(std::env::temp_dir().join("wsproxy-static-test-does-not-exist"));
        assert_eq!(get(&root, "GET", "/").status, 404);
    }

    #[test]
    fn big_files_are_streamed_whole() {
        let tmp = TempDir::new();
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        tmp.write("big.bin", &data);
        let root = WebRoot::Dir(tmp.0.clone());
        let r = get(&root, "GET", "/big.bin");
        assert_eq!(r.status, 200);
        assert_eq!(r.header("Content-Type"), Some("application/octet-stream"));
        assert_eq!(r.body, data);
    }

    #[test]
    fn write_errors_are_returned() {
        struct Broken;
        impl Write for Broken {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::new(io::ErrorKind::BrokenPipe, "gone"))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        assert!(serve(&WebRoot::Builtin, "GET", "/", &mut Broken).is_err());
    }

    #[test]
    fn content_types_by_extension() {
        let cases = [
            ("a.wasm", "application/wasm"),
            ("a.svg", "image/svg+xml"),
            ("a.ico", "image/vnd.microsoft.icon"),
            ("a.woff2", "font/woff2"),
            ("a.map", "application/json"),
            ("a.txt", TEXT),
            ("A.HTML", HTML),
            ("noext", "application/octet-stream"),
            ("a.unknown", "application/octet-stream"),
        ];
        for (name, want) in cases {
            assert_eq!(content_type(Path::new(name)), want, "{name}");
        }
    }

    #[test]
    fn http_dates() {
        assert_eq!(http_date(UNIX_EPOCH), "Thu, 01 Jan 1970 00:00:00 GMT");
        let rfc_example = UNIX_EPOCH + Duration::from_secs(784_111_777);
        assert_eq!(http_date(rfc_example), "Sun, 06 Nov 1994 08:49:37 GMT");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(http_date(leap), "Tue, 29 Feb 2000 00:00:00 GMT");
        let later = UNIX_EPOCH + Duration::from_secs(4_102_444_799); // 2099-12-31 23:59:59
        assert_eq!(http_date(later), "Thu, 31 Dec 2099 23:59:59 GMT");
    }
}
