//! How tunnels end: target EOF, client Close, either side vanishing or resetting, connect
//! failures, and the protocol errors that close a tunnel with a specific code.

mod common;

use std::io::Read;
use std::thread;
use std::time::{Duration, Instant};

use common::*;

/// "Promptly": the other side must notice within this bound.
const PROMPT: Duration = Duration::from_secs(3);

/// Answers the proxy's Close and expects it to close the TCP connection.
fn finish_close(client: &mut RawHybiClient, code: u16) {
    client.send_close(code, "");
    client
        .conn
        .expect_eof(Duration::from_secs(5))
        .expect("proxy closes TCP after the closing handshake");
}

// --- target ends --------------------------------------------------------------------------

fn target_eof_case(protocol: Option<&str>, name: &str) {
    let proxy = Proxy::start(&[]);
    let data = Rng::for_test(name).bytes((1 << 20) + 123);
    let source = SourceServer::start(data.clone());
    let mut client = RawHybiClient::connect(proxy.addr, &source.target(), 13, protocol);
    let (got, close) = client.recv_until_close();
    assert_same_bytes(&got, &data, "bytes delivered before the Close");
    let (code, reason) = close.expect("Close with a status code");
    assert_eq!(code, 1000, "target EOF → Close 1000 (reason {reason:?})");
    assert!(!reason.is_empty(), "the Close should carry a reason");
    finish_close(&mut client, 1000);
    assert!(
        source.wait_idle(PROMPT),
        "target socket closed by the proxy"
    );
}

#[test]
fn target_eof_delivers_all_bytes_then_close_1000_with_reason() {
    target_eof_case(Some("binary"), "target_eof binary");
}

#[test]
fn target_eof_in_websockets_proxy_mode_delivers_all_bytes_then_close_1000() {
    target_eof_case(Some("websockets-proxy"), "target_eof websockets-proxy");
}

#[test]
fn target_eof_then_silent_client_still_gets_tcp_closed_after_a_bounded_wait() {
    let proxy = Proxy::start(&[]);
    let source = SourceServer::start(b"short reply".to_vec());
    let mut client = RawHybiClient::connect(proxy.addr, &source.target(), 13, Some("binary"));
    let (got, close) = client.recv_until_close();
    assert_eq!(got, b"short reply");
    assert_eq!(close.map(|c| c.0), Some(1000));
    // Do not answer the Close: the proxy must give up waiting and close on its own.
    let started = Instant::now();
    client
        .conn
        .expect_eof(Duration::from_secs(15))
        .expect("proxy closes TCP after a bounded wait for the client's Close");
    eprintln!("closed {:?} after its Close", started.elapsed());
}

#[test]
fn target_closing_immediately_gives_client_close_1000() {
    let proxy = Proxy::start(&[]);
    let target = TcpTarget::spawn(drop);
    let mut client = RawHybiClient::connect(proxy.addr, &target.target(), 13, Some("binary"));
    let (got, close) = client.recv_until_close();
    assert!(got.is_empty());
    assert_eq!(close.map(|c| c.0), Some(1000));
    finish_close(&mut client, 1000);
}

#[test]
fn hixie76_target_eof_delivers_all_bytes_then_closing_frame() {
    let proxy = Proxy::start(&[]);
    let data = Rng::for_test("hixie76 target eof").bytes(300_007);
    let source = SourceServer::start(data.clone());
    let mut rng = Rng::for_test("keys");
    let req = HixieRequest::new(proxy.addr, &source.target());
    let mut client = HixieClient::connect_76(proxy.addr, &req, &Hixie76Keys::generate(&mut rng));
    let (got, closed) = client.recv_until_close();
    assert_same_bytes(&got, &data, "bytes before the closing frame");
    assert!(closed, "hixie-76 target EOF → 0xFF 0x00 closing frame");
    client.send_close();
    client.conn.expect_eof(Duration::from_secs(5)).unwrap();
}

#[test]
fn hixie75_target_eof_delivers_all_bytes_then_tcp_close() {
    let proxy = Proxy::start(&[]);
    let data = Rng::for_test("hixie75 target eof").bytes(200_003);
    let source = SourceServer::start(data.clone());
    let mut client =
        HixieClient::connect_75(proxy.addr, &HixieRequest::new(proxy.addr, &source.target()));
    let (got, closed) = client.recv_until_close();
    assert_same_bytes(&got, &data, "bytes before the TCP close");
    if closed {
        // A closing frame is tolerated (draft-75 has none); TCP must still close.
        client.conn.expect_eof(Duration::from_secs(5)).unwrap();
    }
}

#[test]
fn target_reset_gives_client_close_or_eof_promptly() {
    let proxy = Proxy::start(&[]);
    // Reads one byte, waits for more to arrive, then closes with unread input → RST.
    let target = TcpTarget::spawn(|mut stream| {
        let mut one = [0u8; 1];
        let _ = stream.read(&mut one);
        thread::sleep(Duration::from_millis(200));
    });
    let mut client = RawHybiClient::connect(proxy.addr, &target.target(), 13, Some("binary"));
    client.send_binary(&[7u8; 64 * 1024]);
    let started = Instant::now();
    let close = loop {
        match client.recv_message() {
            Ok(WsMsg::Close(c)) => break Some(c),
            Ok(WsMsg::Ping(_) | WsMsg::Pong(_)) => {}
            Ok(other) => panic!("unexpected message {other:?}"),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break None,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break None,
            Err(e) => panic!("no Close or EOF after the target reset: {e}"),
        }
    };
    let elapsed = started.elapsed();
    eprintln!("target reset → {close:?} (None = TCP closed) after {elapsed:?}");
    assert!(
        elapsed < PROMPT + Duration::from_millis(200),
        "took {elapsed:?}"
    );
    if let Some(Some((code, _))) = close {
        assert_ne!(code, 1000, "a reset target is an error, not a normal close");
    }
}

// --- client ends --------------------------------------------------------------------------

fn client_close_case(protocol: Option<&str>, name: &str) {
    let proxy = Proxy::start(&[]);
    let sink = SinkServer::start();
    let data = Rng::for_test(name).bytes(2 << 20);
    let mut client = RawHybiClient::connect(proxy.addr, &sink.addr().to_string(), 13, protocol);
    for chunk in data.chunks(64 * 1024) {
        client.send_data(chunk);
    }
    client.send_close(1000, "bye");
    let (code, _) = client.expect_close();
    assert_eq!(code, 1000, "the proxy answers the client's Close");
    client
        .conn
        .expect_eof(Duration::from_secs(5))
        .expect("TCP closed after the closing handshake");
    let rec = sink
        .wait_for_end(0, Duration::from_secs(5))
        .expect("target sees EOF after the client's Close");
    assert_same_bytes(&rec.data, &data, "bytes the target received");
    assert_eq!(rec.error, None, "target must see a clean EOF, not a reset");
}

#[test]
fn client_close_is_answered_and_target_receives_all_bytes_then_eof() {
    client_close_case(Some("binary"), "client_close binary");
}

#[test]
fn client_close_in_base64_mode_flushes_all_bytes_to_target_then_eof() {
    client_close_case(Some("base64"), "client_close base64");
}

#[test]
fn hixie76_closing_handshake_is_answered_and_target_receives_all_bytes() {
    let proxy = Proxy::start(&[]);
    let sink = SinkServer::start();
    let data = Rng::for_test("hixie76 close").bytes(500_000);
    let mut rng = Rng::for_test("keys");
    let req = HixieRequest::new(proxy.addr, &sink.addr().to_string());
    let mut client = HixieClient::connect_76(proxy.addr, &req, &Hixie76Keys::generate(&mut rng));
    for chunk in data.chunks(30_000) {
        client.send_data(chunk);
    }
    client.send_close();
    client.expect_close();
    client.conn.expect_eof(Duration::from_secs(5)).unwrap();
    let rec = sink
        .wait_for_end(0, Duration::from_secs(5))
        .expect("target EOF after the hixie close");
    assert_same_bytes(&rec.data, &data, "bytes the target received");
}

#[test]
fn client_vanishing_without_close_gives_target_eof_promptly() {
    let proxy = Proxy::start(&[]);
    let sink = SinkServer::start();
    let mut client =
        RawHybiClient::connect(proxy.addr, &sink.addr().to_string(), 13, Some("binary"));
    client.send_binary(&[1u8; 100_000]);
    assert_eq!(sink.wait_for_bytes(0, 100_000, PROMPT), 100_000);
    let dropped = Instant::now();
    drop(client);
    let rec = sink
        .wait_for_end(0, PROMPT)
        .expect("target EOF after the client vanished");
    eprintln!(
        "target EOF {:?} after the client vanished",
        dropped.elapsed()
    );
    assert_eq!(rec.data.len(), 100_000);
}

#[test]
fn client_tcp_half_close_without_close_frame_gives_target_eof_promptly() {
    let proxy = Proxy::start(&[]);
    let sink = SinkServer::start();
    let mut client = RawHybiClient::connect(proxy.addr, &sink.addr().to_string(), 13, None);
    client.send_binary(b"half");
    client
        .conn
        .stream
        .shutdown(std::net::Shutdown::Write)
        .unwrap();
    let rec = sink
        .wait_for_end(0, PROMPT)
        .expect("target EOF after client FIN");
    assert_eq!(rec.data, b"half");
}

#[test]
fn hixie75_client_vanishing_gives_target_eof_promptly() {
    let proxy = Proxy::start(&[]);
    let sink = SinkServer::start();
    let mut client = HixieClient::connect_75(
        proxy.addr,
        &HixieRequest::new(proxy.addr, &sink.addr().to_string()),
    );
    client.send_data(b"bye 75");
    assert_eq!(sink.wait_for_bytes(0, 6, PROMPT), 6);
    drop(client);
    let rec = sink
        .wait_for_end(0, PROMPT)
        .expect("target EOF after the client vanished");
    assert_eq!(rec.data, b"bye 75");
}

// --- connect failures ----------------------------------------------------------------------

#[test]
fn connect_failure_sends_close_1011_with_connect_reason() {
    let proxy = Proxy::start(&[]);
    let port = closed_port();
    let mut client = RawHybiClient::connect(proxy.addr, &port.to_string(), 13, Some("binary"));
    let (code, reason) = client.expect_close();
    assert_eq!(code, 1011, "connect failure → 1011 (reason {reason:?})");
    assert!(
        reason.to_ascii_lowercase().contains("connect"),
        "reason {reason:?} should say the connect failed"
    );
    assert!(
        reason.contains(&port.port().to_string()),
        "reason {reason:?} should name the target"
    );
    finish_close(&mut client, 1000);
}

#[test]
fn hixie76_connect_failure_sends_closing_frame() {
    let proxy = Proxy::start(&[]);
    let port = closed_port();
    let mut rng = Rng::for_test("keys");
    let req = HixieRequest::new(proxy.addr, &port.to_string());
    let mut client = HixieClient::connect_76(proxy.addr, &req, &Hixie76Keys::generate(&mut rng));
    let (data, closed) = client.recv_until_close();
    assert!(data.is_empty());
    assert!(closed, "hixie clients get 0xFF 0x00 when the connect fails");
}

// --- protocol errors -----------------------------------------------------------------------

/// What the target may have received by the time the tunnel closes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Target {
    /// Exactly the good bytes: nothing of the bad frame.
    GoodBytesOnly,
    /// The good bytes first; a prefix of the bad message may have been streamed after them
    /// (the proxy relays data as it decodes it, before it can know the message is bad).
    GoodBytesThenMaybeMore,
}

/// Connects to a sink, sends 16 good bytes, then calls `bad`; expects Close `code` promptly,
/// the TCP close after answering it, and the target to get the good bytes then EOF.
fn protocol_error_case(protocol: Option<&str>, bad: &dyn Fn(&mut RawHybiClient), code: u16) {
    protocol_error_case_with(&[], protocol, bad, code, Target::GoodBytesOnly);
}

/// [`protocol_error_case`] with extra proxy flags and a choice of target expectations.
fn protocol_error_case_with(
    args: &[&str],
    protocol: Option<&str>,
    bad: &dyn Fn(&mut RawHybiClient),
    code: u16,
    expect: Target,
) {
    let proxy = Proxy::start(args);
    let sink = SinkServer::start();
    let mut client = RawHybiClient::connect(proxy.addr, &sink.addr().to_string(), 13, protocol);
    client.send_data(b"good bytes first");
    assert_eq!(sink.wait_for_bytes(0, 16, PROMPT), 16);
    let started = Instant::now();
    bad(&mut client);
    let (got, reason) = client.expect_close();
    assert_eq!(got, code, "close code (reason {reason:?})");
    assert!(
        started.elapsed() < PROMPT,
        "the error must be detected promptly"
    );
    let _ = client.send_raw(&encode_frame(
        true,
        op::CLOSE,
        &code.to_be_bytes(),
        Some([1, 2, 3, 4]),
    ));
    client
        .conn
        .expect_eof(Duration::from_secs(5))
        .expect("TCP closed after a protocol error");
    let rec = sink
        .wait_for_end(0, PROMPT)
        .expect("target closed after the error");
    let ok = match expect {
        Target::GoodBytesOnly => rec.data == b"good bytes first",
        Target::GoodBytesThenMaybeMore => rec.data.starts_with(b"good bytes first"),
    };
    assert!(
        ok,
        "target got {} bytes starting {:02x?}",
        rec.data.len(),
        &rec.data[..rec.data.len().min(16)]
    );
}

#[test]
fn invalid_base64_closes_with_1007() {
    protocol_error_case(
        Some("websockets-proxy"),
        &|c| c.send_text("@@@@ this is not base64 @@@@"),
        1007,
    );
}

#[test]
fn invalid_base64_text_without_subprotocol_closes_with_1007() {
    protocol_error_case_with(
        &[],
        None,
        &|c| c.send_text("Zm9v!"),
        1007,
        Target::GoodBytesThenMaybeMore,
    );
}

#[test]
fn invalid_utf8_text_frame_closes_with_1007() {
    protocol_error_case(
        Some("base64"),
        &|c| c.send_frame(true, op::TEXT, &[0x41, 0x41, 0xC3, 0x28]),
        1007,
    );
}

#[test]
fn unmasked_client_frame_closes_with_1002() {
    protocol_error_case(
        Some("binary"),
        &|c| c.send_unmasked_frame(true, op::BINARY, b"unmasked"),
        1002,
    );
}

#[test]
fn reserved_opcode_closes_with_1002() {
    protocol_error_case(Some("binary"), &|c| c.send_frame(true, 0x3, b"???"), 1002);
}

#[test]
fn rsv_bits_without_extension_close_with_1002() {
    protocol_error_case(
        Some("binary"),
        &|c| {
            let mut frame = encode_frame(true, op::BINARY, b"rsv1", Some([1, 2, 3, 4]));
            frame[0] |= 0x40;
            c.send_raw(&frame).unwrap();
        },
        1002,
    );
}

#[test]
fn control_frame_over_125_bytes_closes_with_1002() {
    protocol_error_case(Some("binary"), &|c| c.send_ping(&[1; 126]), 1002);
}

#[test]
fn fragmented_control_frame_closes_with_1002() {
    protocol_error_case(
        Some("binary"),
        &|c| c.send_frame(false, op::PING, b"x"),
        1002,
    );
}

#[test]
fn continuation_without_a_started_message_closes_with_1002() {
    protocol_error_case(
        Some("binary"),
        &|c| c.send_frame(true, op::CONTINUATION, b"x"),
        1002,
    );
}

#[test]
fn new_message_inside_a_fragmented_message_closes_with_1002() {
    protocol_error_case_with(
        &[],
        Some("binary"),
        &|c| {
            c.send_frame(false, op::BINARY, b"a");
            c.send_frame(true, op::BINARY, b"b");
        },
        1002,
        Target::GoodBytesThenMaybeMore,
    );
}

#[test]
fn close_frame_with_forbidden_code_1005_is_answered_with_1002() {
    protocol_error_case(
        Some("binary"),
        &|c| c.send_frame(true, op::CLOSE, &1005u16.to_be_bytes()),
        1002,
    );
}

#[test]
fn close_frame_with_one_byte_payload_is_answered_with_1002() {
    protocol_error_case(
        Some("binary"),
        &|c| c.send_frame(true, op::CLOSE, &[3]),
        1002,
    );
}

#[test]
fn frame_declaring_2_gib_closes_with_1009() {
    protocol_error_case(
        Some("binary"),
        &|c| {
            let mut bytes = frame_header(true, op::BINARY, 2 << 30, Some([9, 8, 7, 6]));
            bytes.extend_from_slice(&[0u8; 1024]);
            c.send_raw(&bytes).unwrap();
        },
        1009,
    );
}

#[test]
fn frame_over_max_frame_size_closes_with_1009() {
    protocol_error_case_with(
        &["--max-frame-size", "1000"],
        Some("binary"),
        &|c| c.send_binary(&[5u8; 2000]),
        1009,
        Target::GoodBytesOnly,
    );
}

#[test]
fn fragmented_message_over_max_message_size_closes_with_1009() {
    protocol_error_case_with(
        &["--max-message-size", "65536"],
        Some("websockets-proxy"),
        &|c| {
            let text = b64(&[6u8; 90_000]);
            let (a, rest) = text.as_bytes().split_at(40_000);
            let (b, rest) = rest.split_at(40_000);
            // The proxy closes as soon as the limit is passed: later writes may fail.
            let _ = c
                .try_send_frame(false, op::TEXT, a)
                .and_then(|()| c.try_send_frame(false, op::CONTINUATION, b))
                .and_then(|()| c.try_send_frame(true, op::CONTINUATION, rest));
        },
        1009,
        Target::GoodBytesThenMaybeMore,
    );
}

#[test]
fn hixie76_unterminated_frame_over_the_cap_is_closed() {
    let proxy = Proxy::start(&["--max-frame-size", "100000"]);
    let sink = SinkServer::start();
    let mut rng = Rng::for_test("keys");
    let req = HixieRequest::new(proxy.addr, &sink.addr().to_string());
    let mut client = HixieClient::connect_76(proxy.addr, &req, &Hixie76Keys::generate(&mut rng));
    let mut frame = vec![0x00];
    frame.extend_from_slice(&[b'A'; 200_000]);
    let _ = client.conn.write_all(&frame);
    let started = Instant::now();
    let (data, _closed) = client.recv_until_close();
    assert!(data.is_empty());
    assert!(
        started.elapsed() < PROMPT,
        "an unterminated frame past the cap must end the tunnel promptly"
    );
    // Decoded bytes of the unterminated frame may have been streamed to the target already.
    let rec = sink.wait_for_end(0, PROMPT).expect("target closed");
    assert!(
        rec.data.len() <= 150_000,
        "at most the decoded frame reached the target"
    );
}

#[test]
fn hixie76_invalid_base64_gets_closing_frame() {
    let proxy = Proxy::start(&[]);
    let sink = SinkServer::start();
    let mut rng = Rng::for_test("keys");
    let req = HixieRequest::new(proxy.addr, &sink.addr().to_string());
    let mut client = HixieClient::connect_76(proxy.addr, &req, &Hixie76Keys::generate(&mut rng));
    client.send_data(b"fine");
    client.send_text("%%% not base64 %%%");
    let (data, closed) = client.recv_until_close();
    assert!(data.is_empty());
    assert!(closed, "invalid Base64 → 0xFF 0x00");
    let rec = sink.wait_for_end(0, PROMPT).expect("target closed");
    assert_eq!(rec.data, b"fine");
}
