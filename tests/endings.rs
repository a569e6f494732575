//! The endings table (`src/tunnel/mod.rs`, README "Closing, without losing bytes") against
//! the real binary, with peers that misbehave like real ones: clients that keep sending and
//! do not read while the other side ends, targets that half-close, close with unread bytes
//! or reset. "The target ends while the client sends" runs 50 times per target behaviour,
//! with our raw client and with Node's `ws` package: the last bytes and a Close must arrive
//! every time, and the client must never see a reset.
//!
//! (Idle, stall and heartbeat timeouts are in `tests/limits.rs`, shutdown in
//! `tests/shutdown.rs`, the simpler close paths with well-behaved peers in `tests/close.rs`.)

mod common;

use std::io::{ErrorKind, Read, Write};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use common::misbehaving::*;
use common::*;

/// Runs per target behaviour.
const RUNS: usize = 50;
/// How long a raw client keeps sending, without reading, after the target ended.
const QUIET: Duration = Duration::from_millis(100);
/// What the target reads before it ends: the client is in the middle of sending.
const READ_FIRST: usize = 64 * 1024;

fn assert_no_panics(proxy: &Proxy) {
    assert!(
        proxy.logs().iter().all(|l| !l.contains("panicked")),
        "{}",
        proxy.logs_text()
    );
}

fn raw_client_case(ending: TargetEnding) {
    let proxy = Proxy::start(&["-v"]);
    let target = EndingTarget::start(ending, READ_FIRST);
    for n in 0..RUNS {
        target_ends_while_raw_client_sends(proxy.addr, &target, ending, n, QUIET);
    }
    assert_no_panics(&proxy);
}

#[test]
fn target_half_closes_while_a_raw_client_sends_without_reading() {
    raw_client_case(TargetEnding::HalfClose);
}

#[test]
fn target_closes_with_unread_bytes_while_a_raw_client_sends_without_reading() {
    raw_client_case(TargetEnding::CloseUnread);
}

#[test]
fn target_resets_while_a_raw_client_sends_without_reading() {
    raw_client_case(TargetEnding::Reset);
}

fn node_case(ending: TargetEnding) {
    let proxy = Proxy::start(&[]);
    let target = EndingTarget::start(ending, READ_FIRST);
    let tunnels = node_keeps_sending(proxy.addr, &target.addr(), RUNS);
    assert_eq!(tunnels.len(), RUNS);
    for (n, tunnel) in tunnels.iter().enumerate() {
        let what = format!("ws tunnel {n} ({ending:?})");
        assert_eq!(tunnel.error, None, "{what}: {tunnel:.200?}");
        assert!(
            ending.expected_codes().contains(&tunnel.code),
            "{what}: close {} {:?}",
            tunnel.code,
            tunnel.reason
        );
        assert_same_bytes(&tunnel.data, &last_words(n), &format!("{what}: last bytes"));
    }
    assert_no_panics(&proxy);
}

#[test]
fn target_half_closes_while_a_node_ws_client_sends() {
    node_case(TargetEnding::HalfClose);
}

#[test]
fn target_closes_with_unread_bytes_while_a_node_ws_client_sends() {
    node_case(TargetEnding::CloseUnread);
}

#[test]
fn target_resets_while_a_node_ws_client_sends() {
    node_case(TargetEnding::Reset);
}

#[test]
fn target_eof_after_a_client_that_sent_without_reading() {
    // The client sends exactly what the target reads, then waits without reading while the
    // target answers and closes (a FIN: it has read everything).
    let proxy = Proxy::start(&[]);
    let sent = 256 * 1024;
    let target = EndingTarget::start(TargetEnding::Close, sent);
    for n in 0..10 {
        let mut client = RawHybiClient::connect(proxy.addr, &target.addr(), 13, Some("binary"));
        for _ in 0..sent / 8192 {
            client.send_binary(&[7u8; 8192]);
        }
        assert!(wait_until(IO_TIMEOUT, || target.ended() > n));
        thread::sleep(QUIET);
        let got = read_until_close(&mut client);
        assert_eq!(got.error, None);
        assert_same_bytes(&got.data, &last_words(n), "the target's last bytes");
        let (code, reason) = got.close.unwrap();
        assert_eq!((code, reason.as_str()), (1000, "target closed"));
        client.send_close(1000, "");
        client.conn.expect_eof(IO_TIMEOUT).unwrap();
    }
}

/// What a [`chatty_target`] connection read, and how its reading ended (`None`: a FIN).
type Heard = Arc<Mutex<Vec<(Vec<u8>, Option<ErrorKind>)>>>;

/// A target that sends `chunk`s as fast as it can while it records everything it reads,
/// until it reads EOF; then it stops and closes.
fn chatty_target() -> (TcpTarget, Heard) {
    let records = Arc::new(Mutex::new(Vec::new()));
    let rec = Arc::clone(&records);
    let target = TcpTarget::spawn(move |mut stream| {
        let mut writer = stream.try_clone().unwrap();
        let talking = thread::spawn(move || {
            let chunk = vec![0x42u8; 16 * 1024];
            while writer.write_all(&chunk).is_ok() {}
        });
        let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
        let (mut data, mut buf) = (Vec::new(), vec![0u8; 64 * 1024]);
        let end = loop {
            match stream.read(&mut buf) {
                Ok(0) => break None,
                Ok(n) => data.extend_from_slice(&buf[..n]),
                Err(e) => break Some(e.kind()),
            }
        };
        rec.lock().unwrap().push((data, end));
        let _ = stream.shutdown(std::net::Shutdown::Both);
        let _ = talking.join();
    });
    (target, records)
}

#[test]
fn client_close_while_the_target_talks_and_the_client_does_not_read() {
    let proxy = Proxy::start(&[]);
    let (target, records) = chatty_target();
    let data = Rng::for_test("client close, chatty target").bytes(1 << 20);
    let mut client = RawHybiClient::connect(proxy.addr, &target.target(), 13, Some("binary"));
    for chunk in data.chunks(16 * 1024) {
        client.send_binary(chunk);
    }
    client.send_close(1000, "bye");
    thread::sleep(QUIET);
    // Now read: the target's data until the proxy's answer, then its EOF.
    let got = read_until_close(&mut client);
    assert_eq!(got.error, None);
    assert_eq!(got.close, Some((1000, "bye".to_string())), "the answer");
    client.conn.expect_eof(IO_TIMEOUT).unwrap();
    assert!(wait_until(IO_TIMEOUT, || !records
        .lock()
        .unwrap()
        .is_empty()));
    let (received, end) = records.lock().unwrap()[0].clone();
    assert_same_bytes(&received, &data, "what the target received");
    assert_eq!(end, None, "the target sees a FIN, not a reset");
}

#[test]
fn client_reset_while_the_target_talks_gives_the_target_every_byte_then_fin() {
    let proxy = Proxy::start(&[]);
    let (target, records) = chatty_target();
    let data = Rng::for_test("client reset, chatty target").bytes(1 << 20);
    let mut client = RawHybiClient::connect(proxy.addr, &target.target(), 13, Some("binary"));
    for chunk in data.chunks(16 * 1024) {
        client.send_binary(chunk);
    }
    // Give the proxy time to forward everything, then reset (unread data, SO_LINGER 0).
    thread::sleep(Duration::from_millis(300));
    socket2::SockRef::from(&client.conn.stream)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(client);
    assert!(
        wait_until(IO_TIMEOUT, || !records.lock().unwrap().is_empty()),
        "the target's connection ends"
    );
    let (received, end) = records.lock().unwrap()[0].clone();
    assert_same_bytes(&received, &data, "what the target received");
    assert_eq!(end, None, "the target sees a FIN, not a reset");
    assert!(target.wait_idle(IO_TIMEOUT));
    assert_no_panics(&proxy);
}

#[test]
fn protocol_violation_while_the_client_keeps_sending_still_delivers_the_close() {
    let proxy = Proxy::start(&[]);
    let echo = EchoServer::start();
    for round in 0..10 {
        let mut client = RawHybiClient::connect(proxy.addr, &echo.target(), 13, Some("binary"));
        client.send_unmasked_frame(true, op::BINARY, b"not masked");
        // Keep sending, without reading, while the proxy closes.
        let flooder = Flooder::start(&client.conn.stream, 8 * 1024);
        thread::sleep(QUIET);
        let got = read_until_close(&mut client);
        let write_error = flooder.stop();
        assert_eq!(
            got.error, None,
            "round {round}: reading failed before the Close"
        );
        assert_eq!(got.close.map(|c| c.0), Some(1002), "round {round}");
        assert!(
            write_error.is_none(),
            "round {round}: the proxy must read until our EOF: {write_error:?}"
        );
        client.conn.expect_eof(IO_TIMEOUT).unwrap();
    }
}
