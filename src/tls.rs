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
//! - **Reader** ([`TlsReader::read`]): locks `conn` and takes plaintext that is already
//!   decrypted; if there is none, feeds ciphertext it already holds (`read_tls` +
//!   `process_new_packets`) and tries again; if it holds none either, it **unlocks** and does
//!   its blocking socket read into its own reusable buffer, holding no lock at all. A reader
//!   waiting for the client therefore never holds anything the writer needs.
//! - **Writer** ([`TlsWriter::write`]): locks `out`, then `conn`; encrypts the plaintext into
//!   records and drains them (`write_tls`) into `out`'s buffer; unlocks `conn`; writes the
//!   records to the socket; unlocks `out`. The socket write — which blocks while the client is
//!   not reading — holds only `out`, so the reader keeps decrypting meanwhile.
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

use std::fmt;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, TryLockError};
use std::time::{Duration, Instant};

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{
    ClientConfig, ClientConnection, Connection, RootCertStore, ServerConfig, ServerConnection,
};

use crate::socket::SharedSocket;

/// Ciphertext read from the socket per `read()` (two full TLS records).
const READ_BUF: usize = 32 * 1024;

/// At most this much plaintext is encrypted per lock of the connection by one `write()`.
pub const MAX_BATCH: usize = 128 * 1024;

/// How long sending our `close_notify` may block (the peer may have stopped reading).
const CLOSE_NOTIFY_TIMEOUT: Duration = Duration::from_secs(2);

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

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

// ---------------------------------------------------------------------------------------------
// Loading certificates and keys
// ---------------------------------------------------------------------------------------------

fn read_file(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read the {what} file {}: {e}", path.display()))
}

fn pem_error(path: &Path, what: &str, e: pem::Error) -> String {
    format!("{what} file {}: invalid PEM: {e}", path.display())
}

/// Every `CERTIFICATE` block of a PEM file, in order.
fn load_certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let data = read_file(path, what)?;
    let certs = CertificateDer::pem_slice_iter(&data)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, what, e))?;
    if certs.is_empty() {
        return Err(format!(
            "{what} file {}: no `-----BEGIN CERTIFICATE-----` block found (expected PEM)",
            path.display()
        ));
    }
    Ok(certs)
}

/// The first private key of a PEM file: PKCS#8, PKCS#1 (RSA) or SEC1 (EC).
fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let data = read_file(path, "key")?;
    PrivateKeyDer::from_pem_slice(&data).map_err(|e| match e {
        pem::Error::NoItemsFound => format!(
            "key file {}: no private key found (expected PEM `PRIVATE KEY` (PKCS#8), \
             `RSA PRIVATE KEY` (PKCS#1) or `EC PRIVATE KEY` (SEC1))",
            path.display()
        ),
        e => pem_error(path, "key", e),
    })
}

fn load_server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, String> {
    let chain = load_certs(cert, "certificate")?;
    let key_der = load_key(key)?;
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS configuration: {e}"))?
        .with_no_client_auth()
        // Also checks that the key is usable and matches the leaf certificate.
        .with_single_cert(chain, key_der)
        .map_err(|e| {
            format!(
                "certificate {} and key {} cannot be used together: {e}",
                cert.display(),
                key.display()
            )
        })?;
    Ok(Arc::new(config))
}

// ---------------------------------------------------------------------------------------------
// Server and client
// ---------------------------------------------------------------------------------------------

/// The server side: the certificate files and the configuration new handshakes use.
pub struct TlsServer {
    cert_path: PathBuf,
    key_path: PathBuf,
    config: RwLock<Arc<ServerConfig>>,
}

impl fmt::Debug for TlsServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsServer")
            .field("cert", &self.cert_path)
            .field("key", &self.key_path)
            .finish_non_exhaustive()
    }
}

impl TlsServer {
    /// Loads a PEM certificate chain (leaf first) and its PEM private key (PKCS#8, PKCS#1 or
    /// SEC1). Errors name the file and what is wrong with it.
    pub fn from_files(cert: &Path, key: &Path) -> Result<TlsServer, String> {
        let config = load_server_config(cert, key)?;
        Ok(TlsServer {
            cert_path: cert.to_path_buf(),
            key_path: key.to_path_buf(),
            config: RwLock::new(config),
        })
    }

    /// Re-reads both files (on SIGHUP). New handshakes use the new certificate; connections
    /// already established keep theirs. On error the previous configuration stays in use.
    pub fn reload(&self) -> Result<(), String> {
        let config = load_server_config(&self.cert_path, &self.key_path)?;
        *self
            .config
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = config;
        Ok(())
    }

    /// The certificate file's path (for log lines).
    pub fn cert_path(&self) -> &Path {
        &self.cert_path
    }

    /// Runs the server side of a TLS handshake on `socket`, which must not have been read
    /// from yet (peeking is fine), giving up at `deadline`. Returns the plaintext halves; the
    /// client's SNI name, protocol version and cipher suite are in [`TlsReader::info`] /
    /// [`TlsWriter::info`]. Leaves the socket without read or write timeouts.
    pub fn accept(
        &self,
        socket: SharedSocket,
        deadline: Instant,
    ) -> Result<(TlsReader, TlsWriter), String> {
        let config = Arc::clone(
            &self
                .config
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        );
        let conn = ServerConnection::new(config).map_err(|e| format!("TLS setup failed: {e}"))?;
        handshake(Connection::Server(conn), socket, deadline, "client")
    }
}

/// The client side, for TLS targets (`--tls-target`).
pub struct TlsClient {
    config: Arc<ClientConfig>,
}

impl fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsClient").finish_non_exhaustive()
    }
}

impl TlsClient {
    /// Trusts the system's root certificates plus, if given, every certificate in `extra_ca`
    /// (a PEM file). Fails if the file is bad, or if no trusted root is left at all.
    pub fn new(extra_ca: Option<&Path>) -> Result<TlsClient, String> {
        let mut roots = RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        let (_added, _ignored) = roots.add_parsable_certificates(native.certs);
        if let Some(path) = extra_ca {
            for cert in load_certs(path, "CA")? {
                roots.add(cert).map_err(|e| {
                    format!(
                        "CA file {}: not a usable CA certificate: {e}",
                        path.display()
                    )
                })?;
            }
        }
        if roots.is_empty() {
            let why = native
                .errors
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("; ");
            return Err(format!(
                "no trusted CA certificates for TLS targets: the system store is empty or \
                 unreadable{}{} and no CA file was given",
                if why.is_empty() { "" } else { ": " },
                why
            ));
        }
        Self::with_roots(roots)
    }

    /// Trusts exactly `roots` (tests, or a deployment without system roots).
    pub fn with_roots(roots: RootCertStore) -> Result<TlsClient, String> {
        let config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS configuration: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(TlsClient {
            config: Arc::new(config),
        })
    }

    /// Runs the client side of a TLS handshake with the target on `socket`, sending SNI for
    /// `server_name` (a DNS name; IP addresses, bracketed or not, are verified against IP
    /// SANs and not sent as SNI) and verifying the certificate, giving up at `deadline`.
    pub fn connect(
        &self,
        socket: SharedSocket,
        server_name: &str,
        deadline: Instant,
    ) -> Result<(TlsReader, TlsWriter), String> {
        let bare = server_name
            .strip_prefix('[')
            .and_then(|s| s.strip_suffix(']'))
            .unwrap_or(server_name);
        let name = ServerName::try_from(bare.to_string())
            .map_err(|e| format!("{server_name:?} cannot be checked against a certificate: {e}"))?;
        let conn = ClientConnection::new(Arc::clone(&self.config), name)
            .map_err(|e| format!("TLS setup failed: {e}"))?;
        handshake(Connection::Client(conn), socket, deadline, "target")
    }
}

// ---------------------------------------------------------------------------------------------
// The handshake
// ---------------------------------------------------------------------------------------------

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

/// Drains every queued record into `out`.
fn drain(conn: &mut Connection, out: &mut Vec<u8>) -> io::Result<()> {
    while conn.wants_write() {
        conn.write_tls(out)?;
    }
    Ok(())
}

/// Writes `out` to the socket and empties it (even on error).
fn write_out(socket: &SharedSocket, out: &mut Vec<u8>) -> io::Result<()> {
    let result = if out.is_empty() {
        Ok(())
    } else {
        (&*socket.0).write_all(out)
    };
    out.clear();
    result
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

fn handshake(
    mut conn: Connection,
    socket: SharedSocket,
    deadline: Instant,
    peer: &str,
) -> Result<(TlsReader, TlsWriter), String> {
    let started = Instant::now();
    let mut buf = vec![0u8; READ_BUF];
    let (mut start, mut end) = (0usize, 0usize);
    let mut out = Vec::new();
    let stream = &*socket.0;

    let time_left = |doing: &str| -> Result<Duration, String> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            Err(format!(
                "TLS handshake with the {peer} not finished after {:.1} s ({doing})",
                started.elapsed().as_secs_f64()
            ))
        } else {
            Ok(left)
        }
    };

    let result: Result<(), String> = (|| {
        loop {
            // Send whatever rustls wants to send (our flight, tickets, or an alert).
            if conn.wants_write() {
                let left = time_left("sending")?;
                let _ = stream.set_write_timeout(Some(left));
                drain(&mut conn, &mut out).map_err(|e| format!("TLS: {e}"))?;
                write_out(&socket, &mut out).map_err(|e| {
                    if is_timeout(&e) {
                        format!("TLS handshake with the {peer} stalled: it does not read")
                    } else {
                        format!("TLS handshake with the {peer} failed while sending: {e}")
                    }
                })?;
            }
            if !conn.is_handshaking() {
                return Ok(());
            }
            if start == end {
                let left = time_left("waiting for the peer")?;
                let _ = stream.set_read_timeout(Some(left));
                let n = loop {
                    match (&*stream).read(&mut buf) {
                        Ok(n) => break n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) if is_timeout(&e) => {
                            return Err(format!(
                                "TLS handshake with the {peer} not finished after {:.1} s \
                                 (it stalled)",
                                started.elapsed().as_secs_f64()
                            ));
                        }
                        Err(e) => {
                            return Err(format!("TLS handshake with the {peer} failed: {e}"));
                        }
                    }
                };
                if n == 0 {
                    return Err(format!(
                        "the {peer} closed the connection during the TLS handshake"
                    ));
                }
                (start, end) = (0, n);
            }
            let mut pending = &buf[start..end];
            let fed = conn
                .read_tls(&mut pending)
                .map_err(|e| format!("TLS handshake with the {peer} failed: {e}"))?;
            if fed == 0 {
                return Err(format!(
                    "TLS handshake with the {peer} failed: unusable input"
                ));
            }
            start += fed;
            if let Err(e) = conn.process_new_packets() {
                // Tell the peer why (best effort), then give up.
                if drain(&mut conn, &mut out).is_ok()
                    && let Ok(left) = time_left("sending an alert")
                {
                    let _ = stream.set_write_timeout(Some(left.min(Duration::from_secs(1))));
                    let _ = write_out(&socket, &mut out);
                }
                return Err(format!("TLS handshake with the {peer} failed: {e}"));
            }
        }
    })();
    let _ = stream.set_read_timeout(None);
    let _ = stream.set_write_timeout(None);
    result?;

    let info = TlsInfo {
        server_name: match &conn {
            Connection::Server(server) => server.server_name().map(str::to_string),
            Connection::Client(_) => None,
        },
        version: conn
            .protocol_version()
            .map(|v| format!("{v:?}"))
            .unwrap_or_else(|| "TLS".into()),
        cipher_suite: conn
            .negotiated_cipher_suite()
            .map(|s| format!("{:?}", s.suite()))
            .unwrap_or_else(|| "?".into()),
    };
    out.clear();
    let shared = Arc::new(Shared {
        conn: Mutex::new(conn),
        out: Mutex::new(out),
        flush_wanted: AtomicBool::new(false),
        failed: AtomicBool::new(false),
        socket,
        info,
    });
    Ok((
        TlsReader {
            shared: Arc::clone(&shared),
            buf,
            start,
            end,
        },
        TlsWriter {
            shared,
            closed: false,
        },
    ))
}

// ---------------------------------------------------------------------------------------------
// The two halves
// ---------------------------------------------------------------------------------------------

/// What both halves share. Lock order: `out`, then `conn`.
struct Shared {
    /// The TLS state machine. Held only for CPU work, never across socket I/O.
    conn: Mutex<rustls::Connection>,
    /// Ciphertext on its way to the socket. Holding this lock is the right to take records
    /// out of `conn` and to write the socket, so records go out in the order produced.
    out: Mutex<Vec<u8>>,
    /// The reader queued records but could not take `out`; whoever holds it sends them.
    flush_wanted: AtomicBool,
    /// A fatal TLS error happened (an alert was queued); nothing more may be sent.
    failed: AtomicBool,
    socket: SharedSocket,
    info: TlsInfo,
}

impl Shared {
    /// Sends every queued record. Called with `out` held.
    fn send_queued(&self, out: &mut Vec<u8>) -> io::Result<()> {
        drain(&mut lock(&self.conn), out)?;
        write_out(&self.socket, out)
    }

    /// From the reader: send records its processing queued, without ever waiting for `out`.
    fn flush_from_reader(&self) {
        self.flush_wanted.store(true, Ordering::Release);
        let mut out = match self.out.try_lock() {
            Ok(guard) => guard,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            // The holder sends them after releasing `out` (it checks `flush_wanted`).
            Err(TryLockError::WouldBlock) => return,
        };
        self.flush_wanted.store(false, Ordering::Release);
        let _ = self.send_queued(&mut out);
    }

    /// From the writer, after releasing `out`: send what the reader left behind.
    fn flush_requested(&self) {
        while self.flush_wanted.swap(false, Ordering::AcqRel) {
            let mut out = lock(&self.out);
            let _ = self.send_queued(&mut out);
        }
    }
}

/// The plaintext read half: `Read` + `Send`. `Ok(0)` after the peer's `close_notify`; a TCP
/// EOF without it, or bad TLS data, is an error. Socket errors (including read timeouts set
/// on the socket) pass through unchanged and leave the stream usable.
pub struct TlsReader {
    shared: Arc<Shared>,
    /// Ciphertext read from the socket; `buf[start..end]` is not yet fed to rustls. Empty
    /// (freed) while [`TlsReader::wait_readable`] waits on an idle connection.
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl fmt::Debug for TlsReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsReader")
            .field("info", &self.shared.info)
            .finish_non_exhaustive()
    }
}

impl TlsReader {
    /// What was negotiated.
    pub fn info(&self) -> &TlsInfo {
        &self.shared.info
    }

    /// Whether a read returns without touching the socket: decrypted bytes are waiting, or
    /// received ciphertext not yet decrypted, or the stream has ended.
    pub fn has_buffered(&self) -> bool {
        if self.start < self.end {
            return true;
        }
        // Everything fed was processed already, so this only reports the state (a TLS error
        // counts as "a read returns at once", with that error).
        lock(&self.shared.conn)
            .process_new_packets()
            .map(|state| state.plaintext_bytes_to_read() > 0 || state.peer_has_closed())
            .unwrap_or(true)
    }

    /// For readers that free their buffers while idle: returns at once if a read would find
    /// something buffered ([`TlsReader::has_buffered`]); otherwise frees this reader's input
    /// buffer and blocks, without any lock, until the socket has data or has ended (a peek:
    /// nothing is consumed). The next read may still wait for the rest of a record.
    pub fn wait_readable(&mut self) -> io::Result<()> {
        if self.has_buffered() {
            return Ok(());
        }
        self.buf = Vec::new();
        (self.start, self.end) = (0, 0);
        self.shared.socket.0.peek(&mut [0u8; 1]).map(|_| ())
    }

    /// Takes decrypted bytes if there are any, feeding buffered ciphertext as needed.
    /// `None` means: nothing left to feed, read the socket. Holds `conn` only inside.
    fn take_plaintext(&mut self, dst: &mut [u8]) -> Option<io::Result<usize>> {
        let shared = &*self.shared;
        let mut flush = false;
        let result = {
            let mut conn = lock(&shared.conn);
            loop {
                match conn.reader().read(dst) {
                    // Data, or 0 after close_notify.
                    Ok(n) => break Some(Ok(n)),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                        break Some(Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "TLS peer closed the connection without close_notify",
                        )));
                    }
                    Err(e) => break Some(Err(e)),
                }
                if self.start == self.end {
                    break None;
                }
                let mut pending = &self.buf[self.start..self.end];
                match conn.read_tls(&mut pending) {
                    // After close_notify rustls reads nothing more: drop the rest.
                    Ok(0) => self.start = self.end,
                    Ok(fed) => self.start += fed,
                    Err(e) => {
                        break Some(Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!("TLS input refused: {e}"),
                        )));
                    }
                }
                if let Err(e) = conn.process_new_packets() {
                    shared.failed.store(true, Ordering::Release);
                    flush = conn.wants_write();
                    break Some(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("TLS error: {e}"),
                    )));
                }
                flush |= conn.wants_write();
            }
        };
        if flush {
            shared.flush_from_reader();
        }
        result
    }
}

impl Read for TlsReader {
    fn read(&mut self, dst: &mut [u8]) -> io::Result<usize> {
        if dst.is_empty() {
            return Ok(0);
        }
        loop {
            if let Some(result) = self.take_plaintext(dst) {
                return result;
            }
            // Nothing decrypted and nothing buffered: wait for the peer, holding no lock.
            (self.start, self.end) = (0, 0);
            if self.buf.is_empty() {
                self.buf = vec![0u8; READ_BUF];
            }
            let n = (&*self.shared.socket.0).read(&mut self.buf)?;
            if n == 0 {
                // Tell rustls about the EOF; the next round reports Ok(0) if close_notify
                // came first, or UnexpectedEof.
                let mut empty: &[u8] = &[];
                let _ = lock(&self.shared.conn).read_tls(&mut empty);
            }
            self.end = n;
        }
    }
}

/// The plaintext write half: `Write` + `Send`. Every `write` encrypts and sends before
/// returning (`flush` has nothing to do). Sends `close_notify` on [`TlsWriter::close_notify`]
/// or on drop.
pub struct TlsWriter {
    shared: Arc<Shared>,
    closed: bool,
}

impl fmt::Debug for TlsWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsWriter")
            .field("info", &self.shared.info)
            .finish_non_exhaustive()
    }
}

impl TlsWriter {
    /// Sends `close_notify` (RFC 8446 §6.1) once: nothing more will be written. Waits at most
    /// a couple of seconds for the socket (sets its write timeout), errors are ignored: the
    /// connection is closing anyway.
    pub fn close_notify(&mut self) {
        if self.closed {
            return;
        }
        self.closed = true;
        if self.shared.failed.load(Ordering::Acquire) {
            return;
        }
        let shared = &*self.shared;
        let mut out = lock(&shared.out);
        let _ = shared
            .socket
            .0
            .set_write_timeout(Some(CLOSE_NOTIFY_TIMEOUT));
        {
            let mut conn = lock(&shared.conn);
            conn.send_close_notify();
            let _ = drain(&mut conn, &mut out);
        }
        let _ = write_out(&shared.socket, &mut out);
        drop(out);
        shared.flush_requested();
    }
}

impl Write for TlsWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.closed {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "TLS close_notify already sent",
            ));
        }
        if self.shared.failed.load(Ordering::Acquire) {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "TLS connection failed",
            ));
        }
        if data.is_empty() {
            return Ok(0);
        }
        let shared = &*self.shared;
        let mut out = lock(&shared.out);
        let mut taken = 0;
        let encrypted = {
            let mut conn = lock(&shared.conn);
            let mut result = Ok(());
            while taken < data.len() && out.len() < MAX_BATCH {
                let end = data.len().min(taken + MAX_BATCH);
                match conn.writer().write(&data[taken..end]) {
                    Ok(0) => break,
                    Ok(n) => taken += n,
                    Err(e) => {
                        result = Err(e);
                        break;
                    }
                }
                if let Err(e) = drain(&mut conn, &mut out) {
                    result = Err(e);
                    break;
                }
            }
            result
        };
        // Records already taken out of rustls must go out whatever happened, in order.
        let sent = write_out(&shared.socket, &mut out);
        drop(out);
        shared.flush_requested();
        encrypted?;
        sent?;
        if taken == 0 {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "TLS connection accepts no more data",
            ));
        }
        Ok(taken)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for TlsWriter {
    fn drop(&mut self) {
        self.close_notify();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Shutdown, TcpListener};
    use std::sync::mpsc;
    use std::thread;

    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };

    /// A throwaway directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            use std::sync::atomic::AtomicUsize;
            static N: AtomicUsize = AtomicUsize::new(0);
            let path = std::env::temp_dir().join(format!(
                "wsproxy-tls-{tag}-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = std::fs::remove_dir_all(&path);
            std::fs::create_dir_all(&path).unwrap();
            TempDir(path)
        }
        fn path(&self, name: &str) -> PathBuf {
            self.0.join(name)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A test CA and a server certificate it signed, for localhost / 127.0.0.1 / ::1.
    struct Pki {
        dir: TempDir,
        ca_der: CertificateDer<'static>,
        cert: PathBuf,
        key: PathBuf,
        ca: PathBuf,
    }

    fn make_pki(tag: &str, org: &str) -> Pki {
        let dir = TempDir::new(tag);
        let (ca_der, cert_pem, key_pem, ca_pem) = issue(org);
        let (cert, key, ca) = (
            dir.path("cert.pem"),
            dir.path("key.pem"),
            dir.path("ca.pem"),
        );
        std::fs::write(&cert, cert_pem).unwrap();
        std::fs::write(&key, key_pem).unwrap();
        std::fs::write(&ca, ca_pem).unwrap();
        Pki {
            dir,
            ca_der,
            cert,
            key,
            ca,
        }
    }

    /// (CA DER, server chain PEM, server key PEM (PKCS#8), CA PEM).
    fn issue(org: &str) -> (CertificateDer<'static>, String, String, String) {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::OrganizationName, org);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, format!("{org} test CA"));
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_key = KeyPair::generate().unwrap();
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);

        let mut params =
            CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into(), "::1".into()])
                .unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        params
            .distinguished_name
            .push(DnType::OrganizationName, org);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &issuer).unwrap();
        // The chain: leaf, then the CA (servers usually send intermediates; harmless here).
        let chain = format!("{}{}", cert.pem(), ca_cert.pem());
        (
            ca_cert.der().clone(),
            chain,
            key.serialize_pem(),
            ca_cert.pem(),
        )
    }

    fn client_for(ca: &CertificateDer<'static>) -> TlsClient {
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone()).unwrap();
        TlsClient::with_roots(roots).unwrap()
    }

    fn soon(secs: u64) -> Instant {
        Instant::now() + Duration::from_secs(secs)
    }

    /// A loopback TCP pair: (client side, server side).
    fn tcp_pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        (client, server)
    }

    type Halves = (TlsReader, TlsWriter);

    /// A TLS connection over loopback: (client halves, server halves).
    fn tls_pair(
        server: &TlsServer,
        client: &TlsClient,
        name: &str,
    ) -> Result<(Halves, Halves), String> {
        let (c, s) = tcp_pair();
        let (client_sock, server_sock) = (SharedSocket::new(c), SharedSocket::new(s));
        let accepting = {
            // TlsServer is not Clone; run the client handshake in the thread instead.
            let client = TlsClient {
                config: Arc::clone(&client.config),
            };
            let name = name.to_string();
            thread::spawn(move || client.connect(client_sock, &name, soon(10)))
        };
        let server_side = server.accept(server_sock, soon(10));
        let client_side = accepting.join().unwrap();
        Ok((client_side?, server_side?))
    }

    fn pattern(seed: u64, n: usize) -> Vec<u8> {
        let mut x = seed | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    fn read_exactly(reader: &mut TlsReader, n: usize) -> Vec<u8> {
        let mut got = Vec::with_capacity(n);
        let mut buf = vec![0u8; 20_000];
        while got.len() < n {
            let k = reader.read(&mut buf).expect("read");
            assert_ne!(k, 0, "unexpected EOF after {} of {n} bytes", got.len());
            got.extend_from_slice(&buf[..k]);
        }
        got
    }

    /// Writes `data` in uneven chunks.
    fn write_chunks(writer: &mut TlsWriter, data: &[u8]) {
        let mut i = 0;
        let mut step = 1;
        while i < data.len() {
            let end = data.len().min(i + step);
            writer.write_all(&data[i..end]).expect("write");
            i = end;
            step = (step * 7 + 3) % 70_000 + 1;
        }
    }

    #[test]
    fn client_hello_detection() {
        assert!(is_client_hello(0x16));
        assert!(!is_client_hello(0x80));
        assert!(!is_client_hello(b'G'));
    }

    #[test]
    fn full_duplex_4mib_both_ways_at_once() {
        let pki = make_pki("duplex", "Duplex");
        let server = TlsServer::from_files(&pki.cert, &pki.key).unwrap();
        let client = client_for(&pki.ca_der);
        let ((mut cr, mut cw), (mut sr, mut sw)) = tls_pair(&server, &client, "localhost").unwrap();
        assert_eq!(sr.info().server_name.as_deref(), Some("localhost"));
        assert!(cr.info().version.contains("1_3"), "{}", cr.info());

        const N: usize = 4 << 20;
        let up = pattern(1, N);
        let down = pattern(2, N);
        // Four threads: each side writes 4 MiB while its other thread reads 4 MiB. Both
        // directions fill their socket buffers, so a design where a blocked writer stopped the
        // reader (or the reverse) would deadlock here.
        let (done_tx, done_rx) = mpsc::channel();
        let mut handles = Vec::new();
        {
            let up = up.clone();
            let tx = done_tx.clone();
            handles.push(thread::spawn(move || {
                write_chunks(&mut cw, &up);
                drop(cw); // close_notify
                tx.send("client writer").unwrap();
            }));
        }
        {
            let down = down.clone();
            let tx = done_tx.clone();
            handles.push(thread::spawn(move || {
                write_chunks(&mut sw, &down);
                sw.close_notify();
                tx.send("server writer").unwrap();
                drop(sw);
            }));
        }
        {
            let tx = done_tx.clone();
            handles.push(thread::spawn(move || {
                let got = read_exactly(&mut sr, N);
                assert!(got == up, "upload corrupted");
                let mut b = [0u8; 16];
                assert_eq!(sr.read(&mut b).unwrap(), 0, "close_notify is EOF");
                tx.send("server reader").unwrap();
            }));
        }
        {
            let tx = done_tx.clone();
            handles.push(thread::spawn(move || {
                let got = read_exactly(&mut cr, N);
                assert!(got == down, "download corrupted");
                let mut b = [0u8; 16];
                assert_eq!(cr.read(&mut b).unwrap(), 0, "close_notify is EOF");
                tx.send("client reader").unwrap();
            }));
        }
        drop(done_tx);
        for _ in 0..4 {
            done_rx
                .recv_timeout(Duration::from_secs(60))
                .expect("a TLS thread hung or panicked");
        }
        for h in handles {
            h.join().unwrap();
        }
    }

    #[test]
    fn echo_4mib_with_concurrent_reader() {
        let pki = make_pki("echo", "Echo");
        let server = TlsServer::from_files(&pki.cert, &pki.key).unwrap();
        let client = client_for(&pki.ca_der);
        let ((mut cr, mut cw), (mut sr, mut sw)) = tls_pair(&server, &client, "127.0.0.1").unwrap();
        // Server: echo on one thread (read from one half, write the other).
        let echo = thread::spawn(move || {
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                match sr.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => sw.write_all(&buf[..n]).unwrap(),
                    Err(e) => panic!("server read: {e}"),
                }
            }
        });
        const N: usize = 4 << 20;
        let data = pattern(3, N);
        let expected = data.clone();
        let reader = thread::spawn(move || read_exactly(&mut cr, N));
        write_chunks(&mut cw, &data);
        let got = reader.join().unwrap();
        assert!(got == expected, "echo corrupted");
        drop(cw);
        echo.join().unwrap();
    }

    #[test]
    fn blocked_reader_does_not_stop_writer() {
        let pki = make_pki("blocked", "Blocked");
        let server = TlsServer::from_files(&pki.cert, &pki.key).unwrap();
        let client = client_for(&pki.ca_der);
        let ((mut cr, mut cw), (mut sr, mut sw)) = tls_pair(&server, &client, "localhost").unwrap();
        // The server's reader blocks: the client sends nothing yet.
        let (tx, rx) = mpsc::channel();
        let blocked = thread::spawn(move || {
            let mut buf = [0u8; 64];
            let n = sr.read(&mut buf).unwrap();
            tx.send(buf[..n].to_vec()).unwrap();
        });
        thread::sleep(Duration::from_millis(100));
        // Meanwhile the server writes 1 MiB, and the client reads it.
        let data = pattern(4, 1 << 20);
        let started = Instant::now();
        let writer = {
            let data = data.clone();
            thread::spawn(move || {
                sw.write_all(&data).unwrap();
                sw
            })
        };
        assert!(read_exactly(&mut cr, data.len()) == data);
        assert!(started.elapsed() < Duration::from_secs(10));
        let _sw = writer.join().unwrap();
        assert!(rx.try_recv().is_err(), "the reader was still waiting");
        cw.write_all(b"wake up").unwrap();
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), b"wake up");
        blocked.join().unwrap();
    }

    #[test]
    fn key_updates_mid_stream() {
        // The client refreshes its keys mid-stream (RFC 8446 §4.6.3, update_requested). The
        // server's reader switches its read keys; rustls queues the server's own key_update in
        // front of the server's next record. Both directions must keep working.
        let pki = make_pki("keyupdate", "KeyUpdate");
        let server = TlsServer::from_files(&pki.cert, &pki.key).unwrap();
        let client = client_for(&pki.ca_der);
        let ((mut cr, mut cw), (mut sr, mut sw)) = tls_pair(&server, &client, "localhost").unwrap();
        for round in 0..3u8 {
            lock(&cw.shared.conn).refresh_traffic_keys().unwrap();
            cw.write_all(&[round; 100]).unwrap();
            assert_eq!(read_exactly(&mut sr, 100), vec![round; 100]);
            sw.write_all(&[round + 10; 50]).unwrap();
            assert_eq!(read_exactly(&mut cr, 50), vec![round + 10; 50]);
        }
    }

    #[test]
    fn eof_without_close_notify_is_an_error() {
        let pki = make_pki("eof", "Eof");
        let server = TlsServer::from_files(&pki.cert, &pki.key).unwrap();
        let client = client_for(&pki.ca_der);
        let ((cr, cw), (mut sr, _sw)) = tls_pair(&server, &client, "localhost").unwrap();
        let socket = cw.shared.socket.clone();
        // Shut the TCP connection without close_notify (as a crashed peer would).
        std::mem::forget(cw);
        socket.shutdown(Shutdown::Both);
        let mut b = [0u8; 8];
        let err = sr.read(&mut b).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof, "{err}");
        drop(cr);
    }

    #[test]
    fn corrupt_record_is_an_error_and_the_reader_sends_the_alert() {
        let pki = make_pki("corrupt", "Corrupt");
        let server = TlsServer::from_files(&pki.cert, &pki.key).unwrap();
        let client = client_for(&pki.ca_der);
        let ((mut cr, cw), (mut sr, mut sw)) = tls_pair(&server, &client, "localhost").unwrap();
        // An application-data record that cannot decrypt, written under the TLS layer.
        let mut record = vec![0x17, 0x03, 0x03, 0x00, 0x30];
        record.extend(pattern(5, 0x30));
        (&*cw.shared.socket.0).write_all(&record).unwrap();
        let err = sr.read(&mut [0u8; 64]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("TLS error"), "{err}");
        // The server's reader sent the bad_record_mac alert itself (the server never writes).
        let err = cr.read(&mut [0u8; 64]).unwrap_err();
        assert!(err.to_string().contains("BadRecordMac"), "{err}");
        // And nothing more is sent after a fatal error.
        assert!(sw.write(b"x").is_err());
        std::mem::forget(cw); // its close_notify would go to a dead connection
    }

    #[test]
    fn wait_readable_frees_the_buffer_and_wakes_on_data() {
        let pki = make_pki("wait", "Wait");
        let server = TlsServer::from_files(&pki.cert, &pki.key).unwrap();
        let client = client_for(&pki.ca_der);
        let ((_cr, mut cw), (mut sr, _sw)) = tls_pair(&server, &client, "localhost").unwrap();
        assert!(!sr.has_buffered());
        let waiter = thread::spawn(move || {
            sr.wait_readable().unwrap();
            assert!(sr.buf.is_empty(), "the input buffer is freed while idle");
            let mut b = [0u8; 3];
            assert_eq!(sr.read(&mut b).unwrap(), 3);
            assert_eq!(&b, b"abc");
            // More was sent than read: it is buffered now, so no waiting.
            assert!(sr.has_buffered());
            sr.wait_readable().unwrap();
            assert_eq!(read_exactly(&mut sr, 3), b"def");
        });
        thread::sleep(Duration::from_millis(100));
        cw.write_all(b"abcdef").unwrap();
        waiter.join().unwrap();
    }

    #[test]
    fn write_after_close_notify_is_refused() {
        let pki = make_pki("closed", "Closed");
        let server = TlsServer::from_files(&pki.cert, &pki.key).unwrap();
        let client = client_for(&pki.ca_der);
        let ((mut cr, _cw), (_sr, mut sw)) = tls_pair(&server, &client, "localhost").unwrap();
        sw.write_all(b"last").unwrap();
        sw.close_notify();
        assert!(sw.write(b"more").is_err());
        assert_eq!(read_exactly(&mut cr, 4), b"last");
        let mut b = [0u8; 8];
        assert_eq!(cr.read(&mut b).unwrap(), 0);
    }

    #[test]
    fn reload_swaps_the_certificate_for_new_connections_only() {
        let pki = make_pki("reload", "First");
        let server = TlsServer::from_files(&pki.cert, &pki.key).unwrap();
        let first = client_for(&pki.ca_der);
        let ((mut cr, mut cw), (mut sr, mut sw)) = tls_pair(&server, &first, "localhost").unwrap();

        // Broken files: reload fails, the old certificate stays.
        std::fs::write(&pki.key, "not a key").unwrap();
        let err = server.reload().unwrap_err();
        assert!(err.contains(&pki.key.display().to_string()), "{err}");
        assert!(
            tls_pair(&server, &first, "localhost").is_ok(),
            "old config kept"
        );

        // A new CA and certificate.
        let (ca2, chain2, key2, _) = issue("Second");
        std::fs::write(&pki.cert, chain2).unwrap();
        std::fs::write(&pki.key, key2).unwrap();
        server.reload().unwrap();
        let second = client_for(&ca2);
        assert!(tls_pair(&server, &second, "localhost").is_ok());
        let err = tls_pair(&server, &first, "localhost").unwrap_err();
        assert!(err.contains("certificate"), "{err}");

        // The connection made before the reload still flows both ways.
        cw.write_all(b"still here").unwrap();
        assert_eq!(read_exactly(&mut sr, 10), b"still here");
        sw.write_all(b"yes").unwrap();
        assert_eq!(read_exactly(&mut cr, 3), b"yes");
        drop(pki.dir);
    }

    #[test]
    fn load_errors_name_the_file() {
        let pki = make_pki("errors", "Errors");
        let missing = pki.dir.path("missing.pem");
        let err = TlsServer::from_files(&missing, &pki.key).unwrap_err();
        assert!(
            err.contains("missing.pem") && err.contains("certificate"),
            "{err}"
        );
        let err = TlsServer::from_files(&pki.cert, &missing).unwrap_err();
        assert!(err.contains("missing.pem") && err.contains("key"), "{err}");
        // A key file in the certificate's place and vice versa.
        let err = TlsServer::from_files(&pki.key, &pki.key).unwrap_err();
        assert!(err.contains("no `-----BEGIN CERTIFICATE-----`"), "{err}");
        let err = TlsServer::from_files(&pki.cert, &pki.cert).unwrap_err();
        assert!(err.contains("no private key"), "{err}");
        // A key that does not belong to the certificate.
        let other = pki.dir.path("other.pem");
        std::fs::write(&other, KeyPair::generate().unwrap().serialize_pem()).unwrap();
        let err = TlsServer::from_files(&pki.cert, &other).unwrap_err();
        assert!(err.contains("cannot be used together"), "{err}");
        // Bad PEM.
        let bad = pki.dir.path("bad.pem");
        std::fs::write(
            &bad,
            "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let err = TlsServer::from_files(&bad, &pki.key).unwrap_err();
        assert!(err.contains("bad.pem"), "{err}");
        // The CA file of a client.
        let err = TlsClient::new(Some(&missing)).unwrap_err();
        assert!(err.contains("missing.pem"), "{err}");
        assert!(TlsClient::new(Some(&pki.ca)).is_ok());
    }

    /// RSA (PKCS#1) and EC (SEC1) keys, made with the `openssl` command if it is installed.
    #[test]
    fn pkcs1_and_sec1_keys() {
        let dir = TempDir::new("keyformats");
        let run = |args: &[&str]| {
            std::process::Command::new("openssl")
                .args(args)
                .current_dir(&dir.0)
                .stderr(std::process::Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false)
        };
        if !run(&["version"]) {
            eprintln!("openssl not installed; skipping the PKCS#1/SEC1 key test");
            return;
        }
        for (name, genkey) in [
            (
                "rsa",
                vec!["genrsa", "-traditional", "-out", "rsa.key", "2048"],
            ),
            (
                "ec",
                vec![
                    "ecparam",
                    "-name",
                    "prime256v1",
                    "-genkey",
                    "-noout",
                    "-out",
                    "ec.key",
                ],
            ),
        ] {
            assert!(run(&genkey), "openssl {genkey:?}");
            let key = dir.path(&format!("{name}.key"));
            let text = std::fs::read_to_string(&key).unwrap();
            let expected = if name == "rsa" {
                "RSA PRIVATE KEY"
            } else {
                "EC PRIVATE KEY"
            };
            assert!(
                text.contains(expected),
                "{name} key is not in the traditional form"
            );
            assert!(run(&[
                "req",
                "-new",
                "-x509",
                "-key",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.crt"),
                "-days",
                "2",
                "-subj",
                "/CN=localhost",
                "-addext",
                "subjectAltName=DNS:localhost",
                "-addext",
                "basicConstraints=critical,CA:FALSE",
            ]));
            let cert = dir.path(&format!("{name}.crt"));
            let server =
                TlsServer::from_files(&cert, &key).unwrap_or_else(|e| panic!("{name}: {e}"));
            let ca = CertificateDer::from_pem_file(&cert).unwrap();
            let ((mut cr, _cw), (_sr, mut sw)) =
                tls_pair(&server, &client_for(&ca), "localhost").unwrap();
            sw.write_all(name.as_bytes()).unwrap();
            assert_eq!(read_exactly(&mut cr, name.len()), name.as_bytes());
        }
    }

    /// How an `accept` ended, and how long it took.
    type Outcome = (Result<(), String>, Duration);

    /// Starts `accept` on the server side of a fresh TCP pair; returns the raw client socket
    /// and a receiver for the outcome and how long it took.
    fn accept_raw(
        server: Arc<TlsServer>,
        deadline: Duration,
    ) -> (TcpStream, mpsc::Receiver<Outcome>) {
        let (client, s) = tcp_pair();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let started = Instant::now();
            let result = server
                .accept(SharedSocket::new(s), Instant::now() + deadline)
                .map(|_| ());
            let _ = tx.send((result, started.elapsed()));
        });
        (client, rx)
    }

    #[test]
    fn bad_handshakes_fail_cleanly() {
        let pki = make_pki("bad", "Bad");
        let server = Arc::new(TlsServer::from_files(&pki.cert, &pki.key).unwrap());
        let wait = Duration::from_secs(10);

        // A truncated ClientHello, then EOF.
        let (mut c, rx) = accept_raw(Arc::clone(&server), wait);
        c.write_all(&[
            0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
        ])
        .unwrap();
        c.shutdown(Shutdown::Write).unwrap();
        let (result, _) = rx.recv_timeout(wait).unwrap();
        let err = result.unwrap_err();
        assert!(
            err.contains("closed the connection during the TLS handshake"),
            "{err}"
        );

        // Garbage after 0x16: an error, and the connection is closed.
        let (mut c, rx) = accept_raw(Arc::clone(&server), wait);
        let mut junk = vec![0x16, 0x03, 0x01, 0x00, 0x40];
        junk.extend(pattern(9, 64));
        c.write_all(&junk).unwrap();
        let (result, _) = rx.recv_timeout(wait).unwrap();
        let err = result.unwrap_err();
        assert!(
            err.contains("TLS handshake with the client failed"),
            "{err}"
        );
        c.set_read_timeout(Some(wait)).unwrap();
        let mut rest = Vec::new();
        let _ = c.read_to_end(&mut rest); // EOF (or a reset), not a hang

        // A well-framed but undecodable ClientHello: rustls answers with a decode_error alert
        // (RFC 8446 §6.2), which we send before giving up.
        let (mut c, rx) = accept_raw(Arc::clone(&server), wait);
        c.write_all(&[
            0x16, 0x03, 0x01, 0x00, 0x08, 0x01, 0x00, 0x00, 0x04, 0xde, 0xad, 0xbe, 0xef,
        ])
        .unwrap();
        let (result, _) = rx.recv_timeout(wait).unwrap();
        let err = result.unwrap_err();
        assert!(
            err.contains("TLS handshake with the client failed"),
            "{err}"
        );
        c.set_read_timeout(Some(wait)).unwrap();
        let mut alert = Vec::new();
        let _ = c.read_to_end(&mut alert);
        assert_eq!(
            alert.first(),
            Some(&0x15),
            "a TLS alert record is sent ({err}): {alert:?}"
        );

        // A huge record length (not a handshake we will buffer).
        let (mut c, rx) = accept_raw(Arc::clone(&server), wait);
        c.write_all(&[0x16, 0x03, 0x01, 0xff, 0xff, 0x01]).unwrap();
        drop(c);
        let (result, _) = rx.recv_timeout(wait).unwrap();
        assert!(result.is_err());

        // A stalled handshake: three bytes, then nothing. The deadline ends it.
        let (mut c, rx) = accept_raw(Arc::clone(&server), Duration::from_millis(300));
        c.write_all(&[0x16, 0x03, 0x01]).unwrap();
        let (result, took) = rx.recv_timeout(wait).unwrap();
        let err = result.unwrap_err();
        assert!(err.contains("not finished"), "{err}");
        assert!(took < Duration::from_secs(3), "took {took:?}");
        drop(c);

        // A client that offers nothing the server can use: TLS 1.2 with only RSA suites,
        // while the server's key is ECDSA.
        let mut roots = RootCertStore::empty();
        roots.add(pki.ca_der.clone()).unwrap();
        let provider = rustls::crypto::CryptoProvider {
            cipher_suites: vec![
                rustls::crypto::ring::cipher_suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
            ],
            ..rustls::crypto::ring::default_provider()
        };
        let config = ClientConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(&[&rustls::version::TLS12])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let odd = TlsClient {
            config: Arc::new(config),
        };
        let err = tls_pair(&server, &odd, "localhost").unwrap_err();
        assert!(err.contains("failed"), "{err}");

        // The server still works for a normal client afterwards.
        assert!(tls_pair(&server, &client_for(&pki.ca_der), "localhost").is_ok());
    }

    #[test]
    fn client_verifies_the_target() {
        let pki = make_pki("verify", "Verify");
        let server = TlsServer::from_files(&pki.cert, &pki.key).unwrap();
        let client = client_for(&pki.ca_der);
        // IP-address names are checked against IP SANs.
        assert!(tls_pair(&server, &client, "127.0.0.1").is_ok());
        assert!(tls_pair(&server, &client, "[::1]").is_ok());
        // A name the certificate does not cover.
        let err = tls_pair(&server, &client, "example.com").unwrap_err();
        assert!(err.contains("certificate"), "{err}");
        // A CA we do not trust.
        let (other_ca, ..) = issue("Other");
        let err = tls_pair(&server, &client_for(&other_ca), "localhost").unwrap_err();
        assert!(
            err.contains("UnknownIssuer") || err.contains("issuer"),
            "{err}"
        );
    }
}
