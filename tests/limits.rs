//! Limits and timeouts against the real binary, with small values: `--max-connections` (503,
//! and the accept loop keeps serving), the handshake deadline (half requests, slowloris,
//! withheld hixie-76 key3), `--connect-timeout`, `--idle-timeout`, `--heartbeat`, the stall
//! limit (`--stall-timeout`) with a client or a target that stopped reading, the frame and
//! message caps, and the open-files warning.
//!
//! Timing assertions have tight lower bounds only where the behaviour requires them (nothing
//! may be closed early) and generous upper bounds (the machine may be loaded).

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use common::misbehaving::{Flooder, flooding_target, read_until_close, silent_target};
use common::*;
use tungstenite::Message;

/// Generous upper bound for "promptly" on a loaded machine.
const SLACK: Duration = Duration::from_secs(3);

/// Checks that nothing (no byte, no EOF) arrives on `conn` for `quiet`.
fn nothing_arrives(conn: &mut Conn, quiet: Duration) -> Result<(), String> {
    if !conn.buffered().is_empty() {
        return Err(format!("{} bytes already buffered", conn.buffered().len()));
    }
    conn.stream.set_read_timeout(Some(quiet)).unwrap();
    let mut byte = [0u8; 1];
    let result = match conn.stream.peek(&mut byte) {
        Ok(0) => Err("the proxy closed the connection".to_string()),
        Ok(_) => Err(format!("byte {:#04x} arrived", byte[0])),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => Ok(()),
        Err(e) => Err(format!("read error: {e}")),
    };
    conn.stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    result
}

/// Waits up to `timeout` for the proxy to close `stream` (EOF or reset), discarding any bytes;
/// returns when it closed, or `None`.
fn wait_closed(stream: &mut TcpStream, timeout: Duration) -> Option<Instant> {
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut buf) {
            Ok(0) => return Some(Instant::now()),
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return Some(Instant::now()),
        }
    }
}

/// One echo round trip through `client`.
#[track_caller]
fn assert_echo(client: &mut dyn DataClient, payload: &[u8]) {
    client.send_data(payload);
    let got = recv_exactly(client, payload.len());
    assert_same_bytes(&got, payload, "echo");
}

// --- --max-connections -------------------------------------------------------------------------

#[test]
fn max_connections_refuses_with_503_and_serves_again_when_a_slot_frees() {
    let proxy = Proxy::start(&["--max-connections", "3"]);
    let echo = EchoServer::start();
    let mut tunnels: Vec<RawHybiClient> = (0..3)
        .map(|i| {
            let mut c = RawHybiClient::connect(proxy.addr, &echo.target(), 13, Some("binary"));
            assert_echo(&mut c, format!("tunnel {i}").as_bytes());
            c
        })
        .collect();
    // Every client beyond the limit gets a 503 at once, and the loop keeps accepting.
    for i in 0..10 {
        let request = upgrade_request(&proxy.addr.to_string(), &echo.target(), &[]);
        let reply = http_request(proxy.addr, &request).expect("an HTTP answer");
        assert_refused(
            &reply,
            503,
            "too many connections",
            &format!("client {}", i + 4),
        );
    }
    assert!(
        proxy
            .wait_for_log(Duration::from_secs(5), |l| l
                .contains("3 connections open already; refusing with 503"))
            .is_some(),
        "the 503 is logged:\n{}",
        proxy.logs_text()
    );
    assert_eq!(echo.accepted(), 3, "refused clients never reach a target");
    // The open tunnels are unaffected.
    for (i, t) in tunnels.iter_mut().enumerate() {
        assert_echo(t, format!("still open {i}").as_bytes());
    }

    // Close one tunnel: its slot frees and a new client is served.
    let mut closing = tunnels.pop().unwrap();
    closing.send_close(1000, "");
    assert_eq!(closing.expect_close().0, 1000);
    closing.conn.expect_eof(SLACK).unwrap();
    let started = Instant::now();
    let mut fresh = loop {
        let req = HybiRequest::new(proxy.addr, &echo.target(), 13);
        match RawHybiClient::handshake(proxy.addr, &req) {
            Ok(client) => break client,
            Err(e) if started.elapsed() < SLACK => {
                assert!(e.contains("503"), "only 503 while the slot frees: {e}");
                thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("no slot freed {SLACK:?} after a tunnel closed: {e}"),
        }
    };
    eprintln!("slot free again {:?} after the close", started.elapsed());
    assert_echo(&mut fresh, b"served again");
    // And the limit still holds with the new tunnel.
    let request = upgrade_request(&proxy.addr.to_string(), &echo.target(), &[]);
    let reply = http_request(proxy.addr, &request).expect("an HTTP answer");
    assert_refused(&reply, 503, "too many connections", "over the limit again");
}

#[test]
fn silent_connections_holding_every_slot_are_dropped_by_the_handshake_timeout() {
    let proxy = Proxy::start(&["--max-connections", "2", "--handshake-timeout", "0.5"]);
    let echo = EchoServer::start();
    let mut silent: Vec<TcpStream> = (0..2)
        .map(|_| TcpStream::connect(proxy.addr).unwrap())
        .collect();
    let started = Instant::now();
    let request = upgrade_request(&proxy.addr.to_string(), &echo.target(), &[]);
    let reply = http_request(proxy.addr, &request).expect("an HTTP answer");
    assert_refused(&reply, 503, "too many connections", "both slots held");
    for s in &mut silent {
        assert!(
            wait_closed(s, SLACK).is_some(),
            "a silent client is dropped by the handshake deadline"
        );
    }
    eprintln!("silent clients dropped after {:?}", started.elapsed());
    let ok = wait_until(SLACK, || {
        RawHybiClient::handshake(
            proxy.addr,
            &HybiRequest::new(proxy.addr, &echo.target(), 13),
        )
        .map(|mut c| assert_echo(&mut c, b"after the silent ones"))
        .is_ok()
    });
    assert!(ok, "the slots were freed");
}

// --- handshake deadline ------------------------------------------------------------------------

#[test]
fn half_request_is_dropped_after_the_handshake_timeout() {
    let proxy = Proxy::start(&["--handshake-timeout", "0.5"]);
    let mut conn = TcpStream::connect(proxy.addr).unwrap();
    let started = Instant::now();
    conn.write_all(b"GET /127.0.0.1:9 HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgr")
        .unwrap();
    let closed =
        wait_closed(&mut conn, Duration::from_secs(8)).expect("the proxy drops a half request");
    let after = closed - started;
    eprintln!("half request dropped after {after:?}");
    assert!(
        after >= Duration::from_millis(450),
        "dropped too early: {after:?}"
    );
    assert!(after <= Duration::from_millis(500) + SLACK, "{after:?}");
}

/// Trickles a never-ending request head one byte per 100 ms; returns how long until the proxy
/// dropped it and how many bytes went out.
fn slowloris(proxy: SocketAddr, give_up: Duration) -> (Option<Duration>, usize) {
    let mut conn = TcpStream::connect(proxy).unwrap();
    let started = Instant::now();
    let request = b"GET /127.0.0.1:9 HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ";
    let mut sent = 0;
    conn.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut byte = [0u8; 1];
    while started.elapsed() < give_up {
        let next = request.get(sent).copied().unwrap_or(b'a');
        if conn.write_all(&[next]).is_err() {
            return (Some(started.elapsed()), sent);
        }
        sent += 1;
        match conn.peek(&mut byte) {
            Ok(_) => return (Some(started.elapsed()), sent),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return (Some(started.elapsed()), sent),
        }
    }
    (None, sent)
}

#[test]
fn slowloris_is_dropped_at_the_deadline_while_a_normal_tunnel_works() {
    let proxy = Proxy::start(&["--handshake-timeout", "0.5"]);
    let echo = EchoServer::start();
    let addr = proxy.addr;
    let slow = thread::spawn(move || slowloris(addr, Duration::from_secs(10)));
    // A normal client connecting and working during the trickle.
    let mut client = RawHybiClient::connect(proxy.addr, &echo.target(), 13, Some("binary"));
    for i in 0..10 {
        assert_echo(&mut client, format!("normal {i}").as_bytes());
        thread::sleep(Duration::from_millis(50));
    }
    let (dropped, sent) = slow.join().unwrap();
    let dropped = dropped.expect("the slowloris client is dropped (not after each byte)");
    eprintln!("slowloris dropped after {dropped:?} and {sent} bytes");
    assert!(
        dropped >= Duration::from_millis(450),
        "too early: {dropped:?}"
    );
    // Each byte must not extend the deadline: without a deadline on the whole head, the
    // trickle would run for the full 10 s.
    assert!(dropped <= Duration::from_millis(500) + SLACK, "{dropped:?}");
    assert!(sent >= 3, "the client did trickle ({sent} bytes)");
    assert_echo(&mut client, b"after the slowloris");
}

#[test]
fn hixie76_client_withholding_key3_is_dropped_by_the_handshake_deadline() {
    let proxy = Proxy::start(&["--handshake-timeout", "0.5"]);
    let echo = EchoServer::start();
    let req = HixieRequest::new(proxy.addr, &echo.target());
    let keys = Hixie76Keys::generate(&mut Rng::for_test("withheld key3"));
    let mut conn = TcpStream::connect(proxy.addr).unwrap();
    let started = Instant::now();
    // The head and 3 of the 8 key3 bytes; the rest never comes.
    conn.write_all(req.head(true, Some(&keys)).as_bytes())
        .unwrap();
    conn.write_all(&keys.key3[..3]).unwrap();
    let closed = wait_closed(&mut conn, Duration::from_secs(8)).expect("dropped");
    let after = closed - started;
    eprintln!("withheld key3 dropped after {after:?}");
    assert!(after >= Duration::from_millis(450), "{after:?}");
    assert!(after <= Duration::from_millis(500) + SLACK, "{after:?}");
    assert_eq!(echo.accepted(), 0, "no target for an incomplete handshake");
}

#[test]
fn handshake_timeout_does_not_limit_an_established_tunnel() {
    let proxy = Proxy::start(&["--handshake-timeout", "0.3"]);
    let echo = EchoServer::start();
    let mut client = RawHybiClient::connect(proxy.addr, &echo.target(), 13, Some("binary"));
    nothing_arrives(&mut client.conn, Duration::from_millis(1200))
        .expect("a quiet tunnel outlives the handshake deadline");
    assert_echo(&mut client, b"still open");
}

// --- connect timeout ---------------------------------------------------------------------------

/// A loopback address whose SYNs go unanswered: a listener that never accepts, its accept
/// queue filled until a connect times out (the kernel then drops further SYNs).
struct BlackHole {
    addr: SocketAddr,
    _listener: TcpListener,
    _queued: Vec<TcpStream>,
}

fn black_hole() -> Option<BlackHole> {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let mut queued = Vec::new();
    for _ in 0..2000 {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Ok(s) => queued.push(s),
            Err(e) if e.kind() == ErrorKind::TimedOut || e.kind() == ErrorKind::WouldBlock => {
                return Some(BlackHole {
                    addr,
                    _listener: listener,
                    _queued: queued,
                });
            }
            Err(e) => {
                eprintln!("cannot make a black hole: {e}");
                return None;
            }
        }
    }
    eprintln!("cannot make a black hole: 2000 connects never filled the accept queue");
    None
}

#[test]
fn connect_timeout_gives_up_on_an_unanswering_target_with_1011() {
    let Some(hole) = black_hole() else {
        eprintln!("SKIPPED: no way to make a loopback address that drops SYNs here");
        return;
    };
    let proxy = Proxy::start(&["--connect-timeout", "0.5"]);
    let mut client = RawHybiClient::connect(proxy.addr, &hole.addr.to_string(), 13, None);
    let upgraded = Instant::now();
    let (code, reason) = client.expect_close();
    let after = upgraded.elapsed();
    eprintln!("connect gave up after {after:?}: {code} {reason:?}");
    assert_eq!(code, 1011, "{reason:?}");
    assert!(
        reason.contains("connect") && reason.contains(&hole.addr.port().to_string()),
        "the reason names the failed connect: {reason:?}"
    );
    assert!(after >= Duration::from_millis(400), "{after:?}");
    assert!(after <= Duration::from_millis(500) + SLACK, "{after:?}");
}

// --- --idle-timeout ----------------------------------------------------------------------------

#[test]
fn idle_tunnel_is_closed_with_1001_and_an_idle_reason() {
    let proxy = Proxy::start(&["--idle-timeout", "0.5", "-v"]);
    let echo = EchoServer::start();
    let mut client = RawHybiClient::connect(proxy.addr, &echo.target(), 13, Some("binary"));
    // Measured from before the last data, which the proxy sees later: a tight lower bound.
    let quiet_since = Instant::now();
    assert_echo(&mut client, b"last data");
    let (code, reason) = client.expect_close();
    let after = quiet_since.elapsed();
    eprintln!("idle tunnel closed after {after:?}: {code} {reason:?}");
    assert_eq!(code, 1001, "{reason:?}");
    assert!(reason.contains("idle"), "{reason:?}");
    assert!(
        after >= Duration::from_millis(450),
        "closed early: {after:?}"
    );
    assert!(after <= Duration::from_millis(500) + SLACK, "{after:?}");
    client.send_close(1001, "");
    client.conn.expect_eof(SLACK).unwrap();
    assert!(echo.wait_idle(SLACK), "the target connection is closed too");
    assert!(
        proxy
            .wait_for_log(SLACK, |l| l.contains("close ")
                && l.contains("idle timeout"))
            .is_some(),
        "{}",
        proxy.logs_text()
    );
}

#[test]
fn idle_hixie76_tunnel_gets_the_closing_frame() {
    let proxy = Proxy::start(&["--idle-timeout", "0.5"]);
    let echo = EchoServer::start();
    let req = HixieRequest::new(proxy.addr, &echo.target());
    let keys = Hixie76Keys::generate(&mut Rng::for_test("idle hixie"));
    let mut client = HixieClient::connect_76(proxy.addr, &req, &keys);
    // Measured from before the last data, which the proxy sees later: a tight lower bound.
    let quiet_since = Instant::now();
    assert_echo(&mut client, b"last data");
    client.expect_close();
    let after = quiet_since.elapsed();
    assert!(
        after >= Duration::from_millis(450),
        "closed early: {after:?}"
    );
    assert!(after <= Duration::from_millis(500) + SLACK, "{after:?}");
    client.send_close();
    client.conn.expect_eof(SLACK).unwrap();
}

#[test]
fn echo_traffic_keeps_an_idle_timeout_tunnel_open() {
    let proxy = Proxy::start(&["--idle-timeout", "0.5"]);
    let echo = EchoServer::start();
    let mut client = RawHybiClient::connect(proxy.addr, &echo.target(), 13, Some("binary"));
    // An echo every 100 ms for 1.5 s: three idle timeouts' worth, never idle for one.
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(1500) {
        assert_echo(&mut client, b"tick");
        thread::sleep(Duration::from_millis(100));
    }
    let (code, reason) = client.expect_close();
    assert_eq!((code, reason.contains("idle")), (1001, true), "{reason:?}");
}

#[test]
fn upload_only_traffic_keeps_an_idle_timeout_tunnel_open() {
    let proxy = Proxy::start(&["--idle-timeout", "0.5"]);
    let sink = SinkServer::start();
    let mut up = RawHybiClient::connect(proxy.addr, &sink.addr().to_string(), 13, Some("binary"));
    // The client writes every 100 ms for 1.5 s; the target never answers.
    let started = Instant::now();
    let mut sent = 0;
    while started.elapsed() < Duration::from_millis(1500) {
        up.send_binary(b"up");
        sent += 2;
        nothing_arrives(&mut up.conn, Duration::from_millis(100))
            .expect("no Close while the client sends");
    }
    let stopped = Instant::now();
    assert_eq!(sink.wait_for_bytes(0, sent, SLACK), sent);
    // Once it stops, the idle clock runs out.
    let (code, reason) = up.expect_close();
    assert_eq!((code, reason.contains("idle")), (1001, true), "{reason:?}");
    assert!(stopped.elapsed() >= Duration::from_millis(350));
}

#[test]
fn download_only_traffic_keeps_an_idle_timeout_tunnel_open() {
    let proxy = Proxy::start(&["--idle-timeout", "0.5"]);
    // The target writes every 100 ms for 1.5 s; the client never sends.
    let talker = TcpTarget::spawn(|mut stream| {
        for _ in 0..15 {
            if stream.write_all(b"down").is_err() {
                return;
            }
            thread::sleep(Duration::from_millis(100));
        }
        let mut rest = Vec::new();
        let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
        let _ = stream.read_to_end(&mut rest);
    });
    let mut down = RawHybiClient::connect(proxy.addr, &talker.target(), 13, Some("binary"));
    let got = recv_exactly(&mut down, 15 * 4);
    let last = Instant::now();
    assert_eq!(
        got,
        b"down".repeat(15),
        "every piece, and no Close in between"
    );
    let (code, _) = down.expect_close();
    assert_eq!(code, 1001, "idle once the target stops");
    assert!(last.elapsed() >= Duration::from_millis(350));
}

// --- --heartbeat -------------------------------------------------------------------------------

#[test]
fn quiet_client_gets_heartbeat_pings_and_stays_open_when_it_answers() {
    let proxy = Proxy::start(&["--heartbeat", "0.3"]);
    let echo = EchoServer::start();
    // tungstenite answers every Ping with a Pong by itself.
    let mut client = TungClient::connect(proxy.addr, &echo.target(), &["binary"]);
    client
        .ws
        .get_mut()
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let started = Instant::now();
    let mut pings = Vec::new();
    while started.elapsed() < Duration::from_millis(1500) {
        match client.ws.read() {
            Ok(Message::Ping(_)) => {
                pings.push(started.elapsed());
                client.ws.flush().expect("send the Pong");
            }
            Ok(other) => panic!("only Pings expected on a quiet tunnel, got {other:?}"),
            Err(tungstenite::Error::Io(e))
                if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => panic!("tunnel failed after {:?}: {e}", started.elapsed()),
        }
    }
    eprintln!("pings at {pings:?}");
    assert!(pings.len() >= 2, "pings every 0.3 s when quiet: {pings:?}");
    assert!(
        pings[0] >= Duration::from_millis(250),
        "no Ping before the client was quiet for an interval: {pings:?}"
    );
    client
        .ws
        .get_mut()
        .set_read_timeout(Some(IO_TIMEOUT))
        .unwrap();
    assert_echo(&mut client, b"answered every ping");
}

#[test]
fn client_that_never_answers_heartbeat_pings_is_closed_with_1001() {
    let proxy = Proxy::start(&["--heartbeat", "0.3", "-v"]);
    let echo = EchoServer::start();
    let started = Instant::now();
    let mut client = RawHybiClient::connect(proxy.addr, &echo.target(), 13, Some("binary"));
    let mut first_ping = None;
    let (code, reason) = loop {
        match client.recv_message() {
            Ok(WsMsg::Ping(_)) => {
                first_ping.get_or_insert_with(Instant::now);
            }
            Ok(WsMsg::Close(Some(close))) => break close,
            other => panic!("expected Pings then a Close, got {other:?}"),
        }
    };
    let closed = Instant::now();
    let first_ping = first_ping.expect("a Ping before the Close");
    eprintln!(
        "ping at {:?}, close at {:?}: {code} {reason:?}",
        first_ping - started,
        closed - started
    );
    assert_eq!(code, 1001, "{reason:?}");
    assert!(reason.contains("ping"), "{reason:?}");
    // Two intervals (0.6 s) after the unanswered Ping, not before.
    assert!(
        closed - first_ping >= Duration::from_millis(500),
        "closed {:?} after the Ping",
        closed - first_ping
    );
    assert!(closed - started <= Duration::from_millis(900) + SLACK);
    client.send_close(1001, "");
    client.conn.expect_eof(SLACK).unwrap();
    assert!(echo.wait_idle(SLACK));
}

#[test]
fn hixie_tunnels_are_not_closed_by_the_heartbeat() {
    // hixie has no Ping: the heartbeat does not apply to it.
    let proxy = Proxy::start(&["--heartbeat", "0.3"]);
    let echo = EchoServer::start();
    let req = HixieRequest::new(proxy.addr, &echo.target());
    let keys = Hixie76Keys::generate(&mut Rng::for_test("heartbeat hixie"));
    let mut client = HixieClient::connect_76(proxy.addr, &req, &keys);
    nothing_arrives(&mut client.conn, Duration::from_millis(1200))
        .expect("nothing sent to a quiet hixie client");
    assert_echo(&mut client, b"still open");
}

// --- peers that stop reading: the stall limit, and the timers with them ----------------------

/// Waits until a new tunnel to `echo` gets through (the one slot was freed), retrying while
/// the proxy answers 503; returns how long after `since` that was.
#[track_caller]
fn slot_frees(proxy: SocketAddr, echo: &TcpTarget, since: Instant, within: Duration) -> Duration {
    loop {
        let req = HybiRequest::new(proxy, &echo.target(), 13);
        match RawHybiClient::handshake(proxy, &req) {
            Ok(mut client) => {
                let took = since.elapsed();
                assert_echo(&mut client, b"a new client gets in");
                return took;
            }
            Err(e) if since.elapsed() < within => {
                assert!(e.contains("503"), "only 503 while the slot is held: {e}");
                thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("the slot was not freed within {within:?}: {e}"),
        }
    }
}

/// A client that never reads, on a tunnel to a target that floods it: the download pump's
/// write stalls. With `args`, the tunnel must end (and its slot free) after `at_least`. (The
/// flooding target ignores the FIN it then gets: it is cut off after `--close-timeout`.)
fn client_stops_reading_case(args: &[&str], at_least: Duration, log_needle: &str) {
    let mut all = vec!["-v", "--max-connections", "1", "--close-timeout", "1"];
    all.extend_from_slice(args);
    let proxy = Proxy::start(&all);
    let (flood, flooded) = flooding_target();
    let echo = EchoServer::start();
    let started = Instant::now();
    let stuck = RawHybiClient::connect(proxy.addr, &flood.target(), 13, Some("binary"));
    assert!(wait_until(SLACK, || flooded
        .load(std::sync::atomic::Ordering::SeqCst)
        > 0));
    let took = slot_frees(proxy.addr, &echo, started, at_least + SLACK * 2);
    eprintln!("slot free {took:?} after the non-reading client connected");
    assert!(took >= at_least, "ended early: {took:?}");
    assert!(
        proxy
            .wait_for_log(SLACK, |l| l.contains(log_needle))
            .is_some(),
        "{}",
        proxy.logs_text()
    );
    drop(stuck);
}

#[test]
fn stall_limit_ends_a_tunnel_whose_client_stopped_reading_and_frees_its_slot() {
    client_stops_reading_case(
        &["--stall-timeout", "1"],
        Duration::from_millis(900),
        "client stopped reading: no write progress for 1 s",
    );
}

#[test]
fn idle_timeout_ends_a_tunnel_whose_client_stopped_reading() {
    client_stops_reading_case(
        &["--idle-timeout", "1"],
        Duration::from_millis(900),
        "close ",
    );
}

#[test]
fn heartbeat_ends_a_client_that_neither_answers_nor_reads() {
    // The Ping cannot reach a client that does not read (the download pump's frame is
    // stuck); after two intervals the proxy gives up, and after --close-timeout it stops
    // waiting for an answer to its Close: 0.3 + 0.6 + 1 s.
    client_stops_reading_case(
        &["--heartbeat", "0.3"],
        Duration::from_millis(1700),
        "no answer to a heartbeat ping",
    );
}

/// A client that keeps sending to a target that never reads: the upload pump's write
/// stalls. The client (which reads) gets the Close 1011 with the reason, and the slot frees.
fn target_stops_reading_case(args: &[&str], at_least: Duration) {
    let mut all = vec!["-v", "--max-connections", "1"];
    all.extend_from_slice(args);
    let proxy = Proxy::start(&all);
    let silent = silent_target();
    let echo = EchoServer::start();
    let started = Instant::now();
    let mut client = RawHybiClient::connect(proxy.addr, &silent.target(), 13, Some("binary"));
    let flooder = Flooder::start(&client.conn.stream, 16 * 1024);
    let got = read_until_close(&mut client);
    let closed = started.elapsed();
    assert_eq!(got.error, None);
    let (code, reason) = got.close.expect("a Close");
    eprintln!("Close {code} {reason:?} after {closed:?}");
    assert_eq!(code, 1011, "{reason:?}");
    assert!(reason.contains("target stopped reading"), "{reason:?}");
    assert!(closed >= at_least, "ended early: {closed:?}");
    assert!(
        flooder.stop().is_none(),
        "the proxy read (and dropped) what we sent"
    );
    client.send_close(1000, "");
    client.conn.expect_eof(SLACK).unwrap();
    slot_frees(proxy.addr, &echo, Instant::now(), SLACK);
}

#[test]
fn stall_limit_ends_a_tunnel_whose_target_stopped_reading() {
    target_stops_reading_case(&["--stall-timeout", "1"], Duration::from_millis(900));
}

#[test]
fn idle_timeout_ends_a_tunnel_whose_target_stopped_reading() {
    target_stops_reading_case(&["--idle-timeout", "1"], Duration::from_millis(900));
}

#[test]
fn heartbeat_does_not_keep_a_tunnel_whose_target_stopped_reading() {
    target_stops_reading_case(
        &["--heartbeat", "0.3", "--stall-timeout", "1"],
        Duration::from_millis(900),
    );
}

// --- frame and message caps --------------------------------------------------------------------

#[test]
fn frame_of_exactly_max_frame_size_passes_and_one_byte_more_closes_with_1009() {
    let proxy = Proxy::start(&["--max-frame-size", "1000"]);
    let sink = SinkServer::start();
    let mut client =
        RawHybiClient::connect(proxy.addr, &sink.addr().to_string(), 13, Some("binary"));
    let ok = Rng::for_test("1000").bytes(1000);
    client.send_binary(&ok);
    assert_eq!(sink.wait_for_bytes(0, 1000, SLACK), 1000);
    let _ = client.try_send_frame(true, op::BINARY, &[1u8; 1001]);
    let (code, reason) = client.expect_close();
    assert_eq!(code, 1009, "{reason:?}");
    let rec = sink.wait_for_end(0, SLACK).expect("target closed");
    assert_same_bytes(&rec.data, &ok, "only the frame within the cap");
}

#[test]
fn message_of_exactly_max_message_size_passes_and_one_byte_more_closes_with_1009() {
    let proxy = Proxy::start(&["--max-message-size", "3000", "--max-frame-size", "1000"]);
    let sink = SinkServer::start();
    let mut client =
        RawHybiClient::connect(proxy.addr, &sink.addr().to_string(), 13, Some("binary"));
    let ok = Rng::for_test("3000").bytes(3000);
    client.send_frame(false, op::BINARY, &ok[..1000]);
    client.send_frame(false, op::CONTINUATION, &ok[1000..2000]);
    client.send_frame(true, op::CONTINUATION, &ok[2000..]);
    assert_eq!(sink.wait_for_bytes(0, 3000, SLACK), 3000);
    let _ = client
        .try_send_frame(false, op::BINARY, &[2u8; 1000])
        .and_then(|()| client.try_send_frame(false, op::CONTINUATION, &[2u8; 1000]))
        .and_then(|()| client.try_send_frame(false, op::CONTINUATION, &[2u8; 1000]))
        .and_then(|()| client.try_send_frame(true, op::CONTINUATION, &[2u8; 1]));
    let (code, reason) = client.expect_close();
    assert_eq!(code, 1009, "{reason:?}");
    let rec = sink.wait_for_end(0, SLACK).expect("target closed");
    // The good message whole; of the oversized one at most its first 3000 bytes (data is
    // relayed as it is decoded, before the message is known to be too large).
    assert!(rec.data.starts_with(&ok), "the good message arrived whole");
    assert!(rec.data.len() <= 6000, "{} bytes", rec.data.len());
}

// --- open-files limit --------------------------------------------------------------------------

/// The hard open-files limit of this process (the proxy inherits it), if readable.
fn hard_nofile_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let hard = line.split_whitespace().nth(4)?;
    Some(hard.parse().unwrap_or(u64::MAX))
}

#[test]
fn open_files_limit_too_low_for_max_connections_is_logged() {
    match hard_nofile_limit() {
        Some(hard) if hard < 2_000_064 => {}
        other => {
            eprintln!("SKIPPED: the hard open-files limit ({other:?}) holds a million tunnels");
            return;
        }
    }
    let proxy = Proxy::start(&["--max-connections", "1000000"]);
    let line = proxy
        .wait_for_log(SLACK, |l| l.contains("open-files limit"))
        .unwrap_or_else(|| panic!("a warning about the limit:\n{}", proxy.logs_text()));
    eprintln!("logged: {line}");
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains("--max-connections 1000000"), "{line}");
    // It still serves.
    let echo = EchoServer::start();
    let mut client = RawHybiClient::connect(proxy.addr, &echo.target(), 13, Some("binary"));
    assert_echo(&mut client, b"served");

    let small = Proxy::start(&["--max-connections", "100"]);
    thread::sleep(Duration::from_millis(200));
    assert!(
        !small.logs_text().contains("WARN"),
        "no warning when the limit suffices:\n{}",
        small.logs_text()
    );
}

/// A client keeps one message open for ever with continuation frames (issue 12, item 9).
/// Empty ones add nothing to the message's size, so only the frame count can end it.
#[test]
fn endless_continuation_frames_close_with_1009_while_a_bystander_loses_nothing() {
    let echo = EchoServer::start();
    let proxy = Proxy::start(&["-v"]);
    let bystander = Bystander::start(proxy.addr, &echo, 1 << 20);
    for (name, protocol, opcode, payload) in [
        ("binary, empty frames", None, 0x2, &b""[..]),
        ("Base64 text, empty frames", Some("base64"), 0x1, b""),
        ("Base64 text, whitespace frames", Some("base64"), 0x1, b"\n"),
        ("binary, one-byte frames", Some("binary"), 0x2, b"x"),
    ] {
        let mut client = RawHybiClient::connect(proxy.addr, &echo.target(), 13, protocol);
        let mut stream = client.conn.stream.try_clone().unwrap();
        let mask = [1, 2, 3, 4];
        let batch: Vec<u8> = (0..4096)
            .flat_map(|_| encode_frame(false, 0x0, payload, Some(mask)))
            .collect();
        let first = encode_frame(false, opcode, payload, Some(mask));
        let writer = thread::spawn(move || {
            let mut frames = 1u64;
            if stream.write_all(&first).is_err() {
                return frames;
            }
            // Far more frames than the limit, unless the proxy stops us first.
            for _ in 0..64 {
                if stream.write_all(&batch).is_err() {
                    break;
                }
                frames += 4096;
            }
            frames
        });
        let (echoed, close) = client.recv_until_close();
        let (code, reason) = close.unwrap_or_else(|| panic!("{name}: no Close"));
        assert_eq!(code, 1009, "{name}: {reason}");
        assert_eq!(reason, "message of more than 65536 frames", "{name}");
        assert!(echoed.len() <= 65536, "{name}: {} bytes", echoed.len());
        let sent = writer.join().unwrap();
        eprintln!("{name}: closed with 1009 after the client wrote {sent} frames");
        assert!(bystander.verified() > 0);
    }
    let report = bystander.stop();
    eprintln!(
        "bystander: {} bytes verified, worst round trip {:?}",
        report.bytes, report.worst_round_trip
    );
    assert!(
        proxy
            .wait_for_log(Duration::from_secs(5), |l| l
                .contains("more than 65536 frames"))
            .is_some(),
        "{}",
        proxy.logs_text()
    );
}
