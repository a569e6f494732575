//! Shared integration-test harness for `wsproxy`.
//!
//! Everything here is real: the proxy is the compiled binary started as a child process, the
//! targets are TCP servers on loopback running in threads of the test process, and the clients
//! speak the wire protocols themselves over `TcpStream`s. There are no mocks.
//!
//! Pieces:
//! - [`Proxy`]: starts `wsproxy -p 0 -l 127.0.0.1 ARGS…`, parses `listening on ADDR` from its
//!   stderr, keeps draining and recording stderr lines, reads fd/thread counts from `/proc`, and
//!   kills the child on drop.
//! - Targets: [`EchoServer`], [`HttpServer`], [`SinkServer`], [`SourceServer`], [`TcpTarget`]
//!   (custom per-connection handler) and [`closed_port`].
//! - Clients: [`HixieClient`] (draft-hixie-75 and -76), [`RawHybiClient`] (hybi-07/08 and
//!   RFC 6455, raw frames, can send deliberately broken frames) and [`TungClient`] (RFC 6455 via
//!   `tungstenite`). All of them are strict: they verify every handshake field the real clients
//!   of that generation verify and panic (or return an error) on anything malformed.
//! - Name resolution: [`dns::DnsServer`] (a tiny UDP DNS server) and [`namespace::isolated`]
//!   (runs a test in private network and mount namespaces with its own `/etc/hosts` and
//!   `/etc/resolv.conf`).
//! - [`misbehaving`]: targets that half-close, close with unread bytes or reset, a client
//!   that keeps sending and does not read, and Node's `ws` as a real client that keeps sending.
//! - Helpers: [`Rng`] (xorshift64*), [`round_trip`], [`assert_same_bytes`], [`http_request`],
//!   draft-76 key generation and challenge computation ([`Hixie76Keys`], [`hixie76_response`]).
//!
//! Every socket read has a timeout ([`IO_TIMEOUT`]), so a broken proxy fails a test instead of
//! hanging it.
#![allow(dead_code)]

pub mod dns;
pub mod misbehaving;
pub mod namespace;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use md5::{Digest, Md5};
use sha1::Sha1;
use tungstenite::protocol::WebSocketConfig;
use tungstenite::{ClientRequestBuilder, Message, WebSocket};

/// Timeout applied to every socket read in the harness (a broken proxy fails, never hangs).
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// The Origin every harness client sends by default: a page served from loopback, which the
/// proxy's default Origin rule accepts (tests of other origins pass `--origin`).
pub const DEFAULT_ORIGIN: &str = "http://localhost:8000";

/// The RFC 6455 GUID appended to `Sec-WebSocket-Key` before hashing.
pub const WS_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// What [`HttpServer`] answers to every request (then it closes the connection).
pub const HTTP_RESPONSE: &[u8] =
    b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nhello from target\n";

// ---------------------------------------------------------------------------------------------
// Random numbers
// ---------------------------------------------------------------------------------------------

/// A small xorshift64* PRNG. Deterministic per seed, so failures are reproducible.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed` (any value, including 0, is fine).
    pub fn new(seed: u64) -> Rng {
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
        if state == 0 {
            state = 1;
        }
        let mut rng = Rng(state);
        rng.next_u64();
        rng
    }

    /// A generator seeded from a test name (FNV-1a of the string).
    pub fn for_test(name: &str) -> Rng {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in name.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        Rng::new(h)
    }

    /// A generator seeded from a process-wide counter and the clock (for masking keys etc.).
    pub fn fresh() -> Rng {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        Rng::new(
            nanos
                ^ COUNTER
                    .fetch_add(1, Ordering::Relaxed)
                    .wrapping_mul(0x2545_F491),
        )
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A uniformly distributed integer in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        assert!(lo <= hi);
        let span = hi - lo;
        if span == u64::MAX {
            return self.next_u64();
        }
        lo + self.next_u64() % (span + 1)
    }

    /// A uniformly distributed `usize` in `lo..=hi`.
    pub fn range_usize(&mut self, lo: usize, hi: usize) -> usize {
        self.range(lo as u64, hi as u64) as usize
    }

    /// Fills `buf` with random bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }

    /// `n` random bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = vec![0; n];
        self.fill(&mut v);
        v
    }
}

// ---------------------------------------------------------------------------------------------
// The proxy process
// ---------------------------------------------------------------------------------------------

/// A running `wsproxy` child process listening on an ephemeral loopback port.
pub struct Proxy {
    /// The address parsed from the `listening on ADDR` stderr line.
    pub addr: SocketAddr,
    child: Child,
    logs: Arc<Mutex<Vec<String>>>,
}

/// Extracts `ADDR` from a line containing `listening on ADDR`.
fn parse_listening(line: &str) -> Option<SocketAddr> {
    let rest = &line[line.find("listening on ")? + "listening on ".len()..];
    let token = rest.split_whitespace().next()?;
    token.trim_end_matches([',', ';', ')']).parse().ok()
}

impl Proxy {
    /// Starts `wsproxy -p 0 -l 127.0.0.1 ARGS…` (with `RUST_LOG` removed from the environment),
    /// waits up to [`IO_TIMEOUT`] for `listening on ADDR` on stderr and keeps draining stderr in
    /// a thread, recording every line (see [`Proxy::logs`]). Panics with the captured stderr if
    /// the proxy exits or never reports its address.
    pub fn start(args: &[&str]) -> Proxy {
        let mut child = Command::new(env!("CARGO_BIN_EXE_wsproxy"))
            .args(["-p", "0", "-l", "127.0.0.1"])
            .args(args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("failed to spawn the wsproxy binary");
        let stderr = child.stderr.take().expect("stderr is piped");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let sink = Arc::clone(&logs);
        thread::spawn(move || {
            let mut reader = BufReader::new(stderr);
            let mut tx = Some(tx);
            let mut line = Vec::new();
            loop {
                line.clear();
                match reader.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                let text = String::from_utf8_lossy(&line)
                    .trim_end_matches(['\r', '\n'])
                    .to_string();
                let addr = parse_listening(&text);
                sink.lock().unwrap().push(text);
                if let Some(addr) = addr
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(addr);
                }
            }
        });
        match rx.recv_timeout(IO_TIMEOUT) {
            Ok(addr) => Proxy { addr, child, logs },
            Err(_) => {
                let status = child.try_wait().ok().flatten();
                let _ = child.kill();
                let _ = child.wait();
                thread::sleep(Duration::from_millis(100));
                let logs = logs.lock().unwrap().join("\n");
                panic!(
                    "wsproxy {args:?} did not print `listening on ADDR` (exit status {status:?}); \
                     stderr:\n{logs}"
                );
            }
        }
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Every stderr line printed so far (without line terminators).
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    /// All stderr lines joined with newlines (for failure messages).
    pub fn logs_text(&self) -> String {
        self.logs().join("\n")
    }

    /// Polls the captured stderr until a line satisfies `pred` or `timeout` passes.
    pub fn wait_for_log(&self, timeout: Duration, pred: impl Fn(&str) -> bool) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self.logs.lock().unwrap().iter().find(|l| pred(l)) {
                return Some(line.clone());
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// The number of open file descriptors of the proxy (entries of `/proc/PID/fd`).
    pub fn fd_count(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .expect("read /proc/PID/fd")
            .count()
    }

    /// What each open fd of the proxy points to (for failure messages).
    pub fn fd_listing(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Ok(dir) = std::fs::read_dir(format!("/proc/{}/fd", self.pid())) {
            for entry in dir.flatten() {
                let target = std::fs::read_link(entry.path())
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|e| format!("? ({e})"));
                out.push(format!(
                    "{} -> {target}",
                    entry.file_name().to_string_lossy()
                ));
            }
        }
        out.sort();
        out
    }

    /// The number of threads of the proxy (`Threads:` in `/proc/PID/status`).
    pub fn thread_count(&self) -> usize {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc/PID/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("Threads:"))
            .and_then(|v| v.trim().parse().ok())
            .expect("Threads: line in /proc/PID/status")
    }

    /// The proxy's thread ids (the entries of `/proc/PID/task`), sorted.
    pub fn thread_ids(&self) -> Vec<u32> {
        let mut ids: Vec<u32> = std::fs::read_dir(format!("/proc/{}/task", self.pid()))
            .expect("read /proc/PID/task")
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect();
        ids.sort();
        ids
    }

    /// `true` while the child has not exited.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// `ws://PROXY/TARGET` for a target such as `127.0.0.1:8000`.
    pub fn url(&self, target: &str) -> String {
        format!("ws://{}/{}", self.addr, target)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// TCP targets
// ---------------------------------------------------------------------------------------------

/// A TCP server on loopback that runs `handler` in a new thread for every accepted connection.
/// Counts accepted and finished connections. Stops accepting on drop.
pub struct TcpTarget {
    /// Where the server listens.
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    accepted: Arc<AtomicUsize>,
    finished: Arc<AtomicUsize>,
}

struct FinishGuard(Arc<AtomicUsize>);

impl Drop for FinishGuard {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

impl TcpTarget {
    /// Listens on `127.0.0.1:0` and serves each connection with `handler` (TCP_NODELAY is set).
    pub fn spawn(handler: impl Fn(TcpStream) + Send + Sync + 'static) -> TcpTarget {
        TcpTarget::spawn_on("127.0.0.1:0", handler)
    }

    /// Like [`TcpTarget::spawn`] on an explicit bind address (e.g. `[::1]:0`).
    pub fn spawn_on(bind: &str, handler: impl Fn(TcpStream) + Send + Sync + 'static) -> TcpTarget {
        let listener = TcpListener::bind(bind).unwrap_or_else(|e| panic!("bind {bind}: {e}"));
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicUsize::new(0));
        let finished = Arc::new(AtomicUsize::new(0));
        let handler = Arc::new(handler);
        let (stop2, accepted2, finished2) = (stop.clone(), accepted.clone(), finished.clone());
        thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = conn else { continue };
                accepted2.fetch_add(1, Ordering::SeqCst);
                let handler = Arc::clone(&handler);
                let guard = FinishGuard(Arc::clone(&finished2));
                thread::spawn(move || {
                    let _guard = guard;
                    let _ = stream.set_nodelay(true);
                    handler(stream);
                });
            }
        });
        TcpTarget {
            addr,
            stop,
            accepted,
            finished,
        }
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Connections whose handler has returned.
    pub fn finished(&self) -> usize {
        self.finished.load(Ordering::SeqCst)
    }

    /// Connections accepted whose handler is still running.
    pub fn open_connections(&self) -> usize {
        self.accepted() - self.finished()
    }

    /// Waits until no handler is running (every accepted connection ended) or `timeout` passes.
    pub fn wait_idle(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.open_connections() != 0 {
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(10));
        }
        true
    }

    /// `host:port` as the proxy path expects it (`[v6]:port` for IPv6).
    pub fn target(&self) -> String {
        self.addr.to_string()
    }
}

impl Drop for TcpTarget {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
    }
}

/// Reads from `stream` until EOF, an error, or [`IO_TIMEOUT`]x6, discarding the bytes.
fn drain(stream: &mut TcpStream) {
    let _ = stream.set_read_timeout(Some(IO_TIMEOUT * 6));
    let mut buf = vec![0; 64 * 1024];
    while let Ok(n) = stream.read(&mut buf) {
        if n == 0 {
            break;
        }
    }
}

/// Echoes every byte back until EOF, then half-closes. See [`TcpTarget`] for the counters.
pub struct EchoServer;

impl EchoServer {
    /// An echo server on `127.0.0.1:0`.
    pub fn start() -> TcpTarget {
        TcpTarget::spawn(echo_handler)
    }

    /// An echo server on an explicit address (e.g. `[::1]:0`).
    pub fn start_on(bind: &str) -> TcpTarget {
        TcpTarget::spawn_on(bind, echo_handler)
    }
}

fn echo_handler(mut stream: TcpStream) {
    let _ = stream.set_read_timeout(Some(IO_TIMEOUT * 6));
    let mut buf = vec![0; 64 * 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if stream.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = stream.shutdown(Shutdown::Write);
}

/// A tiny HTTP/1.0 server: reads a request head, answers [`HTTP_RESPONSE`], half-closes and
/// drains until the peer closes. Records every request head it received.
pub struct HttpServer {
    /// The server (counters, address).
    pub server: TcpTarget,
    /// Request heads received, in order.
    pub requests: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl HttpServer {
    /// An HTTP server on `127.0.0.1:0`.
    pub fn start() -> HttpServer {
        let requests = Arc::new(Mutex::new(Vec::new()));
        let recorded = Arc::clone(&requests);
        let server = TcpTarget::spawn(move |mut stream| {
            let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
            let mut head = Vec::new();
            let mut buf = [0u8; 4096];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            recorded.lock().unwrap().push(head);
            let _ = stream.write_all(HTTP_RESPONSE);
            let _ = stream.shutdown(Shutdown::Write);
            drain(&mut stream);
        });
        HttpServer { server, requests }
    }

    /// Where the server listens.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr
    }
}

/// What a [`SinkServer`] connection received.
#[derive(Clone, Debug, Default)]
pub struct SinkRecord {
    /// Every byte received, in order.
    pub data: Vec<u8>,
    /// The connection reached EOF (FIN) or a read error.
    pub ended: bool,
    /// The read error that ended it, if it was not a clean EOF.
    pub error: Option<String>,
    /// When it ended.
    pub ended_at: Option<Instant>,
}

/// Reads everything until EOF and records it per connection (never writes).
pub struct SinkServer {
    /// The server (counters, address).
    pub server: TcpTarget,
    records: Arc<(Mutex<Vec<SinkRecord>>, Condvar)>,
}

impl SinkServer {
    /// A sink on `127.0.0.1:0`.
    pub fn start() -> SinkServer {
        let records: Arc<(Mutex<Vec<SinkRecord>>, Condvar)> = Arc::default();
        let shared = Arc::clone(&records);
        let server = TcpTarget::spawn(move |mut stream| {
            let _ = stream.set_read_timeout(Some(IO_TIMEOUT * 6));
            let index = {
                let mut recs = shared.0.lock().unwrap();
                recs.push(SinkRecord::default());
                recs.len() - 1
            };
            shared.1.notify_all();
            let mut buf = vec![0; 64 * 1024];
            loop {
                let result = stream.read(&mut buf);
                let mut recs = shared.0.lock().unwrap();
                let rec = &mut recs[index];
                match result {
                    Ok(0) => {
                        rec.ended = true;
                        rec.ended_at = Some(Instant::now());
                    }
                    Ok(n) => rec.data.extend_from_slice(&buf[..n]),
                    Err(e) => {
                        rec.ended = true;
                        rec.ended_at = Some(Instant::now());
                        rec.error = Some(e.to_string());
                    }
                }
                let ended = rec.ended;
                drop(recs);
                shared.1.notify_all();
                if ended {
                    break;
                }
            }
        });
        SinkServer { server, records }
    }

    /// Where the sink listens.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr
    }

    /// A snapshot of connection number `index` (0-based, in accept order), if accepted.
    pub fn record(&self, index: usize) -> Option<SinkRecord> {
        self.records.0.lock().unwrap().get(index).cloned()
    }

    /// Waits until connection `index` has ended (EOF or error); `None` on timeout.
    pub fn wait_for_end(&self, index: usize, timeout: Duration) -> Option<SinkRecord> {
        let deadline = Instant::now() + timeout;
        let mut recs = self.records.0.lock().unwrap();
        loop {
            if let Some(rec) = recs.get(index).filter(|r| r.ended) {
                return Some(rec.clone());
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            recs = self.records.1.wait_timeout(recs, deadline - now).unwrap().0;
        }
    }

    /// Waits until connection `index` has received at least `n` bytes; returns the count
    /// reached (may be less than `n` on timeout).
    pub fn wait_for_bytes(&self, index: usize, n: usize, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        let mut recs = self.records.0.lock().unwrap();
        loop {
            let have = recs.get(index).map_or(0, |r| r.data.len());
            let now = Instant::now();
            if have >= n || now >= deadline {
                return have;
            }
            recs = self.records.1.wait_timeout(recs, deadline - now).unwrap().0;
        }
    }
}

/// Sends a fixed byte stream to every connection, then half-closes (FIN) and drains until the
/// peer closes (so that unread input never turns the close into a RST).
pub struct SourceServer;

impl SourceServer {
    /// Sends `data` then closes.
    pub fn start(data: Vec<u8>) -> TcpTarget {
        let total = data.len();
        SourceServer::repeating(data, total)
    }

    /// Sends `total` bytes consisting of `block` repeated (the last copy truncated), then closes.
    pub fn repeating(block: Vec<u8>, total: usize) -> TcpTarget {
        assert!(!block.is_empty() || total == 0);
        let block = Arc::new(block);
        TcpTarget::spawn(move |mut stream| {
            let mut sent = 0;
            while sent < total {
                let off = sent % block.len();
                let n = (block.len() - off).min(total - sent).min(256 * 1024);
                if stream.write_all(&block[off..off + n]).is_err() {
                    return;
                }
                sent += n;
            }
            let _ = stream.shutdown(Shutdown::Write);
            drain(&mut stream);
        })
    }
}

/// A loopback port with nothing listening (bound, then released).
pub fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

// ---------------------------------------------------------------------------------------------
// Buffered connection
// ---------------------------------------------------------------------------------------------

/// A client `TcpStream` with an input buffer (no byte-at-a-time syscalls) and strict helpers.
/// The stream has TCP_NODELAY and an [`IO_TIMEOUT`] read timeout.
pub struct Conn {
    /// The underlying socket (writes go straight to it).
    pub stream: TcpStream,
    buf: Vec<u8>,
    pos: usize,
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

impl Conn {
    /// Connects to `addr` (panics on failure).
    pub fn connect(addr: SocketAddr) -> Conn {
        let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
            .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        Conn::new(stream)
    }

    /// Wraps a connected stream.
    pub fn new(stream: TcpStream) -> Conn {
        stream.set_nodelay(true).unwrap();
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(IO_TIMEOUT * 3)).unwrap();
        Conn {
            stream,
            buf: Vec::new(),
            pos: 0,
        }
    }

    /// Bytes already buffered but not consumed.
    pub fn buffered(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    /// Reads more input into the buffer; `Ok(0)` at EOF.
    fn fill(&mut self) -> io::Result<usize> {
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        } else if self.pos > 256 * 1024 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        let old = self.buf.len();
        self.buf.resize(old + 64 * 1024, 0);
        match self.stream.read(&mut self.buf[old..]) {
            Ok(n) => {
                self.buf.truncate(old + n);
                Ok(n)
            }
            Err(e) => {
                self.buf.truncate(old);
                Err(e)
            }
        }
    }

    /// Reads exactly `n` bytes (`UnexpectedEof` if the peer closes first).
    pub fn read_vec(&mut self, n: usize) -> io::Result<Vec<u8>> {
        let take = n.min(self.buf.len() - self.pos);
        let mut out = Vec::with_capacity(n);
        out.extend_from_slice(&self.buf[self.pos..self.pos + take]);
        self.pos += take;
        if take < n {
            out.resize(n, 0);
            self.stream.read_exact(&mut out[take..])?;
        }
        Ok(out)
    }

    /// Reads exactly `N` bytes into an array.
    pub fn read_array<const N: usize>(&mut self) -> io::Result<[u8; N]> {
        let v = self.read_vec(N)?;
        Ok(v.try_into().unwrap())
    }

    /// Reads one byte.
    pub fn read_byte(&mut self) -> io::Result<u8> {
        if self.pos == self.buf.len() && self.fill()? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.pos += 1;
        Ok(self.buf[self.pos - 1])
    }

    /// Reads up to (not including) `delim`, consuming the delimiter. Fails if more than `max`
    /// bytes come without it.
    pub fn read_until(&mut self, delim: u8, max: usize) -> io::Result<Vec<u8>> {
        let mut scanned = 0;
        loop {
            let avail = &self.buf[self.pos..];
            if let Some(i) = memchr(delim, &avail[scanned..]) {
                let end = scanned + i;
                let out = avail[..end].to_vec();
                self.pos += end + 1;
                return Ok(out);
            }
            scanned = avail.len();
            if scanned > max {
                return Err(invalid(format!("no {delim:#04x} within {max} bytes")));
            }
            if self.fill()? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    /// Reads an HTTP head up to and including the blank line (max 64 KiB).
    pub fn read_head(&mut self) -> io::Result<Vec<u8>> {
        loop {
            let avail = &self.buf[self.pos..];
            if let Some(i) = avail.windows(4).position(|w| w == b"\r\n\r\n") {
                let out = avail[..i + 4].to_vec();
                self.pos += i + 4;
                return Ok(out);
            }
            if avail.len() > 64 * 1024 {
                return Err(invalid("HTTP head longer than 64 KiB"));
            }
            if self.fill()? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "EOF before the end of the HTTP head; got {:?}",
                        String::from_utf8_lossy(&self.buf[self.pos..])
                    ),
                ));
            }
        }
    }

    /// Reads everything until EOF (or until a read error/timeout, which is returned).
    pub fn read_to_end(&mut self) -> io::Result<Vec<u8>> {
        let mut out = self.buf[self.pos..].to_vec();
        self.pos = self.buf.len();
        self.stream.read_to_end(&mut out)?;
        Ok(out)
    }

    /// Writes all of `data`.
    pub fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        self.stream.write_all(data)
    }

    /// Expects the peer to close the connection within `timeout` without sending anything
    /// more. A RST counts as closed. Errors describe what came instead.
    pub fn expect_eof(&mut self, timeout: Duration) -> Result<(), String> {
        if self.pos < self.buf.len() {
            return Err(format!(
                "expected EOF, but {} more bytes were buffered: {:02x?}",
                self.buf.len() - self.pos,
                &self.buf[self.pos..(self.pos + 32).min(self.buf.len())]
            ));
        }
        self.stream.set_read_timeout(Some(timeout)).unwrap();
        let mut byte = [0u8; 1];
        let result = match self.stream.read(&mut byte) {
            Ok(0) => Ok(()),
            Ok(_) => Err(format!("expected EOF, got byte {:#04x}", byte[0])),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => Ok(()),
            Err(e) => Err(format!("expected EOF within {timeout:?}: {e}")),
        };
        let _ = self.stream.set_read_timeout(Some(IO_TIMEOUT));
        result
    }
}

fn memchr(needle: u8, hay: &[u8]) -> Option<usize> {
    hay.iter().position(|&b| b == needle)
}

// ---------------------------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------------------------

/// A parsed HTTP response head.
#[derive(Clone, Debug)]
pub struct HttpHead {
    /// The first line, e.g. `HTTP/1.1 101 Switching Protocols`.
    pub status_line: String,
    /// The status code.
    pub status: u16,
    /// Header fields in order, names as sent, values trimmed.
    pub headers: Vec<(String, String)>,
    /// The raw head including the final blank line.
    pub raw: Vec<u8>,
}

impl HttpHead {
    /// Parses a head strictly: CRLF line ends, `HTTP/1.x NNN reason`, `Name: value` fields.
    pub fn parse(raw: &[u8]) -> Result<HttpHead, String> {
        let text = std::str::from_utf8(raw).map_err(|e| format!("head is not UTF-8: {e}"))?;
        let body = text
            .strip_suffix("\r\n\r\n")
            .ok_or_else(|| format!("head does not end with CRLF CRLF: {text:?}"))?;
        let mut lines = body.split("\r\n");
        let status_line = lines.next().unwrap_or_default().to_string();
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or_default();
        if version != "HTTP/1.1" && version != "HTTP/1.0" {
            return Err(format!("bad status line {status_line:?}"));
        }
        let status = parts
            .next()
            .and_then(|c| c.parse::<u16>().ok())
            .filter(|c| (100..=599).contains(c))
            .ok_or_else(|| format!("bad status code in {status_line:?}"))?;
        let mut headers = Vec::new();
        for line in lines {
            if line.contains('\n') || line.contains('\r') {
                return Err(format!("bare CR or LF in header line {line:?}"));
            }
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| format!("header line without colon: {line:?}"))?;
            if name.is_empty() || name.contains(' ') || name.contains('\t') {
                return Err(format!("bad header name in {line:?}"));
            }
            headers.push((name.to_string(), value.trim().to_string()));
        }
        Ok(HttpHead {
            status_line,
            status,
            headers,
            raw: raw.to_vec(),
        })
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of header `name` (case-insensitive), in order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// `true` if header `name` is a comma list containing `token` (case-insensitive).
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.header_all(name)
            .iter()
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }
}

/// A complete HTTP response read by [`http_request`].
#[derive(Clone, Debug)]
pub struct HttpReply {
    /// The head.
    pub head: HttpHead,
    /// The body (per Content-Length, or everything until EOF).
    pub body: Vec<u8>,
    /// The server closed the connection after the body.
    pub closed: bool,
}

impl HttpReply {
    /// The body as (lossy) text.
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends raw `request` bytes to `addr` in one write (write errors such as EPIPE are ignored:
/// the server may answer before reading everything) and reads one response: the head, then a
/// Content-Length body or everything until EOF (at most 3 s of waiting for the body).
pub fn http_request(addr: SocketAddr, request: &[u8]) -> Result<HttpReply, String> {
    let mut conn = Conn::connect(addr);
    let _ = conn.write_all(request);
    let raw = conn
        .read_head()
        .map_err(|e| format!("reading response head: {e}"))?;
    let head = HttpHead::parse(&raw)?;
    let length = head
        .header("Content-Length")
        .map(|v| {
            v.parse::<usize>()
                .map_err(|e| format!("bad Content-Length {v:?}: {e}"))
        })
        .transpose()?;
    conn.stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let (body, closed) = match length {
        Some(n) => {
            let body = conn
                .read_vec(n)
                .map_err(|e| format!("reading {n}-byte body: {e}"))?;
            let closed = conn.expect_eof(Duration::from_secs(3)).is_ok();
            (body, closed)
        }
        None => {
            let mut body = conn.buffered().to_vec();
            conn.pos = conn.buf.len();
            let mut chunk = [0u8; 4096];
            let closed = loop {
                match conn.stream.read(&mut chunk) {
                    Ok(0) => break true,
                    Ok(n) => body.extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == io::ErrorKind::ConnectionReset => break true,
                    Err(_) => break false,
                }
            };
            (body, closed)
        }
    };
    Ok(HttpReply { head, body, closed })
}

// ---------------------------------------------------------------------------------------------
// Data helpers
// ---------------------------------------------------------------------------------------------

/// How payload bytes travel in WebSocket messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wire {
    /// Raw bytes in binary messages (opcode 2).
    Binary,
    /// Base64 text in text messages (opcode 1, or hixie `0x00 … 0xFF` frames).
    Base64Text,
}

/// A client that can carry opaque bytes through the tunnel, one message at a time.
pub trait DataClient {
    /// Sends `data` as one message (encoded per the client's wire mode).
    fn send_data(&mut self, data: &[u8]);
    /// Receives the next data message, decoded. Panics on close, errors or timeouts.
    fn recv_data(&mut self) -> Vec<u8>;
}

/// Receives data messages until at least `n` bytes have arrived and returns them all. The
/// proxy relays bytes as they come, so one sent message may be echoed in several pieces.
pub fn recv_exactly(client: &mut dyn DataClient, n: usize) -> Vec<u8> {
    let mut got = Vec::new();
    while got.len() < n {
        got.extend_from_slice(&client.recv_data());
    }
    got
}

/// Sends `data` in random-sized messages (1..=`max_chunk` bytes) through an echoing tunnel while
/// reading the echo, keeping at most 256 KiB in flight (so neither side can deadlock on full
/// socket buffers), and returns everything received.
pub fn round_trip(
    client: &mut dyn DataClient,
    data: &[u8],
    rng: &mut Rng,
    max_chunk: usize,
) -> Vec<u8> {
    const WINDOW: usize = 256 * 1024;
    let mut sent = 0;
    let mut received = Vec::with_capacity(data.len());
    while received.len() < data.len() {
        if sent < data.len() && sent - received.len() < WINDOW {
            let n = rng.range_usize(1, max_chunk).min(data.len() - sent);
            client.send_data(&data[sent..sent + n]);
            sent += n;
        } else {
            let got = client.recv_data();
            received.extend_from_slice(&got);
            assert!(
                received.len() <= sent,
                "received {} bytes but only {sent} were sent",
                received.len()
            );
        }
    }
    received
}

/// Asserts `actual == expected` without dumping megabytes: reports lengths and the first
/// differing offset.
#[track_caller]
pub fn assert_same_bytes(actual: &[u8], expected: &[u8], what: &str) {
    if actual == expected {
        return;
    }
    let first = actual
        .iter()
        .zip(expected)
        .position(|(a, b)| a != b)
        .unwrap_or(actual.len().min(expected.len()));
    panic!(
        "{what}: got {} bytes, expected {}; first difference at offset {first} \
         (got {:02x?}, expected {:02x?})",
        actual.len(),
        expected.len(),
        &actual[first..(first + 16).min(actual.len())],
        &expected[first..(first + 16).min(expected.len())],
    );
}

/// Base64 (standard alphabet, padded).
pub fn b64(data: &[u8]) -> String {
    B64.encode(data)
}

/// Strict Base64 decoding (panics with context on invalid input).
#[track_caller]
pub fn unb64(text: &str) -> Vec<u8> {
    B64.decode(text).unwrap_or_else(|e| {
        panic!(
            "proxy sent invalid Base64 ({e}): {:?}",
            &text[..text.len().min(80)]
        )
    })
}

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key` (RFC 6455 §4.2.2).
pub fn accept_key(key: &str) -> String {
    let mut sha = Sha1::new();
    sha.update(key.as_bytes());
    sha.update(WS_GUID.as_bytes());
    B64.encode(sha.finalize())
}

// ---------------------------------------------------------------------------------------------
// draft-hixie-76 keys
// ---------------------------------------------------------------------------------------------

/// The server-side reading of a draft-76 key: digits as a number divided by the number of
/// spaces. `None` if there are no spaces, no digits, the number overflows, is not a multiple of
/// the spaces, or the quotient exceeds `u32::MAX`.
pub fn hixie76_key_value(key: &str) -> Option<u32> {
    let spaces = key.bytes().filter(|&b| b == b' ').count() as u64;
    let digits: String = key.chars().filter(char::is_ascii_digit).collect();
    if spaces == 0 || digits.is_empty() {
        return None;
    }
    let number: u64 = digits.parse().ok()?;
    if !number.is_multiple_of(spaces) {
        return None;
    }
    u32::try_from(number / spaces).ok()
}

/// MD5(BE32(value(key1)) ‖ BE32(value(key2)) ‖ key3), the draft-76 §5.2 challenge response.
pub fn hixie76_response(key1: &str, key2: &str, key3: &[u8; 8]) -> Option<[u8; 16]> {
    let a = hixie76_key_value(key1)?;
    let b = hixie76_key_value(key2)?;
    Some(hixie76_md5(a, b, key3))
}

/// MD5 of the 16-byte challenge built from two key values and key3.
pub fn hixie76_md5(a: u32, b: u32, key3: &[u8; 8]) -> [u8; 16] {
    let mut md5 = Md5::new();
    md5.update(a.to_be_bytes());
    md5.update(b.to_be_bytes());
    md5.update(key3);
    md5.finalize().into()
}

/// One generated draft-76 key and the number it encodes.
#[derive(Clone, Debug)]
pub struct Hixie76Key {
    /// The header value.
    pub key: String,
    /// `number_n` (the value the server must compute).
    pub number: u32,
    /// `spaces_n`.
    pub spaces: u32,
}

/// Generates a key exactly as draft-76 §4.1 (and WebKit's `generateSecWebSocketKey`) do:
/// spaces in 1..=12, number in 0..=u32::MAX/spaces, the decimal of number*spaces, 1..=12 random
/// characters from U+0021–U+002F and U+003A–U+007E inserted at random positions, then `spaces`
/// U+0020 inserted at random positions other than the start or the end.
pub fn generate_hixie76_key(rng: &mut Rng) -> Hixie76Key {
    let spaces = rng.range(1, 12) as u32;
    let max = u32::MAX / spaces;
    let number = rng.range(0, u64::from(max)) as u32;
    let product = u64::from(number) * u64::from(spaces);
    let mut key: Vec<u8> = product.to_string().into_bytes();
    for _ in 0..rng.range(1, 12) {
        // 15 characters in 0x21..=0x2F plus 69 in 0x3A..=0x7E.
        let pick = rng.range(0, 15 + 69 - 1) as u8;
        let ch = if pick < 15 {
            0x21 + pick
        } else {
            0x3A + pick - 15
        };
        let at = rng.range_usize(0, key.len());
        key.insert(at, ch);
    }
    for _ in 0..spaces {
        let at = rng.range_usize(1, key.len() - 1);
        key.insert(at, b' ');
    }
    let key = String::from_utf8(key).unwrap();
    Hixie76Key {
        key,
        number,
        spaces,
    }
}

/// The three draft-76 handshake keys.
#[derive(Clone, Debug)]
pub struct Hixie76Keys {
    /// `Sec-WebSocket-Key1`.
    pub key1: String,
    /// `Sec-WebSocket-Key2`.
    pub key2: String,
    /// The 8-byte body.
    pub key3: [u8; 8],
}

impl Hixie76Keys {
    /// Fresh random keys (see [`generate_hixie76_key`]).
    pub fn generate(rng: &mut Rng) -> Hixie76Keys {
        let k1 = generate_hixie76_key(rng);
        let k2 = generate_hixie76_key(rng);
        let mut key3 = [0u8; 8];
        rng.fill(&mut key3);
        Hixie76Keys {
            key1: k1.key,
            key2: k2.key,
            key3,
        }
    }

    /// The 16 bytes a correct server answers (panics if the keys are invalid).
    pub fn expected_response(&self) -> [u8; 16] {
        hixie76_response(&self.key1, &self.key2, &self.key3).expect("valid draft-76 keys")
    }
}

// ---------------------------------------------------------------------------------------------
// Hixie clients
// ---------------------------------------------------------------------------------------------

/// How a hixie-75/76 client builds its opening handshake.
#[derive(Clone, Debug)]
pub struct HixieRequest {
    /// The resource name, e.g. `/127.0.0.1:8000` (sent and expected in the Location verbatim).
    pub resource: String,
    /// The `Host` header value.
    pub host: String,
    /// The `Origin` header value.
    pub origin: String,
    /// `[Sec-]WebSocket-Protocol` to offer (a single value).
    pub protocol: Option<String>,
    /// Send the header names in lower case (servers must match them case-insensitively).
    pub lowercase_names: bool,
    /// Hixie-76 only: send key3 separately, split 3+5 bytes, with this delay before each part.
    pub key3_delay: Option<Duration>,
}

impl HixieRequest {
    /// A request for `ws://PROXY/TARGET` with `Host: PROXY` and `Origin: DEFAULT_ORIGIN`.
    pub fn new(proxy: SocketAddr, target: &str) -> HixieRequest {
        HixieRequest {
            resource: format!("/{target}"),
            host: proxy.to_string(),
            origin: DEFAULT_ORIGIN.to_string(),
            protocol: None,
            lowercase_names: false,
            key3_delay: None,
        }
    }

    /// The request head (without key3): draft-76 style (`Sec-` protocol header, the two keys)
    /// when `draft76`, else draft-75.
    pub fn head(&self, draft76: bool, keys: Option<&Hixie76Keys>) -> String {
        let name = |n: &str| header_name(n, self.lowercase_names);
        let mut h = format!(
            "GET {} HTTP/1.1\r\n{}: WebSocket\r\n{}: Upgrade\r\n{}: {}\r\n{}: {}\r\n",
            self.resource,
            name("Upgrade"),
            name("Connection"),
            name("Host"),
            self.host,
            name("Origin"),
            self.origin
        );
        if let Some(p) = &self.protocol {
            let field = if draft76 {
                "Sec-WebSocket-Protocol"
            } else {
                "WebSocket-Protocol"
            };
            h += &format!("{}: {p}\r\n", name(field));
        }
        if let Some(k) = keys {
            h += &format!(
                "{}: {}\r\n{}: {}\r\n",
                name("Sec-WebSocket-Key1"),
                k.key1,
                name("Sec-WebSocket-Key2"),
                k.key2
            );
        }
        h + "\r\n"
    }

    /// The exact Location a correct server must answer: `ws://<Host><resource>`.
    pub fn expected_location(&self) -> String {
        format!("ws://{}{}", self.host, self.resource)
    }
}

/// One received hixie frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HixieFrame {
    /// `0x00 <utf-8> 0xFF`.
    Text(String),
    /// `0xFF 0x00`, the closing handshake.
    Close,
    /// Any other frame type (discarded per the draft): the type byte and its length.
    Other(u8, usize),
}

/// A draft-hixie-75 or -76 client speaking raw over TCP. Data is Base64 in text frames.
pub struct HixieClient {
    /// The connection (buffered).
    pub conn: Conn,
    /// The server's handshake head.
    pub response: HttpHead,
    /// 75 or 76.
    pub draft: u8,
    /// The 16-byte challenge response (draft-76 only).
    pub challenge_response: Option<[u8; 16]>,
}

/// A hixie-75 client (see [`HixieClient::connect_75`]).
pub type Hixie75Client = HixieClient;
/// A hixie-76 client (see [`HixieClient::connect_76`]).
pub type Hixie76Client = HixieClient;

impl HixieClient {
    /// Performs the draft-75 handshake and verifies it the way Chromium's draft-75 client does:
    /// the first 85 bytes are exactly `HTTP/1.1 101 Web Socket Protocol Handshake`,
    /// `Upgrade: WebSocket`, `Connection: Upgrade`; `WebSocket-Origin` equals the origin
    /// (case-insensitive); `WebSocket-Location` equals `ws://<Host><resource>`;
    /// `WebSocket-Protocol` is present and equal iff one was offered.
    pub fn try_connect_75(proxy: SocketAddr, req: &HixieRequest) -> Result<HixieClient, String> {
        let mut conn = Conn::connect(proxy);
        conn.write_all(req.head(false, None).as_bytes())
            .map_err(|e| format!("write request: {e}"))?;
        let raw = conn.read_head().map_err(|e| format!("read head: {e}"))?;
        let head = HttpHead::parse(&raw)?;
        const PREFIX: &[u8] =
            b"HTTP/1.1 101 Web Socket Protocol Handshake\r\nUpgrade: WebSocket\r\nConnection: Upgrade\r\n";
        if !raw.starts_with(PREFIX) {
            return Err(format!(
                "draft-75 response must start with {:?}; got {:?}",
                String::from_utf8_lossy(PREFIX),
                String::from_utf8_lossy(&raw)
            ));
        }
        check_hixie_fields(&head, req, "WebSocket-")?;
        Ok(HixieClient {
            conn,
            response: head,
            draft: 75,
            challenge_response: None,
        })
    }

    /// [`HixieClient::try_connect_75`], panicking on failure.
    pub fn connect_75(proxy: SocketAddr, req: &HixieRequest) -> HixieClient {
        HixieClient::try_connect_75(proxy, req).unwrap_or_else(|e| panic!("hixie-75: {e}"))
    }

    /// Performs the draft-76 handshake (key3 sent right after the head, or delayed and split
    /// per [`HixieRequest::key3_delay`]) and verifies it the way WebKit did: status 101,
    /// `Upgrade: WebSocket`, `Connection: Upgrade`, `Sec-WebSocket-Origin` equal to the origin,
    /// `Sec-WebSocket-Location` exactly `ws://<Host><resource>`, the protocol echoed iff offered,
    /// then 16 bytes equal to the expected MD5.
    pub fn try_connect_76(
        proxy: SocketAddr,
        req: &HixieRequest,
        keys: &Hixie76Keys,
    ) -> Result<HixieClient, String> {
        let mut conn = Conn::connect(proxy);
        let head_text = req.head(true, Some(keys));
        match req.key3_delay {
            None => {
                let mut all = head_text.into_bytes();
                all.extend_from_slice(&keys.key3);
                conn.write_all(&all)
            }
            Some(delay) => conn.write_all(head_text.as_bytes()).and_then(|()| {
                thread::sleep(delay);
                conn.write_all(&keys.key3[..3])?;
                thread::sleep(delay);
                conn.write_all(&keys.key3[3..])
            }),
        }
        .map_err(|e| format!("write request: {e}"))?;
        let raw = conn.read_head().map_err(|e| format!("read head: {e}"))?;
        let head = HttpHead::parse(&raw)?;
        if head.status != 101 {
            return Err(format!(
                "expected status 101, got {:?}",
                String::from_utf8_lossy(&raw)
            ));
        }
        let upgrade = head.header("Upgrade").unwrap_or_default();
        if !upgrade.eq_ignore_ascii_case("WebSocket") {
            return Err(format!("Upgrade must be WebSocket, got {upgrade:?}"));
        }
        let connection = head.header("Connection").unwrap_or_default();
        if !connection.eq_ignore_ascii_case("Upgrade") {
            return Err(format!("Connection must be Upgrade, got {connection:?}"));
        }
        check_hixie_fields(&head, req, "Sec-WebSocket-")?;
        let got: [u8; 16] = conn
            .read_array()
            .map_err(|e| format!("read 16-byte challenge response: {e}"))?;
        let want = keys.expected_response();
        if got != want {
            return Err(format!(
                "challenge response mismatch: got {:?} expected {:?}",
                String::from_utf8_lossy(&got),
                String::from_utf8_lossy(&want)
            ));
        }
        Ok(HixieClient {
            conn,
            response: head,
            draft: 76,
            challenge_response: Some(got),
        })
    }

    /// [`HixieClient::try_connect_76`], panicking on failure.
    pub fn connect_76(proxy: SocketAddr, req: &HixieRequest, keys: &Hixie76Keys) -> HixieClient {
        HixieClient::try_connect_76(proxy, req, keys).unwrap_or_else(|e| panic!("hixie-76: {e}"))
    }

    /// Sends `0x00 <text> 0xFF`.
    pub fn send_text(&mut self, text: &str) {
        assert!(!text.as_bytes().contains(&0xFF));
        let mut frame = Vec::with_capacity(text.len() + 2);
        frame.push(0x00);
        frame.extend_from_slice(text.as_bytes());
        frame.push(0xFF);
        self.conn.write_all(&frame).expect("send hixie text frame");
    }

    /// Sends the closing handshake `0xFF 0x00`.
    pub fn send_close(&mut self) {
        self.conn
            .write_all(&[0xFF, 0x00])
            .expect("send hixie close");
    }

    /// Reads one frame per draft-76 §4.2 (length-prefixed frames are read and reported as
    /// `Other`; sentinel frames are read up to 0xFF; text must be UTF-8).
    pub fn recv_frame(&mut self) -> io::Result<HixieFrame> {
        let t = self.conn.read_byte()?;
        if t & 0x80 != 0 {
            let mut len: u64 = 0;
            for i in 0.. {
                if i == 9 {
                    return Err(invalid("hixie frame length does not terminate"));
                }
                let b = self.conn.read_byte()?;
                len = len * 128 + u64::from(b & 0x7F);
                if b & 0x80 == 0 {
                    break;
                }
            }
            if t == 0xFF && len == 0 {
                return Ok(HixieFrame::Close);
            }
            if len > 64 << 20 {
                return Err(invalid(format!(
                    "hixie length-prefixed frame of {len} bytes"
                )));
            }
            self.conn.read_vec(len as usize)?;
            return Ok(HixieFrame::Other(t, len as usize));
        }
        let body = self.conn.read_until(0xFF, 64 << 20)?;
        if t != 0x00 {
            return Ok(HixieFrame::Other(t, body.len()));
        }
        String::from_utf8(body)
            .map(HixieFrame::Text)
            .map_err(|e| invalid(format!("hixie text frame is not UTF-8: {e}")))
    }

    /// The next text frame's content (panics on close or other frames).
    pub fn recv_text(&mut self) -> String {
        match self.recv_frame() {
            Ok(HixieFrame::Text(t)) => t,
            other => panic!("expected a hixie text frame, got {other:?}"),
        }
    }

    /// Reads data frames (Base64-decoded) until the closing frame `0xFF 0x00` (returns `true`)
    /// or EOF (`false`).
    pub fn recv_until_close(&mut self) -> (Vec<u8>, bool) {
        let mut data = Vec::new();
        loop {
            match self.recv_frame() {
                Ok(HixieFrame::Text(t)) => data.extend_from_slice(&unb64(&t)),
                Ok(HixieFrame::Close) => return (data, true),
                Ok(HixieFrame::Other(..)) => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return (data, false),
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return (data, false),
                Err(e) => panic!(
                    "hixie client: reading until close after {} bytes: {e}",
                    data.len()
                ),
            }
        }
    }

    /// Expects the closing frame `0xFF 0x00` next.
    pub fn expect_close(&mut self) {
        match self.recv_frame() {
            Ok(HixieFrame::Close) => {}
            other => panic!("expected hixie close 0xFF 0x00, got {other:?}"),
        }
    }
}

fn check_hixie_fields(head: &HttpHead, req: &HixieRequest, prefix: &str) -> Result<(), String> {
    let origin_name = format!("{prefix}Origin");
    let origin = head
        .header(&origin_name)
        .ok_or_else(|| format!("missing {origin_name}"))?;
    if !origin.eq_ignore_ascii_case(&req.origin) {
        return Err(format!("{origin_name} {origin:?} != {:?}", req.origin));
    }
    let location_name = format!("{prefix}Location");
    let location = head
        .header(&location_name)
        .ok_or_else(|| format!("missing {location_name}"))?;
    if location != req.expected_location() {
        return Err(format!(
            "{location_name} {location:?} != {:?}",
            req.expected_location()
        ));
    }
    let protocol_name = format!("{prefix}Protocol");
    match (&req.protocol, head.header(&protocol_name)) {
        (None, None) => {}
        (Some(want), Some(got)) if want == got => {}
        (want, got) => {
            return Err(format!(
                "{protocol_name}: offered {want:?}, answered {got:?}"
            ));
        }
    }
    Ok(())
}

impl DataClient for HixieClient {
    fn send_data(&mut self, data: &[u8]) {
        self.send_text(&b64(data));
    }

    fn recv_data(&mut self) -> Vec<u8> {
        loop {
            match self.recv_frame() {
                Ok(HixieFrame::Text(t)) => return unb64(&t),
                Ok(HixieFrame::Other(..)) => {}
                other => panic!("hixie client: expected data, got {other:?}"),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Raw hybi / RFC 6455 client
// ---------------------------------------------------------------------------------------------

/// Opcodes.
pub mod op {
    pub const CONTINUATION: u8 = 0x0;
    pub const TEXT: u8 = 0x1;
    pub const BINARY: u8 = 0x2;
    pub const CLOSE: u8 = 0x8;
    pub const PING: u8 = 0x9;
    pub const PONG: u8 = 0xA;
}

/// A header name as a request builder writes it: as given, or all lowercase.
fn header_name(name: &str, lowercase: bool) -> String {
    if lowercase {
        name.to_ascii_lowercase()
    } else {
        name.to_string()
    }
}

/// Encodes one frame. `mask` is the masking key for client frames (`None` = unmasked).
pub fn encode_frame(fin: bool, opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = frame_header(fin, opcode, payload.len() as u64, mask);
    match mask {
        Some(m) => out.extend(payload.iter().enumerate().map(|(i, b)| b ^ m[i % 4])),
        None => out.extend_from_slice(payload),
    }
    out
}

/// Encodes only a frame header declaring `len` payload bytes (for deliberately lying frames).
pub fn frame_header(fin: bool, opcode: u8, len: u64, mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = Vec::with_capacity(14);
    out.push(if fin { 0x80 } else { 0 } | opcode);
    let m = if mask.is_some() { 0x80 } else { 0 };
    if len < 126 {
        out.push(m | len as u8);
    } else if len <= 0xFFFF {
        out.push(m | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(m | 127);
        out.extend_from_slice(&len.to_be_bytes());
    }
    if let Some(key) = mask {
        out.extend_from_slice(&key);
    }
    out
}

/// One received frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WsFrame {
    /// FIN bit.
    pub fin: bool,
    /// Opcode.
    pub opcode: u8,
    /// Payload (server frames are never masked).
    pub payload: Vec<u8>,
}

/// One received message (data reassembled from fragments; control frames as they come).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WsMsg {
    /// A text message (valid UTF-8).
    Text(String),
    /// A binary message.
    Binary(Vec<u8>),
    /// A ping with its payload.
    Ping(Vec<u8>),
    /// A pong with its payload.
    Pong(Vec<u8>),
    /// A close frame: `None` if empty, else (code, reason).
    Close(Option<(u16, String)>),
}

/// How a [`RawHybiClient`] builds its handshake.
#[derive(Clone, Debug)]
pub struct HybiRequest {
    /// The resource, e.g. `/127.0.0.1:8000`.
    pub resource: String,
    /// `Host` header value.
    pub host: String,
    /// `Sec-WebSocket-Version` value (7, 8, 13 or anything for negative tests).
    pub version: String,
    /// The origin: sent as `Sec-WebSocket-Origin` for versions 7/8, `Origin` otherwise.
    pub origin: Option<String>,
    /// `Sec-WebSocket-Protocol` value, verbatim.
    pub protocols: Option<String>,
    /// `Sec-WebSocket-Key` value.
    pub key: String,
    /// The `Connection` header value.
    pub connection: String,
    /// Send header names in lower case.
    pub lowercase_names: bool,
    /// Extra raw header lines (without CRLF).
    pub extra: Vec<String>,
}

impl HybiRequest {
    /// A request for `ws://PROXY/TARGET` with a random key and `Origin: DEFAULT_ORIGIN`.
    pub fn new(proxy: SocketAddr, target: &str, version: u8) -> HybiRequest {
        HybiRequest {
            resource: format!("/{target}"),
            host: proxy.to_string(),
            version: version.to_string(),
            origin: Some(DEFAULT_ORIGIN.to_string()),
            protocols: None,
            key: b64(&Rng::fresh().bytes(16)),
            connection: "Upgrade".to_string(),
            lowercase_names: false,
            extra: Vec::new(),
        }
    }

    /// The request bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let name = |n: &str| header_name(n, self.lowercase_names);
        let mut h = format!(
            "GET {} HTTP/1.1\r\n{}: {}\r\n{}: websocket\r\n{}: {}\r\n{}: {}\r\n{}: {}\r\n",
            self.resource,
            name("Host"),
            self.host,
            name("Upgrade"),
            name("Connection"),
            self.connection,
            name("Sec-WebSocket-Key"),
            self.key,
            name("Sec-WebSocket-Version"),
            self.version,
        );
        if let Some(origin) = &self.origin {
            let field = if self.version == "7" || self.version == "8" {
                "Sec-WebSocket-Origin"
            } else {
                "Origin"
            };
            h += &format!("{}: {origin}\r\n", name(field));
        }
        if let Some(p) = &self.protocols {
            h += &format!("{}: {p}\r\n", name("Sec-WebSocket-Protocol"));
        }
        for line in &self.extra {
            h += line;
            h += "\r\n";
        }
        (h + "\r\n").into_bytes()
    }
}

/// A hybi-07/08/RFC 6455 client over a raw socket: strict frame parser, masked frames by
/// default, and the ability to send anything (unmasked frames, lying lengths, raw bytes).
pub struct RawHybiClient {
    /// The connection (buffered).
    pub conn: Conn,
    /// The server's handshake head.
    pub response: HttpHead,
    /// The subprotocol the server selected.
    pub protocol: Option<String>,
    /// How [`DataClient::send_data`] encodes (from the protocol; tests may override).
    pub send_wire: Wire,
    /// How [`DataClient::recv_data`] expects data (from the protocol).
    pub recv_wire: Wire,
    rng: Rng,
    partial: Option<(u8, Vec<u8>)>,
}

impl RawHybiClient {
    /// Connects to `ws://PROXY/TARGET` with `Sec-WebSocket-Version: version`, offering
    /// `protocols` (verbatim header value) if given. Panics unless the handshake is valid.
    pub fn connect(
        proxy: SocketAddr,
        target: &str,
        version: u8,
        protocols: Option<&str>,
    ) -> RawHybiClient {
        let mut req = HybiRequest::new(proxy, target, version);
        req.protocols = protocols.map(str::to_string);
        RawHybiClient::handshake(proxy, &req).unwrap_or_else(|e| panic!("hybi-{version}: {e}"))
    }

    /// Sends `req` and verifies the answer like an RFC 6455 client (§4.1): status 101,
    /// `Upgrade: websocket`, `Connection` containing `Upgrade`, the exact
    /// `Sec-WebSocket-Accept`, no `Sec-WebSocket-Protocol` unless offered and then one of the
    /// offered tokens.
    pub fn handshake(proxy: SocketAddr, req: &HybiRequest) -> Result<RawHybiClient, String> {
        let mut conn = Conn::connect(proxy);
        conn.write_all(&req.to_bytes())
            .map_err(|e| format!("write request: {e}"))?;
        let raw = conn.read_head().map_err(|e| format!("read head: {e}"))?;
        let head = HttpHead::parse(&raw)?;
        let text = String::from_utf8_lossy(&raw).into_owned();
        if head.status != 101 {
            return Err(format!("expected 101, got {text:?}"));
        }
        if !head
            .header("Upgrade")
            .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
        {
            return Err(format!("Upgrade must be websocket: {text:?}"));
        }
        if !head.has_token("Connection", "Upgrade") {
            return Err(format!("Connection must contain Upgrade: {text:?}"));
        }
        let want = accept_key(&req.key);
        if head.header("Sec-WebSocket-Accept") != Some(want.as_str()) {
            return Err(format!(
                "Sec-WebSocket-Accept must be {want:?} for key {:?}: {text:?}",
                req.key
            ));
        }
        let offered: Vec<&str> = req
            .protocols
            .as_deref()
            .map(|p| p.split(',').map(str::trim).collect())
            .unwrap_or_default();
        let selected = head.header_all("Sec-WebSocket-Protocol");
        let protocol = match (offered.is_empty(), selected.as_slice()) {
            (_, []) if offered.is_empty() => None,
            (false, []) => {
                return Err(format!(
                    "offered {offered:?} but no Sec-WebSocket-Protocol answered: {text:?}"
                ));
            }
            (false, [one]) if offered.contains(one) => Some(one.to_string()),
            _ => {
                return Err(format!(
                    "Sec-WebSocket-Protocol {selected:?} is not one of the offered {offered:?}"
                ));
            }
        };
        let wire = match protocol.as_deref() {
            Some("base64") | Some("websockets-proxy") => Wire::Base64Text,
            _ => Wire::Binary,
        };
        Ok(RawHybiClient {
            conn,
            response: head,
            protocol,
            send_wire: wire,
            recv_wire: wire,
            rng: Rng::fresh(),
            partial: None,
        })
    }

    /// A fresh random masking key.
    pub fn mask_key(&mut self) -> [u8; 4] {
        (self.rng.next_u64() as u32).to_be_bytes()
    }

    /// Sends one masked frame (panics if the write fails).
    pub fn send_frame(&mut self, fin: bool, opcode: u8, payload: &[u8]) {
        self.try_send_frame(fin, opcode, payload)
            .expect("send frame");
    }

    /// Sends one masked frame, returning write errors (for frames the proxy may refuse and
    /// close the connection on before they are fully written).
    pub fn try_send_frame(&mut self, fin: bool, opcode: u8, payload: &[u8]) -> io::Result<()> {
        let mask = self.mask_key();
        let frame = encode_frame(fin, opcode, payload, Some(mask));
        self.conn.write_all(&frame)
    }

    /// Sends one frame WITHOUT a mask (a protocol error from a client).
    pub fn send_unmasked_frame(&mut self, fin: bool, opcode: u8, payload: &[u8]) {
        let frame = encode_frame(fin, opcode, payload, None);
        self.conn.write_all(&frame).expect("send unmasked frame");
    }

    /// Sends raw bytes (anything at all). Errors are returned (the proxy may have closed).
    pub fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.conn.write_all(bytes)
    }

    /// Sends a binary message.
    pub fn send_binary(&mut self, data: &[u8]) {
        self.send_frame(true, op::BINARY, data);
    }

    /// Sends a text message.
    pub fn send_text(&mut self, text: &str) {
        self.send_frame(true, op::TEXT, text.as_bytes());
    }

    /// Sends a ping.
    pub fn send_ping(&mut self, payload: &[u8]) {
        self.send_frame(true, op::PING, payload);
    }

    /// Sends a close frame with `code` and `reason`.
    pub fn send_close(&mut self, code: u16, reason: &str) {
        let mut payload = code.to_be_bytes().to_vec();
        payload.extend_from_slice(reason.as_bytes());
        self.send_frame(true, op::CLOSE, &payload);
    }

    /// Reads one frame, strictly: no mask on server frames, RSV bits 0, known opcodes, control
    /// frames final and ≤125 bytes, minimal length encoding, 64-bit lengths with MSB 0.
    pub fn recv_frame(&mut self) -> io::Result<WsFrame> {
        let [b0, b1] = self.conn.read_array::<2>()?;
        let fin = b0 & 0x80 != 0;
        let opcode = b0 & 0x0F;
        if b0 & 0x70 != 0 {
            return Err(invalid(format!("RSV bits set in frame header {b0:#04x}")));
        }
        if b1 & 0x80 != 0 {
            return Err(invalid("server frame is masked (RFC 6455 §5.1 forbids it)"));
        }
        let mut len = u64::from(b1 & 0x7F);
        if len == 126 {
            len = u64::from(u16::from_be_bytes(self.conn.read_array()?));
            if len < 126 {
                return Err(invalid(format!("non-minimal 16-bit length {len}")));
            }
        } else if len == 127 {
            len = u64::from_be_bytes(self.conn.read_array()?);
            if len >> 63 != 0 {
                return Err(invalid("64-bit length with the MSB set"));
            }
            if len <= 0xFFFF {
                return Err(invalid(format!("non-minimal 64-bit length {len}")));
            }
        }
        match opcode {
            op::CONTINUATION | op::TEXT | op::BINARY => {}
            op::CLOSE | op::PING | op::PONG => {
                if !fin || len > 125 {
                    return Err(invalid(format!(
                        "control frame {opcode:#x} fin={fin} len={len}"
                    )));
                }
            }
            _ => return Err(invalid(format!("reserved opcode {opcode:#x}"))),
        }
        if len > 256 << 20 {
            return Err(invalid(format!("frame of {len} bytes from the proxy")));
        }
        let payload = self.conn.read_vec(len as usize)?;
        Ok(WsFrame {
            fin,
            opcode,
            payload,
        })
    }

    /// Reads the next message: data frames are reassembled (continuation rules enforced, text
    /// validated as UTF-8), control frames are returned as they arrive (also between fragments).
    pub fn recv_message(&mut self) -> io::Result<WsMsg> {
        loop {
            let f = self.recv_frame()?;
            match f.opcode {
                op::CLOSE => {
                    let close = match f.payload.len() {
                        0 => None,
                        1 => return Err(invalid("close frame with a 1-byte payload")),
                        _ => {
                            let code = u16::from_be_bytes([f.payload[0], f.payload[1]]);
                            let valid = matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999);
                            if !valid {
                                return Err(invalid(format!("close code {code} must not be sent")));
                            }
                            let reason = String::from_utf8(f.payload[2..].to_vec())
                                .map_err(|_| invalid("close reason is not UTF-8"))?;
                            Some((code, reason))
                        }
                    };
                    return Ok(WsMsg::Close(close));
                }
                op::PING => return Ok(WsMsg::Ping(f.payload)),
                op::PONG => return Ok(WsMsg::Pong(f.payload)),
                op::CONTINUATION => {
                    let Some((_, buf)) = self.partial.as_mut() else {
                        return Err(invalid("continuation frame without a started message"));
                    };
                    buf.extend_from_slice(&f.payload);
                    if f.fin {
                        let (opcode, buf) = self.partial.take().unwrap();
                        return finish_message(opcode, buf);
                    }
                }
                opcode => {
                    if self.partial.is_some() {
                        return Err(invalid("new data frame inside a fragmented message"));
                    }
                    if f.fin {
                        return finish_message(opcode, f.payload);
                    }
                    self.partial = Some((opcode, f.payload));
                }
            }
        }
    }

    /// Reads data messages (decoded per [`RawHybiClient::recv_wire`]; pings and pongs skipped)
    /// until a Close, returning the data and the close (`None` payload for an empty Close).
    /// Panics on EOF or errors before the Close.
    pub fn recv_until_close(&mut self) -> (Vec<u8>, Option<(u16, String)>) {
        let mut data = Vec::new();
        loop {
            match self.recv_message() {
                Ok(WsMsg::Close(c)) => return (data, c),
                Ok(WsMsg::Ping(_) | WsMsg::Pong(_)) => {}
                Ok(msg) => data.extend_from_slice(&self.decode(msg)),
                Err(e) => panic!(
                    "hybi client: waiting for Close after {} data bytes: {e}",
                    data.len()
                ),
            }
        }
    }

    /// Expects a Close next (after optional pings/pongs, no data) and returns (code, reason).
    pub fn expect_close(&mut self) -> (u16, String) {
        loop {
            match self.recv_message() {
                Ok(WsMsg::Close(Some(c))) => return c,
                Ok(WsMsg::Close(None)) => return (1005, String::new()),
                Ok(WsMsg::Ping(_) | WsMsg::Pong(_)) => {}
                other => panic!("expected a Close frame, got {other:?}"),
            }
        }
    }

    fn decode(&self, msg: WsMsg) -> Vec<u8> {
        match (self.recv_wire, msg) {
            (Wire::Binary, WsMsg::Binary(b)) => b,
            (Wire::Base64Text, WsMsg::Text(t)) => unb64(&t),
            (wire, other) => panic!(
                "protocol {:?} expects {wire:?} messages, got {}",
                self.protocol,
                describe(&other)
            ),
        }
    }
}

fn describe(msg: &WsMsg) -> String {
    match msg {
        WsMsg::Text(t) => format!("Text({} bytes: {:?})", t.len(), &t[..t.len().min(60)]),
        WsMsg::Binary(b) => format!("Binary({} bytes)", b.len()),
        other => format!("{other:?}"),
    }
}

fn finish_message(opcode: u8, payload: Vec<u8>) -> io::Result<WsMsg> {
    if opcode == op::TEXT {
        String::from_utf8(payload)
            .map(WsMsg::Text)
            .map_err(|_| invalid("text message is not UTF-8"))
    } else {
        Ok(WsMsg::Binary(payload))
    }
}

impl DataClient for RawHybiClient {
    fn send_data(&mut self, data: &[u8]) {
        match self.send_wire {
            Wire::Binary => self.send_binary(data),
            Wire::Base64Text => self.send_text(&b64(data)),
        }
    }

    fn recv_data(&mut self) -> Vec<u8> {
        loop {
            match self.recv_message() {
                Ok(WsMsg::Ping(_) | WsMsg::Pong(_)) => {}
                Ok(WsMsg::Close(c)) => panic!("hybi client: unexpected Close {c:?}"),
                Ok(msg) => return self.decode(msg),
                Err(e) => panic!("hybi client: waiting for data: {e}"),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// RFC 6455 via tungstenite
// ---------------------------------------------------------------------------------------------

/// An RFC 6455 client using `tungstenite` (an independent implementation of the framing).
pub struct TungClient {
    /// The socket.
    pub ws: WebSocket<TcpStream>,
    /// The subprotocol the server selected.
    pub protocol: Option<String>,
    /// How [`DataClient::send_data`] encodes.
    pub send_wire: Wire,
    /// How [`DataClient::recv_data`] expects data.
    pub recv_wire: Wire,
}

impl TungClient {
    /// Connects to `ws://PROXY/TARGET` offering each of `protocols` (none if empty); panics on
    /// handshake failure. tungstenite verifies the accept key and the protocol echo itself.
    pub fn connect(proxy: SocketAddr, target: &str, protocols: &[&str]) -> TungClient {
        let uri: tungstenite::http::Uri =
            format!("ws://{proxy}/{target}").parse().expect("valid URI");
        let mut req = ClientRequestBuilder::new(uri).with_header("Origin", DEFAULT_ORIGIN);
        for p in protocols {
            req = req.with_sub_protocol(*p);
        }
        let stream = TcpStream::connect_timeout(&proxy, IO_TIMEOUT).expect("connect to proxy");
        stream.set_nodelay(true).unwrap();
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(IO_TIMEOUT * 3)).unwrap();
        let config = WebSocketConfig::default()
            .max_message_size(Some(256 << 20))
            .max_frame_size(Some(256 << 20));
        let (ws, response) = tungstenite::client::client_with_config(req, stream, Some(config))
            .unwrap_or_else(|e| panic!("tungstenite handshake with {protocols:?}: {e}"));
        let protocol = response
            .headers()
            .get("Sec-WebSocket-Protocol")
            .map(|v| v.to_str().unwrap().to_string());
        let wire = match protocol.as_deref() {
            Some("base64") | Some("websockets-proxy") => Wire::Base64Text,
            _ => Wire::Binary,
        };
        TungClient {
            ws,
            protocol,
            send_wire: wire,
            recv_wire: wire,
        }
    }

    /// Reads messages until a Close; returns the decoded data and the close frame.
    pub fn recv_until_close(&mut self) -> (Vec<u8>, Option<(u16, String)>) {
        let mut data = Vec::new();
        loop {
            match self.ws.read() {
                Ok(Message::Close(c)) => {
                    return (
                        data,
                        c.map(|f| (u16::from(f.code), f.reason.as_str().to_string())),
                    );
                }
                Ok(Message::Ping(_) | Message::Pong(_)) => {}
                Ok(msg) => data.extend_from_slice(&self.decode(msg)),
                Err(e) => panic!(
                    "tungstenite: waiting for Close after {} bytes: {e}",
                    data.len()
                ),
            }
        }
    }

    fn decode(&self, msg: Message) -> Vec<u8> {
        match (self.recv_wire, msg) {
            (Wire::Binary, Message::Binary(b)) => b.to_vec(),
            (Wire::Base64Text, Message::Text(t)) => unb64(t.as_str()),
            (wire, other) => panic!(
                "protocol {:?} expects {wire:?} messages, got {other:?}",
                self.protocol
            ),
        }
    }
}

impl DataClient for TungClient {
    fn send_data(&mut self, data: &[u8]) {
        let msg = match self.send_wire {
            Wire::Binary => Message::binary(data.to_vec()),
            Wire::Base64Text => Message::text(b64(data)),
        };
        self.ws.send(msg).expect("tungstenite send");
    }

    fn recv_data(&mut self) -> Vec<u8> {
        loop {
            match self.ws.read() {
                Ok(Message::Ping(_) | Message::Pong(_)) => {}
                Ok(Message::Close(c)) => panic!("tungstenite: unexpected Close {c:?}"),
                Ok(msg) => return self.decode(msg),
                Err(e) => panic!("tungstenite: waiting for data: {e}"),
            }
        }
    }
}

/// Polls `cond` every 10 ms until it is true or `timeout` passes; returns the last value.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers for the safety tests (policy, Origin/Host, limits, shutdown, bad input)
// ---------------------------------------------------------------------------------------------

impl Proxy {
    /// Sends `signal` (`TERM`, `INT`, …) to the proxy with the `kill` command.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([format!("-{signal}"), self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} {}: {status}", self.pid());
    }

    /// Waits up to `timeout` for the proxy to exit; its exit status, or `None` if it still runs.
    pub fn wait_for_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// The fd and thread counts once they are stable (unchanged for 200 ms; at most 5 s).
    pub fn settled_counts(&self) -> (usize, usize) {
        let mut last = (self.fd_count(), self.thread_count());
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            thread::sleep(Duration::from_millis(200));
            let now = (self.fd_count(), self.thread_count());
            if now == last || Instant::now() > deadline {
                return now;
            }
            last = now;
        }
    }

    /// Waits up to `timeout` until the fd and thread counts are at or below `(fds, threads)`;
    /// panics with the open descriptors otherwise.
    #[track_caller]
    pub fn assert_counts_back_to(&self, (fds, threads): (usize, usize), timeout: Duration) {
        let started = Instant::now();
        let ok = wait_until(timeout, || {
            self.fd_count() <= fds && self.thread_count() <= threads
        });
        assert!(
            ok,
            "fds {} (baseline {fds}), threads {} (baseline {threads}) after {timeout:?};\n\
             open fds:\n{}",
            self.fd_count(),
            self.thread_count(),
            self.fd_listing().join("\n")
        );
        eprintln!(
            "fds and threads back to {fds}/{threads} after {:?}",
            started.elapsed()
        );
    }
}

/// A minimal RFC 6455 upgrade request for `/{target}` with `Host: host` and extra header lines
/// (no Origin unless given in `extra`).
pub fn upgrade_request(host: &str, target: &str, extra: &[&str]) -> Vec<u8> {
    let mut req = format!(
        "GET /{target} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    );
    for line in extra {
        req += line;
        req += "\r\n";
    }
    (req + "\r\n").into_bytes()
}

/// Asserts that `reply` is the HTTP error `status` (never a 101) whose one-line body contains
/// `needle` (case-insensitive).
#[track_caller]
pub fn assert_refused(reply: &HttpReply, status: u16, needle: &str, context: &str) {
    let body = reply.body_text();
    assert_eq!(
        reply.head.status, status,
        "{context}: expected {status}, got {:?} with body {body:?}",
        reply.head.status_line
    );
    assert!(
        body.to_ascii_lowercase()
            .contains(&needle.to_ascii_lowercase()),
        "{context}: the body should say {needle:?}; got {body:?}"
    );
    assert_eq!(
        body.trim_end().lines().count(),
        1,
        "{context}: the reason is one line: {body:?}"
    );
}

/// What a [`Bystander`] did.
#[derive(Clone, Copy, Debug)]
pub struct BystanderReport {
    /// Bytes sent through the tunnel and verified in the echo.
    pub bytes: u64,
    /// The longest single round trip (a stall shows up here).
    pub worst_round_trip: Duration,
}

/// An RFC 6455 tunnel to an echo target that keeps data flowing at a steady rate in a thread,
/// verifying every echoed byte, until [`Bystander::stop`]. Any loss, corruption, Close or
/// stall longer than [`IO_TIMEOUT`] panics the thread, and `stop` re-raises it.
pub struct Bystander {
    stop: Arc<AtomicBool>,
    verified: Arc<AtomicU64>,
    handle: thread::JoinHandle<BystanderReport>,
}

impl Bystander {
    /// Starts pumping `bytes_per_sec` through `proxy` to `echo` in 16 KiB messages; returns
    /// once the tunnel is open and the first round trip succeeded.
    pub fn start(proxy: SocketAddr, echo: &TcpTarget, bytes_per_sec: u64) -> Bystander {
        const CHUNK: usize = 16 * 1024;
        let target = echo.target();
        let stop = Arc::new(AtomicBool::new(false));
        let verified = Arc::new(AtomicU64::new(0));
        let (ready_tx, ready_rx) = mpsc::channel();
        let (stop2, verified2) = (Arc::clone(&stop), Arc::clone(&verified));
        let handle = thread::spawn(move || {
            let mut client = RawHybiClient::connect(proxy, &target, 13, Some("binary"));
            let mut rng = Rng::for_test("bystander");
            let started = Instant::now();
            let mut worst = Duration::ZERO;
            let mut bytes = 0u64;
            loop {
                let data = rng.bytes(CHUNK);
                let sent_at = Instant::now();
                client.send_binary(&data);
                let got = recv_exactly(&mut client, data.len());
                worst = worst.max(sent_at.elapsed());
                assert_same_bytes(&got, &data, "bystander echo");
                bytes += data.len() as u64;
                verified2.store(bytes, Ordering::SeqCst);
                let _ = ready_tx.send(());
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let due = started + Duration::from_secs_f64(bytes as f64 / bytes_per_sec as f64);
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    thread::sleep(wait);
                }
            }
            client.send_close(1000, "bystander done");
            let (code, _) = client.expect_close();
            assert_eq!(code, 1000, "bystander's Close answered");
            BystanderReport {
                bytes,
                worst_round_trip: worst,
            }
        });
        if ready_rx.recv_timeout(IO_TIMEOUT).is_err() {
            match handle.join() {
                Err(panic) => std::panic::resume_unwind(panic),
                Ok(_) => panic!("bystander never completed a round trip"),
            }
        }
        Bystander {
            stop,
            verified,
            handle,
        }
    }

    /// Bytes verified so far.
    pub fn verified(&self) -> u64 {
        self.verified.load(Ordering::SeqCst)
    }

    /// Stops the pump, closes the tunnel cleanly and reports; re-raises the thread's panic.
    pub fn stop(self) -> BystanderReport {
        self.stop.store(true, Ordering::SeqCst);
        match self.handle.join() {
            Ok(report) => report,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}
