//! The opening handshake: look at the request once, decide which generation of the WebSocket
//! protocol the client speaks, and build the server's answer.
//!
//! Detection follows the order old websockify and em-websocket used (see the project's
//! protocol notes): a `Sec-WebSocket-Version` header means the HyBi family (13 = RFC 6455,
//! 8 = hybi-08…12, 7 = hybi-07; anything else gets 426, RFC 6455 §4.4); no version but
//! `Sec-WebSocket-Key1`/`Key2` means draft-hixie-76; neither, with `Upgrade: WebSocket`,
//! means draft-hixie-75; no `Upgrade` at all is a plain HTTP request.
//!
//! One file per generation builds the response: [`rfc6455`] (also hybi-07/08), [`hixie76`],
//! [`hixie75`]. [`subprotocol`] chooses what the tunnel's frames carry. These modules do no
//! I/O: they take a parsed [`Request`] and return bytes to send, which keeps them easy to test
//! against the drafts' worked examples.

pub mod hixie75;
pub mod hixie76;
pub mod rfc6455;
pub mod subprotocol;

use std::fmt;

use crate::framing::Encoding;
use crate::http::{Refusal, Request};

/// A generation of the WebSocket protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Generation {
    /// draft-hixie-thewebsocketprotocol-75 (Feb 2010).
    Hixie75,
    /// draft-hixie-thewebsocketprotocol-76 = draft-ietf-hybi-thewebsocketprotocol-00 (May 2010).
    Hixie76,
    /// draft-ietf-hybi-thewebsocketprotocol-07 (`Sec-WebSocket-Version: 7`).
    Hybi07,
    /// draft-ietf-hybi-thewebsocketprotocol-08 to -12 (`Sec-WebSocket-Version: 8`).
    Hybi08,
    /// RFC 6455 (`Sec-WebSocket-Version: 13`).
    Rfc6455,
}

impl Generation {
    /// Whether this generation uses hixie framing (`0x00 … 0xFF`) rather than RFC 6455 frames.
    pub fn is_hixie(self) -> bool {
        matches!(self, Generation::Hixie75 | Generation::Hixie76)
    }
}

impl fmt::Display for Generation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Generation::Hixie75 => "hixie-75",
            Generation::Hixie76 => "hixie-76",
            Generation::Hybi07 => "hybi-07",
            Generation::Hybi08 => "hybi-08",
            Generation::Rfc6455 => "RFC 6455",
        })
    }
}

/// What kind of request arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    /// No `Upgrade` header: an ordinary HTTP request (static files, or a helpful 400).
    PlainHttp,
    /// A WebSocket opening handshake of this generation.
    WebSocket(Generation),
}

/// The versions we answer 426 with (RFC 6455 §4.4).
pub const SUPPORTED_VERSIONS: &str = "13, 8, 7";

/// Decides what the request is, from its headers alone.
pub fn classify(request: &Request) -> Result<RequestKind, Refusal> {
    let Some(upgrade) = request.header("Upgrade") else {
        return Ok(RequestKind::PlainHttp);
    };
    if let Some(version) = request.header("Sec-WebSocket-Version") {
        return match version.trim() {
            "13" => Ok(RequestKind::WebSocket(Generation::Rfc6455)),
            "8" => Ok(RequestKind::WebSocket(Generation::Hybi08)),
            "7" => Ok(RequestKind::WebSocket(Generation::Hybi07)),
            other => Err(Refusal::new(
                426,
                format!(
                    "unsupported WebSocket version '{other}'; this server speaks {SUPPORTED_VERSIONS}"
                ),
            )
            .with_header("Sec-WebSocket-Version", SUPPORTED_VERSIONS)),
        };
    }
    if request.header("Sec-WebSocket-Key1").is_some()
        || request.header("Sec-WebSocket-Key2").is_some()
    {
        return Ok(RequestKind::WebSocket(Generation::Hixie76));
    }
    if upgrade.trim().eq_ignore_ascii_case("websocket") {
        return Ok(RequestKind::WebSocket(Generation::Hixie75));
    }
    Err(Refusal::bad_request(format!(
        "cannot upgrade to '{upgrade}': this is a WebSocket proxy"
    )))
}

/// `ws` or `wss`: which scheme the client used (hixie's Location header repeats it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Ws,
    Wss,
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Scheme::Ws => "ws",
            Scheme::Wss => "wss",
        })
    }
}

/// A handshake we accept.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub generation: Generation,
    /// The subprotocol we echo, if any.
    pub subprotocol: Option<String>,
    /// What our data frames to the client carry.
    pub encoding: Encoding,
    /// The whole response: status line, headers, and for hixie-76 the 16-byte digest.
    pub response: Vec<u8>,
    /// Human-readable lines explaining the computation, logged under `-d`.
    pub transcript: Vec<String>,
}

/// The origin a browser reported: `Origin`, or `Sec-WebSocket-Origin` for hybi-07/08.
pub fn origin(request: &Request, generation: Generation) -> Option<&str> {
    match generation {
        Generation::Hybi07 | Generation::Hybi08 => request
            .header("Sec-WebSocket-Origin")
            .or_else(|| request.header("Origin")),
        _ => request.header("Origin"),
    }
}

/// Checks common to every generation, then builds the generation's response.
/// `key3` is hixie-76's 8-byte body (read by the caller, since it may arrive late).
pub fn accept(
    request: &Request,
    generation: Generation,
    key3: Option<[u8; 8]>,
    scheme: Scheme,
) -> Result<Accepted, Refusal> {
    if request.method != "GET" {
        return Err(Refusal::bad_request(format!(
            "WebSocket handshakes use GET, not {}",
            request.method
        )));
    }
    if request.minor_version < 1 {
        return Err(Refusal::bad_request("WebSocket handshakes need HTTP/1.1"));
    }
    if !request.has_token("Connection", "Upgrade") {
        return Err(Refusal::bad_request(
            "the Connection header must contain 'Upgrade'",
        ));
    }
    if request.header("Host").is_none() {
        return Err(Refusal::bad_request("missing Host header"));
    }
    match generation {
        Generation::Rfc6455 | Generation::Hybi07 | Generation::Hybi08 => {
            rfc6455::accept(request, generation)
        }
        Generation::Hixie76 => {
            let key3 = key3.ok_or_else(|| Refusal::bad_request("missing hixie-76 key3"))?;
            hixie76::accept(request, &key3, scheme)
        }
        Generation::Hixie75 => hixie75::accept(request, scheme),
    }
}

/// The one subprotocol a hixie client may name, if we support it: data is always Base64.
fn hixie_subprotocol(offered: Option<&str>) -> Result<Option<String>, Refusal> {
    match offered.map(str::trim) {
        None | Some("") => Ok(None),
        Some(name) if subprotocol::is_base64_protocol(name) => Ok(Some(name.to_string())),
        Some(name) => Err(Refusal::bad_request(format!(
            "unsupported subprotocol '{name}'; hixie clients may ask for websockets-proxy or base64"
        ))),
    }
}

/// `ws://host/resource`, as hixie's Location headers require (compared exactly by clients).
fn location(request: &Request, scheme: Scheme) -> String {
    format!(
        "{scheme}://{}{}",
        request.header("Host").unwrap_or_default(),
        request.resource
    )
}

/// Splits a response head into lines for the `-d` transcript.
fn response_lines(head: &str) -> impl Iterator<Item = String> + '_ {
    head.split("\r\n")
        .filter(|l| !l.is_empty())
        .map(|l| format!("< {l}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::parse_head;

    fn request(text: &str) -> Request {
        match parse_head(text.as_bytes()) {
            Ok(r) => r,
            Err(e) => panic!("{e:?}"),
        }
    }

    #[test]
    fn detects_each_generation() {
        let rfc =
            request("GET /a:1 HTTP/1.1\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\r\n");
        assert_eq!(
            classify(&rfc),
            Ok(RequestKind::WebSocket(Generation::Rfc6455))
        );
        let h8 =
            request("GET /a:1 HTTP/1.1\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 8\r\n\r\n");
        assert_eq!(
            classify(&h8),
            Ok(RequestKind::WebSocket(Generation::Hybi08))
        );
        let h7 =
            request("GET /a:1 HTTP/1.1\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 7\r\n\r\n");
        assert_eq!(
            classify(&h7),
            Ok(RequestKind::WebSocket(Generation::Hybi07))
        );
        let h76 = request(
            "GET /a:1 HTTP/1.1\r\nUpgrade: WebSocket\r\nSec-WebSocket-Key1: 1 2\r\nSec-WebSocket-Key2: 3 4\r\n\r\n",
        );
        assert_eq!(
            classify(&h76),
            Ok(RequestKind::WebSocket(Generation::Hixie76))
        );
        let h75 = request("GET /a:1 HTTP/1.1\r\nUpgrade: WebSocket\r\nConnection: Upgrade\r\n\r\n");
        assert_eq!(
            classify(&h75),
            Ok(RequestKind::WebSocket(Generation::Hixie75))
        );
        let plain = request("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(classify(&plain), Ok(RequestKind::PlainHttp));
    }

    #[test]
    fn unknown_versions_get_426_with_the_supported_list() {
        let req =
            request("GET /a:1 HTTP/1.1\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 9\r\n\r\n");
        let refusal = classify(&req).unwrap_err();
        assert_eq!(refusal.status, 426);
        assert_eq!(
            refusal.extra_headers,
            vec![("Sec-WebSocket-Version", "13, 8, 7".to_string())]
        );
    }

    #[test]
    fn hybi_origin_comes_from_sec_websocket_origin() {
        let req =
            request("GET / HTTP/1.1\r\nSec-WebSocket-Origin: http://a\r\nOrigin: http://b\r\n\r\n");
        assert_eq!(origin(&req, Generation::Hybi08), Some("http://a"));
        assert_eq!(origin(&req, Generation::Rfc6455), Some("http://b"));
    }

    #[test]
    fn upgrade_needs_get_http11_connection_and_host() {
        let base = "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
        let ok = request(&format!(
            "GET /a:1 HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\n{base}\r\n"
        ));
        assert!(accept(&ok, Generation::Rfc6455, None, Scheme::Ws).is_ok());
        for bad in [
            format!("POST /a:1 HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\n{base}\r\n"),
            format!("GET /a:1 HTTP/1.0\r\nHost: h\r\nConnection: Upgrade\r\n{base}\r\n"),
            format!("GET /a:1 HTTP/1.1\r\nHost: h\r\nConnection: keep-alive\r\n{base}\r\n"),
            format!("GET /a:1 HTTP/1.1\r\nConnection: Upgrade\r\n{base}\r\n"),
        ] {
            let refusal =
                accept(&request(&bad), Generation::Rfc6455, None, Scheme::Ws).unwrap_err();
            assert_eq!(refusal.status, 400, "{bad}");
        }
    }
}
