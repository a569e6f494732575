//! TLS (`wss://`, `https://`, and `--tls-target`) inside the two-threads-per-tunnel design.
//!
//! # Where TLS sits
//!
//! `ws://` and `wss://` share one port. A TLS connection always starts with a TLS record, and
//! a record's first byte is its content type (RFC 8446 §5.1); a ClientHello travels in a
//! `handshake(22)` record, so the first byte is `0x16`. No HTTP request starts with that byte,
//! so [`is_client_hello`] on a peeked first byte ([`peek_first_byte`]) decides, as websockify
//! does. The handshake ([`TlsServer::accept`]) runs on the connection's thread before anything
//! else, bounded by the connection's deadline; it returns a [`TlsReader`] and a [`TlsWriter`],
//! and from then on the rest of wsproxy (HTTP head, WebSocket handshake, framing, tunnel) sees
//! plain bytes through `Read` and `Write`, exactly as it does for `ws://`. Targets can be
//! reached over TLS the same way ([`TlsClient::connect`]).
//!
//! # Why a TLS stream can be split between two threads here
//!
//! A tunnel reads the client on one thread (the upload pump) and writes it from both (data
//! frames from the download pump, Pongs and Closes from the upload pump) under the tunnel's
//! writer mutex. A TLS stream object owns its socket and cannot be cloned, and putting the
//! whole stream under one mutex would let a reader blocked in `read()` stop every writer
//! (the classic deadlock, reference §5.4 points 4 and 8).
//!
//! `rustls` is sans-I/O: a [`rustls::Connection`] is only a state machine that turns
//! ciphertext into plaintext (`read_tls` + `process_new_packets`, then `reader()`) and
//! plaintext into ciphertext (`writer()`, then `write_tls`). It never touches the socket, so we
//! do the socket I/O ourselves, outside its lock. One connection is shared by the two halves:
//!
//! ```text
//!                         Arc<Shared>
//!   TlsReader ──┐   conn: Mutex<rustls::Connection>   (the TLS state; held for CPU work only)
//!               ├─► out:  Mutex<Vec<u8>>              ("socket writes": ciphertext staging
//!   TlsWriter ──┘                                      buffer + the right to write the socket)
//!                   flush_wanted: AtomicBool          (reader left records for the writer)
//!                   socket: SharedSocket              (one descriptor, `&TcpStream` I/O)
//! ```
//!
//! - **Reader** ([`TlsReader::read`](TlsReader#method.read)): locks `conn` and takes
//!   plaintext that is already decrypted; if there is none, feeds ciphertext it already holds
//!   (`read_tls` + `process_new_packets`) and tries again; if it holds none either, it
//!   **unlocks** and does its blocking socket read into its own reusable buffer, holding no
//!   lock at all. A reader waiting for the client therefore never holds anything the writer
//!   needs.
//! - **Writer** ([`TlsWriter::write`](TlsWriter#method.write)): locks `out`, then `conn`;
//!   encrypts the plaintext into records and drains them (`write_tls`) into `out`'s buffer;
//!   unlocks `conn`; writes the records to the socket; unlocks `out`. The socket write — which
//!   blocks while the client is not reading — holds only `out`, so the reader keeps decrypting
//!   meanwhile.
//! - **Order of records.** TLS records carry implicit sequence numbers (RFC 8446 §5.3): they
//!   must reach the socket in the order rustls produced them, or the peer fails to decrypt
//!   them (`bad_record_mac`). Records are only ever taken out of rustls (`write_tls`) by a
//!   thread holding `out`, and that thread writes them before releasing `out`; so the socket
//!   sees records in production order. (Taking them out under `conn` alone and writing under a
//!   separate lock afterwards would allow two threads to swap their batches.) Lock order is
//!   always `out` then `conn`; nobody waits for `out` while holding `conn`.
//! - **Records the reader produces.** Processing input can queue records of our own: a
//!   fatal alert (RFC 8446 §6.2) when input is bad, or a `no_renegotiation` warning when a
//!   TLS 1.2 peer asks to renegotiate. (The answer to a peer's `key_update` is different:
//!   rustls holds it until our next record, as RFC 8446 §4.6.3 allows — "prior to sending its
//!   next Application Data record" — so it always goes out with the writer.) The reader sets
//!   `flush_wanted` and *tries* to take `out`. If it gets it (nobody is writing), it writes them
//!   itself, so they never sit unsent on an idle connection. If the writer holds `out`, the
//!   reader moves on, and the writer, after releasing `out`, sees `flush_wanted` and sends
//!   them (the flag is set before the `try_lock`, and the holder checks it after releasing, so
//!   no request is lost). The reader never *waits* for `out`.
//!   One trade-off remains: when the reader does send such a record itself, that small write
//!   can block if the client has stopped reading and its receive window is full; the upload
//!   then pauses until the client reads again. These records are rare (tens of bytes, only on
//!   key updates and errors), and a writer would be stuck on the same full socket anyway.
//! - **Ending.** A peer's `close_notify` (RFC 8446 §6.1) is EOF (`Ok(0)`) for the reader; a TCP
//!   EOF without it, or a record that fails to decrypt, is an error (truncation is not EOF).
//!   [`TlsWriter::close_notify`] (also run on drop) sends our `close_notify`; the tunnel drops
//!   the writer before shutting down the TCP write side, so the peer sees a clean TLS close.
//!   TLS 1.3 allows half-close (§6.1), which matches the tunnel's half-close of targets.
//!
//! # Handshake, deadlines and bad input
//!
//! The handshake runs on one thread before the split, with the socket's read and write
//! timeouts set to the time left until the caller's deadline; a client that stalls (sends
//! `0x16` and nothing else, or half a ClientHello) is dropped when it passes. A truncated
//! ClientHello followed by EOF, garbage after `0x16`, or no cipher suite in common end in a
//! rustls error: we send the alert rustls queued (best effort, bounded by the deadline) and
//! return `Err` with the reason, which the caller logs. Nothing here panics on peer input.
//!
//! No ALPN is configured: a server that does not answer ALPN lets the client assume
//! HTTP/1.1 (RFC 7301 §3.2), which is what both WebSocket and the static pages speak, and a
//! client offering only `h2` is not refused.
//!
//! # Certificates
//!
//! [`TlsServer`] loads a PEM certificate chain (leaf first) and a PEM private key in PKCS#8
//! (`PRIVATE KEY`), PKCS#1 (`RSA PRIVATE KEY`) or SEC1 (`EC PRIVATE KEY`) form, and checks that
//! the key matches the certificate. [`TlsServer::reload`] (on SIGHUP) re-reads both files and
//! swaps the `Arc<ServerConfig>` that *new* handshakes use; tunnels already running keep their
//! own `rustls::Connection` and are not affected. If the new files are bad, the old
//! configuration stays. [`TlsClient`] verifies targets against the system's roots
//! (`rustls-native-certs`) plus an optional extra CA file, sends SNI for DNS names (not for IP
//! addresses, RFC 6066 §3) and checks IP-address names against the certificate's IP SANs.
//!
//! # Cost on the data path
//!
//! Each half owns one reusable buffer (ciphertext in for the reader, the shared `out` buffer
//! for writers); rustls adds its own copy per record. A reader that waits for an idle peer
//! through [`TlsReader::wait_readable`] frees its input buffer meanwhile (as the framing
//! readers do with theirs), and allocates it again when data arrives. Lock hold times are
//! bounded by the CPU work of one batch (at most [`MAX_BATCH`] bytes of plaintext per lock for
//! the writer, one input buffer of records for the reader).
//!
//! Measured (`tests/tls.rs`, `throughput_ws_vs_wss`, release build, loopback, 2 shared cores):
//! echoing 128 MiB through one tunnel, `wss://` reaches 0.5–0.65 of `ws://` end to end (the
//! test client does TLS too, on the same cores), and costs the proxy 2.2–2.8 times the CPU per
//! byte of `ws://` (AES-GCM both ways plus rustls' record copies).
//!
//! # Layout
//!
//! One concept per file: `mod.rs` (this document, spotting a ClientHello, [`TlsInfo`]),
//! `config.rs` (certificates, keys, [`TlsServer`] and [`TlsClient`]), `handshake.rs` (the
//! handshake, up to the split), `stream.rs` (the shared connection, [`TlsReader`] and
//! [`TlsWriter`]).

use std::fmt;
use std::io;
use std::net::TcpStream;
use std::time::Instant;

mod config;
mod handshake;
mod stream;
#[cfg(test)]
mod test_support;

pub use config::{TlsClient, TlsServer};
pub use stream::{MAX_BATCH, TlsReader, TlsWriter};

/// The TLS content type of a handshake record (RFC 8446 §5.1: `handshake(22)`).
const CONTENT_TYPE_HANDSHAKE: u8 = 0x16;

/// Does a connection whose first byte is `first_byte` start a TLS handshake?
///
/// Every TLS connection starts with the client's ClientHello in a `handshake(22)` record, and
/// a record starts with its content type (RFC 8446 §5.1, the same in TLS 1.0–1.2), so the
/// first byte is `0x16`. No HTTP method starts with it, so the test is unambiguous.
///
/// `0x80` (an SSL 2.0-compatible ClientHello, whose first byte is the high bit of a two-byte
/// length) is deliberately *not* TLS here: SSL 2.0 is prohibited (RFC 6176), clients must not
/// send such hellos and TLS 1.3 cannot be negotiated with one (RFC 8446 Appendix D.5), and
/// rustls does not parse them. Such a connection is handled as plain HTTP and gets a 400.
pub fn is_client_hello(first_byte: u8) -> bool {
    first_byte == CONTENT_TYPE_HANDSHAKE
}

/// Peeks at the first byte of a new connection without consuming it, waiting at most until
/// `deadline`. `Ok(None)` means the client closed without sending anything. Leaves the socket's
/// read timeout set (the caller's next step sets its own).
pub fn peek_first_byte(stream: &TcpStream, deadline: Instant) -> io::Result<Option<u8>> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(io::Error::new(io::ErrorKind::TimedOut, "deadline passed"));
    }
    stream.set_read_timeout(Some(left))?;
    let mut byte = [0u8; 1];
    loop {
        match stream.peek(&mut byte) {
            Ok(0) => return Ok(None),
            Ok(_) => return Ok(Some(byte[0])),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// What was negotiated, for log lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsInfo {
    /// The SNI name the client sent (server side), or the name we verified (client side).
    pub server_name: Option<String>,
    /// E.g. `TLSv1_3`.
    pub version: String,
    /// E.g. `TLS13_AES_256_GCM_SHA384`.
    pub cipher_suite: String,
}

impl fmt::Display for TlsInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.version, self.cipher_suite)?;
        if let Some(name) = &self.server_name {
            write!(f, ", SNI {name}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_hello_detection() {
        assert!(is_client_hello(0x16));
        assert!(!is_client_hello(0x80));
        assert!(!is_client_hello(b'G'));
    }
}
