//! `wss://` and `https://` against the real binary (issue 6).
//!
//! The proxy runs as `wsproxy -p 0 -l 127.0.0.1 --cert CERT --key KEY [--tls-only]` and serves
//! `ws://` and `wss://` on the same port (first byte `0x16` = TLS). A test CA and a server
//! certificate for `localhost`, `127.0.0.1` and `::1` are generated at test time with `rcgen`
//! into a temporary directory (removed afterwards). The TLS clients are `rustls` directly
//! (`ClientConnection` + `StreamOwned`) trusting only the test CA, so certificate
//! verification is real.
//!
//! Covered: every protocol generation and subprotocol over TLS with 4 MiB of random bytes
//! through an echo target (RFC 6455 via `tungstenite` over the TLS stream; hybi-08, hixie-76
//! and hixie-75 with raw framing), the `wss://` Locations of hixie-75/76, plain `ws://` and
//! `https://` (the demo page) on the same port, `--tls-only`, bad TLS input (truncated
//! ClientHello, garbage after `0x16`, a stalled handshake, no common cipher suite) next to a
//! healthy tunnel, and certificate reload on SIGHUP.

mod common;

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use tungstenite::protocol::WebSocketConfig;
use tungstenite::{ClientRequestBuilder, Message, WebSocket};

use common::{
    DEFAULT_ORIGIN, DataClient, EchoServer, Hixie76Keys, HttpHead, HybiRequest, IO_TIMEOUT, Proxy,
    Rng, accept_key, assert_same_bytes, b64, encode_frame, round_trip, unb64, wait_until,
};

/// 4 MiB: the integrity payload of every generation.
const BIG: usize = 4 << 20;

// ---------------------------------------------------------------------------------------------
// Test PKI
// ---------------------------------------------------------------------------------------------

/// A temporary directory with `cert.pem` (leaf + CA), `key.pem` (PKCS#8) and `ca.pem`.
struct Pki {
    dir: PathBuf,
    ca: CertificateDer<'static>,
}

impl Pki {
    fn new(tag: &str) -> Pki {
        let dir = std::env::temp_dir().join(format!(
            "wsproxy-tls-it-{tag}-{}-{:?}",
            std::process::id(),
            thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let pki = Pki {
            ca: CertificateDer::from(Vec::new()),
            dir,
        };
        pki.reissue(&format!("{tag} CA"))
    }

    /// Writes a new CA and server certificate (with a fresh key) over the files.
    fn reissue(mut self, org: &str) -> Pki {
        self.ca = issue_into(&self.dir, org);
        self
    }

    fn cert(&self) -> String {
        self.dir.join("cert.pem").display().to_string()
    }

    fn key(&self) -> String {
        self.dir.join("key.pem").display().to_string()
    }

    /// `wsproxy --cert … --key …` plus `extra`.
    fn start_proxy(&self, extra: &[&str]) -> Proxy {
        let (cert, key) = (self.cert(), self.key());
        let mut args = vec!["--cert", cert.as_str(), "--key", key.as_str()];
        args.extend_from_slice(extra);
        Proxy::start(&args)
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Generates a CA and a server certificate it signed; writes them to `dir`; returns the CA.
fn issue_into(dir: &std::path::Path, org: &str) -> CertificateDer<'static> {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::OrganizationName, org);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, format!("{org} root"));
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);

    let mut params =
        CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into(), "::1".into()]).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    // Write to temporary names, then rename: a reload never sees half a file.
    let write = |name: &str, text: String| {
        let tmp = dir.join(format!("{name}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, dir.join(name)).unwrap();
    };
    write("ca.pem", ca_cert.pem());
    write("key.pem", key.serialize_pem());
    write("cert.pem", format!("{}{}", cert.pem(), ca_cert.pem()));
    ca_cert.der().clone()
}

// ---------------------------------------------------------------------------------------------
// TLS clients (rustls directly)
// ---------------------------------------------------------------------------------------------

type Tls = StreamOwned<ClientConnection, TcpStream>;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn client_config(ca: &CertificateDer<'static>) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.clone()).unwrap();
    Arc::new(
        ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// Connects to `addr` and completes a TLS handshake verifying `name` against `config`'s roots.
fn tls_connect_with(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    name: &str,
) -> Result<Tls, String> {
    let tcp = TcpStream::connect_timeout(&addr, IO_TIMEOUT).map_err(|e| format!("connect: {e}"))?;
    tcp.set_nodelay(true).unwrap();
    tcp.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    tcp.set_write_timeout(Some(IO_TIMEOUT * 3)).unwrap();
    let server_name = ServerName::try_from(name.to_string()).unwrap();
    let conn = ClientConnection::new(config, server_name).map_err(|e| e.to_string())?;
    let mut tls = StreamOwned::new(conn, tcp);
    while tls.conn.is_handshaking() {
        tls.conn
            .complete_io(&mut tls.sock)
            .map_err(|e| format!("TLS handshake: {e}"))?;
    }
    Ok(tls)
}

fn tls_connect(addr: SocketAddr, ca: &CertificateDer<'static>) -> Tls {
    tls_connect_with(addr, client_config(ca), "localhost")
        .unwrap_or_else(|e| panic!("TLS connection to the proxy at {addr}: {e}"))
}

/// A buffered byte stream over TLS (or anything), for hand-written handshakes and frames.
struct Wire<S> {
    stream: S,
    buf: Vec<u8>,
    pos: usize,
}

impl<S: Read + Write> Wire<S> {
    fn new(stream: S) -> Self {
        Wire {
            stream,
            buf: Vec::new(),
            pos: 0,
        }
    }

    fn fill(&mut self) -> io::Result<()> {
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
        let mut chunk = [0u8; 32 * 1024];
        let n = self.stream.read(&mut chunk)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    fn byte(&mut self) -> io::Result<u8> {
        while self.pos == self.buf.len() {
            self.fill()?;
        }
        self.pos += 1;
        Ok(self.buf[self.pos - 1])
    }

    fn take(&mut self, n: usize) -> io::Result<Vec<u8>> {
        while self.buf.len() - self.pos < n {
            self.fill()?;
        }
        self.pos += n;
        Ok(self.buf[self.pos - n..self.pos].to_vec())
    }

    fn until(&mut self, delim: u8) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        loop {
            let b = self.byte()?;
            if b == delim {
                return Ok(out);
            }
            out.push(b);
        }
    }

    /// The response head, up to and including the blank line.
    fn head(&mut self) -> io::Result<HttpHead> {
        let mut raw = Vec::new();
        while !raw.ends_with(b"\r\n\r\n") {
            raw.push(self.byte()?);
            if raw.len() > 16 * 1024 {
                return Err(io::Error::other("response head too long"));
            }
        }
        HttpHead::parse(&raw).map_err(io::Error::other)
    }

    fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write to the proxy");
        self.stream.flush().expect("flush");
    }
}

// ---------------------------------------------------------------------------------------------
// WebSocket clients over TLS
// ---------------------------------------------------------------------------------------------

/// RFC 6455 over TLS with `tungstenite` (an independent implementation of the framing).
struct TungTls {
    ws: WebSocket<Tls>,
    base64: bool,
}

impl TungTls {
    /// `wss://PROXY/TARGET` offering `protocol`; checks the echo of the protocol.
    fn connect(
        proxy: &Proxy,
        ca: &CertificateDer<'static>,
        target: &str,
        protocol: Option<&str>,
    ) -> TungTls {
        let uri: tungstenite::http::Uri = format!("wss://{}/{target}", proxy.addr).parse().unwrap();
        let mut req = ClientRequestBuilder::new(uri).with_header("Origin", DEFAULT_ORIGIN);
        if let Some(p) = protocol {
            req = req.with_sub_protocol(p);
        }
        let config = WebSocketConfig::default()
            .max_message_size(Some(256 << 20))
            .max_frame_size(Some(256 << 20));
        let tls = tls_connect(proxy.addr, ca);
        let (ws, response) = tungstenite::client::client_with_config(req, tls, Some(config))
            .unwrap_or_else(|e| panic!("wss handshake offering {protocol:?}: {e}"));
        let echoed = response
            .headers()
            .get("Sec-WebSocket-Protocol")
            .map(|v| v.to_str().unwrap().to_string());
        assert_eq!(echoed.as_deref(), protocol, "subprotocol echo");
        TungTls {
            ws,
            base64: matches!(protocol, Some("base64") | Some("websockets-proxy")),
        }
    }

    fn close(mut self) {
        let _ = self.ws.close(None);
        let deadline = Instant::now() + IO_TIMEOUT;
        while Instant::now() < deadline {
            if self.ws.read().is_err() {
                break;
            }
        }
    }
}

impl DataClient for TungTls {
    fn send_data(&mut self, data: &[u8]) {
        let msg = if self.base64 {
            Message::text(b64(data))
        } else {
            Message::binary(data.to_vec())
        };
        self.ws.send(msg).expect("tungstenite send over TLS");
    }

    fn recv_data(&mut self) -> Vec<u8> {
        loop {
            match self.ws.read() {
                Ok(Message::Binary(b)) if !self.base64 => return b.to_vec(),
                Ok(Message::Text(t)) if self.base64 => return unb64(t.as_str()),
                Ok(Message::Ping(_) | Message::Pong(_)) => {}
                Ok(other) => panic!("unexpected message over wss: {other:?}"),
                Err(e) => panic!("wss read: {e}"),
            }
        }
    }
}

/// Hybi-08 (RFC 6455 framing, `Sec-WebSocket-Origin`) over TLS with raw frames.
struct HybiTls {
    wire: Wire<Tls>,
    base64: bool,
}

impl HybiTls {
    fn connect(
        proxy: &Proxy,
        ca: &CertificateDer<'static>,
        target: &str,
        protocol: &str,
    ) -> HybiTls {
        let mut req = HybiRequest::new(proxy.addr, target, 8);
        req.protocols = Some(protocol.to_string());
        let mut wire = Wire::new(tls_connect(proxy.addr, ca));
        wire.send(&req.to_bytes());
        let head = wire.head().expect("hybi-08 response over TLS");
        assert_eq!(head.status, 101, "hybi-08 over TLS: {}", head.status_line);
        assert_eq!(
            head.header("Sec-WebSocket-Accept"),
            Some(accept_key(&req.key).as_str())
        );
        assert_eq!(head.header("Sec-WebSocket-Protocol"), Some(protocol));
        HybiTls {
            wire,
            base64: protocol != "binary",
        }
    }

    fn send_frame(&mut self, opcode: u8, payload: &[u8]) {
        let mask = (Instant::now().elapsed().subsec_nanos() | 0x0101_0101).to_be_bytes();
        self.wire
            .send(&encode_frame(true, opcode, payload, Some(mask)));
    }

    /// One whole message: (opcode, payload).
    fn recv_message(&mut self) -> io::Result<(u8, Vec<u8>)> {
        let mut payload = Vec::new();
        let mut first_opcode = None;
        loop {
            let b0 = self.wire.byte()?;
            let b1 = self.wire.byte()?;
            assert_eq!(b1 & 0x80, 0, "server frames are not masked");
            let len = match b1 & 0x7f {
                126 => u16::from_be_bytes(self.wire.take(2)?.try_into().unwrap()) as usize,
                127 => u64::from_be_bytes(self.wire.take(8)?.try_into().unwrap()) as usize,
                n => n as usize,
            };
            let data = self.wire.take(len)?;
            let opcode = b0 & 0x0f;
            if opcode >= 8 {
                return Ok((opcode, data));
            }
            first_opcode.get_or_insert(opcode);
            payload.extend_from_slice(&data);
            if b0 & 0x80 != 0 {
                return Ok((first_opcode.unwrap(), payload));
            }
        }
    }
}

impl DataClient for HybiTls {
    fn send_data(&mut self, data: &[u8]) {
        if self.base64 {
            self.send_frame(1, b64(data).as_bytes());
        } else {
            self.send_frame(2, data);
        }
    }

    fn recv_data(&mut self) -> Vec<u8> {
        loop {
            match self.recv_message() {
                Ok((1, text)) if self.base64 => return unb64(std::str::from_utf8(&text).unwrap()),
                Ok((2, bytes)) if !self.base64 => return bytes,
                Ok((9 | 10, _)) => {}
                Ok((op, data)) => panic!("hybi-08 over TLS: unexpected opcode {op}: {data:?}"),
                Err(e) => panic!("hybi-08 over TLS: {e}"),
            }
        }
    }
}

/// Draft-hixie-75/76 over TLS: `0x00 <base64> 0xFF` frames.
struct HixieTls {
    wire: Wire<Tls>,
    head: HttpHead,
}

impl HixieTls {
    /// Opens `wss://PROXY/TARGET` with draft 75 or 76 and checks the handshake, in particular
    /// that the Location says `wss://` (clients compare it exactly).
    fn connect(proxy: &Proxy, ca: &CertificateDer<'static>, target: &str, draft: u8) -> HixieTls {
        let host = proxy.addr.to_string();
        let resource = format!("/{target}");
        let mut request = format!(
            "GET {resource} HTTP/1.1\r\nUpgrade: WebSocket\r\nConnection: Upgrade\r\n\
             Host: {host}\r\nOrigin: {DEFAULT_ORIGIN}\r\n"
        );
        let keys = (draft == 76).then(|| Hixie76Keys::generate(&mut Rng::fresh()));
        if let Some(k) = &keys {
            request += &format!(
                "Sec-WebSocket-Key1: {}\r\nSec-WebSocket-Key2: {}\r\n",
                k.key1, k.key2
            );
        }
        request += "\r\n";
        let mut bytes = request.into_bytes();
        if let Some(k) = &keys {
            bytes.extend_from_slice(&k.key3);
        }
        let mut wire = Wire::new(tls_connect(proxy.addr, ca));
        wire.send(&bytes);
        let head = wire.head().expect("hixie response over TLS");
        assert_eq!(
            head.status, 101,
            "hixie-{draft} over TLS: {}",
            head.status_line
        );
        let expected_location = format!("wss://{host}{resource}");
        if let Some(k) = &keys {
            assert_eq!(
                head.header("Sec-WebSocket-Location"),
                Some(expected_location.as_str()),
                "hixie-76 Location over TLS"
            );
            assert_eq!(head.header("Sec-WebSocket-Origin"), Some(DEFAULT_ORIGIN));
            let challenge = wire.take(16).expect("hixie-76 challenge response");
            assert_eq!(
                challenge,
                k.expected_response(),
                "hixie-76 challenge response"
            );
        } else {
            assert_eq!(
                head.header("WebSocket-Location"),
                Some(expected_location.as_str()),
                "hixie-75 Location over TLS"
            );
            assert_eq!(head.header("WebSocket-Origin"), Some(DEFAULT_ORIGIN));
        }
        HixieTls { wire, head }
    }
}

impl DataClient for HixieTls {
    fn send_data(&mut self, data: &[u8]) {
        let mut frame = vec![0x00];
        frame.extend_from_slice(b64(data).as_bytes());
        frame.push(0xff);
        self.wire.send(&frame);
    }

    fn recv_data(&mut self) -> Vec<u8> {
        match self.wire.byte() {
            Ok(0x00) => {
                let text = self.wire.until(0xff).expect("hixie frame over TLS");
                unb64(std::str::from_utf8(&text).unwrap())
            }
            Ok(0xff) => panic!("hixie over TLS: unexpected close"),
            Ok(b) => panic!("hixie over TLS: unexpected frame type {b:#04x}"),
            Err(e) => panic!("hixie over TLS: {e}"),
        }
    }
}

/// Sends `n` random bytes through an echo tunnel and checks they come back intact.
fn integrity(client: &mut dyn DataClient, n: usize, what: &str) {
    let mut rng = Rng::for_test(what);
    let data = rng.bytes(n);
    let started = Instant::now();
    let got = round_trip(client, &data, &mut rng, 64 * 1024);
    assert_same_bytes(&got, &data, what);
    eprintln!(
        "{what}: {n} bytes echoed in {:.2} s",
        started.elapsed().as_secs_f64()
    );
}

/// A quick echo check (a few small messages).
fn ping_pong(client: &mut dyn DataClient, what: &str) {
    for i in 0..3u8 {
        let msg = vec![i; 100 + i as usize];
        client.send_data(&msg);
        let got = common::recv_exactly(client, msg.len());
        assert_same_bytes(&got, &msg, what);
    }
}

/// Reads until EOF (or a reset) and returns what came first; fails on a timeout.
fn expect_closed(stream: &mut TcpStream, within: Duration, what: &str) -> Vec<u8> {
    stream.set_read_timeout(Some(within)).unwrap();
    let started = Instant::now();
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return got,
            Err(e) => panic!(
                "{what}: connection not closed after {:.1} s: {e}",
                started.elapsed().as_secs_f64()
            ),
        }
    }
}

fn raw_connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, IO_TIMEOUT).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s
}

fn tls_log_lines(proxy: &Proxy) -> usize {
    proxy
        .logs()
        .iter()
        .filter(|l| l.contains("TLS") || l.contains("tls"))
        .count()
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[test]
fn wss_rfc6455_every_subprotocol_4mib() {
    let pki = Pki::new("rfc6455");
    let echo = EchoServer::start();
    let proxy = pki.start_proxy(&["-v"]);
    for protocol in [
        Some("binary"),
        Some("base64"),
        Some("websockets-proxy"),
        None,
    ] {
        let what = format!("wss RFC 6455 {}", protocol.unwrap_or("(no subprotocol)"));
        let mut client = TungTls::connect(&proxy, &pki.ca, &echo.target(), protocol);
        integrity(&mut client, BIG, &what);
        client.close();
    }
}

#[test]
fn wss_hybi08_4mib() {
    let pki = Pki::new("hybi08");
    let echo = EchoServer::start();
    let proxy = pki.start_proxy(&[]);
    for protocol in ["base64", "binary"] {
        let mut client = HybiTls::connect(&proxy, &pki.ca, &echo.target(), protocol);
        integrity(&mut client, BIG, &format!("wss hybi-08 {protocol}"));
    }
}

#[test]
fn wss_hixie76_location_and_4mib() {
    let pki = Pki::new("hixie76");
    let echo = EchoServer::start();
    let proxy = pki.start_proxy(&[]);
    let mut client = HixieTls::connect(&proxy, &pki.ca, &echo.target(), 76);
    assert!(client.head.header("WebSocket-Location").is_none());
    integrity(&mut client, BIG, "wss hixie-76");
    // The closing handshake works over TLS too.
    client.wire.send(&[0xff, 0x00]);
    assert_eq!(client.wire.byte().expect("hixie-76 close answer"), 0xff);
    assert_eq!(client.wire.byte().expect("hixie-76 close answer"), 0x00);
}

#[test]
fn wss_hixie75_location_and_4mib() {
    let pki = Pki::new("hixie75");
    let echo = EchoServer::start();
    let proxy = pki.start_proxy(&[]);
    let mut client = HixieTls::connect(&proxy, &pki.ca, &echo.target(), 75);
    integrity(&mut client, BIG, "wss hixie-75");
}

#[test]
fn plain_ws_and_https_share_the_port() {
    let pki = Pki::new("shared");
    let echo = EchoServer::start();
    let proxy = pki.start_proxy(&[]);
    // Plain ws:// on the TLS-enabled port.
    let mut plain = common::TungClient::connect(proxy.addr, &echo.target(), &["binary"]);
    integrity(&mut plain, 1 << 20, "plain ws on the TLS port");
    // wss:// at the same time.
    let mut secure = TungTls::connect(&proxy, &pki.ca, &echo.target(), Some("binary"));
    ping_pong(&mut secure, "wss next to ws");
    ping_pong(&mut plain, "ws next to wss");
    // The demo page over https://.
    let mut wire = Wire::new(tls_connect(proxy.addr, &pki.ca));
    wire.send(format!("GET / HTTP/1.1\r\nHost: {}\r\n\r\n", proxy.addr).as_bytes());
    let head = wire.head().expect("https response");
    assert_eq!(head.status, 200, "GET / over https: {}", head.status_line);
    let length: usize = head
        .header("Content-Length")
        .expect("Content-Length")
        .parse()
        .unwrap();
    let body = wire.take(length).expect("https body");
    assert!(
        String::from_utf8_lossy(&body)
            .to_ascii_lowercase()
            .contains("<!doctype html"),
        "the demo page over https"
    );
    // And a plain-HTTP error still explains itself over TLS.
    let mut wire = Wire::new(tls_connect(proxy.addr, &pki.ca));
    wire.send(
        format!(
            "POST /x HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\n\r\n",
            proxy.addr
        )
        .as_bytes(),
    );
    let head = wire.head().expect("https error response");
    assert!(head.status >= 400, "POST over https: {}", head.status_line);
    secure.close();
}

#[test]
fn tls_only_refuses_plain_connections() {
    let pki = Pki::new("tlsonly");
    let echo = EchoServer::start();
    let proxy = pki.start_proxy(&["--tls-only", "-v"]);
    // A plain WebSocket request: 400 (or a close), never an upgrade.
    let before = tls_log_lines(&proxy);
    let mut s = raw_connect(proxy.addr);
    let req = HybiRequest::new(proxy.addr, &echo.target(), 13);
    s.write_all(&req.to_bytes()).unwrap();
    let answer = expect_closed(&mut s, IO_TIMEOUT, "plain request on a --tls-only port");
    let text = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || text.starts_with("HTTP/1.1 400") || text.starts_with("HTTP/1.0 400"),
        "plain request on a --tls-only port answered: {text:?}"
    );
    assert!(
        wait_until(Duration::from_secs(5), || tls_log_lines(&proxy) > before),
        "no log line about the refused plain connection; logs:\n{}",
        proxy.logs_text()
    );
    assert_eq!(echo.accepted(), 0, "no tunnel was opened");
    // wss:// still works.
    let mut secure = TungTls::connect(&proxy, &pki.ca, &echo.target(), Some("binary"));
    ping_pong(&mut secure, "wss on a --tls-only port");
    secure.close();
}

#[test]
fn bad_tls_input_is_closed_cleanly_and_others_are_unaffected() {
    let pki = Pki::new("badinput");
    let echo = EchoServer::start();
    let proxy = pki.start_proxy(&["-v", "--handshake-timeout", "1"]);
    let mut healthy = TungTls::connect(&proxy, &pki.ca, &echo.target(), Some("binary"));
    ping_pong(&mut healthy, "healthy wss before the bad input");
    let mut logged = tls_log_lines(&proxy);
    let mut expect_log = |what: &str| {
        assert!(
            wait_until(Duration::from_secs(5), || tls_log_lines(&proxy) > logged),
            "{what}: no log line; logs:\n{}",
            proxy.logs_text()
        );
        logged = tls_log_lines(&proxy);
    };

    // A truncated ClientHello, then the client stops sending.
    let mut s = raw_connect(proxy.addr);
    s.write_all(&[
        0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
    ])
    .unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    expect_closed(&mut s, Duration::from_secs(5), "truncated ClientHello");
    expect_log("truncated ClientHello");

    // Garbage after 0x16.
    let mut s = raw_connect(proxy.addr);
    let mut junk = vec![0x16, 0x03, 0x01, 0x00, 0x40];
    junk.extend(Rng::for_test("junk").bytes(64));
    s.write_all(&junk).unwrap();
    expect_closed(&mut s, Duration::from_secs(5), "garbage after 0x16");
    expect_log("garbage after 0x16");

    // A well-framed but undecodable ClientHello: a TLS alert, then the close.
    let mut s = raw_connect(proxy.addr);
    s.write_all(&[
        0x16, 0x03, 0x01, 0x00, 0x08, 0x01, 0x00, 0x00, 0x04, 0xde, 0xad, 0xbe, 0xef,
    ])
    .unwrap();
    let answer = expect_closed(&mut s, Duration::from_secs(5), "undecodable ClientHello");
    assert!(
        answer.is_empty() || answer[0] == 0x15,
        "only a TLS alert may come back: {answer:02x?}"
    );
    expect_log("undecodable ClientHello");

    // A stalled handshake: three bytes, then silence. --handshake-timeout 1 ends it.
    let mut s = raw_connect(proxy.addr);
    s.write_all(&[0x16, 0x03, 0x01]).unwrap();
    let started = Instant::now();
    expect_closed(&mut s, Duration::from_secs(8), "stalled handshake");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "stalled handshake closed only after {:?}",
        started.elapsed()
    );
    expect_log("stalled handshake");

    // No cipher suite in common: TLS 1.2 with only RSA suites; the server key is ECDSA.
    let mut roots = RootCertStore::empty();
    roots.add(pki.ca.clone()).unwrap();
    let rsa_only = rustls::crypto::CryptoProvider {
        cipher_suites: vec![
            rustls::crypto::ring::cipher_suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        ],
        ..rustls::crypto::ring::default_provider()
    };
    let config = ClientConfig::builder_with_provider(Arc::new(rsa_only))
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let err = tls_connect_with(proxy.addr, Arc::new(config), "localhost")
        .expect_err("a handshake without a common cipher suite must fail");
    assert!(
        err.contains("alert") || err.contains("HandshakeFailure"),
        "{err}"
    );
    expect_log("no common cipher suite");

    // The healthy tunnel never noticed, and new clients are served.
    ping_pong(&mut healthy, "healthy wss after the bad input");
    integrity(&mut healthy, 1 << 20, "healthy wss after the bad input");
    let mut fresh = TungTls::connect(&proxy, &pki.ca, &echo.target(), Some("base64"));
    ping_pong(&mut fresh, "new wss after the bad input");
    healthy.close();
    fresh.close();
}

#[test]
fn sighup_reloads_the_certificate_without_dropping_tunnels() {
    let pki = Pki::new("sighup");
    let echo = EchoServer::start();
    let proxy = pki.start_proxy(&["-v"]);
    let first_ca = pki.ca.clone();
    let mut old = TungTls::connect(&proxy, &first_ca, &echo.target(), Some("binary"));
    ping_pong(&mut old, "wss before the reload");

    let pki = pki.reissue("Second CA");
    let second_ca = pki.ca.clone();
    let status = Command::new("kill")
        .args(["-HUP", &proxy.pid().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());

    // New connections get the new certificate (once the signal is handled).
    let reloaded = wait_until(Duration::from_secs(5), || {
        tls_connect_with(proxy.addr, client_config(&second_ca), "localhost").is_ok()
    });
    assert!(
        reloaded,
        "new certificate not served after SIGHUP; logs:\n{}",
        proxy.logs_text()
    );
    let err = tls_connect_with(proxy.addr, client_config(&first_ca), "localhost")
        .expect_err("the old certificate must no longer be served");
    assert!(
        err.contains("UnknownIssuer") || err.contains("certificate"),
        "{err}"
    );
    let mut new = TungTls::connect(&proxy, &second_ca, &echo.target(), Some("binary"));
    ping_pong(&mut new, "wss after the reload");

    // The tunnel opened before the reload keeps flowing.
    ping_pong(&mut old, "wss opened before the reload");
    integrity(&mut old, 1 << 20, "wss opened before the reload");

    // A broken file on the next SIGHUP: the current certificate stays, with a log line.
    std::fs::write(pki.dir.join("key.pem"), "garbage").unwrap();
    Command::new("kill")
        .args(["-HUP", &proxy.pid().to_string()])
        .status()
        .unwrap();
    thread::sleep(Duration::from_millis(500));
    assert!(
        tls_connect_with(proxy.addr, client_config(&second_ca), "localhost").is_ok(),
        "a failed reload must keep the previous certificate; logs:\n{}",
        proxy.logs_text()
    );
    assert!(
        proxy
            .logs()
            .iter()
            .any(|l| l.contains("key.pem") || l.to_ascii_lowercase().contains("reload")),
        "the failed reload is logged; logs:\n{}",
        proxy.logs_text()
    );
    old.close();
    new.close();
}

/// A TLS echo target (rustls directly) serving the certificate in `pki`.
fn tls_echo_target(pki: &Pki) -> common::TcpTarget {
    use rustls::pki_types::PrivateKeyDer;
    use rustls::pki_types::pem::PemObject;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(pki.cert())
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(pki.key()).unwrap();
    let config = Arc::new(
        rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap(),
    );
    common::TcpTarget::spawn(move |tcp| {
        tcp.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        let conn = rustls::ServerConnection::new(Arc::clone(&config)).unwrap();
        let mut tls = StreamOwned::new(conn, tcp);
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match tls.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tls.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        tls.conn.send_close_notify();
        let _ = tls.flush();
    })
}

/// `--tls-target --target-ca FILE`: the proxy speaks TLS to the target, verifying it.
#[test]
fn tls_target_is_verified_and_relays() {
    let target_pki = Pki::new("tlstarget");
    let target = tls_echo_target(&target_pki);
    let ca_file = target_pki.dir.join("ca.pem").display().to_string();
    let proxy = Proxy::start(&["-v", "--tls-target", "--target-ca", &ca_file]);
    // By IP address (checked against the certificate's IP SAN) and by DNS name (SNI).
    for name in ["127.0.0.1", "localhost"] {
        let mut client = common::TungClient::connect(
            proxy.addr,
            &format!("{name}:{}", target.addr.port()),
            &["binary"],
        );
        integrity(&mut client, 1 << 20, &format!("ws → TLS target {name}"));
    }

    // A target whose certificate the proxy does not trust: Close 1011 naming the problem, as for
    // any failed connect.
    let stranger = Pki::new("stranger");
    let untrusted = tls_echo_target(&stranger);
    let mut client = common::TungClient::connect(proxy.addr, &untrusted.target(), &["binary"]);
    let (data, close) = client.recv_until_close();
    assert!(data.is_empty());
    let (code, reason) = close.expect("a Close with a reason");
    assert_eq!(code, 1011, "{reason}");
    assert!(
        reason.to_ascii_lowercase().contains("certificate") || reason.contains("Issuer"),
        "{reason}"
    );
}

/// Relay throughput, ws:// versus wss://, through the same proxy: 128 MiB echoed per run, runs
/// alternating, median ratio printed. The test client does its own TLS in this process, so on
/// a small machine this is an end-to-end figure (client + proxy + echo target share the CPUs).
/// Release build recommended:
/// `cargo test --release --test tls -- --ignored --nocapture throughput`.
#[test]
#[ignore]
fn throughput_ws_vs_wss() {
    let pki = Pki::new("throughput");
    let echo = EchoServer::start();
    let proxy = pki.start_proxy(&[]);
    const N: usize = 128 << 20;
    let mut plain = common::TungClient::connect(proxy.addr, &echo.target(), &["binary"]);
    let mut secure = TungTls::connect(&proxy, &pki.ca, &echo.target(), Some("binary"));
    let data = vec![0x5au8; N];
    let pid = proxy.pid();
    // The proxy's CPU time (user + system, in clock ticks) from /proc/PID/stat.
    let cpu_ticks = || -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
        fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap()
    };
    let measure = |client: &mut dyn DataClient, what: &str| {
        let mut rng = Rng::for_test(what);
        let (started, cpu_before) = (Instant::now(), cpu_ticks());
        let got = round_trip(client, &data, &mut rng, 256 * 1024);
        let secs = started.elapsed().as_secs_f64();
        let cpu = (cpu_ticks() - cpu_before) / 100.0; // USER_HZ is 100 on Linux
        assert_eq!(got.len(), N);
        let rate = N as f64 / secs / (1 << 20) as f64;
        eprintln!(
            "{what}: {N} bytes echoed in {secs:.2} s = {rate:.0} MiB/s each way; \
             proxy CPU {cpu:.2} s"
        );
        (rate, cpu)
    };
    // Warm up both, then alternate.
    let _ = measure(&mut plain, "ws warm-up");
    let _ = measure(&mut secure, "wss warm-up");
    let (mut ws_runs, mut wss_runs) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        ws_runs.push(measure(&mut plain, "ws"));
        wss_runs.push(measure(&mut secure, "wss"));
    }
    let median = |runs: &[(f64, f64)], pick: fn(&(f64, f64)) -> f64| {
        let mut v: Vec<f64> = runs.iter().map(pick).collect();
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v[v.len() / 2]
    };
    let (ws, wss) = (median(&ws_runs, |r| r.0), median(&wss_runs, |r| r.0));
    let (ws_cpu, wss_cpu) = (median(&ws_runs, |r| r.1), median(&wss_runs, |r| r.1));
    eprintln!(
        "median: ws {ws:.0} MiB/s, wss {wss:.0} MiB/s each way; wss/ws = {:.2} end to end. \
         Proxy CPU per run: ws {ws_cpu:.2} s, wss {wss_cpu:.2} s (wss costs the proxy {:.1}x \
         the CPU per byte)",
        wss / ws,
        wss_cpu / ws_cpu
    );
    secure.close();
}

#[test]
fn sigterm_closes_an_idle_wss_tunnel_at_once_with_1001_and_close_notify() {
    // Both pumps of an idle tunnel sit in reads: the Close 1001 is encrypted and written by
    // the shutdown itself, without waiting, through the TLS connection's record queue.
    let pki = Pki::new("shutdown");
    let echo = EchoServer::start();
    let mut proxy = pki.start_proxy(&["-v", "--shutdown-grace", "5"]);
    let mut client = TungTls::connect(&proxy, &pki.ca, &echo.target(), Some("binary"));
    ping_pong(&mut client, "before the signal");
    proxy.signal("TERM");
    let signalled = Instant::now();
    let close = loop {
        match client.ws.read() {
            Ok(Message::Close(close)) => break close,
            Ok(Message::Ping(_) | Message::Pong(_)) => {}
            other => panic!("expected the Close, got {other:?}"),
        }
    };
    eprintln!("Close {close:?} {:?} after SIGTERM", signalled.elapsed());
    let close = close.expect("a close code");
    assert_eq!(u16::from(close.code), 1001);
    assert_eq!(close.reason.as_str(), "server shutting down");
    assert!(signalled.elapsed() < Duration::from_secs(2));
    // tungstenite answered the Close; the proxy then ends TLS (close_notify) and TCP.
    let end = loop {
        if let Err(e) = client.ws.read() {
            break e;
        }
    };
    assert!(
        matches!(end, tungstenite::Error::ConnectionClosed),
        "a clean end of the TLS stream, not {end:?}"
    );
    let status = proxy
        .wait_for_exit(Duration::from_secs(4))
        .expect("exits once the tunnel is closed, before the grace ends");
    assert_eq!(status.code(), Some(0));
}
