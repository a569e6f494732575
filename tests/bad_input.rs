//! The bad-input battery against the real binary: every kind of malformed, hostile or
//! abandoned client, each on its own connection, while a bystander tunnel keeps 1 MiB/s
//! flowing and must lose nothing. Each bad input gets its clear answer (HTTP status or Close
//! code) and a log line; afterwards the proxy's fd and thread counts are back at the baseline.
//! A property test then throws arbitrary bytes at the proxy over real sockets.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use proptest::prelude::{Just, any, prop_assert, prop_oneof};
use proptest::test_runner::{Config as ProptestConfig, TestRunner};

/// Generous upper bound for "promptly" on a loaded machine.
const SLACK: Duration = Duration::from_secs(3);

/// The handshake deadline the battery's proxy runs with (slowloris and abandoned clients).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);

/// Sends `request` on a new connection and reads the HTTP answer; returns the client's own
/// address (which the proxy's log lines name) and the reply.
fn ask(proxy: SocketAddr, request: &[u8]) -> (SocketAddr, HttpReply) {
    let mut conn = Conn::connect(proxy);
    let peer = conn.stream.local_addr().unwrap();
    // The proxy may answer (and stop reading) before the whole request is written.
    let _ = conn.write_all(request);
    let raw = conn
        .read_head()
        .unwrap_or_else(|e| panic!("no HTTP answer: {e}"));
    let head = HttpHead::parse(&raw).unwrap_or_else(|e| panic!("bad answer: {e}"));
    let length: usize = head
        .header("Content-Length")
        .and_then(|v| v.parse().ok())
        .expect("refusals have a Content-Length");
    let body = conn.read_vec(length).expect("the refusal's body");
    let closed = conn.expect_eof(SLACK).is_ok();
    (peer, HttpReply { head, body, closed })
}

/// Asserts a refusal `status` (one of `statuses`) whose body says `why`, that the proxy
/// closed the connection, and that the log has the refusal line for this client.
#[track_caller]
fn assert_refusal(proxy: &Proxy, name: &str, request: &[u8], statuses: &[u16], why: &str) {
    let started = Instant::now();
    let (peer, reply) = ask(proxy.addr, request);
    let status = reply.head.status;
    assert!(
        statuses.contains(&status),
        "{name}: expected one of {statuses:?}, got {:?} body {:?}",
        reply.head.status_line,
        reply.body_text()
    );
    assert_refused(&reply, status, why, name);
    assert!(reply.closed, "{name}: the proxy closes after a refusal");
    let line = proxy
        .wait_for_log(SLACK, |l| l.contains(&format!("{peer} refused: {status}")))
        .unwrap_or_else(|| panic!("{name}: no refusal line for {peer}:\n{}", proxy.logs_text()));
    eprintln!(
        "{name}: {status} in {:?}; logged {line:?}",
        started.elapsed()
    );
}

/// A WebSocket-level case: opens an RFC 6455 tunnel, runs `bad`, expects Close `code` whose
/// reason contains `why`, answers it, and finds the tunnel's log line mentioning `log_word`.
#[allow(clippy::too_many_arguments)]
fn assert_close_case(
    proxy: &Proxy,
    name: &str,
    target: &str,
    protocol: Option<&str>,
    bad: &dyn Fn(&mut RawHybiClient),
    code: u16,
    why: &str,
    log_word: &str,
) {
    let mut req = HybiRequest::new(proxy.addr, target, 13);
    req.protocols = protocol.map(str::to_string);
    let mut client = RawHybiClient::handshake(proxy.addr, &req)
        .unwrap_or_else(|e| panic!("{name}: handshake: {e}"));
    let peer = client.conn.stream.local_addr().unwrap();
    let started = Instant::now();
    bad(&mut client);
    let (got, reason) = client.expect_close();
    assert_eq!(got, code, "{name}: close code (reason {reason:?})");
    assert!(
        reason.to_ascii_lowercase().contains(why),
        "{name}: the reason should say {why:?}: {reason:?}"
    );
    let _ = client.send_raw(&encode_frame(
        true,
        op::CLOSE,
        &code.to_be_bytes(),
        Some([1, 2, 3, 4]),
    ));
    client
        .conn
        .expect_eof(SLACK)
        .unwrap_or_else(|e| panic!("{name}: TCP closed after the Close: {e}"));
    let took = started.elapsed();
    // The tunnel's log line comes when it has ended: let our side go.
    drop(client);
    let line = proxy
        .wait_for_log(SLACK, |l| {
            l.contains(&peer.to_string()) && l.contains(log_word)
        })
        .unwrap_or_else(|| panic!("{name}: no log line for {peer}:\n{}", proxy.logs_text()));
    eprintln!("{name}: Close {code} and TCP close in {took:?}; logged {line:?}");
}

/// Waits up to `timeout` for the proxy to close `stream`; `true` if it did.
fn closed_within(stream: &mut TcpStream, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return true,
        }
    }
}

/// A client trickling one byte of a never-ending head every 100 ms; returns when the proxy
/// dropped it (measured from connect), or `None` after 15 s.
fn slowloris(proxy: SocketAddr) -> Option<Duration> {
    let mut conn = TcpStream::connect(proxy).unwrap();
    let started = Instant::now();
    let head = b"GET /127.0.0.1:9 HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ";
    conn.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut byte = [0u8; 1];
    for i in 0.. {
        if started.elapsed() > Duration::from_secs(15) {
            return None;
        }
        if conn
            .write_all(&[head.get(i).copied().unwrap_or(b'z')])
            .is_err()
        {
            return Some(started.elapsed());
        }
        match conn.peek(&mut byte) {
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            _ => return Some(started.elapsed()),
        }
    }
    unreachable!()
}

/// A hixie-76 request head with the given key headers (and key3 appended).
fn hixie76_request(proxy: SocketAddr, target: &str, keys: &[(&str, &str)]) -> Vec<u8> {
    let mut head = format!(
        "GET /{target} HTTP/1.1\r\nHost: {proxy}\r\nUpgrade: WebSocket\r\nConnection: Upgrade\r\n\
         Origin: {DEFAULT_ORIGIN}\r\n"
    );
    for (name, value) in keys {
        head += &format!("{name}: {value}\r\n");
    }
    let mut bytes = (head + "\r\n").into_bytes();
    bytes.extend_from_slice(b"12345678");
    bytes
}

/// Random bytes without any line feed (so no head ever ends).
fn garbage_without_lf(rng: &mut Rng, n: usize) -> Vec<u8> {
    rng.bytes(n)
        .into_iter()
        .map(|b| if b == b'\n' { b'x' } else { b })
        .collect()
}

#[test]
fn bad_input_battery_gets_clear_answers_while_a_bystander_loses_nothing() {
    let proxy = Proxy::start(&[
        "-v",
        "--handshake-timeout",
        &HANDSHAKE_TIMEOUT.as_secs_f64().to_string(),
    ]);
    let bystander_echo = EchoServer::start();
    let victim = EchoServer::start();
    // Targets named by refused requests: must never see a connection.
    let never = EchoServer::start();
    let host = proxy.addr.to_string();
    let mut rng = Rng::for_test("bad input battery");

    // Warm up every path once (lazily created process-wide state), then take the baseline.
    {
        let mut c = RawHybiClient::connect(proxy.addr, &victim.target(), 13, Some("binary"));
        c.send_binary(b"warm");
        assert_eq!(recv_exactly(&mut c, 4), b"warm");
        c.send_close(1000, "");
        assert_eq!(c.expect_close().0, 1000);
        let reply = http_request(proxy.addr, &upgrade_request(&host, "127.0.0.1:0", &[]))
            .expect("an answer");
        assert_eq!(reply.head.status, 400);
        assert!(victim.wait_idle(SLACK));
    }
    let baseline = proxy.settled_counts();
    eprintln!("baseline: {baseline:?} (fds, threads)");

    let bystander = Bystander::start(proxy.addr, &bystander_echo, 1 << 20);
    let addr = proxy.addr;
    let slow = thread::spawn(move || slowloris(addr));

    // --- refused before any upgrade (HTTP status + one-line reason + log line) ---------------
    let never_target = never.target();
    assert_refusal(
        &proxy,
        "no Upgrade",
        format!("GET /{never_target} HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes(),
        &[400],
        "websocket",
    );
    let mut garbage = rng.bytes(2000);
    garbage.extend_from_slice(b"\r\n\r\n");
    assert_refusal(&proxy, "garbage bytes", &garbage, &[400], "malformed");
    let mut hello = vec![0x16, 0x03, 0x01, 0x02, 0x00];
    hello.extend_from_slice(&rng.bytes(500));
    hello.extend_from_slice(b"\r\n\r\n");
    assert_refusal(
        &proxy,
        "TLS hello to a plain port",
        &hello,
        &[400],
        "malformed",
    );
    assert_refusal(
        &proxy,
        "20 KiB of garbage without a line end",
        &garbage_without_lf(&mut rng, 20 * 1024),
        &[431],
        "larger than",
    );
    let long_line = format!(
        "GET /{} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n\r\n",
        "a".repeat(100_000)
    );
    assert_refusal(
        &proxy,
        "100 KB request line",
        long_line.as_bytes(),
        &[431],
        "larger than",
    );
    let headers: Vec<String> = (0..1000).map(|i| format!("X-H{i}: v")).collect();
    let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
    assert_refusal(
        &proxy,
        "1000 header fields",
        &upgrade_request(&host, &never_target, &headers),
        &[431, 400],
        "header",
    );
    let no_key = String::from_utf8(upgrade_request(&host, &never_target, &[]))
        .unwrap()
        .replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", "");
    assert_refusal(
        &proxy,
        "RFC 6455 without Sec-WebSocket-Key",
        no_key.as_bytes(),
        &[400],
        "Sec-WebSocket-Key",
    );
    assert_refusal(
        &proxy,
        "hixie-76 without Key2",
        &hixie76_request(
            proxy.addr,
            &never_target,
            &[("Sec-WebSocket-Key1", "4 @1  46546xW%0l 1 5")],
        ),
        &[400],
        "Sec-WebSocket-Key2",
    );
    for (name, key1) in [
        ("hixie-76 key without spaces", "155712099"),
        ("hixie-76 key not a multiple", "4 @1  46546xW%0l 1 6"),
        ("hixie-76 key overflowing", "9 99999999999999999999999999 9"),
        ("hixie-76 key without digits", "a b c"),
    ] {
        assert_refusal(
            &proxy,
            name,
            &hixie76_request(
                proxy.addr,
                &never_target,
                &[
                    ("Sec-WebSocket-Key1", key1),
                    ("Sec-WebSocket-Key2", "12998 5 Y3 1  .P00"),
                ],
            ),
            &[400],
            "Sec-WebSocket-Key1",
        );
    }
    for port in ["0", "65536", "99999999999", "http", "-1", ""] {
        assert_refusal(
            &proxy,
            &format!("bad port {port:?}"),
            &upgrade_request(&host, &format!("127.0.0.1:{port}"), &[]),
            &[400],
            "port",
        );
    }
    assert_refusal(
        &proxy,
        "unsupported version",
        &String::from_utf8(upgrade_request(&host, &never_target, &[]))
            .unwrap()
            .replace("Version: 13", "Version: 9")
            .into_bytes(),
        &[426],
        "version",
    );
    assert_refusal(
        &proxy,
        "POST upgrade",
        &String::from_utf8(upgrade_request(&host, &never_target, &[]))
            .unwrap()
            .replacen("GET", "POST", 1)
            .into_bytes(),
        &[400],
        "GET",
    );

    // --- after the upgrade (Close code + reason + log line) ------------------------------------
    let closed = closed_port();
    assert_close_case(
        &proxy,
        "unreachable target",
        &closed.to_string(),
        Some("binary"),
        &|_| {},
        1011,
        "connect",
        "connect",
    );
    assert_close_case(
        &proxy,
        "invalid Base64",
        &victim.target(),
        Some("base64"),
        &|c| c.send_text("@@@ not base64 @@@"),
        1007,
        "base64",
        "broke the protocol",
    );
    assert_close_case(
        &proxy,
        "unmasked client frame",
        &victim.target(),
        Some("binary"),
        &|c| c.send_unmasked_frame(true, op::BINARY, b"unmasked"),
        1002,
        "mask",
        "broke the protocol",
    );
    assert_close_case(
        &proxy,
        "frame declaring 2 GiB",
        &victim.target(),
        Some("binary"),
        &|c| {
            let mut bytes = frame_header(true, op::BINARY, 2 << 30, Some([9, 8, 7, 6]));
            bytes.extend_from_slice(&[0u8; 1024]);
            let _ = c.send_raw(&bytes);
        },
        1009,
        "limit",
        "broke the protocol",
    );

    // --- 200 connections abandoned mid-handshake -------------------------------------------
    let partial = format!("GET /{never_target} HTTP/1.1\r\nHost: {host}\r\nUpgrade: webs");
    let started = Instant::now();
    let mut silent = Vec::new();
    for i in 0..200 {
        let mut s = TcpStream::connect(proxy.addr).unwrap();
        let _ = s.write_all(&partial.as_bytes()[..(i % partial.len()).max(1)]);
        if i % 2 == 0 {
            drop(s); // gone at once
        } else {
            silent.push(s); // stays, silent, until the proxy drops it
        }
    }
    // Others are served meanwhile.
    let mut fresh = RawHybiClient::connect(proxy.addr, &victim.target(), 8, Some("base64"));
    fresh.send_data(b"served during the abandoned handshakes");
    assert_eq!(
        recv_exactly(&mut fresh, 38),
        b"served during the abandoned handshakes"
    );
    let mut dropped = 0;
    for s in &mut silent {
        let left = (HANDSHAKE_TIMEOUT + SLACK).saturating_sub(started.elapsed());
        if closed_within(s, left.max(Duration::from_millis(1))) {
            dropped += 1;
        }
    }
    eprintln!(
        "abandoned handshakes: {dropped}/100 silent ones dropped after {:?}",
        started.elapsed()
    );
    assert_eq!(
        dropped, 100,
        "every silent client is dropped by the deadline"
    );
    drop(silent);
    fresh.send_close(1000, "");
    assert_eq!(fresh.expect_close().0, 1000);

    // --- the slowloris client ----------------------------------------------------------------
    let slow = slow
        .join()
        .unwrap()
        .expect("the slowloris client was dropped");
    eprintln!("slowloris dropped after {slow:?}");
    assert!(
        slow >= HANDSHAKE_TIMEOUT - Duration::from_millis(50),
        "{slow:?}"
    );
    assert!(slow <= HANDSHAKE_TIMEOUT + SLACK, "{slow:?}");

    // --- the bystander lost nothing and never stalled ----------------------------------------
    let report = bystander.stop();
    eprintln!(
        "bystander: {} bytes verified, worst round trip {:?}",
        report.bytes, report.worst_round_trip
    );
    assert!(report.bytes >= 1 << 20, "{report:?}");
    assert!(
        report.worst_round_trip < SLACK,
        "the bystander stalled: {report:?}"
    );
    assert_eq!(never.accepted(), 0, "no refused request reached its target");
    assert!(
        proxy.logs().iter().all(|l| !l.contains("panicked")),
        "{}",
        proxy.logs_text()
    );
    proxy.assert_counts_back_to(baseline, Duration::from_secs(10));
}

/// What a fuzz case starts with.
#[derive(Clone, Copy, Debug)]
enum Prefix {
    /// Nothing: the bytes are the whole request.
    Nothing,
    /// A request line and Host, then the bytes as more of the head.
    RequestLine,
    /// A complete RFC 6455 handshake to an echo target, then the bytes as frames.
    Upgraded,
    /// A complete hixie-76 handshake, then the bytes as hixie frames.
    Hixie76,
}

#[test]
fn arbitrary_bytes_never_crash_hang_or_leak() {
    let proxy = Proxy::start(&["--handshake-timeout", "1", "--close-timeout", "1"]);
    let echo = EchoServer::start();
    let bystander_echo = EchoServer::start();
    let host = proxy.addr.to_string();
    let (proxy_addr, target) = (proxy.addr, echo.target());
    // Warm up, then the baseline.
    let mut c = RawHybiClient::connect(proxy.addr, &target, 13, Some("binary"));
    c.send_binary(b"warm");
    assert_eq!(recv_exactly(&mut c, 4), b"warm");
    drop(c);
    assert!(echo.wait_idle(SLACK));
    let baseline = proxy.settled_counts();
    let bystander = Bystander::start(proxy.addr, &bystander_echo, 1 << 20);

    let strategy = (
        prop_oneof![
            Just(Prefix::Nothing),
            Just(Prefix::RequestLine),
            Just(Prefix::Upgraded),
            Just(Prefix::Hixie76),
        ],
        proptest::collection::vec(any::<u8>(), 0..4096),
    );
    let config = ProptestConfig {
        cases: 64,
        failure_persistence: None,
        max_shrink_iters: 64,
        ..ProptestConfig::default()
    };
    let mut runner = TestRunner::new(config);
    let result = runner.run(&strategy, |(prefix, bytes)| {
        let mut request = match prefix {
            Prefix::Nothing => Vec::new(),
            Prefix::RequestLine => {
                format!("GET /{target} HTTP/1.1\r\nHost: {host}\r\n").into_bytes()
            }
            Prefix::Upgraded => upgrade_request(&host, &target, &[]),
            Prefix::Hixie76 => {
                let req = HixieRequest::new(proxy_addr, &target);
                let keys = Hixie76Keys::generate(&mut Rng::for_test("fuzz"));
                let mut head = req.head(true, Some(&keys)).into_bytes();
                head.extend_from_slice(&keys.key3);
                head
            }
        };
        request.extend_from_slice(&bytes);
        let mut stream = TcpStream::connect(proxy_addr).expect("connect");
        let _ = stream.write_all(&request);
        let _ = stream.shutdown(Shutdown::Write);
        // Whatever it answers, the proxy must end the connection by itself.
        prop_assert!(
            closed_within(&mut stream, Duration::from_secs(8)),
            "the proxy did not close the connection ({prefix:?}, {} bytes)",
            bytes.len()
        );
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let report = bystander.stop();
    eprintln!("bystander during the fuzzing: {report:?}");
    assert!(report.worst_round_trip < SLACK, "{report:?}");
    // Still alive and serving.
    let mut c = RawHybiClient::connect(proxy.addr, &echo.target(), 13, Some("binary"));
    c.send_binary(b"alive");
    assert_eq!(recv_exactly(&mut c, 5), b"alive");
    c.send_close(1000, "");
    assert_eq!(c.expect_close().0, 1000);
    assert!(
        proxy.logs().iter().all(|l| !l.contains("panicked")),
        "{}",
        proxy.logs_text()
    );
    proxy.assert_counts_back_to(baseline, Duration::from_secs(10));
}
