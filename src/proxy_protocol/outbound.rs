//! Building the PROXY protocol header wsproxy sends to a target before the first byte
//! (`--send-proxy-protocol v1|v2`), like HAProxy's `send-proxy` and `send-proxy-v2`.
//!
//! A target behind wsproxy sees wsproxy's address as its peer; with the header it learns the
//! browser's. The header carries (proxy-protocol.txt §2):
//!
//! - the **source**: the client's address — the socket's peer, or the address an inbound
//!   PROXY header gave ([`super::inbound`]), so a chain of proxies passes the original client
//!   on (§4.1);
//! - the **destination**: the address the client connected to — wsproxy's listening address
//!   as the client reached it (the client socket's local address), or the destination an
//!   inbound header gave.
//!
//! v1 (§2.1) can only say TCP over IPv4 or IPv6 (`TCP4`, `TCP6`); v2 (§2.2) also says UDP
//! (`0x12`, `0x22`), for UDP tunnels. Both addresses of one header share a family, so when
//! they differ (an IPv6 client relayed to an IPv4 listener, say) the IPv4 one is written in
//! its IPv4-mapped IPv6 form (`::ffff:192.0.2.1`), as HAProxy does; an IPv4-mapped address on
//! both sides is written as plain IPv4. `ppp` builds the bytes.
//!
//! # How the proxy uses this
//!
//! `--send-proxy-protocol` is parsed with `"v1".parse::<Version>()`; [`check`] refuses
//! `v1` with UDP tunnels at start. After connecting to a target and before anything else is
//! written to it — before the TLS handshake with `--tls-target` too, as HAProxy does — the
//! connection writes `header(version, Transport::Tcp, client, destination)` in one
//! `write_all`, with `client`/`destination` as described above. A failed write is a failed
//! target connection (reported to the client like a refused connect).

use std::net::{IpAddr, SocketAddr};

use ppp::v2;

use super::Version;

/// What the tunnel carries to the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Tcp,
    Udp,
}

/// Whether `version` can describe `transport` (v1 has no UDP, §2.1).
pub fn check(version: Version, transport: Transport) -> Result<(), String> {
    match (version, transport) {
        (Version::V1, Transport::Udp) => Err(
            "PROXY protocol v1 cannot describe UDP (its only protocols are TCP4 and TCP6); use v2"
                .into(),
        ),
        _ => Ok(()),
    }
}

/// The header announcing that `client` connected to `destination` over `transport`.
pub fn header(
    version: Version,
    transport: Transport,
    client: SocketAddr,
    destination: SocketAddr,
) -> Result<Vec<u8>, String> {
    check(version, transport)?;
    let addresses = same_family(client, destination);
    match version {
        Version::V1 => Ok(ppp::v1::Addresses::from(addresses).to_string().into_bytes()),
        Version::V2 => {
            let protocol = match transport {
                Transport::Tcp => v2::Protocol::Stream,
                Transport::Udp => v2::Protocol::Datagram,
            };
            let command = v2::Version::Two | v2::Command::Proxy;
            v2::Builder::with_addresses(command, protocol, v2::Addresses::from(addresses))
                .build()
                .map_err(|e| format!("cannot build a PROXY protocol v2 header: {e}"))
        }
    }
}

/// Both addresses in one family: plain IPv4 where both are (or are IPv4-mapped), IPv6 with
/// IPv4-mapped addresses otherwise.
fn same_family(client: SocketAddr, destination: SocketAddr) -> (SocketAddr, SocketAddr) {
    let canonical = |a: SocketAddr| SocketAddr::new(a.ip().to_canonical(), a.port());
    let (client, destination) = (canonical(client), canonical(destination));
    if client.is_ipv4() == destination.is_ipv4() {
        return (client, destination);
    }
    let as_v6 = |a: SocketAddr| match a.ip() {
        IpAddr::V4(ip) => SocketAddr::new(IpAddr::V6(ip.to_ipv6_mapped()), a.port()),
        IpAddr::V6(_) => a,
    };
    (as_v6(client), as_v6(destination))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy_protocol::inbound::{Addresses, TrustedProxies, read_header};
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::thread;
    use std::time::{Duration, Instant};

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn v1_headers_are_the_text_line() {
        let line = header(
            Version::V1,
            Transport::Tcp,
            addr("203.0.113.7:51234"),
            addr("192.0.2.1:443"),
        )
        .unwrap();
        assert_eq!(line, b"PROXY TCP4 203.0.113.7 192.0.2.1 51234 443\r\n");
        let line = header(
            Version::V1,
            Transport::Tcp,
            addr("[2001:db8::7]:1"),
            addr("[2001:db8::1]:2"),
        )
        .unwrap();
        assert_eq!(line, b"PROXY TCP6 2001:db8::7 2001:db8::1 1 2\r\n");
        // Mixed families: IPv4 written IPv4-mapped; mapped on both sides: plain IPv4.
        let line = header(
            Version::V1,
            Transport::Tcp,
            addr("[2001:db8::7]:1"),
            addr("192.0.2.1:2"),
        )
        .unwrap();
        assert_eq!(line, b"PROXY TCP6 2001:db8::7 ::ffff:192.0.2.1 1 2\r\n");
        let line = header(
            Version::V1,
            Transport::Tcp,
            addr("[::ffff:203.0.113.7]:1"),
            addr("[::ffff:192.0.2.1]:2"),
        )
        .unwrap();
        assert_eq!(line, b"PROXY TCP4 203.0.113.7 192.0.2.1 1 2\r\n");
        // The longest line fits the 107 bytes of §2.1.
        let max = "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535";
        let line = header(Version::V1, Transport::Tcp, addr(max), addr(max)).unwrap();
        assert!(line.len() <= 107, "{}", line.len());
        // No UDP in v1.
        let err = header(
            Version::V1,
            Transport::Udp,
            addr("203.0.113.7:1"),
            addr("192.0.2.1:2"),
        )
        .unwrap_err();
        assert!(err.contains("use v2"), "{err}");
        assert!(check(Version::V1, Transport::Udp).is_err());
        assert!(check(Version::V2, Transport::Udp).is_ok());
        assert!(check(Version::V1, Transport::Tcp).is_ok());
    }

    #[test]
    fn v2_headers_parse_back_with_every_family_and_transport() {
        for (client, destination, transport, family_byte) in [
            ("203.0.113.7:51234", "192.0.2.1:443", Transport::Tcp, 0x11),
            ("203.0.113.7:51234", "192.0.2.1:53", Transport::Udp, 0x12),
            ("[2001:db8::7]:1", "[2001:db8::1]:2", Transport::Tcp, 0x21),
            ("[2001:db8::7]:1", "[2001:db8::1]:2", Transport::Udp, 0x22),
            ("[2001:db8::7]:1", "192.0.2.1:2", Transport::Tcp, 0x21),
        ] {
            let bytes = header(Version::V2, transport, addr(client), addr(destination)).unwrap();
            assert_eq!(&bytes[..12], v2::PROTOCOL_PREFIX);
            assert_eq!(bytes[12], 0x21, "version 2, PROXY");
            assert_eq!(bytes[13], family_byte, "{client} {transport:?}");
            let parsed = v2::Header::try_from(&bytes[..]).unwrap();
            assert_eq!(parsed.len(), bytes.len());
            let (source, target) = same_family(addr(client), addr(destination));
            assert_eq!(parsed.addresses, v2::Addresses::from((source, target)));
        }
    }

    /// A target that reads the header with the inbound reader sees the client's address, and
    /// the data after the header arrives intact — over a real loopback connection.
    #[test]
    fn a_target_reading_the_header_sees_the_client() {
        for version in [Version::V1, Version::V2] {
            let target = TcpListener::bind("127.0.0.1:0").unwrap();
            let target_addr = target.local_addr().unwrap();
            let reader = thread::spawn(move || {
                let (stream, _) = target.accept().unwrap();
                let trusted =
                    TrustedProxies::new(vec![TrustedProxies::parse_range("127.0.0.1").unwrap()]);
                let deadline = Instant::now() + Duration::from_secs(10);
                let header = read_header(&stream, &trusted, deadline).unwrap();
                let mut data = Vec::new();
                (&stream).read_to_end(&mut data).unwrap();
                (header, data)
            });
            let mut to_target = TcpStream::connect(target_addr).unwrap();
            let client = addr("[2001:db8::7]:40000");
            let destination = addr("[2001:db8::1]:8080");
            to_target
                .write_all(&header(version, Transport::Tcp, client, destination).unwrap())
                .unwrap();
            to_target.write_all(b"SSH-2.0-OpenSSH_9.2\r\n").unwrap();
            drop(to_target);
            let (header, data) = reader.join().unwrap();
            assert_eq!(header.version, version);
            assert_eq!(
                header.addresses,
                Addresses::Relayed {
                    client,
                    destination
                }
            );
            assert_eq!(data, b"SSH-2.0-OpenSSH_9.2\r\n");
        }
    }
}
