//! Peers that end the way real ones do: targets that half-close, close with the client's bytes
//! still unread, or reset; a raw client that keeps sending and does not read; and Node's `ws`
//! package as a real client that keeps sending (`tests/peers/keeps-sending.mjs`).
//!
//! Used by `tests/endings.rs`, `tests/shutdown.rs`, `tests/limits.rs` and `tests/leaks.rs`.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use super::*;

/// How a target ends its connection once it has its last word said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetEnding {
    /// `close()` after reading everything the client sent: a plain FIN.
    Close,
    /// `shutdown(SHUT_WR)`, then it goes on reading until the proxy's FIN.
    HalfClose,
    /// `close()` while the client's bytes keep arriving: the kernel answers with a reset.
    CloseUnread,
    /// `SO_LINGER` 0, then `close()`: a reset.
    Reset,
}

impl TargetEnding {
    /// The close codes a client may get: 1000 when the target ended cleanly, 1011 (with the
    /// reason) when it failed. A close with unread bytes is usually a reset, but when the
    /// target happened to have read everything it is a plain FIN.
    pub fn expected_codes(self) -> &'static [u16] {
        match self {
            TargetEnding::Close | TargetEnding::HalfClose => &[1000],
            TargetEnding::CloseUnread => &[1000, 1011],
            TargetEnding::Reset => &[1011],
        }
    }
}

/// Ends `stream` the way `ending` says.
pub fn end_target(stream: TcpStream, ending: TargetEnding) {
    match ending {
        TargetEnding::Close => drop(stream),
        TargetEnding::HalfClose => {
            let _ = stream.shutdown(Shutdown::Write);
            let mut stream = stream;
            let _ = stream.set_read_timeout(Some(IO_TIMEOUT * 3));
            let mut sink = vec![0u8; 64 * 1024];
            while matches!(stream.read(&mut sink), Ok(n) if n > 0) {}
        }
        TargetEnding::CloseUnread => {
            // Let more of the client's bytes arrive unread, so that close() resets.
            thread::sleep(Duration::from_millis(20));
            drop(stream);
        }
        TargetEnding::Reset => {
            let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
            drop(stream);
        }
    }
}

/// Size of what an [`EndingTarget`] sends before it ends. A reset throws away what the
/// target's kernel has not transmitted yet, which no proxy can deliver: so it is less than
/// the receive window the proxy's socket offers at once (Linux: half of `tcp_rmem`'s
/// default, 64 KiB), and it all reaches the proxy before the reset, however busy the proxy.
pub const LAST_WORDS: usize = 24_000;

/// What an [`EndingTarget`] sends on its `n`th connection (0-based) before it ends.
pub fn last_words(n: usize) -> Vec<u8> {
    Rng::for_test(&format!("last words {n}")).bytes(LAST_WORDS)
}

/// A target that, on each connection, reads until `read_first` bytes have come from the
/// client (so the client is in the middle of sending), sends [`last_words`] for the
/// connection, and ends the way it was told. It counts the connections that began to end.
pub struct EndingTarget {
    pub target: TcpTarget,
    ended: Arc<AtomicUsize>,
}

impl EndingTarget {
    pub fn start(ending: TargetEnding, read_first: usize) -> EndingTarget {
        let next = Arc::new(AtomicUsize::new(0));
        let ended = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&ended);
        let target = TcpTarget::spawn(move |mut stream| {
            let n = next.fetch_add(1, Ordering::SeqCst);
            let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
            let mut got = 0;
            let mut buf = vec![0u8; 16 * 1024];
            while got < read_first {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(k) => got += k,
                }
            }
            if stream.write_all(&last_words(n)).is_err() {
                return;
            }
            // Counted as it ends (a half-closing target goes on reading afterwards).
            counted.fetch_add(1, Ordering::SeqCst);
            end_target(stream, ending);
        });
        EndingTarget { target, ended }
    }

    /// How many connections have begun to end.
    pub fn ended(&self) -> usize {
        self.ended.load(Ordering::SeqCst)
    }

    /// `host:port` for the proxy path.
    pub fn addr(&self) -> String {
        self.target.target()
    }
}

/// A thread that sends masked binary frames of `frame` bytes on `stream` as fast as the
/// socket takes them, until stopped. A write error is recorded (none is expected while the
/// proxy still waits for our Close: that would be a reset).
pub struct Flooder {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicUsize>,
    thread: Option<JoinHandle<Option<io::Error>>>,
}

impl Flooder {
    pub fn start(stream: &TcpStream, frame: usize) -> Flooder {
        let mut stream = stream.try_clone().expect("clone the client socket");
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicUsize::new(0));
        let (stop2, sent2) = (Arc::clone(&stop), Arc::clone(&sent));
        let wire = encode_frame(true, op::BINARY, &vec![0x5a; frame], Some([1, 2, 3, 4]));
        let thread = thread::spawn(move || {
            while !stop2.load(Ordering::SeqCst) {
                if let Err(e) = stream.write_all(&wire) {
                    return Some(e);
                }
                sent2.fetch_add(frame, Ordering::SeqCst);
            }
            None
        });
        Flooder {
            stop,
            sent,
            thread: Some(thread),
        }
    }

    /// Payload bytes sent so far.
    pub fn sent(&self) -> usize {
        self.sent.load(Ordering::SeqCst)
    }

    /// Stops sending (after the frame in progress); the write error, if one happened.
    pub fn stop(mut self) -> Option<io::Error> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().unwrap().join().expect("the flooder")
    }
}

impl Drop for Flooder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// What a client got from a tunnel that ended.
#[derive(Debug)]
pub struct Received {
    pub data: Vec<u8>,
    /// The close code and reason; `None` if the connection ended without a Close.
    pub close: Option<(u16, String)>,
    /// The error that ended reading, if any (a reset shows up here).
    pub error: Option<String>,
}

/// Reads data until the proxy's Close (skipping Pings and Pongs), or until reading fails.
pub fn read_until_close(client: &mut RawHybiClient) -> Received {
    let mut data = Vec::new();
    loop {
        match client.recv_message() {
            Ok(WsMsg::Binary(b)) => data.extend_from_slice(&b),
            Ok(WsMsg::Close(close)) => {
                return Received {
                    data,
                    close: Some(close.unwrap_or((1005, String::new()))),
                    error: None,
                };
            }
            Ok(WsMsg::Ping(_) | WsMsg::Pong(_)) => {}
            Ok(other) => panic!("unexpected message {other:?}"),
            Err(e) => {
                return Received {
                    data,
                    close: None,
                    error: Some(format!("{:?}: {e}", e.kind())),
                };
            }
        }
    }
}

/// One tunnel through `proxy` to `target` with a raw client that floods and does not read
/// while the target ends: it keeps sending until the target's `n`th connection has ended and
/// `quiet` more has passed, then reads everything (still sending), answers the Close and
/// expects the proxy's EOF. Panics unless the target's last words and a Close arrived with
/// no reset.
pub fn target_ends_while_raw_client_sends(
    proxy: SocketAddr,
    target: &EndingTarget,
    ending: TargetEnding,
    n: usize,
    quiet: Duration,
) {
    let mut client = RawHybiClient::connect(proxy, &target.addr(), 13, Some("binary"));
    let flooder = Flooder::start(&client.conn.stream, 8 * 1024);
    assert!(
        wait_until(IO_TIMEOUT, || target.ended() > n),
        "tunnel {n}: the target never ended (client sent {} bytes)",
        flooder.sent()
    );
    thread::sleep(quiet);
    let got = read_until_close(&mut client);
    let write_error = flooder.stop();
    let what = format!("tunnel {n} ({ending:?})");
    assert_eq!(got.error, None, "{what}: reading failed before the Close");
    assert_eq!(
        write_error.map(|e| e.to_string()),
        None,
        "{what}: sending failed"
    );
    assert_same_bytes(
        &got.data,
        &last_words(n),
        &format!("{what}: the target's last bytes"),
    );
    let (code, reason) = got.close.expect("a Close");
    assert!(
        ending.expected_codes().contains(&code),
        "{what}: Close {code} {reason:?}"
    );
    client.send_close(1000, "");
    client
        .conn
        .expect_eof(IO_TIMEOUT)
        .unwrap_or_else(|e| panic!("{what}: after the closing handshake: {e}"));
}

/// What `ws` reported for one tunnel (one line of `keeps-sending.mjs`).
#[derive(Debug)]
pub struct NodeTunnel {
    pub code: u16,
    pub error: Option<String>,
    pub data: Vec<u8>,
    pub reason: String,
}

/// `tests/peers`, with Node's `ws` installed (by `scripts/setup-test-deps.sh`).
pub fn node_peers() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/peers");
    assert!(
        dir.join("node_modules/ws/package.json").exists(),
        "Node's ws package is missing: run scripts/setup-test-deps.sh (npm ci in tests/peers)"
    );
    dir
}

/// Runs `keeps-sending.mjs`: `count` tunnels, one after another, through `proxy` to `target`.
pub fn node_keeps_sending(proxy: SocketAddr, target: &str, count: usize) -> Vec<NodeTunnel> {
    let dir = node_peers();
    let url = format!("ws://{proxy}/{target}");
    let output = Command::new("node")
        .arg(dir.join("keeps-sending.mjs"))
        .args([url.as_str(), &count.to_string()])
        .output()
        .expect("run node");
    assert!(
        output.status.success(),
        "node keeps-sending.mjs: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .expect("UTF-8 output")
        .lines()
        .map(parse_node_line)
        .collect()
}

fn parse_node_line(line: &str) -> NodeTunnel {
    let field = |rest: &str, key: &str| -> (String, String) {
        let rest = rest
            .strip_prefix(key)
            .unwrap_or_else(|| panic!("{key} in {line:.200}"));
        let (value, rest) = rest.split_once(' ').unwrap_or((rest, ""));
        (value.to_string(), rest.to_string())
    };
    let (code, rest) = field(line, "code=");
    let (error, rest) = field(&rest, "error=");
    let (data, rest) = field(&rest, "data=");
    let reason = rest.strip_prefix("reason=").unwrap_or_default().to_string();
    NodeTunnel {
        code: code.parse().expect("a close code"),
        error: (error != "-").then_some(error),
        data: if data == "-" {
            Vec::new()
        } else {
            unb64(&data)
        },
        reason,
    }
}

/// A target that sends `chunk` again and again as fast as the proxy takes it, never reads,
/// and counts what it sent; it stops when its connection fails.
pub fn flooding_target() -> (TcpTarget, Arc<AtomicUsize>) {
    let sent = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&sent);
    let target = TcpTarget::spawn(move |mut stream| {
        let chunk = vec![0x42u8; 64 * 1024];
        let _ = stream.set_write_timeout(Some(IO_TIMEOUT * 6));
        while stream.write_all(&chunk).is_ok() {
            counter.fetch_add(chunk.len(), Ordering::SeqCst);
        }
    });
    (target, sent)
}

/// A target that never reads and never writes: it holds each connection for half a minute
/// (longer than any test that uses it), so what the proxy sends piles up unread.
pub fn silent_target() -> TcpTarget {
    TcpTarget::spawn(|stream| {
        thread::sleep(Duration::from_secs(30));
        drop(stream);
    })
}
