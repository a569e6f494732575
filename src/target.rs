//! Where a tunnel goes: the TCP target named by the request, resolved and connected.
//!
//! The prototype's addressing is kept: the resource name of the WebSocket URL is
//! `/<host>:<port>`. We parse it properly: percent-decoding (RFC 3986 §2.1), IPv6 literals in
//! brackets (RFC 3986 §3.2.2, `/[::1]:22`), the query string ignored, ports 1–65535. A name is
//! resolved once ([`resolve`]); the caller checks the policy against every address and then
//! connects only to those addresses ([`connect`]), trying each in turn with a timeout.

use std::fmt;
use std::io;
use std::net::{Ipv6Addr, SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

/// A TCP endpoint as the client named it (a name or an IP literal, and a port).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// A DNS name or an IP literal, IPv6 without brackets.
    pub host: String,
    pub port: u16,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
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

/// Parses `host:port` or `[v6addr]:port`.
pub fn parse_host_port(text: &str) -> Result<Target, String> {
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (addr, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("unclosed '[' in target '{text}'"))?;
        addr.parse::<Ipv6Addr>()
            .map_err(|_| format!("'{addr}' is not an IPv6 address"))?;
        let port = after
            .strip_prefix(':')
            .ok_or_else(|| format!("missing port in target '{text}' (expected [addr]:port)"))?;
        (addr, port)
    } else {
        let (host, port) = text
            .rsplit_once(':')
            .ok_or_else(|| format!("missing port in target '{text}' (expected host:port)"))?;
        if host.contains(':') {
            return Err(format!("IPv6 addresses need brackets: [{host}]:{port}"));
        }
        (host, port)
    };
    if host.is_empty() {
        return Err(format!("empty host in target '{text}'"));
    }
    if !host
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | ':'))
    {
        return Err(format!("'{host}' is not a valid host name"));
    }
    let port = parse_port(port).ok_or_else(|| format!("bad port '{port}' (expected 1-65535)"))?;
    Ok(Target {
        host: host.to_string(),
        port,
    })
}

fn parse_port(text: &str) -> Option<u16> {
    if text.is_empty() || text.len() > 5 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse::<u16>().ok().filter(|&p| p != 0)
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

/// Resolves a target to its socket addresses (one DNS lookup; IP literals need none).
pub fn resolve(target: &Target) -> Result<Vec<SocketAddr>, String> {
    let addrs: Vec<SocketAddr> = (target.host.as_str(), target.port)
        .to_socket_addrs()
        .map_err(|e| format!("resolve {}: {}", target.host, e))?
        .collect();
    if addrs.is_empty() {
        return Err(format!("resolve {}: no addresses", target.host));
    }
    Ok(addrs)
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
        Target {
            host: host.into(),
            port,
        }
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
