//! Graceful shutdown against the real binary: SIGTERM/SIGINT send every live tunnel a Close
//! 1001 `server shutting down` (hixie-76: `0xFF 0x00`; hixie-75: the TCP close), the bytes
//! clients sent before it still reach their targets, new clients are turned away during the
//! drain, and the process exits 0 within `--shutdown-grace` (130 at once on a second signal),
//! also when a client never reads while its target floods it, and a client that was not
//! reading when the signal came still gets every byte and the Close once it reads again.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::misbehaving::{flooding_target, read_until_close};
use common::*;

/// Generous upper bound for "promptly" on a loaded machine.
const SLACK: Duration = Duration::from_secs(3);

/// What a [`recording_echo`] target received on its (single) connection.
#[derive(Default)]
struct Recording {
    data: Vec<u8>,
    /// It saw a clean EOF.
    ended: bool,
}

/// An echo target that also records every byte it received.
fn recording_echo() -> (TcpTarget, Arc<Mutex<Recording>>) {
    let recording = Arc::new(Mutex::new(Recording::default()));
    let rec = Arc::clone(&recording);
    let target = TcpTarget::spawn(move |mut stream| {
        let _ = stream.set_read_timeout(Some(IO_TIMEOUT * 3));
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match stream.read(&mut buf) {
                Ok(0) => {
                    rec.lock().unwrap().ended = true;
                    break;
                }
                Ok(n) => {
                    rec.lock().unwrap().data.extend_from_slice(&buf[..n]);
                    if stream.write_all(&buf[..n]).is_err() {
                        // The proxy stops reading once it has closed: keep recording.
                        continue;
                    }
                }
                Err(_) => break,
            }
        }
        let _ = stream.shutdown(Shutdown::Write);
    });
    (target, recording)
}

/// Waits until a recording has seen EOF; returns its bytes.
fn recorded(recording: &Mutex<Recording>) -> Vec<u8> {
    let ended = wait_until(SLACK, || recording.lock().unwrap().ended);
    let rec = recording.lock().unwrap();
    assert!(
        ended,
        "the target sees a clean EOF ({} bytes)",
        rec.data.len()
    );
    rec.data.clone()
}

/// An RFC 6455 client that keeps sending 8 KiB messages and verifying their echo until the
/// proxy's Close arrives; answers it and returns what it sent and the Close.
fn rfc6455_pump(
    proxy: SocketAddr,
    target: String,
    progress: Arc<AtomicUsize>,
) -> (Vec<u8>, Option<(u16, String)>) {
    let mut client = RawHybiClient::connect(proxy, &target, 13, Some("binary"));
    let mut rng = Rng::for_test("rfc6455 pump");
    let mut sent = Vec::new();
    loop {
        let chunk = rng.bytes(8192);
        client.send_binary(&chunk);
        sent.extend_from_slice(&chunk);
        progress.store(sent.len(), Ordering::SeqCst);
        let mut got = 0;
        while got < chunk.len() {
            match client.recv_message() {
                Ok(WsMsg::Binary(b)) => {
                    assert_same_bytes(&b, &chunk[got..got + b.len()], "echo");
                    got += b.len();
                }
                Ok(WsMsg::Close(close)) => {
                    client.send_close(1001, "");
                    client
                        .conn
                        .expect_eof(SLACK)
                        .expect("TCP closed after the closing handshake");
                    return (sent, close);
                }
                Ok(WsMsg::Ping(_) | WsMsg::Pong(_)) => {}
                other => panic!("RFC 6455 pump: {other:?}"),
            }
        }
        thread::sleep(Duration::from_millis(2));
    }
}

/// The same for a hixie client (76: expects the closing frame; 75: the TCP close).
fn hixie_pump(
    proxy: SocketAddr,
    target: String,
    draft: u8,
    progress: Arc<AtomicUsize>,
) -> (Vec<u8>, bool) {
    let req = HixieRequest::new(proxy, &target);
    let mut client = if draft == 76 {
        let keys = Hixie76Keys::generate(&mut Rng::for_test("hixie pump"));
        HixieClient::connect_76(proxy, &req, &keys)
    } else {
        HixieClient::connect_75(proxy, &req)
    };
    let mut rng = Rng::for_test("hixie pump data");
    let mut sent = Vec::new();
    loop {
        let chunk = rng.bytes(6000);
        client.send_data(&chunk);
        sent.extend_from_slice(&chunk);
        progress.store(sent.len(), Ordering::SeqCst);
        let mut got = 0;
        while got < chunk.len() {
            match client.recv_frame() {
                Ok(HixieFrame::Text(t)) => {
                    let b = unb64(&t);
                    assert_same_bytes(&b, &chunk[got..got + b.len()], "echo");
                    got += b.len();
                }
                Ok(HixieFrame::Close) => {
                    client.send_close();
                    client.conn.expect_eof(SLACK).expect("TCP closed");
                    return (sent, true);
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset
                    ) =>
                {
                    return (sent, false);
                }
                other => panic!("hixie-{draft} pump: {other:?}"),
            }
        }
        thread::sleep(Duration::from_millis(2));
    }
}

/// Waits until `progress` reaches `n`.
#[track_caller]
fn wait_progress(progress: &AtomicUsize, n: usize, what: &str) {
    assert!(
        wait_until(Duration::from_secs(10), || progress.load(Ordering::SeqCst)
            >= n),
        "{what}: only {} bytes flowed",
        progress.load(Ordering::SeqCst)
    );
}

/// A client that opens a tunnel and never answers the proxy's Close.
fn stubborn_client(proxy: &Proxy, echo: &TcpTarget) -> RawHybiClient {
    let mut client = RawHybiClient::connect(proxy.addr, &echo.target(), 13, Some("binary"));
    client.send_binary(b"hello");
    assert_eq!(recv_exactly(&mut client, 5), b"hello");
    client
}

#[test]
fn sigterm_closes_live_tunnels_with_1001_delivers_sent_bytes_and_exits_0() {
    let mut proxy = Proxy::start(&["-v", "--shutdown-grace", "2"]);
    let (echo_rfc, rec_rfc) = recording_echo();
    let (echo_76, rec_76) = recording_echo();
    let (echo_75, rec_75) = recording_echo();
    let progress: Vec<Arc<AtomicUsize>> = (0..3).map(|_| Arc::default()).collect();
    let addr = proxy.addr;
    let rfc = {
        let (target, p) = (echo_rfc.target(), Arc::clone(&progress[0]));
        thread::spawn(move || rfc6455_pump(addr, target, p))
    };
    let h76 = {
        let (target, p) = (echo_76.target(), Arc::clone(&progress[1]));
        thread::spawn(move || hixie_pump(addr, target, 76, p))
    };
    let h75 = {
        let (target, p) = (echo_75.target(), Arc::clone(&progress[2]));
        thread::spawn(move || hixie_pump(addr, target, 75, p))
    };
    for (p, what) in progress.iter().zip(["RFC 6455", "hixie-76", "hixie-75"]) {
        wait_progress(p, 64 * 1024, what);
    }

    proxy.signal("TERM");
    let signalled = Instant::now();

    let (sent, close) = rfc.join().expect("RFC 6455 client");
    assert_eq!(
        close,
        Some((1001, "server shutting down".to_string())),
        "the RFC 6455 client's Close"
    );
    assert_same_bytes(&recorded(&rec_rfc), &sent, "RFC 6455 bytes at the target");

    let (sent, closed) = h76.join().expect("hixie-76 client");
    assert!(closed, "hixie-76 gets the closing frame 0xFF 0x00");
    assert_same_bytes(&recorded(&rec_76), &sent, "hixie-76 bytes at the target");

    // draft-75 has no closing handshake: the proxy closes TCP; what was in flight may be cut.
    let (sent, closed) = h75.join().expect("hixie-75 client");
    assert!(!closed, "hixie-75 sees the TCP close, not a frame");
    let got = rec_75.lock().unwrap().data.clone();
    assert!(
        sent.starts_with(&got),
        "hixie-75 target got a prefix of the sent bytes"
    );

    let status = proxy
        .wait_for_exit(Duration::from_secs(2) + SLACK)
        .expect("the proxy exits within the grace period");
    let took = signalled.elapsed();
    eprintln!("exited {status} {took:?} after SIGTERM");
    assert_eq!(status.code(), Some(0), "{}", proxy.logs_text());
    assert!(took <= Duration::from_secs(2) + SLACK, "{took:?}");
    for needle in [
        "SIGTERM: shutting down; sent Close 1001 to 3 tunnels",
        "all connections closed; exiting",
    ] {
        assert!(
            proxy.wait_for_log(SLACK, |l| l.contains(needle)).is_some(),
            "log line {needle:?}:\n{}",
            proxy.logs_text()
        );
    }
}

/// Tries a new connection during the drain: 503 `server shutting down`, or refused outright.
fn assert_turned_away(proxy: SocketAddr) {
    let Ok(mut stream) = TcpStream::connect_timeout(&proxy, SLACK) else {
        return; // refused: fine
    };
    stream.set_read_timeout(Some(SLACK)).unwrap();
    let _ = stream.write_all(&upgrade_request(&proxy.to_string(), "127.0.0.1:9", &[]));
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || text.starts_with("HTTP/1.1 503 ") && text.contains("shutting down"),
        "a client arriving during the drain: {text:?}"
    );
    assert!(!text.contains(" 101 "), "never upgraded during the drain");
    eprintln!("during the drain: {:?}", text.lines().next());
}

#[test]
fn new_clients_are_turned_away_during_the_drain_and_the_grace_period_ends_it() {
    let mut proxy = Proxy::start(&["-v", "--shutdown-grace", "2", "--close-timeout", "60"]);
    let echo = EchoServer::start();
    let mut stubborn = stubborn_client(&proxy, &echo);
    proxy.signal("TERM");
    let signalled = Instant::now();
    let (code, reason) = stubborn.expect_close();
    assert_eq!((code, reason.as_str()), (1001, "server shutting down"));
    // The client never answers: the proxy drains until the grace period is over.
    for _ in 0..3 {
        assert_turned_away(proxy.addr);
        thread::sleep(Duration::from_millis(100));
    }
    let status = proxy
        .wait_for_exit(Duration::from_secs(2) + SLACK)
        .expect("the proxy exits when the grace period ends");
    let took = signalled.elapsed();
    eprintln!("exited {status} {took:?} after SIGTERM");
    assert_eq!(status.code(), Some(0));
    assert!(
        took >= Duration::from_millis(1800),
        "the drain waits for the open tunnel up to the grace period: {took:?}"
    );
    assert!(
        proxy
            .wait_for_log(SLACK, |l| l
                .contains("grace period over with 1 connections still open"))
            .is_some(),
        "{}",
        proxy.logs_text()
    );
    stubborn
        .conn
        .expect_eof(SLACK)
        .expect("the client's connection ends with the process");
}

#[test]
fn second_signal_during_the_drain_exits_at_once_with_status_130() {
    let mut proxy = Proxy::start(&["-v", "--shutdown-grace", "30", "--close-timeout", "60"]);
    let echo = EchoServer::start();
    let mut stubborn = stubborn_client(&proxy, &echo);
    proxy.signal("TERM");
    assert_eq!(stubborn.expect_close().0, 1001);
    assert!(proxy.is_running(), "still draining");
    proxy.signal("TERM");
    let signalled = Instant::now();
    let status = proxy
        .wait_for_exit(SLACK)
        .expect("a second signal exits at once, not after the 30 s grace");
    eprintln!(
        "exited {status} {:?} after the second signal",
        signalled.elapsed()
    );
    assert_eq!(status.code(), Some(130));
    assert!(
        proxy
            .wait_for_log(SLACK, |l| l.contains("second signal: exiting at once"))
            .is_some(),
        "{}",
        proxy.logs_text()
    );
}

#[test]
fn sigint_shuts_down_gracefully_too() {
    let mut proxy = Proxy::start(&["-v", "--shutdown-grace", "2"]);
    let echo = EchoServer::start();
    let mut client = stubborn_client(&proxy, &echo);
    proxy.signal("INT");
    let signalled = Instant::now();
    let (code, reason) = client.expect_close();
    assert_eq!((code, reason.as_str()), (1001, "server shutting down"));
    client.send_close(1001, "");
    client.conn.expect_eof(SLACK).unwrap();
    let status = proxy.wait_for_exit(SLACK).expect("exits once drained");
    assert_eq!(status.code(), Some(0));
    assert!(
        signalled.elapsed() < Duration::from_secs(2),
        "drained before the grace ended: {:?}",
        signalled.elapsed()
    );
    assert!(
        proxy
            .wait_for_log(SLACK, |l| l.contains("SIGINT: shutting down"))
            .is_some(),
        "{}",
        proxy.logs_text()
    );
}

#[test]
fn sigterm_without_tunnels_exits_0_promptly() {
    let mut proxy = Proxy::start(&["-v"]);
    proxy.signal("TERM");
    let status = proxy.wait_for_exit(SLACK).expect("exits at once");
    assert_eq!(status.code(), Some(0));
    assert!(
        proxy
            .wait_for_log(SLACK, |l| l.contains("sent Close 1001 to 0 tunnels"))
            .is_some(),
        "{}",
        proxy.logs_text()
    );
}

/// A tunnel whose client never reads while its target floods it: the download pump is
/// blocked in a write to the client for good.
fn stuck_tunnel(proxy: &Proxy, flood: &TcpTarget, flooded: &AtomicUsize) -> RawHybiClient {
    let client = RawHybiClient::connect(proxy.addr, &flood.target(), 13, Some("binary"));
    // Wait until the flood has filled every buffer on the way (it stops growing).
    let mut last = 0;
    assert!(wait_until(Duration::from_secs(10), || {
        thread::sleep(Duration::from_millis(100));
        let now = flooded.load(Ordering::SeqCst);
        let settled = now > 0 && now == last;
        last = now;
        settled
    }));
    client
}

#[test]
fn sigterm_with_a_client_that_never_reads_and_a_flooding_target_exits_0_within_the_grace() {
    let grace = Duration::from_secs(2);
    let mut proxy = Proxy::start(&["-v", "--shutdown-grace", "2"]);
    let (flood, flooded) = flooding_target();
    let echo = EchoServer::start();
    let _stuck = stuck_tunnel(&proxy, &flood, &flooded);
    // A well-behaved tunnel next to it still gets its Close at once.
    let mut bystander = stubborn_client(&proxy, &echo);
    proxy.signal("TERM");
    let signalled = Instant::now();
    let (code, reason) = bystander.expect_close();
    assert_eq!((code, reason.as_str()), (1001, "server shutting down"));
    assert!(signalled.elapsed() < SLACK, "{:?}", signalled.elapsed());
    bystander.send_close(1001, "");
    let status = proxy
        .wait_for_exit(grace + SLACK)
        .expect("the proxy exits after the grace period");
    let took = signalled.elapsed();
    eprintln!("exited {status} {took:?} after SIGTERM");
    assert_eq!(status.code(), Some(0), "{}", proxy.logs_text());
    // The goal is grace + 1 s; the extra second is for a loaded machine.
    assert!(took <= grace + Duration::from_secs(2), "{took:?}");
    assert!(took >= grace - Duration::from_millis(200), "{took:?}");
    assert!(
        proxy
            .wait_for_log(SLACK, |l| l
                .contains("grace period over with 1 connections"))
            .is_some(),
        "{}",
        proxy.logs_text()
    );
}

#[test]
fn second_signal_exits_at_once_even_with_a_client_that_never_reads() {
    let mut proxy = Proxy::start(&["-v", "--shutdown-grace", "30"]);
    let (flood, flooded) = flooding_target();
    let _stuck = stuck_tunnel(&proxy, &flood, &flooded);
    proxy.signal("TERM");
    assert!(
        proxy
            .wait_for_log(SLACK, |l| l.contains("SIGTERM: shutting down"))
            .is_some(),
        "the first signal is handled: {}",
        proxy.logs_text()
    );
    proxy.signal("INT");
    let signalled = Instant::now();
    let status = proxy.wait_for_exit(SLACK).expect("exits at once");
    eprintln!(
        "exited {status} {:?} after the second signal",
        signalled.elapsed()
    );
    assert_eq!(status.code(), Some(130));
}

#[test]
fn a_client_not_reading_at_sigterm_gets_every_byte_and_the_close_when_it_reads_again() {
    let mut proxy = Proxy::start(&["-v", "--shutdown-grace", "10"]);
    let data = Rng::for_test("not reading at sigterm").bytes(2 << 20);
    let written = Arc::new(AtomicUsize::new(0));
    let source = {
        let (data, written) = (data.clone(), Arc::clone(&written));
        TcpTarget::spawn(move |mut stream| {
            if stream.write_all(&data).is_ok() {
                written.store(data.len(), Ordering::SeqCst);
            }
            // Then silence, until the proxy ends the connection.
            let _ = stream.set_read_timeout(Some(IO_TIMEOUT * 3));
            let _ = stream.read(&mut [0u8; 1]);
        })
    };
    let mut client = RawHybiClient::connect(proxy.addr, &source.target(), 13, Some("binary"));
    socket2::SockRef::from(&client.conn.stream)
        .set_recv_buffer_size(64 * 1024)
        .unwrap();
    // Not reading: the proxy's writes back up.
    thread::sleep(Duration::from_millis(500));
    proxy.signal("TERM");
    thread::sleep(Duration::from_millis(300));
    let got = read_until_close(&mut client);
    assert_eq!(got.error, None);
    assert_same_bytes(
        &got.data,
        &data,
        "the bytes the target sent before the signal",
    );
    assert_eq!(got.close, Some((1001, "server shutting down".to_string())));
    client.send_close(1001, "");
    client.conn.expect_eof(SLACK).unwrap();
    let status = proxy.wait_for_exit(SLACK).expect("exits once drained");
    assert_eq!(status.code(), Some(0));
}
