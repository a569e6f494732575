//! The draft-hixie-76 opening handshake (draft-hixie-thewebsocketprotocol-76 §1.3, §5.2;
//! identical to draft-ietf-hybi-thewebsocketprotocol-00).
//!
//! The client sends two keys, `Sec-WebSocket-Key1` and `Sec-WebSocket-Key2`, plus 8 raw bytes
//! (*key3*) after the empty line. For each key the server concatenates its digits into a
//! number and divides it by the number of spaces in the key (§5.2 steps 4–9):
//!
//! ```text
//! "18x 6]8vM;54 *(5:  {   U1]8  z [  8"  → digits 1868545188, 12 spaces → 155712099
//! ```
//!
//! A key with no spaces, or whose number is not a multiple of its spaces, is refused (that is
//! how the draft detects cross-protocol attacks). The response body is
//! MD5(BE32(part1) ‖ BE32(part2) ‖ key3), 16 raw bytes after the response headers, which also
//! carry `Sec-WebSocket-Origin` and the exact `Sec-WebSocket-Location` the client compares.

use md5::{Digest, Md5};

use super::{Accepted, Generation, Scheme, hixie_subprotocol, location, response_lines};
use crate::framing::Encoding;
use crate::http::{Refusal, Request};

/// The number a key encodes: its digits divided by its spaces (draft-76 §5.2 steps 4–7).
pub fn key_number(key: &str) -> Result<u32, String> {
    let digits: String = key.chars().filter(char::is_ascii_digit).collect();
    let spaces = key.chars().filter(|&c| c == ' ').count() as u64;
    if digits.is_empty() {
        return Err(format!("key '{key}' has no digits"));
    }
    // Legal numbers fit in u32 × 12 spaces; a hostile key may not fit even in u64.
    let number: u64 = digits
        .parse()
        .map_err(|_| format!("key '{key}' has a number too large"))?;
    if spaces == 0 {
        return Err(format!("key '{key}' has no spaces"));
    }
    if !number.is_multiple_of(spaces) {
        return Err(format!(
            "key number {number} is not a multiple of its {spaces} spaces"
        ));
    }
    u32::try_from(number / spaces).map_err(|_| format!("key '{key}' divides to more than 32 bits"))
}

/// MD5(BE32(part1) ‖ BE32(part2) ‖ key3) (draft-76 §5.2 steps 8–9).
pub fn challenge_response(part1: u32, part2: u32, key3: &[u8; 8]) -> [u8; 16] {
    let mut challenge = [0u8; 16];
    challenge[..4].copy_from_slice(&part1.to_be_bytes());
    challenge[4..8].copy_from_slice(&part2.to_be_bytes());
    challenge[8..].copy_from_slice(key3);
    Md5::digest(challenge).into()
}

/// Builds the `101 WebSocket Protocol Handshake` response with its 16-byte body.
pub fn accept(request: &Request, key3: &[u8; 8], scheme: Scheme) -> Result<Accepted, Refusal> {
    let mut transcript = Vec::new();
    let mut part = |name: &str| -> Result<u32, Refusal> {
        let key = request
            .header(name)
            .ok_or_else(|| Refusal::bad_request(format!("missing {name}")))?;
        let number =
            key_number(key).map_err(|e| Refusal::bad_request(format!("bad {name}: {e}")))?;
        transcript.push(format!(
            "{name} {key:?}: {} / {} spaces = {number}",
            key.chars().filter(char::is_ascii_digit).collect::<String>(),
            key.chars().filter(|&c| c == ' ').count()
        ));
        Ok(number)
    };
    let part1 = part("Sec-WebSocket-Key1")?;
    let part2 = part("Sec-WebSocket-Key2")?;
    let subprotocol = hixie_subprotocol(request.header("Sec-WebSocket-Protocol"))?;
    let digest = challenge_response(part1, part2, key3);
    transcript.push(format!(
        "response = md5({part1:08x} {part2:08x} {}) = {}",
        hex(key3),
        hex(&digest)
    ));

    let mut head = String::from(
        "HTTP/1.1 101 WebSocket Protocol Handshake\r\nUpgrade: WebSocket\r\nConnection: Upgrade\r\n",
    );
    if let Some(origin) = request.header("Origin") {
        head.push_str(&format!("Sec-WebSocket-Origin: {origin}\r\n"));
    }
    head.push_str(&format!(
        "Sec-WebSocket-Location: {}\r\n",
        location(request, scheme)
    ));
    if let Some(name) = &subprotocol {
        head.push_str(&format!("Sec-WebSocket-Protocol: {name}\r\n"));
    }
    head.push_str("\r\n");
    transcript.extend(response_lines(&head));

    let mut response = head.into_bytes();
    response.extend_from_slice(&digest);
    Ok(Accepted {
        generation: Generation::Hixie76,
        subprotocol,
        encoding: Encoding::Base64,
        response,
        transcript,
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::parse_head;

    #[test]
    fn worked_example_from_the_opening_handshake_section() {
        // draft-76 §1.3.
        let part1 = key_number("18x 6]8vM;54 *(5:  {   U1]8  z [  8").unwrap();
        let part2 = key_number("1_ tx7X d  <  nw  334J702) 7]o}` 0").unwrap();
        assert_eq!((part1, part2), (155712099, 173347027));
        assert_eq!(
            &challenge_response(part1, part2, b"Tm[K T2u"),
            b"fQJ,fN/4F4!~K~MH"
        );
    }

    #[test]
    fn worked_example_from_the_protocol_overview() {
        // draft-76 §1.2; key1's number 4146546015 is above 2^31.
        let text = "GET /demo HTTP/1.1\r\nHost: example.com\r\nConnection: Upgrade\r\nSec-WebSocket-Key2: 12998 5 Y3 1  .P00\r\nSec-WebSocket-Protocol: sample\r\nUpgrade: WebSocket\r\nSec-WebSocket-Key1: 4 @1  46546xW%0l 1 5\r\nOrigin: http://example.com\r\n\r\n";
        let request = parse_head(text.as_bytes()).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(key_number("4 @1  46546xW%0l 1 5"), Ok(829309203));
        // We only speak Base64 subprotocols, so `sample` is refused; check the digest directly.
        assert_eq!(
            accept(&request, b"^n:ds[4U", Scheme::Ws)
                .unwrap_err()
                .status,
            400
        );
        assert_eq!(
            &challenge_response(829309203, 259970620, b"^n:ds[4U"),
            b"8jKS'y:G*Co,Wxa-"
        );
    }

    #[test]
    fn response_carries_origin_location_and_digest() {
        let text = "GET /demo HTTP/1.1\r\nHost: example.com\r\nConnection: Upgrade\r\nSec-WebSocket-Key2: 12998 5 Y3 1  .P00\r\nSec-WebSocket-Protocol: websockets-proxy\r\nUpgrade: WebSocket\r\nSec-WebSocket-Key1: 4 @1  46546xW%0l 1 5\r\nOrigin: http://example.com\r\n\r\n";
        let request = parse_head(text.as_bytes()).unwrap_or_else(|e| panic!("{e:?}"));
        let accepted = accept(&request, b"^n:ds[4U", Scheme::Wss).unwrap();
        let (head, body) = accepted.response.split_at(accepted.response.len() - 16);
        let head = String::from_utf8(head.to_vec()).unwrap();
        assert!(head.starts_with("HTTP/1.1 101 WebSocket Protocol Handshake\r\n"));
        assert!(head.contains("Sec-WebSocket-Origin: http://example.com\r\n"));
        assert!(head.contains("Sec-WebSocket-Location: wss://example.com/demo\r\n"));
        assert!(head.contains("Sec-WebSocket-Protocol: websockets-proxy\r\n"));
        assert_eq!(body, b"8jKS'y:G*Co,Wxa-");
    }

    #[test]
    fn refuses_keys_without_spaces_or_not_a_multiple() {
        assert!(key_number("12345").unwrap_err().contains("no spaces"));
        assert!(key_number("1 2 3").unwrap_err().contains("not a multiple"));
        assert!(key_number("x y").unwrap_err().contains("no digits"));
        assert!(
            key_number("99999999999999999999999 ")
                .unwrap_err()
                .contains("too large")
        );
        assert!(key_number("8589934590 ").unwrap_err().contains("32 bits"));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_keys_never_panic(key in ".{0,80}") {
            let _ = key_number(&key);
        }
    }
}
