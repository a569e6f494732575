//! Where a tunnel goes: the TCP target named by the request, parsed once into a typed
//! [`Target`], and connected.
//!
//! The prototype's addressing is kept: the resource name of the WebSocket URL is
//! `/<host>:<port>`. We parse it properly: percent-decoding (RFC 3986 §2.1), IPv6 literals in
//! brackets (RFC 3986 §3.2.2, `/[::1]:22`), the query string ignored, ports 1–65535. The same
//! parser reads `--target`, websockify's positional target and every token-file line
//! ([`crate::tokens`]), so a target that passes at start never fails later.
//!
//! A host is an IP literal or a DNS name ([`Host`]); names are stored lower-case and without
//! a trailing dot (`Internal.Corp.` is `internal.corp`; resolution makes it absolute again,
//! see [`crate::resolve`]). An IPv4 literal must be written as four decimal numbers: the
//! other spellings that `inet_aton` and therefore `getaddrinfo` accept (`127.1`, `0x7f.1`,
//! `2130706433`, `017700000001`, `0`) are refused, as is anything whose last label is a
//! number (the WHATWG URL standard's "ends in a number" rule), because software disagrees on
//! what they mean (RFC 3986 §7.4) and a rule written for `127.0.0.1` should not have to guess.
//!
//! [`connect`] tries the addresses the policy let through in turn, each with a timeout.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr, TcpStream};
use std::time::Duration;

/// A TCP endpoint as the client named it: a host and a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub host: Host,
    pub port: u16,
}

/// The host part of a target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// An IP literal, as written (before any canonicalisation, see [`crate::policy`]).
    Ip(IpAddr),
    /// A DNS name: lower-case, without a trailing dot.
    Name(String),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Ip(ip) => write!(f, "{ip}"),
            Host::Name(name) => f.write_str(name),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.host {
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]:{}", self.port),
            _ => write!(f, "{}:{}", self.host, self.port),
        }
    }
}

/// Parses the resource name of a WebSocket request, e.g. `/example.com:80?x=1`.
pub fn parse_resource(resource: &str) -> Result<Target, String> {
    let path = resource.split(['?', '#']).next().unwrap_or_default();
    let Some(encoded) = path.strip_prefix('/') else {
        return Err(format!(
            "the resource name '{resource}' does not start with '/'"
        ));
    };
    if encoded.is_empty() {
        return Err("no target in the URL: connect to ws://<proxy>/<host>:<port>".into());
    }
    let decoded = percent_decode(encoded)?;
    parse_host_port(&decoded)
}

/// Parses `host:port` or `[v6addr]:port` (IPv6 needs brackets here, as in URLs).
pub fn parse_host_port(text: &str) -> Result<Target, String> {
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (addr, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("unclosed '[' in target '{text}'"))?;
        let port = after
            .strip_prefix(':')
            .ok_or_else(|| format!("missing port in target '{text}' (expected [addr]:port)"))?;
        let ip = addr
            .parse::<Ipv6Addr>()
            .map_err(|_| format!("'{addr}' is not an IPv6 address"))?;
        return Ok(Target {
            host: Host::Ip(IpAddr::V6(ip)),
            port: parse_port(port)?,
        });
    } else {
        text.rsplit_once(':')
            .ok_or_else(|| format!("missing port in target '{text}' (expected host:port)"))?
    };
    if host.contains(':') {
        return Err(format!("IPv6 addresses need brackets: [{host}]:{port}"));
    }
    target_from_parts(host, port)
}

/// Builds a target from a host (a name, an IPv4 literal, or an IPv6 literal without
/// brackets) and a port, checking both.
pub fn target_from_parts(host: &str, port: &str) -> Result<Target, String> {
    Ok(Target {
        host: parse_host(host)?,
        port: parse_port(port)?,
    })
}

fn parse_host(text: &str) -> Result<Host, String> {
    if text.is_empty() {
        return Err("empty host in target".into());
    }
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(Host::Ip(ip));
    }
    if text.contains(':') {
        return Err(format!("'{text}' is not an IPv6 address"));
    }
    let name = text.strip_suffix('.').unwrap_or(text);
    if name.is_empty()
        || name.len() > 253
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
    {
        return Err(format!("'{text}' is not a valid host name"));
    }
    let labels: Vec<&str> = name.split('.').collect();
    if labels.iter().any(|l| l.is_empty() || l.len() > 63) {
        return Err(format!(
            "'{text}' is not a valid host name (empty or over-long label)"
        ));
    }
    if labels.last().is_some_and(|last| is_number(last)) {
        return Err(format!(
            "'{text}' is not an IPv4 address in dotted-decimal form (a.b.c.d): spellings such \
             as 127.1, 0x7f.0.0.1, 2130706433 or 0 are refused"
        ));
    }
    Ok(Host::Name(name.to_ascii_lowercase()))
}

/// Whether a label reads as a number: decimal digits, or `0x`/`0X` and hex digits (the WHATWG
/// URL standard's IPv4 number; `inet_aton` reads octal with a leading 0 as well).
fn is_number(label: &str) -> bool {
    let hex = label
        .strip_prefix("0x")
        .or_else(|| label.strip_prefix("0X"));
    match hex {
        Some(digits) => digits.bytes().all(|b| b.is_ascii_hexdigit()),
        None => label.bytes().all(|b| b.is_ascii_digit()),
    }
}

fn parse_port(text: &str) -> Result<u16, String> {
    let port = (!text.is_empty() && text.len() <= 5 && text.bytes().all(|b| b.is_ascii_digit()))
        .then(|| text.parse::<u16>().ok())
        .flatten()
        .filter(|&p| p != 0);
    port.ok_or_else(|| format!("bad port '{text}' (expected 1-65535)"))
}

/// Decodes `%XX` escapes; the result must be UTF-8 without control characters.
pub fn percent_decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("bad percent-escape in '{text}'"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    let decoded = String::from_utf8(out).map_err(|_| format!("'{text}' is not UTF-8"))?;
    if decoded.chars().any(char::is_control) {
        return Err(format!("control characters in '{text}'"));
    }
    Ok(decoded)
}

/// Connects to the first of `addrs` that answers within `timeout` each.
pub fn connect(addrs: &[SocketAddr], timeout: Duration) -> Result<TcpStream, String> {
    let mut last_error = String::from("no addresses to connect to");
    for addr in addrs {
        match TcpStream::connect_timeout(addr, timeout) {
            Ok(stream) => return Ok(stream),
            Err(e) => last_error = format!("connect {addr}: {}", describe(&e)),
        }
    }
    Err(last_error)
}

/// A short, lower-case description of an I/O error ("connection refused", "timed out").
pub fn describe(error: &io::Error) -> String {
    let kind = error.kind().to_string();
    if error.kind() == io::ErrorKind::Other || kind.contains("uncategorized") {
        error.to_string()
    } else {
        kind
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(host: &str, port: u16) -> Target {
        let host = match host.parse::<IpAddr>() {
            Ok(ip) => Host::Ip(ip),
            Err(_) => Host::Name(host.into()),
        };
        Target { host, port }
    }

    #[test]
    fn parses_names_ipv4_and_ipv6() {
        assert_eq!(
            parse_resource("/example.com:80"),
            Ok(target("example.com", 80))
        );
        assert_eq!(
            parse_resource("/127.0.0.1:8000"),
            Ok(target("127.0.0.1", 8000))
        );
        assert_eq!(parse_resource("/[::1]:22"), Ok(target("::1", 22)));
        assert_eq!(parse_resource("/[::1]:22").unwrap().to_string(), "[::1]:22");
    }

    #[test]
    fn ignores_the_query_and_percent_decodes() {
        assert_eq!(
            parse_resource("/localhost:5900?token=x"),
            Ok(target("localhost", 5900))
        );
        assert_eq!(parse_resource("/%5B%3A%3A1%5D%3A80"), Ok(target("::1", 80)));
    }

    #[test]
    fn rejects_bad_ports() {
        for bad in [
            "/host",
            "/host:",
            "/host:0",
            "/host:65536",
            "/host:8o",
            "/host:-1",
            "/host:+80",
        ] {
            let err = parse_resource(bad).unwrap_err();
            assert!(err.contains("port"), "{bad}: {err}");
        }
        assert_eq!(parse_resource("/host:65535"), Ok(target("host", 65535)));
    }

    #[test]
    fn rejects_empty_and_odd_hosts() {
        assert!(parse_resource("/:80").unwrap_err().contains("empty host"));
        assert!(parse_resource("/").unwrap_err().contains("no target"));
        assert!(parse_resource("/a/b:80").is_err());
        assert!(parse_resource("/::1:80").unwrap_err().contains("brackets"));
        assert!(parse_resource("/[nothex]:80").is_err());
        assert!(parse_resource("/a%00b:80").is_err());
        assert!(parse_resource("/a%zz:80").is_err());
    }

    #[test]
    fn names_are_lower_case_without_the_trailing_dot() {
        assert_eq!(
            parse_resource("/Internal.Corp.:22"),
            Ok(target("internal.corp", 22))
        );
        assert_eq!(parse_host_port("LOCALHOST:1"), Ok(target("localhost", 1)));
        for bad in ["/.:1", "/a..b:1", "/.a:1", "/a..:1"] {
            assert!(parse_resource(bad).is_err(), "{bad}");
        }
        let long = format!("/{}.example:1", "a".repeat(64));
        assert!(parse_resource(&long).is_err());
    }

    #[test]
    fn ipv4_must_be_dotted_decimal() {
        // Each of these is an IPv4 address to inet_aton (and so to getaddrinfo).
        for odd in [
            "0",
            "0x0",
            "0.0",
            "00.0.0.0",
            "0x7f.1",
            "127.1",
            "2130706433",
            "017700000001",
            "0x7f.0.0.1",
            "127.0.0.01",
            "127.0.0.1.",
            "1.2.3.4.5",
            "host.123",
            "a.0X1f",
            "0x",
        ] {
            let err = parse_host_port(&format!("{odd}:80")).unwrap_err();
            assert!(err.contains("dotted-decimal"), "{odd}: {err}");
        }
        assert_eq!(parse_host_port("0.0.0.0:80"), Ok(target("0.0.0.0", 80)));
        assert_eq!(parse_host_port("10.1.2.3:80"), Ok(target("10.1.2.3", 80)));
        // Names that merely contain digits are names.
        for name in ["1e100.net", "123.example", "0x7f.example", "a1", "x-0"] {
            assert!(parse_host_port(&format!("{name}:80")).is_ok(), "{name}");
        }
    }

    #[test]
    fn token_style_targets_may_leave_ipv6_unbracketed() {
        assert_eq!(target_from_parts("::1", "5900"), Ok(target("::1", 5900)));
        assert!(
            target_from_parts("a:b:c", "80")
                .unwrap_err()
                .contains("not an IPv6")
        );
        assert!(target_from_parts("ho$t", "80").is_err());
    }

    #[test]
    fn connect_failure_names_the_address_and_reason() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = closed.local_addr().unwrap();
        drop(closed);
        let err = connect(&[addr], Duration::from_secs(2)).unwrap_err();
        assert_eq!(err, format!("connect {addr}: connection refused"));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_resources_never_panic(s in ".{0,64}") {
            let _ = parse_resource(&s);
            let _ = parse_host_port(&s);
        }
    }
}
