//! A tunnel's byte streams as a pcapng capture that Wireshark and `tshark` open: each of the
//! tunnel's two TCP connections (client↔proxy, proxy↔target) is written as packets with
//! synthesized IP and TCP headers around the bytes that really crossed it.
//!
//! The proxy never sees packets, only byte streams (the kernel's TCP turns one into the
//! other). To let an analyser reassemble and dissect the streams, we do the kernel's work
//! backwards, as a sender would have (RFC 9293):
//!
//! - **the three-way handshake** (§3.5): SYN, SYN-ACK, ACK, each SYN carrying the maximum
//!   segment size (§3.7.1) and a window scale (RFC 7323 §2), with initial sequence numbers
//!   taken from a 4-microsecond clock, as RFC 793 §3.3 first described;
//! - **data segments** of at most one MSS (1460 bytes over IPv4, 1440 over IPv6: what fits an
//!   Ethernet MTU of 1500), each with the sequence number of its first byte and the
//!   acknowledgement of everything the other side sent so far (§3.4), PSH on the last segment
//!   of a chunk, and an ACK from the receiver after each chunk (at least every 64 KiB), so the
//!   data in flight stays inside the advertised window;
//! - **FIN** when a side finishes (§3.6), which takes one sequence number, acknowledged by the
//!   other side.
//!
//! The IP and TCP headers, with their checksums (RFC 791, RFC 8200, RFC 9293 §3.1), are built
//! by `etherparse`; the file blocks by `pcap-file`. The file (draft-ietf-opsawg-pcapng §4) is a
//! Section Header Block, one Interface Description Block per connection (§4.2, link type
//! `LINKTYPE_RAW`: packets start at the IP header, IPv4 or IPv6; `if_tsresol` 9: timestamps in
//! nanoseconds), then one Enhanced Packet Block per packet (§4.3) with the time the bytes were
//! seen. The addresses and ports are the real ones of each socket.
//!
//! ## How the proxy uses this
//!
//! Only through [`super::recorder`], whose writer thread owns a [`Capture`] per recorded
//! tunnel and turns the events the taps saw into [`Capture::open`], [`Capture::data`] and
//! [`Capture::finish`] calls. Nothing here runs on a pump's thread.

use std::borrow::Cow;
use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use etherparse::{PacketBuilder, TcpHeader, TcpOptionElement};
use pcap_file::DataLink;
use pcap_file::pcapng::PcapNgWriter;
use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock;
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption,
};
use pcap_file::pcapng::blocks::section_header::{SectionHeaderBlock, SectionHeaderOption};

/// The largest segment over IPv4: an Ethernet MTU of 1500 less 20 bytes of IPv4 and 20 of TCP.
pub const MSS_IPV4: usize = 1460;
/// The largest segment over IPv6 (its header is 40 bytes).
pub const MSS_IPV6: usize = 1440;
/// The window scale both ends announce (RFC 7323 §2.2): windows count in units of 128 bytes.
const WINDOW_SCALE: u8 = 7;
/// The window field of every segment: 65535 × 128 ≈ 8 MiB, more than any chunk in flight.
const WINDOW: u16 = u16::MAX;
/// The receiver acknowledges at least this often within a long chunk.
const ACK_EVERY: usize = 64 * 1024;
/// IPv4 time to live and IPv6 hop limit of every packet.
const HOP_LIMIT: u8 = 64;

/// The two ends of a TCP connection: the one that connected and the one that accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Sent the SYN (the client, or the proxy towards the target).
    Initiator,
    /// Answered it (the proxy's listening socket, or the target).
    Responder,
}

impl End {
    fn index(self) -> usize {
        match self {
            End::Initiator => 0,
            End::Responder => 1,
        }
    }

    fn other(self) -> End {
        match self {
            End::Initiator => End::Responder,
            End::Responder => End::Initiator,
        }
    }
}

/// The state of one synthesized TCP connection: its addresses and each end's next sequence
/// number.
#[derive(Debug, Clone)]
pub struct TcpConnection {
    interface: u32,
    /// Indexed by [`End`]; both of the same IP version.
    addresses: [SocketAddr; 2],
    next_seq: [u32; 2],
    finished: [bool; 2],
    mss: usize,
}

impl TcpConnection {
    /// Whether `end` has sent its FIN.
    pub fn finished(&self, end: End) -> bool {
        self.finished[end.index()]
    }
}

/// Which flags a segment carries.
#[derive(Debug, Clone, Copy, Default)]
struct Flags {
    syn: bool,
    ack: bool,
    psh: bool,
    fin: bool,
}

/// A pcapng capture being written.
pub struct Capture<W: Write> {
    out: PcapNgWriter<W>,
    /// The packet being built (reused).
    packet: Vec<u8>,
    interfaces: u32,
}

impl<W: Write> Capture<W> {
    /// Starts a capture: writes the Section Header Block, naming the application and, in a
    /// comment, what was captured.
    pub fn new(out: W, comment: &str) -> io::Result<Self> {
        let section = SectionHeaderBlock {
            endianness: pcap_file::Endianness::native(),
            options: vec![
                SectionHeaderOption::UserApplication(Cow::Owned(format!(
                    "wsproxy {}",
                    env!("CARGO_PKG_VERSION")
                ))),
                SectionHeaderOption::Comment(Cow::Owned(comment.to_string())),
            ],
            ..Default::default()
        };
        let out = PcapNgWriter::with_section_header(out, section).map_err(pcap_error)?;
        Ok(Capture {
            out,
            packet: Vec::with_capacity(MSS_IPV4 + 80),
            interfaces: 0,
        })
    }

    /// Declares an interface (one per TCP connection, so Wireshark can show which is which).
    pub fn add_interface(&mut self, name: &str, description: &str) -> io::Result<u32> {
        let interface = InterfaceDescriptionBlock {
            linktype: DataLink::RAW,
            snaplen: 0,
            options: vec![
                InterfaceDescriptionOption::IfName(Cow::Owned(name.to_string())),
                InterfaceDescriptionOption::IfDescription(Cow::Owned(description.to_string())),
                InterfaceDescriptionOption::IfTsResol(9),
            ],
        };
        self.out.write_pcapng_block(interface).map_err(pcap_error)?;
        self.interfaces += 1;
        Ok(self.interfaces - 1)
    }

    /// Writes the three-way handshake of a connection from `initiator` to `responder`, seen
    /// on `interface` at `at`, and returns the connection's state.
    pub fn open(
        &mut self,
        interface: u32,
        initiator: SocketAddr,
        responder: SocketAddr,
        at: SystemTime,
    ) -> io::Result<TcpConnection> {
        let addresses = same_family(initiator, responder);
        let clock = initial_sequence_number(at);
        let mut connection = TcpConnection {
            interface,
            addresses,
            // RFC 793 §3.3's clock for the initiator; the responder's clock reads differently.
            next_seq: [clock, clock.rotate_left(16) ^ 0x5a5a_5a5a],
            finished: [false; 2],
            mss: if addresses[0].is_ipv4() {
                MSS_IPV4
            } else {
                MSS_IPV6
            },
        };
        let syn = Flags {
            syn: true,
            ..Flags::default()
        };
        self.segment(&connection, End::Initiator, syn, at, &[])?;
        connection.next_seq[0] = connection.next_seq[0].wrapping_add(1);
        let syn_ack = Flags {
            syn: true,
            ack: true,
            ..Flags::default()
        };
        self.segment(&connection, End::Responder, syn_ack, at, &[])?;
        connection.next_seq[1] = connection.next_seq[1].wrapping_add(1);
        self.ack(&connection, End::Initiator, at)?;
        Ok(connection)
    }

    /// Writes `bytes` sent by `from` at `at` as data segments, acknowledged by the other end.
    /// Bytes after `from`'s FIN cannot exist in TCP and are ignored.
    pub fn data(
        &mut self,
        connection: &mut TcpConnection,
        from: End,
        at: SystemTime,
        bytes: &[u8],
    ) -> io::Result<()> {
        if connection.finished(from) {
            return Ok(());
        }
        let mss = connection.mss;
        let mut unacknowledged = 0;
        let segments = bytes.len().div_ceil(mss);
        for (i, segment) in bytes.chunks(mss).enumerate() {
            let flags = Flags {
                ack: true,
                psh: i + 1 == segments,
                ..Flags::default()
            };
            self.segment(connection, from, flags, at, segment)?;
            let seq = &mut connection.next_seq[from.index()];
            *seq = seq.wrapping_add(segment.len() as u32);
            unacknowledged += segment.len();
            if unacknowledged >= ACK_EVERY || i + 1 == segments {
                self.ack(connection, from.other(), at)?;
                unacknowledged = 0;
            }
        }
        Ok(())
    }

    /// Writes `from`'s FIN and the other end's acknowledgement (once; later calls do nothing).
    pub fn finish(
        &mut self,
        connection: &mut TcpConnection,
        from: End,
        at: SystemTime,
    ) -> io::Result<()> {
        if connection.finished(from) {
            return Ok(());
        }
        let fin = Flags {
            fin: true,
            ack: true,
            ..Flags::default()
        };
        self.segment(connection, from, fin, at, &[])?;
        let seq = &mut connection.next_seq[from.index()];
        *seq = seq.wrapping_add(1);
        connection.finished[from.index()] = true;
        self.ack(connection, from.other(), at)
    }

    /// Flushes the underlying writer.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.get_mut().flush()
    }

    /// The underlying writer.
    pub fn into_inner(self) -> W {
        self.out.into_inner()
    }

    /// A pure acknowledgement from `from` of everything the other end sent.
    fn ack(&mut self, connection: &TcpConnection, from: End, at: SystemTime) -> io::Result<()> {
        let ack = Flags {
            ack: true,
            ..Flags::default()
        };
        self.segment(connection, from, ack, at, &[])
    }

    /// Builds one IP packet carrying one TCP segment and writes it as an Enhanced Packet Block.
    fn segment(
        &mut self,
        connection: &TcpConnection,
        from: End,
        flags: Flags,
        at: SystemTime,
        payload: &[u8],
    ) -> io::Result<()> {
        let source = connection.addresses[from.index()];
        let destination = connection.addresses[from.other().index()];
        let mut tcp = TcpHeader::new(
            source.port(),
            destination.port(),
            connection.next_seq[from.index()],
            WINDOW,
        );
        tcp.syn = flags.syn;
        tcp.fin = flags.fin;
        tcp.psh = flags.psh;
        if flags.ack {
            tcp.ack = true;
            tcp.acknowledgment_number = connection.next_seq[from.other().index()];
        }
        if flags.syn {
            let mss = connection.mss as u16;
            tcp.set_options(&[
                TcpOptionElement::MaximumSegmentSize(mss),
                TcpOptionElement::Noop,
                TcpOptionElement::WindowScale(WINDOW_SCALE),
            ])
            .map_err(io::Error::other)?;
        }
        let builder = match (source.ip(), destination.ip()) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                PacketBuilder::ipv4(s.octets(), d.octets(), HOP_LIMIT)
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                PacketBuilder::ipv6(s.octets(), d.octets(), HOP_LIMIT)
            }
            _ => unreachable!("same_family() made both ends the same IP version"),
        };
        self.packet.clear();
        builder
            .tcp_header(tcp)
            .write_to_vec(&mut self.packet, payload)
            .map_err(io::Error::other)?;
        let block = EnhancedPacketBlock {
            interface_id: connection.interface,
            timestamp: at.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO),
            original_len: self.packet.len() as u32,
            data: Cow::Borrowed(&self.packet),
            options: vec![],
        };
        self.out.write_pcapng_block(block).map_err(pcap_error)?;
        Ok(())
    }
}

/// RFC 793 §3.3: the initial sequence number is a 32-bit clock that ticks every 4 µs.
fn initial_sequence_number(at: SystemTime) -> u32 {
    let micros = at
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros();
    (micros / 4) as u32
}

/// Both ends as addresses of one IP version: IPv4-mapped IPv6 addresses (a dual-stack
/// listener's view of IPv4 clients) become IPv4, and if the versions still differ, IPv4 is
/// written as IPv4-mapped IPv6.
fn same_family(a: SocketAddr, b: SocketAddr) -> [SocketAddr; 2] {
    let canonical = |s: SocketAddr| SocketAddr::new(s.ip().to_canonical(), s.port());
    let (a, b) = (canonical(a), canonical(b));
    if a.is_ipv4() == b.is_ipv4() {
        return [a, b];
    }
    let v6 = |s: SocketAddr| match s.ip() {
        IpAddr::V4(v4) => SocketAddr::new(IpAddr::V6(v4.to_ipv6_mapped()), s.port()),
        IpAddr::V6(_) => s,
    };
    [v6(a), v6(b)]
}

fn pcap_error(e: pcap_file::PcapError) -> io::Error {
    match e {
        pcap_file::PcapError::IoError(e) => e,
        other => io::Error::other(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inspect::test_support::{
        WsSession, follow_tcp_raw, tshark_available_or_panic, tshark_fields, websocket_frames,
        write_temp,
    };

    /// Writes a capture of a whole session (see [`WsSession`]) with both connections.
    fn capture_session(session: &WsSession) -> Vec<u8> {
        let t0 = UNIX_EPOCH + Duration::from_secs(1_718_000_000);
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut capture = Capture::new(Vec::new(), "test session").unwrap();
        let client_if = capture.add_interface("client", "client ↔ proxy").unwrap();
        let target_if = capture.add_interface("target", "proxy ↔ target").unwrap();
        let mut client = capture
            .open(client_if, session.client, session.proxy, at(0))
            .unwrap();
        let mut target = None;
        for (i, (flow, bytes)) in session.chunks.iter().enumerate() {
            let t = at(10 + i as u64);
            use crate::inspect::Flow::*;
            match flow {
                ClientToProxy => capture.data(&mut client, End::Initiator, t, bytes),
                ProxyToClient => capture.data(&mut client, End::Responder, t, bytes),
                ProxyToTarget | TargetToProxy => {
                    let target = target.get_or_insert_with(|| {
                        capture
                            .open(target_if, session.proxy_out, session.target, t)
                            .unwrap()
                    });
                    let end = if *flow == ProxyToTarget {
                        End::Initiator
                    } else {
                        End::Responder
                    };
                    capture.data(target, end, t, bytes)
                }
            }
            .unwrap();
        }
        let end = at(10 + session.chunks.len() as u64);
        capture.finish(&mut client, End::Initiator, end).unwrap();
        capture.finish(&mut client, End::Responder, end).unwrap();
        if let Some(target) = &mut target {
            capture.finish(target, End::Initiator, end).unwrap();
            capture.finish(target, End::Responder, end).unwrap();
        }
        capture.into_inner()
    }

    fn check_session_with_tshark(session: &WsSession) {
        tshark_available_or_panic();
        let file = write_temp("session.pcapng", &capture_session(session));
        let decode_as = format!("tcp.port=={},http", session.proxy.port());

        // The handshake dissects as HTTP: the upgrade request, and 101 with the accept key.
        let http = tshark_fields(
            &file,
            &["-d", &decode_as, "-Y", "http.response"],
            &["http.response.code", "http.upgrade"],
        );
        assert_eq!(http, vec![vec!["101".to_string(), "websocket".to_string()]]);
        let accept = tshark_fields(
            &file,
            &["-d", &decode_as, "-Y", "http.response"],
            &["http.sec_websocket_accept"],
        );
        assert_eq!(accept, vec![vec![session.accept.clone()]]);

        // Every WebSocket frame, in order, with its opcode and unmasked payload.
        let got = websocket_frames(&file, &["-d", &decode_as]);
        assert_eq!(got, session.frames);

        // The target connection's bytes, each way, are exactly what crossed it.
        let (to_target, from_target) = follow_tcp_raw(&file, 1);
        assert_eq!(
            to_target,
            session.flow_bytes(crate::inspect::Flow::ProxyToTarget)
        );
        assert_eq!(
            from_target,
            session.flow_bytes(crate::inspect::Flow::TargetToProxy)
        );

        // No TCP analysis complaints (lost segments, retransmissions, window problems), and
        // every IP and TCP checksum verifies.
        let problems = tshark_fields(
            &file,
            &[
                "-o",
                "tcp.check_checksum:TRUE",
                "-o",
                "ip.check_checksum:TRUE",
                "-Y",
                "tcp.analysis.flags || tcp.checksum.status != 1 || (ip && ip.checksum.status != 1)",
            ],
            &["frame.number"],
        );
        assert!(problems.is_empty(), "tshark flagged packets {problems:?}");
    }

    #[test]
    fn tshark_reassembles_and_dissects_an_ipv4_session() {
        check_session_with_tshark(&WsSession::typical("127.0.0.1", 200_000));
    }

    #[test]
    fn tshark_reassembles_and_dissects_an_ipv6_session() {
        check_session_with_tshark(&WsSession::typical("::1", 3_000));
    }

    #[test]
    fn segments_respect_the_mss_and_sequence_numbers_add_up() {
        let session = WsSession::typical("127.0.0.1", 100_000);
        let file = write_temp("mss.pcapng", &capture_session(&session));
        tshark_available_or_panic();
        let rows = tshark_fields(
            &file,
            &["-Y", "tcp.stream == 0"],
            &["tcp.len", "tcp.flags.syn"],
        );
        let biggest = rows
            .iter()
            .map(|r| r[0].parse::<usize>().unwrap())
            .max()
            .unwrap();
        assert_eq!(biggest, MSS_IPV4);
        let syns = rows.iter().filter(|r| r[1] == "1").count();
        assert_eq!(syns, 2, "SYN and SYN-ACK");
        // The client's last ACK acknowledges every byte the proxy sent, plus its SYN and FIN.
        let ends = tshark_fields(
            &file,
            &["-Y", "tcp.stream == 0 && tcp.flags.fin == 1"],
            &["tcp.seq", "tcp.nxtseq"],
        );
        let sent_by_proxy = session
            .flow_bytes(crate::inspect::Flow::ProxyToClient)
            .len();
        assert_eq!(ends[1][0], (1 + sent_by_proxy).to_string());
    }

    #[test]
    fn mixed_address_families_become_one() {
        let v4: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let mapped: SocketAddr = "[::ffff:127.0.0.2]:2".parse().unwrap();
        let v6: SocketAddr = "[::1]:3".parse().unwrap();
        assert_eq!(
            same_family(mapped, v4),
            ["127.0.0.2:2".parse().unwrap(), v4]
        );
        assert_eq!(
            same_family(v4, v6),
            ["[::ffff:127.0.0.1]:1".parse().unwrap(), v6]
        );
    }
}
