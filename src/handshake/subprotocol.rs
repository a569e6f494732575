//! Choosing the subprotocol: what the tunnel's frames carry.
//!
//! RFC 6455 §4.2.2 (`/subprotocol/`) lets the server pick one of the values the client
//! offered in `Sec-WebSocket-Protocol` (a comma-separated list, RFC 6455 §11.3.4), and the
//! client fails the connection if the server answers with one it did not offer — or with none
//! when it offered some (browsers do). We speak three:
//!
//! | subprotocol        | frames to the client           | from                           |
//! |--------------------|--------------------------------|--------------------------------|
//! | `websockets-proxy` | Base64 in text frames          | the Ruby prototype             |
//! | `base64`           | Base64 in text frames          | websockify ≤ 0.8, old noVNC    |
//! | `binary`           | raw bytes in binary frames     | websockify, noVNC 0.6–1.1      |
//! | (none offered)     | raw bytes in binary frames     | noVNC ≥ 1.2, most tools        |
//!
//! We pick the client's most preferred one that we support (the list is in preference order).
//! Whatever was chosen, frames *from* the client are decoded by their opcode: binary frames
//! carry raw bytes, text frames carry Base64.

use crate::framing::Encoding;
use crate::http::Refusal;

/// The subprotocols we support, in the order we list them in errors.
pub const SUPPORTED: [&str; 3] = ["websockets-proxy", "base64", "binary"];

/// Whether a subprotocol name means Base64 text frames.
pub fn is_base64_protocol(name: &str) -> bool {
    name.eq_ignore_ascii_case("websockets-proxy") || name.eq_ignore_ascii_case("base64")
}

/// Picks from the offered list (the joined `Sec-WebSocket-Protocol` values, if any).
/// Returns the name to echo (spelled as the client spelled it) and the encoding it implies.
pub fn choose(offered: Option<&str>) -> Result<(Option<String>, Encoding), Refusal> {
    let names: Vec<&str> = offered
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .collect();
    if names.is_empty() {
        return Ok((None, Encoding::Binary));
    }
    for name in &names {
        if is_base64_protocol(name) {
            return Ok((Some(name.to_string()), Encoding::Base64));
        }
        if name.eq_ignore_ascii_case("binary") {
            return Ok((Some(name.to_string()), Encoding::Binary));
        }
    }
    Err(Refusal::bad_request(format!(
        "none of the offered subprotocols ({}) is supported; wsproxy speaks {}",
        names.join(", "),
        SUPPORTED.join(", ")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_offer_means_binary_without_a_header() {
        assert_eq!(choose(None), Ok((None, Encoding::Binary)));
        assert_eq!(choose(Some(" , ")), Ok((None, Encoding::Binary)));
    }

    #[test]
    fn picks_the_clients_most_preferred_supported_protocol() {
        assert_eq!(
            choose(Some("binary, base64")),
            Ok((Some("binary".into()), Encoding::Binary))
        );
        // websockify ≥ 0.9 fails this one because it does not trim the space (websockify#238).
        assert_eq!(
            choose(Some("base64, binary")),
            Ok((Some("base64".into()), Encoding::Base64))
        );
        assert_eq!(
            choose(Some("chat,websockets-proxy")),
            Ok((Some("websockets-proxy".into()), Encoding::Base64))
        );
    }

    #[test]
    fn offered_but_unsupported_is_refused_with_our_list() {
        let refusal = choose(Some("sip, chat")).unwrap_err();
        assert_eq!(refusal.status, 400);
        assert!(refusal.reason.contains("(sip, chat)"));
        assert!(refusal.reason.contains("websockets-proxy, base64, binary"));
    }
}
