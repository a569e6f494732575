//! The RFC 6455 opening handshake (RFC 6455 §4.2), also used for hybi-07 and hybi-08.
//!
//! The client sends a random 16-byte nonce, Base64-encoded, in `Sec-WebSocket-Key`; the server
//! proves it understood the handshake by answering `Sec-WebSocket-Accept` =
//! Base64(SHA-1(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11")) (RFC 6455 §4.2.2 step 5.4;
//! computed by tungstenite's `derive_accept_key`). hybi-07/08 use the same key exchange and the
//! same framing; their only difference that matters here is that the browser's origin arrives
//! in `Sec-WebSocket-Origin` instead of `Origin` (see [`super::origin`]).

use base64::Engine;
use tungstenite::handshake::derive_accept_key;

use super::{Accepted, Generation, response_lines, subprotocol};
use crate::http::{Refusal, Request};

/// Builds the `101 Switching Protocols` response.
pub fn accept(request: &Request, generation: Generation) -> Result<Accepted, Refusal> {
    if !request
        .header("Upgrade")
        .is_some_and(|u| u.trim().eq_ignore_ascii_case("websocket"))
    {
        return Err(Refusal::bad_request(
            "the Upgrade header must be 'websocket'",
        ));
    }
    let key = request
        .header("Sec-WebSocket-Key")
        .ok_or_else(|| Refusal::bad_request("missing Sec-WebSocket-Key"))?;
    let nonce_len = base64::engine::general_purpose::STANDARD
        .decode(key)
        .map(|nonce| nonce.len())
        .unwrap_or(0);
    if nonce_len != 16 {
        return Err(Refusal::bad_request(format!(
            "Sec-WebSocket-Key '{key}' is not a Base64-encoded 16-byte nonce"
        )));
    }
    let (subprotocol, encoding) =
        subprotocol::choose(request.header_joined("Sec-WebSocket-Protocol").as_deref())?;

    let accept_key = derive_accept_key(key.as_bytes());
    let mut head = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept_key}\r\n"
    );
    if let Some(name) = &subprotocol {
        head.push_str(&format!("Sec-WebSocket-Protocol: {name}\r\n"));
    }
    head.push_str("\r\n");

    let mut transcript = vec![
        format!(
            "accept = base64(sha1(\"{key}\" + \"258EAFA5-E914-47DA-95CA-C5AB0DC85B11\")) = {accept_key}"
        ),
        match &subprotocol {
            Some(name) => format!("subprotocol {name} → {encoding} frames to the client"),
            None => format!("no subprotocol → {encoding} frames to the client"),
        },
    ];
    transcript.extend(response_lines(&head));
    Ok(Accepted {
        generation,
        subprotocol,
        encoding,
        response: head.into_bytes(),
        transcript,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framing::Encoding;
    use crate::http::parse_head;

    fn request(extra: &str) -> Request {
        let text = format!(
            "GET /h:1 HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
        );
        parse_head(text.as_bytes()).unwrap_or_else(|e| panic!("{e:?}"))
    }

    #[test]
    fn answers_the_rfc_example_key() {
        // RFC 6455 §1.3: this key yields s3pPLMBiTxaQ9kYGzzhZRbK+xOo=.
        let accepted = accept(&request(""), Generation::Rfc6455).unwrap();
        let text = String::from_utf8(accepted.response).unwrap();
        assert!(text.starts_with("HTTP/1.1 101 Switching Protocols\r\n"));
        assert!(text.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        assert!(!text.contains("Sec-WebSocket-Protocol"));
        assert_eq!(accepted.encoding, Encoding::Binary);
    }

    #[test]
    fn echoes_the_chosen_subprotocol() {
        let accepted = accept(
            &request("Sec-WebSocket-Protocol: chat, websockets-proxy\r\n"),
            Generation::Rfc6455,
        )
        .unwrap();
        assert_eq!(accepted.subprotocol.as_deref(), Some("websockets-proxy"));
        assert_eq!(accepted.encoding, Encoding::Base64);
        assert!(
            String::from_utf8(accepted.response)
                .unwrap()
                .contains("Sec-WebSocket-Protocol: websockets-proxy\r\n")
        );
    }

    #[test]
    fn rejects_a_key_that_is_not_a_16_byte_nonce() {
        let text = "GET /h:1 HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: c2hvcnQ=\r\nSec-WebSocket-Version: 13\r\n\r\n";
        let req = parse_head(text.as_bytes()).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(accept(&req, Generation::Rfc6455).unwrap_err().status, 400);
    }
}
