//! Reading the PROXY protocol header that a load balancer sends before a connection's data
//! (`--proxy-protocol`, accepted only from `--trusted-proxy` ranges).
//!
//! # What [`read_header`] does
//!
//! 1. **Trust first.** The socket's peer must be inside one of the [`TrustedProxies`] ranges,
//!    or the connection is refused before a single byte is read (proxy-protocol.txt §2 and §5:
//!    a client allowed to send the header could claim any address). IPv4 peers of a dual-stack
//!    socket (`::ffff:192.0.2.7`) match IPv4 ranges.
//! 2. **Exactly the header, not a byte more.** The HTTP request or the TLS ClientHello follows
//!    the header in the same TCP stream, and the next step (TLS detection peeks at the first
//!    byte) must find it untouched. So the reader *peeks* at what has arrived, asks `ppp`
//!    whether that is a complete header, and consumes only bytes that belong to the header:
//!    - v2 (§2.2) announces its length in its 16th byte, so while `ppp` says "incomplete", all
//!      bytes received so far are header bytes;
//!    - v1 (§2.1) is one line ending in CRLF, so bytes up to the first LF are header bytes;
//!      the line is handed to `ppp` once it has ended (§2.1: "the receiver must wait for the
//!      CRLF sequence before starting to decode the addresses"); a line without its CRLF in
//!      the first 107 bytes is malformed.
//!
//!    A header split across reads (a balancer or a network device may send it in pieces, §2)
//!    is therefore read piece by piece: each peek waits for more data, nothing is guessed.
//! 3. **Bounded.** Every wait is bounded by the caller's deadline (the connection's handshake
//!    deadline); a header that never completes is an error once it passes. §2 asks receivers
//!    that time out to allow at least 3 seconds.
//! 4. **Never guess.** A connection that does not start with a header, or whose header is
//!    malformed, is an error ([`HeaderError`]) whose `Display` is a one-line reason for the log
//!    (it never includes the client's bytes).
//!
//! # What the header means ([`Addresses`])
//!
//! - `PROXY` with TCP over IPv4/IPv6 (v1 `TCP4`/`TCP6`, v2 family `0x11`/`0x21`):
//!   [`Addresses::Relayed`], the real client's address and the address it connected to.
//! - v2 `LOCAL`: [`Addresses::Local`]. §2.2: "the connection was established on purpose by the
//!   proxy without being relayed … Such connections exist when the proxy sends health-checks";
//!   the receiver "must use the real connection endpoints". wsproxy serves such a connection
//!   normally (a TCP check just closes; an HTTP check gets its answer), with the socket's own
//!   addresses — the balancer's — and the log can say it was the balancer's own connection.
//! - v1 `UNKNOWN`, and v2 `PROXY` for anything but TCP over IPv4/IPv6 (UDP, Unix sockets, an
//!   unspecified family or transport): [`Addresses::Unknown`]. §2.1 says the receiver "SHOULD
//!   accept the connection and use the real connection's parameters"; §2.2 lets a receiver
//!   fall back to that for combinations it does not support. The client is then unknown:
//!   the socket's addresses are used, and logged as such.
//!
//! TLVs (§2.2, after the addresses) are checked for well-formedness and kept
//! ([`ProxyHeader::tlvs`]); [`ProxyHeader::authority`] (the SNI name the client sent to the
//! balancer, §2.2.2) and [`ProxyHeader::unique_id`] (§2.2.5, to correlate with the balancer's
//! logs) are read from them. A `CRC32C` TLV (§2.2.3) is not verified: the check is optional
//! for receivers that do not implement it, and the header travels inside TCP's own checksum.
//!
//! # How the proxy uses this
//!
//! With `--proxy-protocol` (which requires at least one `--trusted-proxy CIDR`; parse each with
//! [`TrustedProxies::parse_range`] at start, and refuse `--proxy-protocol` without one), the
//! connection's first step, before `tls::peek_first_byte`, is
//! `read_header(&client.0, &trusted, handshake_deadline)`. On `Err`, log the reason with the
//! socket's peer address and close the connection (no HTTP response: the peer is a balancer,
//! and the bytes are not known to be HTTP). On `Ok`, the client's address for everything that
//! follows — log lines, limits, Origin/Host decisions, metrics, and the header sent on with
//! `--send-proxy-protocol` ([`super::outbound`]) — is `header.client_address()` or, for
//! `Local`/`Unknown`, the socket's peer address.

use std::fmt;
use std::io::{self, Read};
use std::net::{IpAddr, SocketAddr, SocketAddrV4, SocketAddrV6, TcpStream};
use std::time::Instant;

use ipnet::IpNet;
use ppp::v2::{self, TypeLengthValue};
use ppp::{PartialResult, v1};

use super::Version;

/// The longest v1 header, CRLF included (proxy-protocol.txt §2.1).
const V1_MAX_LEN: usize = 107;

/// How much is peeked at once. A v2 header with IPv6 addresses is 52 bytes; larger ones
/// (many TLVs) take several rounds.
const PEEK_CHUNK: usize = 512;

// ---------------------------------------------------------------------------------------------
// Trust
// ---------------------------------------------------------------------------------------------

/// The `--trusted-proxy` ranges: the only peers whose PROXY headers are believed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    pub fn new(ranges: Vec<IpNet>) -> TrustedProxies {
        TrustedProxies(ranges)
    }

    /// One `--trusted-proxy` value: a CIDR range (`10.0.0.0/8`, `fd00::/8`) or a single address
    /// (`192.0.2.7`, `::1`, meaning /32 or /128). Host bits are allowed and ignored
    /// (`10.1.2.3/8` is `10.0.0.0/8`). Brackets, zone ids, ports and spaces are errors.
    pub fn parse_range(text: &str) -> Result<IpNet, String> {
        if let Ok(net) = text.parse::<IpNet>() {
            return Ok(net.trunc());
        }
        if let Ok(ip) = text.parse::<IpAddr>() {
            return Ok(IpNet::from(ip));
        }
        Err(format!(
            "{text:?} is not an IP address or CIDR range (e.g. 10.0.0.0/8, 192.0.2.7, fd00::/8)"
        ))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `ip` is inside one of the ranges. An IPv4 address and its IPv4-mapped IPv6 form
    /// (how a dual-stack socket reports an IPv4 peer) are the same address for this: either
    /// matches a range written in either spelling.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let canonical = ip.to_canonical();
        let mapped = match canonical {
            IpAddr::V4(v4) => IpAddr::V6(v4.to_ipv6_mapped()),
            v6 => v6,
        };
        self.0
            .iter()
            .any(|net| net.contains(&canonical) || net.contains(&mapped))
    }
}

impl fmt::Display for TrustedProxies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ranges: Vec<String> = self.0.iter().map(IpNet::to_string).collect();
        f.write_str(&ranges.join(", "))
    }
}

// ---------------------------------------------------------------------------------------------
// What a header says
// ---------------------------------------------------------------------------------------------

/// Where the connection comes from, according to the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Addresses {
    /// `PROXY` over TCP: relayed for `client`, which had connected to `destination` (the
    /// balancer's address as the client saw it).
    Relayed {
        client: SocketAddr,
        destination: SocketAddr,
    },
    /// v2 `LOCAL`: the balancer's own connection (a health check); use the socket's addresses.
    Local,
    /// v1 `UNKNOWN`, or v2 `PROXY` for something other than TCP over IPv4/IPv6: relayed for a
    /// client the balancer could not describe; use the socket's addresses.
    Unknown,
}

impl fmt::Display for Addresses {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Addresses::Relayed {
                client,
                destination,
            } => write!(f, "client {client} (connected to {destination})"),
            Addresses::Local => f.write_str("LOCAL (the proxy's own connection, e.g. a check)"),
            Addresses::Unknown => f.write_str("UNKNOWN (the proxy did not give the client)"),
        }
    }
}

/// A complete, valid header.
#[derive(Debug, Clone, PartialEq)]
pub struct ProxyHeader {
    pub version: Version,
    pub addresses: Addresses,
    /// v2 type-length-value fields, in order (empty for v1).
    pub tlvs: Vec<TypeLengthValue<'static>>,
}

impl ProxyHeader {
    /// The real client's address, if the header gives one.
    pub fn client_address(&self) -> Option<SocketAddr> {
        match self.addresses {
            Addresses::Relayed { client, .. } => Some(client),
            Addresses::Local | Addresses::Unknown => None,
        }
    }

    /// The address the client connected to, if the header gives one.
    pub fn destination_address(&self) -> Option<SocketAddr> {
        match self.addresses {
            Addresses::Relayed { destination, .. } => Some(destination),
            Addresses::Local | Addresses::Unknown => None,
        }
    }

    fn tlv(&self, kind: v2::Type) -> Option<&[u8]> {
        let kind = u8::from(kind);
        self.tlvs
            .iter()
            .find(|tlv| tlv.kind == kind)
            .map(|tlv| tlv.value.as_ref())
    }

    /// `PP2_TYPE_AUTHORITY` (§2.2.2): the host name the client asked the balancer for (its SNI
    /// name with TLS). Client text: escape it before logging.
    pub fn authority(&self) -> Option<&str> {
        self.tlv(v2::Type::Authority)
            .and_then(|value| std::str::from_utf8(value).ok())
    }

    /// `PP2_TYPE_UNIQUE_ID` (§2.2.5): the balancer's opaque id of this connection.
    pub fn unique_id(&self) -> Option<&[u8]> {
        self.tlv(v2::Type::UniqueId)
    }
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// Why a connection has no usable header. `Display` gives one line for the log, without the
/// client's bytes.
#[derive(Debug)]
pub enum HeaderError {
    /// The peer is outside the `--trusted-proxy` ranges; nothing was read.
    Untrusted(SocketAddr),
    /// The connection does not start with a PROXY header; the text says what it looks like.
    Missing(&'static str),
    /// It starts like a header but is not a valid one.
    Malformed(String),
    /// The peer closed the connection before the header was complete.
    Closed { received: usize },
    /// The deadline passed before the header was complete.
    TimedOut { received: usize },
    /// The socket failed.
    Io(io::Error),
}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderError::Untrusted(peer) => write!(
                f,
                "PROXY protocol header not accepted from {peer}: not a --trusted-proxy address"
            ),
            HeaderError::Missing(looks_like) => write!(
                f,
                "no PROXY protocol header: the connection starts like {looks_like}"
            ),
            HeaderError::Malformed(why) => write!(f, "malformed PROXY protocol header: {why}"),
            HeaderError::Closed { received: 0 } => {
                f.write_str("closed before sending a PROXY protocol header")
            }
            HeaderError::Closed { received } => write!(
                f,
                "closed after {received} bytes of an incomplete PROXY protocol header"
            ),
            HeaderError::TimedOut { received } => write!(
                f,
                "PROXY protocol header not complete at the handshake deadline \
                 ({received} bytes received)"
            ),
            HeaderError::Io(e) => write!(f, "reading the PROXY protocol header failed: {e}"),
        }
    }
}

impl std::error::Error for HeaderError {}

// ---------------------------------------------------------------------------------------------
// Reading
// ---------------------------------------------------------------------------------------------

/// Reads the PROXY protocol header (v1 or v2) at the start of `stream`, consuming exactly its
/// bytes, waiting at most until `deadline`. Refuses peers outside `trusted` before reading.
/// Leaves the socket's read timeout set (the caller's next step sets its own).
pub fn read_header(
    stream: &TcpStream,
    trusted: &TrustedProxies,
    deadline: Instant,
) -> Result<ProxyHeader, HeaderError> {
    let peer = stream.peer_addr().map_err(HeaderError::Io)?;
    if !trusted.contains(peer.ip()) {
        return Err(HeaderError::Untrusted(peer));
    }
    // The header bytes consumed so far, then the bytes waiting in the socket after them.
    let mut header = Vec::new();
    let mut waiting = [0u8; PEEK_CHUNK];
    loop {
        let n = peek(stream, &mut waiting, header.len(), deadline)?;
        // Only bytes that can belong to the header: a v1 header is one line (§2.1).
        let v1_line_end = (!is_v2(&header, &waiting[..n]))
            .then(|| waiting[..n].iter().position(|&b| b == b'\n'))
            .flatten();
        let available = v1_line_end.map_or(n, |i| i + 1);
        let consumed = header.len();
        header.extend_from_slice(&waiting[..available]);
        let parsed = parse(&header);
        header.truncate(consumed);
        match parsed {
            Parsed::Complete(parsed, len) => {
                consume(stream, &mut header, len - consumed)?;
                return Ok(parsed);
            }
            Parsed::Invalid(why) => {
                header.extend_from_slice(&waiting[..available]);
                return Err(invalid(&header, why));
            }
            // Every byte seen belongs to the header: take them, and wait for more.
            Parsed::Incomplete => consume(stream, &mut header, available)?,
        }
    }
}

/// Waits until the socket has bytes after the `received` header bytes already consumed, and
/// copies them into `buf` without consuming them.
fn peek(
    stream: &TcpStream,
    buf: &mut [u8],
    received: usize,
    deadline: Instant,
) -> Result<usize, HeaderError> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(HeaderError::TimedOut { received });
        }
        stream
            .set_read_timeout(Some(left))
            .map_err(HeaderError::Io)?;
        match stream.peek(buf) {
            Ok(0) => return Err(HeaderError::Closed { received }),
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(HeaderError::TimedOut { received });
            }
            Err(e) => return Err(HeaderError::Io(e)),
        }
    }
}

/// Reads `n` bytes that a peek has shown to be waiting (so this does not block) into `header`.
fn consume(stream: &TcpStream, header: &mut Vec<u8>, n: usize) -> Result<(), HeaderError> {
    let start = header.len();
    header.resize(start + n, 0);
    let mut reader = stream;
    reader
        .read_exact(&mut header[start..])
        .map_err(HeaderError::Io)
}

/// Whether the bytes so far (`consumed`, then `waiting`) start like a v2 header; anything else
/// is read as v1 (whose parser then says whether it is one).
fn is_v2(consumed: &[u8], waiting: &[u8]) -> bool {
    consumed.first().or(waiting.first()) == Some(&v2::PROTOCOL_PREFIX[0])
}

enum Parsed {
    /// A whole header, and its length in bytes.
    Complete(ProxyHeader, usize),
    /// A valid beginning: more bytes are needed.
    Incomplete,
    /// Not a valid header, whatever follows.
    Invalid(String),
}

/// Asks `ppp` what `bytes` are: v2 if they start like its signature, v1 otherwise. (Each
/// version's own parser is asked, so its error describes what is wrong.)
fn parse(bytes: &[u8]) -> Parsed {
    if is_v2(bytes, &[]) {
        let result = v2::Header::try_from(bytes);
        if result.is_incomplete() {
            return Parsed::Incomplete;
        }
        match result {
            Ok(header) => match from_v2(&header) {
                Ok(parsed) => Parsed::Complete(parsed, header.len()),
                Err(why) => Parsed::Invalid(why),
            },
            Err(e) => Parsed::Invalid(format!("v2: {}", tidy(&e.to_string()))),
        }
    } else {
        // §2.1: "The receiver must wait for the CRLF sequence before starting to decode the
        // addresses" — so a line that starts like a header is parsed only once it has ended
        // (or is too long to be one). Anything else is parsed at once, to refuse it early.
        let prefix = b"PROXY ";
        let n = bytes.len().min(prefix.len());
        let line_done = bytes.contains(&b'\n') || bytes.len() >= V1_MAX_LEN;
        if bytes[..n] == prefix[..n] && !line_done {
            return Parsed::Incomplete;
        }
        match v1::Header::try_from(bytes) {
            Ok(header) => Parsed::Complete(from_v1(&header), header.header.len()),
            Err(e) => Parsed::Invalid(format!("v1: {}", tidy(&e.to_string()))),
        }
    }
}

fn from_v1(header: &v1::Header<'_>) -> ProxyHeader {
    let addresses = match header.addresses {
        v1::Addresses::Tcp4(a) => Addresses::Relayed {
            client: SocketAddrV4::new(a.source_address, a.source_port).into(),
            destination: SocketAddrV4::new(a.destination_address, a.destination_port).into(),
        },
        v1::Addresses::Tcp6(a) => Addresses::Relayed {
            client: SocketAddrV6::new(a.source_address, a.source_port, 0, 0).into(),
            destination: SocketAddrV6::new(a.destination_address, a.destination_port, 0, 0).into(),
        },
        v1::Addresses::Unknown => Addresses::Unknown,
    };
    ProxyHeader {
        version: Version::V1,
        addresses,
        tlvs: Vec::new(),
    }
}

fn from_v2(header: &v2::Header<'_>) -> Result<ProxyHeader, String> {
    let tlvs = header
        .tlvs()
        .map(|tlv| tlv.map(|tlv| tlv.to_owned()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("v2 TLVs: {}", tidy(&e.to_string())))?;
    let addresses = match (header.command, header.protocol, header.addresses) {
        (v2::Command::Local, ..) => Addresses::Local,
        (v2::Command::Proxy, v2::Protocol::Stream, v2::Addresses::IPv4(a)) => Addresses::Relayed {
            client: SocketAddrV4::new(a.source_address, a.source_port).into(),
            destination: SocketAddrV4::new(a.destination_address, a.destination_port).into(),
        },
        (v2::Command::Proxy, v2::Protocol::Stream, v2::Addresses::IPv6(a)) => Addresses::Relayed {
            client: SocketAddrV6::new(a.source_address, a.source_port, 0, 0).into(),
            destination: SocketAddrV6::new(a.destination_address, a.destination_port, 0, 0).into(),
        },
        // UDP, Unix sockets, unspecified family or transport: the fallback of §2.2.
        (v2::Command::Proxy, ..) => Addresses::Unknown,
    };
    Ok(ProxyHeader {
        version: Version::V2,
        addresses,
        tlvs,
    })
}

/// `ppp`'s messages are sentences ("Header is empty."); log lines want a clause.
fn tidy(message: &str) -> String {
    let message = message.trim_end_matches('.');
    let mut chars = message.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// How many leading bytes of a signature make "a malformed header" rather than "no header".
const SIGNATURE_CHECK: usize = 5;

/// The error for bytes that are not a valid header: malformed if they start with the first
/// bytes of one of the two signatures (`PROXY`, `\r\n\r\n\0`), missing otherwise.
fn invalid(bytes: &[u8], why: String) -> HeaderError {
    let starts_like = |signature: &[u8]| {
        let n = bytes.len().min(SIGNATURE_CHECK);
        n > 0 && bytes[..n] == signature[..n]
    };
    if starts_like(v1::PROTOCOL_PREFIX.as_bytes()) || starts_like(v2::PROTOCOL_PREFIX) {
        return HeaderError::Malformed(why);
    }
    HeaderError::Missing(match bytes.first() {
        // RFC 8446 §5.1: a ClientHello travels in a handshake(22) record.
        Some(0x16) => "a TLS ClientHello",
        Some(b'A'..=b'Z') => "an HTTP request",
        _ => "neither a PROXY header nor HTTP or TLS",
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::{Shutdown, TcpListener};
    use std::thread;
    use std::time::Duration;

    use ppp::v2::{Builder, Command, Protocol, Type};

    const REQUEST: &[u8] = b"GET /127.0.0.1:5900 HTTP/1.1\r\nHost: proxy\r\n\r\n";

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(10)
    }

    fn loopback_only() -> TrustedProxies {
        TrustedProxies::new(vec![TrustedProxies::parse_range("127.0.0.0/8").unwrap()])
    }

    /// A loopback TCP pair on `addr`: (client side, server side).
    fn pair_on(addr: &str) -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind(addr).unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        (client, server)
    }

    fn pair() -> (TcpStream, TcpStream) {
        pair_on("127.0.0.1:0")
    }

    /// Sends `bytes` from a thread, `chunk` bytes at a time with `pause` between chunks, then
    /// keeps the connection open until the returned handle is joined... and closes it.
    fn send_slowly(
        mut client: TcpStream,
        bytes: Vec<u8>,
        chunk: usize,
        pause: Duration,
    ) -> thread::JoinHandle<TcpStream> {
        thread::spawn(move || {
            for piece in bytes.chunks(chunk) {
                client.write_all(piece).unwrap();
                thread::sleep(pause);
            }
            client
        })
    }

    /// Everything the server side can still read until the client closes.
    fn rest(mut server: &TcpStream) -> Vec<u8> {
        server
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut rest = Vec::new();
        server.read_to_end(&mut rest).unwrap();
        rest
    }

    /// Sends `header` + REQUEST at once; returns what `read_header` made of it and checks that
    /// the request after the header is left unread, byte for byte.
    fn receive(header: &[u8]) -> ProxyHeader {
        let (mut client, server) = pair();
        client.write_all(&[header, REQUEST].concat()).unwrap();
        client.shutdown(Shutdown::Write).unwrap();
        let parsed = read_header(&server, &loopback_only(), soon()).unwrap();
        assert_eq!(
            rest(&server),
            REQUEST,
            "the bytes after the header are untouched"
        );
        parsed
    }

    fn receive_err(bytes: &[u8]) -> HeaderError {
        let (mut client, server) = pair();
        client.write_all(bytes).unwrap();
        client.shutdown(Shutdown::Write).unwrap();
        read_header(&server, &loopback_only(), soon()).unwrap_err()
    }

    fn relayed(client: &str, destination: &str) -> Addresses {
        Addresses::Relayed {
            client: client.parse().unwrap(),
            destination: destination.parse().unwrap(),
        }
    }

    fn v2_header(command: Command, protocol: Protocol, addresses: v2::Addresses) -> Vec<u8> {
        Builder::with_addresses(v2::Version::Two | command, protocol, addresses)
            .build()
            .unwrap()
    }

    fn sockets(client: &str, destination: &str) -> v2::Addresses {
        let client: SocketAddr = client.parse().unwrap();
        let destination: SocketAddr = destination.parse().unwrap();
        (client, destination).into()
    }

    #[test]
    fn v1_tcp4_tcp6_and_unknown() {
        let header = receive(b"PROXY TCP4 203.0.113.7 192.0.2.1 51234 443\r\n");
        assert_eq!(header.version, Version::V1);
        assert_eq!(
            header.addresses,
            relayed("203.0.113.7:51234", "192.0.2.1:443")
        );
        assert_eq!(
            header.client_address(),
            Some("203.0.113.7:51234".parse().unwrap())
        );
        assert!(header.tlvs.is_empty());

        let header = receive(b"PROXY TCP6 2001:db8::7 2001:db8::1 51234 8080\r\n");
        assert_eq!(
            header.addresses,
            relayed("[2001:db8::7]:51234", "[2001:db8::1]:8080")
        );

        // UNKNOWN, short and long form (§2.1: the receiver ignores the rest of the line).
        assert_eq!(receive(b"PROXY UNKNOWN\r\n").addresses, Addresses::Unknown);
        let long = receive(b"PROXY UNKNOWN ffff::1 ffff::2 65535 65535\r\n");
        assert_eq!(long.addresses, Addresses::Unknown);
        assert_eq!(long.client_address(), None);
    }

    #[test]
    fn v2_ipv4_ipv6_local_and_the_fallbacks() {
        // The example bytes of a TCP/IPv4 header, written out by hand (§2.2).
        let mut by_hand = v2::PROTOCOL_PREFIX.to_vec();
        by_hand.extend([0x21, 0x11, 0x00, 0x0c]);
        by_hand.extend([203, 0, 113, 7, 192, 0, 2, 1, 0xc8, 0x22, 0x01, 0xbb]);
        let header = receive(&by_hand);
        assert_eq!(header.version, Version::V2);
        assert_eq!(
            header.addresses,
            relayed("203.0.113.7:51234", "192.0.2.1:443")
        );

        let v6 = v2_header(
            Command::Proxy,
            Protocol::Stream,
            sockets("[2001:db8::7]:51234", "[2001:db8::1]:8080"),
        );
        assert_eq!(
            receive(&v6).addresses,
            relayed("[2001:db8::7]:51234", "[2001:db8::1]:8080")
        );

        // LOCAL: the balancer's health check. Addresses in it are ignored (§2.2).
        let local = v2_header(
            Command::Local,
            Protocol::Unspecified,
            v2::Addresses::Unspecified,
        );
        assert_eq!(receive(&local).addresses, Addresses::Local);
        let local_with_addresses = v2_header(
            Command::Local,
            Protocol::Stream,
            sockets("203.0.113.7:1", "192.0.2.1:2"),
        );
        assert_eq!(receive(&local_with_addresses).addresses, Addresses::Local);

        // PROXY for what a TCP listener cannot be: the UNSPEC fallback of §2.2.
        for (protocol, addresses) in [
            (Protocol::Datagram, sockets("203.0.113.7:1", "192.0.2.1:2")),
            (
                Protocol::Unspecified,
                sockets("203.0.113.7:1", "192.0.2.1:2"),
            ),
            (Protocol::Unspecified, v2::Addresses::Unspecified),
            (
                Protocol::Stream,
                v2::Addresses::Unix(v2::Unix::new([b'a'; 108], [b'b'; 108])),
            ),
        ] {
            let header = v2_header(Command::Proxy, protocol, addresses);
            assert_eq!(
                receive(&header).addresses,
                Addresses::Unknown,
                "{protocol:?}"
            );
        }
    }

    #[test]
    fn v2_tlvs_are_kept_and_checked() {
        let header = Builder::with_addresses(
            v2::Version::Two | Command::Proxy,
            Protocol::Stream,
            sockets("203.0.113.7:51234", "192.0.2.1:443"),
        )
        .write_tlv(Type::Authority, b"wss.example.com")
        .unwrap()
        .write_tlv(Type::UniqueId, &[0xde, 0xad, 0xbe, 0xef])
        .unwrap()
        .write_tlv(Type::NoOp, &[0; 5])
        .unwrap()
        .write_tlv(0xe0u8, b"custom") // an application-specific type (§2.2.8)
        .unwrap()
        .build()
        .unwrap();
        let parsed = receive(&header);
        assert_eq!(
            parsed.addresses,
            relayed("203.0.113.7:51234", "192.0.2.1:443")
        );
        assert_eq!(parsed.authority(), Some("wss.example.com"));
        assert_eq!(parsed.unique_id(), Some(&[0xde, 0xad, 0xbe, 0xef][..]));
        let kinds: Vec<u8> = parsed.tlvs.iter().map(|tlv| tlv.kind).collect();
        assert_eq!(kinds, [0x02, 0x05, 0x04, 0xe0]);

        // A TLV whose length runs past the header's end.
        // The custom TLV is last: type, two length bytes (6), "custom". Claim 255 bytes.
        let mut broken = header.clone();
        let len = broken.len();
        broken[len - 7] = 0xff;
        let err = receive_err(&[&broken[..], REQUEST].concat());
        assert!(matches!(err, HeaderError::Malformed(_)), "{err}");
        assert!(err.to_string().contains("TLV"), "{err}");
    }

    #[test]
    fn a_header_split_across_reads_is_waited_for() {
        let v1 = b"PROXY TCP6 2001:db8::7 2001:db8::1 51234 8080\r\n".to_vec();
        let v2 = Builder::with_addresses(
            v2::Version::Two | Command::Proxy,
            Protocol::Stream,
            sockets("203.0.113.7:51234", "192.0.2.1:443"),
        )
        .write_tlv(Type::Authority, b"example.com")
        .unwrap()
        .build()
        .unwrap();
        let expected = [
            relayed("[2001:db8::7]:51234", "[2001:db8::1]:8080"),
            relayed("203.0.113.7:51234", "192.0.2.1:443"),
        ];
        for (header, expected) in [(v1, expected[0]), (v2, expected[1])] {
            // Byte by byte with pauses, then in uneven pieces.
            for chunk in [1, 7] {
                let (client, server) = pair();
                let sender = send_slowly(
                    client,
                    [&header[..], REQUEST].concat(),
                    chunk,
                    Duration::from_millis(3),
                );
                let parsed = read_header(&server, &loopback_only(), soon()).unwrap();
                assert_eq!(parsed.addresses, expected, "chunks of {chunk}");
                drop(sender.join().unwrap());
                assert_eq!(rest(&server), REQUEST, "chunks of {chunk}");
            }
        }
    }

    #[test]
    fn missing_headers_are_refused_never_guessed() {
        for (bytes, looks_like) in [
            (REQUEST.to_vec(), "an HTTP request"),
            (vec![0x16, 0x03, 0x01, 0x00, 0x05], "a TLS ClientHello"),
            (b"\x00\x01binary".to_vec(), "neither"),
            (b"proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n".to_vec(), "neither"),
            (b" PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n".to_vec(), "neither"),
        ] {
            let err = receive_err(&bytes);
            assert!(matches!(err, HeaderError::Missing(_)), "{bytes:?}: {err}");
            assert!(err.to_string().contains(looks_like), "{bytes:?}: {err}");
        }
        // Nothing at all.
        let err = receive_err(b"");
        assert!(matches!(err, HeaderError::Closed { received: 0 }), "{err}");
        assert_eq!(
            err.to_string(),
            "closed before sending a PROXY protocol header"
        );
    }

    #[test]
    fn malformed_headers_say_what_is_wrong() {
        let too_long = format!("PROXY UNKNOWN {}\r\n", "f".repeat(120));
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"PROXY TCP4 999.1.1.1 192.0.2.1 1 2\r\n".to_vec(), "source"),
            (
                b"PROXY TCP4 203.0.113.7 192.0.2.1 1 99999\r\n".to_vec(),
                "port",
            ),
            (
                b"PROXY TCP4 203.0.113.7 192.0.2.1 01 2\r\n".to_vec(),
                "port",
            ),
            (
                b"PROXY TCP4 2001:db8::1 192.0.2.1 1 2\r\n".to_vec(),
                "source",
            ),
            (
                b"PROXY TCP5 203.0.113.7 192.0.2.1 1 2\r\n".to_vec(),
                "protocol",
            ),
            (
                b"PROXY tcp4 203.0.113.7 192.0.2.1 1 2\r\n".to_vec(),
                "protocol",
            ),
            (b"PROXYTCP4 203.0.113.7 192.0.2.1 1 2\r\n".to_vec(), "PROXY"),
            // A lone LF, or a lone CR, does not end the line (§2.1).
            (b"PROXY TCP4 203.0.113.7 192.0.2.1 1 2\n".to_vec(), "v1"),
            (b"PROXY TCP4 203.0.113.7 192.0.2.1 1 2\rX".to_vec(), "v1"),
            (b"PROXY TCP4 \n".to_vec(), "missing"),
            (b"PROXY TCP4 203.0.113.7 192.0.2.1 1 \r\n".to_vec(), "port"),
            (b"PROXY TCP4 203.0.113.7 192.0.2.1 1 2 3\r\n".to_vec(), "v1"),
            (too_long.into_bytes(), "107"),
        ];
        for (bytes, says) in cases {
            let err = receive_err(&[&bytes[..], REQUEST].concat());
            assert!(
                matches!(err, HeaderError::Malformed(_)),
                "{:?}: {err}",
                String::from_utf8_lossy(&bytes)
            );
            assert!(
                err.to_string().contains(says),
                "{:?}: {err}",
                String::from_utf8_lossy(&bytes)
            );
        }

        // v2: bad version, command, family, protocol, and a length too short for the family.
        let good = v2_header(
            Command::Proxy,
            Protocol::Stream,
            sockets("203.0.113.7:1", "192.0.2.1:2"),
        );
        for (index, value, says) in [
            (12, 0x11, "version"),
            (12, 0x22, "command"),
            (13, 0x41, "family"),
            (13, 0x13, "protocol"),
            (15, 0x04, "length"),
        ] {
            let mut bad = good.clone();
            bad[index] = value;
            let err = receive_err(&[&bad[..], REQUEST].concat());
            assert!(matches!(err, HeaderError::Malformed(_)), "{says}: {err}");
            assert!(
                err.to_string().to_lowercase().contains(says),
                "{says}: {err}"
            );
        }
        // The signature, wrong in its last byte.
        let mut bad = good.clone();
        bad[11] = b'X';
        let err = receive_err(&bad);
        assert!(matches!(err, HeaderError::Malformed(_)), "{err}");
    }

    #[test]
    fn untrusted_sources_are_refused_before_reading() {
        let (mut client, server) = pair();
        client
            .write_all(b"PROXY TCP4 203.0.113.7 192.0.2.1 1 2\r\n")
            .unwrap();
        let elsewhere = TrustedProxies::new(vec![
            TrustedProxies::parse_range("10.0.0.0/8").unwrap(),
            TrustedProxies::parse_range("::1").unwrap(),
        ]);
        let err = read_header(&server, &elsewhere, soon()).unwrap_err();
        assert!(matches!(err, HeaderError::Untrusted(_)), "{err}");
        assert!(err.to_string().contains("127.0.0.1"), "{err}");
        // Not a byte was consumed.
        let mut first = [0u8; 5];
        server
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        assert_eq!(server.peek(&mut first).unwrap(), 5);
        assert_eq!(&first, b"PROXY");
        // No ranges at all trusts nobody.
        let err = read_header(&server, &TrustedProxies::default(), soon()).unwrap_err();
        assert!(matches!(err, HeaderError::Untrusted(_)), "{err}");
    }

    #[test]
    fn headers_over_ipv6_and_dual_stack_sockets() {
        // An IPv6 loopback peer, trusted as ::1 (skipped where IPv6 is not configured).
        if TcpListener::bind("[::1]:0").is_err() {
            eprintln!("no IPv6 loopback; skipping");
            return;
        }
        let trusted = TrustedProxies::new(vec![TrustedProxies::parse_range("::1/128").unwrap()]);
        let (mut client, server) = pair_on("[::1]:0");
        client
            .write_all(b"PROXY TCP4 203.0.113.7 192.0.2.1 1 2\r\n")
            .unwrap();
        let header = read_header(&server, &trusted, soon()).unwrap();
        assert_eq!(header.addresses, relayed("203.0.113.7:1", "192.0.2.1:2"));
        assert!(matches!(
            read_header(&pair().1, &trusted, soon()),
            Err(HeaderError::Untrusted(_))
        ));

        // A dual-stack listener sees an IPv4 client as ::ffff:127.0.0.1; 127.0.0.0/8 covers it.
        let Ok(listener) = TcpListener::bind("[::]:0") else {
            return;
        };
        let port = listener.local_addr().unwrap().port();
        let Ok(mut client) = TcpStream::connect(("127.0.0.1", port)) else {
            return; // an IPv6-only socket
        };
        let (server, peer) = listener.accept().unwrap();
        assert!(peer.ip().to_canonical().is_loopback(), "{peer}");
        client.write_all(b"PROXY UNKNOWN\r\n").unwrap();
        let header = read_header(&server, &loopback_only(), soon()).unwrap();
        assert_eq!(header.addresses, Addresses::Unknown);
    }

    #[test]
    fn a_header_that_never_completes_ends_at_the_deadline() {
        for partial in [
            &b"PROXY TCP4 203.0.113.7 19"[..],
            &v2::PROTOCOL_PREFIX[..7],
            &v2_header(
                Command::Proxy,
                Protocol::Stream,
                sockets("203.0.113.7:1", "192.0.2.1:2"),
            )[..20],
        ] {
            let (mut client, server) = pair();
            client.write_all(partial).unwrap();
            let started = Instant::now();
            let deadline = started + Duration::from_millis(300);
            let err = read_header(&server, &loopback_only(), deadline).unwrap_err();
            let took = started.elapsed();
            assert!(
                matches!(err, HeaderError::TimedOut { received } if received == partial.len()),
                "{err}"
            );
            assert!(err.to_string().contains("deadline"), "{err}");
            assert!(took >= Duration::from_millis(300), "{took:?}");
            assert!(took < Duration::from_secs(5), "{took:?}");

            // The same bytes, then the client leaves.
            let (mut client, server) = pair();
            client.write_all(partial).unwrap();
            drop(client);
            let err = read_header(&server, &loopback_only(), soon()).unwrap_err();
            assert!(
                matches!(err, HeaderError::Closed { received } if received == partial.len()),
                "{err}"
            );
        }
        // A deadline already passed.
        let (_client, server) = pair();
        let err = read_header(&server, &loopback_only(), Instant::now()).unwrap_err();
        assert!(
            matches!(err, HeaderError::TimedOut { received: 0 }),
            "{err}"
        );
    }

    #[test]
    fn trusted_ranges_in_every_spelling() {
        for (text, shown) in [
            ("10.0.0.0/8", "10.0.0.0/8"),
            ("10.1.2.3/8", "10.0.0.0/8"),
            ("192.0.2.7", "192.0.2.7/32"),
            ("192.0.2.7/32", "192.0.2.7/32"),
            ("0.0.0.0/0", "0.0.0.0/0"),
            ("::1", "::1/128"),
            ("fd00::/8", "fd00::/8"),
            ("FD00::/8", "fd00::/8"),
            ("::ffff:10.0.0.0/104", "::ffff:10.0.0.0/104"),
        ] {
            let net = TrustedProxies::parse_range(text).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(net.to_string(), shown, "{text}");
        }
        for bad in [
            "",
            "10.0.0.0/33",
            "10.0.0/8",
            "10.0.0.0/",
            "/8",
            "[::1]",
            "[::1]/128",
            "fe80::1%eth0",
            "10.0.0.1:80",
            " 10.0.0.0/8",
            "10.0.0.0/8 ",
            "localhost",
            "10.0.0.0/8,10.1.0.0/16",
            "::/129",
        ] {
            let err = TrustedProxies::parse_range(bad).unwrap_err();
            assert!(
                err.contains("not an IP address or CIDR range"),
                "{bad:?}: {err}"
            );
        }

        let trusted = TrustedProxies::new(
            ["10.0.0.0/8", "2001:db8::/32", "::ffff:192.0.2.0/120"]
                .iter()
                .map(|text| TrustedProxies::parse_range(text).unwrap())
                .collect(),
        );
        for (ip, inside) in [
            ("10.0.0.1", true),
            ("10.255.255.255", true),
            ("11.0.0.1", false),
            ("9.255.255.255", false),
            ("::ffff:10.1.2.3", true),
            ("2001:db8::1", true),
            ("2001:db9::1", false),
            ("192.0.2.5", true),
            ("::ffff:192.0.2.5", true),
            ("192.0.3.5", false),
            ("::10.0.0.1", false), // IPv4-compatible (deprecated), not mapped
        ] {
            assert_eq!(trusted.contains(ip.parse().unwrap()), inside, "{ip}");
        }
        assert_eq!(
            trusted.to_string(),
            "10.0.0.0/8, 2001:db8::/32, ::ffff:192.0.2.0/120"
        );
    }
}
