//! The HTTP/1.1 request head that opens every connection, and the plain HTTP responses sent
//! before any upgrade.
//!
//! Every connection starts as HTTP (RFC 6455 §4.1, draft-hixie-76 §1.3): a request line and
//! header fields (RFC 9112 §3 and §5) ending in an empty line. We read that head in large
//! chunks (never byte by byte) into a buffer of at most [`MAX_HEAD_BYTES`], parse it once with
//! `httparse`, and keep whatever arrived after the empty line (hixie-76's 8-byte key, or the
//! client's first frames) as *leftover* bytes for the next stage.
//!
//! A head that is too large, has too many fields or does not parse is refused with an HTTP
//! status and a one-line reason ([`Refusal`]); RFC 6585 §5 defines 431 for oversized heads.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::Instant;

/// The largest request head we accept (request line plus all header fields).
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// The most header fields we accept in one request.
pub const MAX_HEADERS: usize = 100;

/// A parsed request head.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// The request-target as sent, e.g. `/example.com:80?x=1`.
    pub resource: String,
    /// 1 for HTTP/1.1, 0 for HTTP/1.0.
    pub minor_version: u8,
    /// Header fields in the order received; names keep the client's spelling.
    pub headers: Vec<(String, String)>,
}

impl Request {
    /// The first value of a header field; names compare case-insensitively (RFC 9110 §5.1).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// All values of a possibly repeated list-valued field, joined with commas (RFC 9110 §5.3).
    pub fn header_joined(&self, name: &str) -> Option<String> {
        let values: Vec<&str> = self
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect();
        (!values.is_empty()).then(|| values.join(", "))
    }

    /// Whether a comma-separated field such as `Connection: keep-alive, Upgrade` holds `token`.
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    /// The request line, for logs.
    pub fn request_line(&self) -> String {
        format!(
            "{} {} HTTP/1.{}",
            self.method, self.resource, self.minor_version
        )
    }
}

/// A request refused before any upgrade: becomes an HTTP error response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    /// One line, sent as the body and written to the log.
    pub reason: String,
    pub extra_headers: Vec<(&'static str, String)>,
}

impl Refusal {
    pub fn new(status: u16, reason: impl Into<String>) -> Self {
        Refusal {
            status,
            reason: reason.into(),
            extra_headers: Vec::new(),
        }
    }

    pub fn bad_request(reason: impl Into<String>) -> Self {
        Self::new(400, reason)
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.extra_headers.push((name, value.into()));
        self
    }
}

/// Why no request could be read.
#[derive(Debug)]
pub enum HeadError {
    /// The client closed, stalled past the deadline or failed before a full head arrived:
    /// there is nobody to answer (or no point answering).
    Abandoned(String),
    /// A head we refuse: answer with this status.
    Refused(Refusal),
}

/// A deadline for the whole handshake: every read waits only for the time that is left, so a
/// client trickling one byte at a time cannot hold its connection open past the deadline.
pub struct Deadline<'a> {
    pub socket: &'a TcpStream,
    pub at: Instant,
}

impl Deadline<'_> {
    /// Sets the socket's read timeout to the time left, or fails if none is left.
    pub fn arm(&self) -> io::Result<()> {
        let left = self.at.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "handshake timed out",
            ));
        }
        self.socket.set_read_timeout(Some(left))
    }
}

/// Reads a request head. Returns the request and the bytes that arrived after it.
pub fn read_head(
    stream: &mut dyn Read,
    deadline: &Deadline,
) -> Result<(Request, Vec<u8>), HeadError> {
    // Most heads are a few hundred bytes: start small, grow up to the limit.
    let mut buf = vec![0u8; 2048];
    let mut filled = 0;
    loop {
        if filled == buf.len() {
            buf.resize((buf.len() * 2).min(MAX_HEAD_BYTES), 0);
        }
        deadline.arm().map_err(abandoned)?;
        let n = match stream.read(&mut buf[filled..]) {
            Ok(0) if filled == 0 => {
                return Err(HeadError::Abandoned(
                    "closed without sending a request".into(),
                ));
            }
            Ok(0) => {
                return Err(HeadError::Abandoned(format!(
                    "closed after {filled} bytes of an incomplete request"
                )));
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(abandoned(e)),
        };
        // Only parse once the empty line that ends the head has arrived (look back 3 bytes
        // in case the CRLFCRLF straddles two reads), so a slow client costs no repeated parsing.
        let search_from = filled.saturating_sub(3);
        filled += n;
        if let Some(end) = find_head_end(&buf[search_from..filled]) {
            let head_len = search_from + end;
            let request = parse_head(&buf[..head_len])?;
            return Ok((request, buf[head_len..filled].to_vec()));
        }
        if filled == MAX_HEAD_BYTES {
            return Err(HeadError::Refused(Refusal::new(
                431,
                format!("request head larger than {MAX_HEAD_BYTES} bytes"),
            )));
        }
    }
}

fn abandoned(e: io::Error) -> HeadError {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
            HeadError::Abandoned("handshake timed out".into())
        }
        _ => HeadError::Abandoned(format!("read error: {e}")),
    }
}

/// The length of the head including its terminating empty line, if it is complete.
/// Accepts CRLF and, leniently, bare LF line endings (RFC 9112 §2.2).
fn find_head_end(bytes: &[u8]) -> Option<usize> {
    (0..bytes.len()).find_map(|i| {
        if bytes[i..].starts_with(b"\r\n\r\n") {
            Some(i + 4)
        } else if bytes[i..].starts_with(b"\n\n") {
            Some(i + 2)
        } else if bytes[i..].starts_with(b"\n\r\n") {
            Some(i + 3)
        } else {
            None
        }
    })
}

/// Parses a complete head (everything up to and including the empty line).
pub fn parse_head(head: &[u8]) -> Result<Request, HeadError> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut fields);
    match parsed.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => {
            return Err(HeadError::Refused(Refusal::bad_request(
                "malformed request head",
            )));
        }
        Err(httparse::Error::TooManyHeaders) => {
            return Err(HeadError::Refused(Refusal::new(
                431,
                format!("more than {MAX_HEADERS} header fields"),
            )));
        }
        Err(e) => {
            return Err(HeadError::Refused(Refusal::bad_request(format!(
                "malformed request: {e}"
            ))));
        }
    }
    Ok(Request {
        method: parsed.method.unwrap_or_default().to_string(),
        resource: parsed.path.unwrap_or_default().to_string(),
        minor_version: parsed.version.unwrap_or(1),
        headers: parsed
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_string(),
                    String::from_utf8_lossy(h.value).trim().to_string(),
                )
            })
            .collect(),
    })
}

/// Reads exactly `n` bytes of request body, taking what already arrived from `leftover` first
/// (hixie-76's key3 may come with the head or in a later TCP segment).
pub fn read_body_exact(
    leftover: &mut Vec<u8>,
    stream: &mut dyn Read,
    n: usize,
    deadline: &Deadline,
) -> Result<Vec<u8>, HeadError> {
    while leftover.len() < n {
        deadline.arm().map_err(abandoned)?;
        let mut chunk = [0u8; 512];
        match stream.read(&mut chunk) {
            Ok(0) => {
                return Err(HeadError::Abandoned(format!(
                    "closed before sending the {n}-byte request body"
                )));
            }
            Ok(k) => leftover.extend_from_slice(&chunk[..k]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(abandoned(e)),
        }
    }
    let rest = leftover.split_off(n);
    Ok(std::mem::replace(leftover, rest))
}

/// The standard reason phrase of the statuses we send.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        426 => "Upgrade Required",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

/// The complete bytes of an error response: status line, headers and a one-line text body.
pub fn refusal_response(refusal: &Refusal) -> Vec<u8> {
    let body = format!("{}\n", refusal.reason);
    let mut response = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n",
        refusal.status,
        reason_phrase(refusal.status),
        body.len()
    );
    for (name, value) in &refusal.extra_headers {
        response.push_str(&format!("{name}: {value}\r\n"));
    }
    response.push_str("\r\n");
    response.push_str(&body);
    response.into_bytes()
}

/// Writes an error response.
pub fn write_refusal(out: &mut dyn Write, refusal: &Refusal) -> io::Result<()> {
    out.write_all(&refusal_response(refusal))?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Request, HeadError> {
        parse_head(text.as_bytes())
    }

    #[test]
    fn header_names_are_case_insensitive() {
        let req = parse("GET / HTTP/1.1\r\nhOsT: a\r\nUPGRADE: websocket\r\n\r\n").unwrap();
        assert_eq!(req.header("Host"), Some("a"));
        assert_eq!(req.header("upgrade"), Some("websocket"));
    }

    #[test]
    fn connection_is_a_token_list() {
        let req = parse("GET / HTTP/1.1\r\nConnection: keep-alive, Upgrade\r\n\r\n").unwrap();
        assert!(req.has_token("connection", "upgrade"));
        assert!(!req.has_token("connection", "close"));
    }

    #[test]
    fn repeated_list_fields_are_joined() {
        let req = parse(
            "GET / HTTP/1.1\r\nSec-WebSocket-Protocol: a\r\nSec-WebSocket-Protocol: b, c\r\n\r\n",
        )
        .unwrap();
        assert_eq!(
            req.header_joined("sec-websocket-protocol").as_deref(),
            Some("a, b, c")
        );
    }

    #[test]
    fn too_many_header_fields_is_431() {
        let mut text = String::from("GET / HTTP/1.1\r\n");
        for i in 0..=MAX_HEADERS {
            text.push_str(&format!("X-{i}: y\r\n"));
        }
        text.push_str("\r\n");
        match parse(&text) {
            Err(HeadError::Refused(r)) => assert_eq!(r.status, 431),
            other => panic!("expected 431, got {other:?}"),
        }
    }

    #[test]
    fn garbage_is_400() {
        match parse("\x16\x03\x01garbage\r\n\r\n") {
            Err(HeadError::Refused(r)) => assert_eq!(r.status, 400),
            other => panic!("expected 400, got {other:?}"),
        }
    }

    #[test]
    fn head_end_is_found_with_crlf_and_bare_lf() {
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\n\r\nrest"), Some(18));
        assert_eq!(find_head_end(b"GET / HTTP/1.1\n\nrest"), Some(16));
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\nHost: a\r\n"), None);
    }

    #[test]
    fn refusal_response_has_length_and_reason() {
        let r = Refusal::new(426, "unsupported version 9")
            .with_header("Sec-WebSocket-Version", "13, 8, 7");
        let text = String::from_utf8(refusal_response(&r)).unwrap();
        assert!(text.starts_with("HTTP/1.1 426 Upgrade Required\r\n"));
        assert!(text.contains("Sec-WebSocket-Version: 13, 8, 7\r\n"));
        assert!(text.contains("Content-Length: 22\r\n"));
        assert!(text.ends_with("\r\n\r\nunsupported version 9\n"));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_heads_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2048)) {
            let _ = parse_head(&bytes);
            let _ = find_head_end(&bytes);
        }
    }
}
