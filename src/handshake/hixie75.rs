//! The draft-hixie-75 opening handshake (draft-hixie-thewebsocketprotocol-75, Feb 2010).
//!
//! No keys and no body: the client sends `Upgrade: WebSocket`, `Connection: Upgrade`, `Host`,
//! `Origin`, and optionally one `WebSocket-Protocol`. Clients compare the first three response
//! lines byte for byte (Chromium's draft-75 client `memcmp`s them), so the status line must be
//! exactly `HTTP/1.1 101 Web Socket Protocol Handshake` — with a space in "Web Socket" — and
//! the headers have no `Sec-` prefix. There is no closing handshake: either side just closes.

use super::{Accepted, Generation, Scheme, hixie_subprotocol, location, response_lines};
use crate::framing::Encoding;
use crate::http::{Refusal, Request};

/// Builds the `101 Web Socket Protocol Handshake` response.
pub fn accept(request: &Request, scheme: Scheme) -> Result<Accepted, Refusal> {
    let subprotocol = hixie_subprotocol(request.header("WebSocket-Protocol"))?;
    let mut head = String::from(
        "HTTP/1.1 101 Web Socket Protocol Handshake\r\nUpgrade: WebSocket\r\nConnection: Upgrade\r\n",
    );
    if let Some(origin) = request.header("Origin") {
        head.push_str(&format!("WebSocket-Origin: {origin}\r\n"));
    }
    head.push_str(&format!(
        "WebSocket-Location: {}\r\n",
        location(request, scheme)
    ));
    if let Some(name) = &subprotocol {
        head.push_str(&format!("WebSocket-Protocol: {name}\r\n"));
    }
    head.push_str("\r\n");
    let transcript = response_lines(&head).collect();
    Ok(Accepted {
        generation: Generation::Hixie75,
        subprotocol,
        encoding: Encoding::Base64,
        response: head.into_bytes(),
        transcript,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::parse_head;

    #[test]
    fn response_starts_with_the_exact_85_bytes_clients_compare() {
        let text = "GET /demo HTTP/1.1\r\nUpgrade: WebSocket\r\nConnection: Upgrade\r\nHost: example.com\r\nOrigin: http://example.com\r\n\r\n";
        let request = parse_head(text.as_bytes()).unwrap_or_else(|e| panic!("{e:?}"));
        let accepted = accept(&request, Scheme::Ws).unwrap();
        let expected = "HTTP/1.1 101 Web Socket Protocol Handshake\r\nUpgrade: WebSocket\r\nConnection: Upgrade\r\nWebSocket-Origin: http://example.com\r\nWebSocket-Location: ws://example.com/demo\r\n\r\n";
        assert_eq!(String::from_utf8(accepted.response).unwrap(), expected);
        assert_eq!(&expected.as_bytes()[..85], b"HTTP/1.1 101 Web Socket Protocol Handshake\r\nUpgrade: WebSocket\r\nConnection: Upgrade\r\n");
    }
}
