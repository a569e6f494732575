//! The PROXY protocol (HAProxy's `doc/proxy-protocol.txt`), both ways: reading the header a
//! load balancer puts in front of a connection ([`inbound`]), and writing one in front of a
//! connection to a target ([`outbound`]).
//!
//! # Why
//!
//! Behind a load balancer every connection comes from the balancer, so the proxy would log,
//! limit and check the balancer's address instead of the browser's. The PROXY protocol fixes
//! that without touching the bytes that follow: the balancer (HAProxy's `send-proxy` and
//! `send-proxy-v2`, nginx's `proxy_protocol on`) writes one header before the first byte of
//! the client's data, naming the client's address and the address it connected to
//! (proxy-protocol.txt §1). The same header, written by wsproxy, tells a target behind wsproxy
//! who the browser was.
//!
//! # The two formats
//!
//! - **v1** (§2.1) is one text line, at most 107 bytes with its CRLF:
//!   `PROXY TCP4 203.0.113.7 192.0.2.1 51234 443\r\n` (`TCP6` for IPv6; `PROXY UNKNOWN…\r\n`
//!   when the sender cannot say).
//! - **v2** (§2.2) is binary: a 12-byte signature (`\r\n\r\n\0\r\nQUIT\n`), a version/command
//!   byte (`PROXY`, or `LOCAL` for the balancer's own connections such as health checks), a
//!   family/transport byte (IPv4/IPv6/Unix × TCP/UDP), a 16-bit length, the addresses, and
//!   optional type-length-value fields (TLVs, §2.2.1: ALPN, the SNI name as `AUTHORITY`, a
//!   unique connection id, TLS details…).
//!
//! Both are parsed and built by the `ppp` crate; these modules add what a server needs around
//! it: reading from a socket without taking a byte too many, the trust decision, the deadline,
//! and errors that say what went wrong.
//!
//! # Rules (proxy-protocol.txt §2, §2.1, §2.2 and §5)
//!
//! - The receiver is configured explicitly and never guesses whether a header is present
//!   (§2: it "MUST not try to guess"; §5): with `--proxy-protocol` every connection must start
//!   with one, and a connection without a valid header is closed.
//! - Headers are accepted only from trusted senders (§2: "only trusted proxies are allowed to
//!   use this protocol"; §5): a connection from outside the `--trusted-proxy` ranges is refused
//!   before a byte is read.
//! - The receiver does not process the connection before the header is complete and valid, and
//!   may give up after a timeout of at least 3 seconds (§2). A header may arrive in pieces
//!   (TCP is a stream); we accept that, as the spec recommends, bounded by the deadline, and
//!   hand on everything after the header untouched.
//! - The sender writes the whole header at once, before any data (§2.1, §2.2).
//!
//! # Layout
//!
//! `mod.rs` (this document and [`Version`]), `inbound.rs` (reading, trust, [`inbound::Addresses`]),
//! `outbound.rs` (building a header for a target).

use std::fmt;
use std::str::FromStr;

pub mod inbound;
pub mod outbound;

/// The two versions of the header (proxy-protocol.txt §2.1 and §2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// The text line.
    V1,
    /// The binary form.
    V2,
}

impl FromStr for Version {
    type Err = String;

    /// `v1` or `v2` (any case), as `--send-proxy-protocol` takes them.
    fn from_str(text: &str) -> Result<Version, String> {
        match text.to_ascii_lowercase().as_str() {
            "v1" => Ok(Version::V1),
            "v2" => Ok(Version::V2),
            _ => Err(format!(
                "{text:?} is not a PROXY protocol version (expected v1 or v2)"
            )),
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Version::V1 => "v1",
            Version::V2 => "v2",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_in_any_case_and_nothing_else() {
        for (text, version) in [
            ("v1", Version::V1),
            ("V1", Version::V1),
            ("v2", Version::V2),
            ("V2", Version::V2),
        ] {
            assert_eq!(text.parse::<Version>(), Ok(version), "{text}");
            assert_eq!(version.to_string(), text.to_ascii_lowercase());
        }
        for bad in ["", "1", "2", "v3", "v1 ", " v2", "version1", "v", "v12"] {
            let err = bad.parse::<Version>().unwrap_err();
            assert!(err.contains("expected v1 or v2"), "{bad:?}: {err}");
        }
    }
}
