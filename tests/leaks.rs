//! Resource hygiene: after many tunnels (every close path, refused handshakes and failed
//! connects) the proxy's open fd count and thread count return to their start values, and
//! finished threads serve the next clients instead of new ones being created (and exit when
//! there are none).

mod common;

use std::time::{Duration, Instant};

use std::io::{Read, Write};

use common::misbehaving::{TargetEnding, end_target, read_until_close};
use common::*;

/// Waits (up to 10 s) until the proxy's fd and thread counts are back at or below the baseline;
/// panics with the leftovers otherwise.
fn assert_back_to_baseline(proxy: &Proxy, fds: usize, threads: usize, what: &str) {
    let started = Instant::now();
    let ok = wait_until(Duration::from_secs(10), || {
        proxy.fd_count() <= fds && proxy.thread_count() <= threads
    });
    assert!(
        ok,
        "{what}: fds {} (baseline {fds}), threads {} (baseline {threads}) after 10 s;\nopen fds:\n{}",
        proxy.fd_count(),
        proxy.thread_count(),
        proxy.fd_listing().join("\n")
    );
    eprintln!("{what}: back to baseline after {:?}", started.elapsed());
}

/// Baseline counts once the proxy is idle and stable (they must not change for 200 ms).
fn baseline(proxy: &Proxy) -> (usize, usize) {
    let mut last = (proxy.fd_count(), proxy.thread_count());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let now = (proxy.fd_count(), proxy.thread_count());
        if now == last || Instant::now() > deadline {
            return now;
        }
        last = now;
    }
}

/// One RFC 6455 tunnel to the echo target that the client closes with a Close frame.
fn tunnel_client_close(proxy: &Proxy, echo: &TcpTarget, payload: &[u8]) {
    let mut c = RawHybiClient::connect(proxy.addr, &echo.target(), 13, Some("binary"));
    c.send_binary(payload);
    assert_eq!(recv_exactly(&mut c, payload.len()), payload);
    c.send_close(1000, "");
    assert_eq!(c.expect_close().0, 1000);
    c.conn.expect_eof(Duration::from_secs(5)).unwrap();
}

/// One tunnel to a source target that closes first (Close 1000, client answers).
fn tunnel_target_close(proxy: &Proxy, source: &TcpTarget) {
    let mut c = RawHybiClient::connect(proxy.addr, &source.target(), 13, None);
    let (data, close) = c.recv_until_close();
    assert_eq!(data, b"bye");
    assert_eq!(close.map(|c| c.0), Some(1000));
    c.send_close(1000, "");
    c.conn.expect_eof(Duration::from_secs(5)).unwrap();
}

/// One tunnel whose client vanishes (TCP close without a Close frame).
fn tunnel_client_vanishes(proxy: &Proxy, echo: &TcpTarget, payload: &[u8]) {
    let mut c = RawHybiClient::connect(proxy.addr, &echo.target(), 8, Some("base64"));
    c.send_data(payload);
    assert_eq!(recv_exactly(&mut c, payload.len()), payload);
}

/// One hixie-76 tunnel closed with the closing handshake.
fn tunnel_hixie76(proxy: &Proxy, echo: &TcpTarget, rng: &mut Rng, payload: &[u8]) {
    let req = HixieRequest::new(proxy.addr, &echo.target());
    let mut c = HixieClient::connect_76(proxy.addr, &req, &Hixie76Keys::generate(rng));
    c.send_data(payload);
    assert_eq!(recv_exactly(&mut c, payload.len()), payload);
    c.send_close();
    c.expect_close();
    c.conn.expect_eof(Duration::from_secs(5)).unwrap();
}

/// A target that reads the client's first bytes, answers `bye` and ends the way it is told.
fn ending_target(ending: TargetEnding) -> TcpTarget {
    TcpTarget::spawn(move |mut stream| {
        let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
        let mut first = [0u8; 64];
        if matches!(stream.read(&mut first), Ok(n) if n > 0) && stream.write_all(b"bye").is_ok() {
            end_target(stream, ending);
        }
    })
}

/// One tunnel whose target ends first (after the client's first message), the client
/// answering the proxy's Close.
fn tunnel_target_ends(proxy: &Proxy, target: &TcpTarget, codes: &[u16]) {
    let mut c = RawHybiClient::connect(proxy.addr, &target.target(), 13, Some("binary"));
    c.send_binary(b"hello");
    let got = read_until_close(&mut c);
    assert_eq!(got.error, None);
    assert_eq!(got.data, b"bye");
    let (code, reason) = got.close.unwrap();
    assert!(codes.contains(&code), "Close {code} {reason:?}");
    c.send_close(1000, "");
    c.conn.expect_eof(Duration::from_secs(5)).unwrap();
}

/// One tunnel closed by a protocol violation (an unmasked frame: Close 1002).
fn tunnel_violation(proxy: &Proxy, echo: &TcpTarget) {
    let mut c = RawHybiClient::connect(proxy.addr, &echo.target(), 13, Some("binary"));
    c.send_unmasked_frame(true, op::BINARY, b"not masked");
    assert_eq!(c.expect_close().0, 1002);
}

/// One tunnel whose client resets (SO_LINGER 0) after a round trip.
fn tunnel_client_resets(proxy: &Proxy, echo: &TcpTarget, payload: &[u8]) {
    let mut c = RawHybiClient::connect(proxy.addr, &echo.target(), 13, Some("binary"));
    c.send_binary(payload);
    assert_eq!(recv_exactly(&mut c, payload.len()), payload);
    c.send_binary(payload);
    socket2::SockRef::from(&c.conn.stream)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
}

#[test]
fn ten_thousand_sequential_tunnels_with_random_endings_leak_no_fds_or_threads() {
    let proxy = Proxy::start(&[]);
    let echo = EchoServer::start();
    let source = SourceServer::start(b"bye".to_vec());
    let half_closing = ending_target(TargetEnding::HalfClose);
    let resetting = ending_target(TargetEnding::Reset);
    let mut rng = Rng::for_test("leaks");
    let one = |kind: u64, i: usize, rng: &mut Rng| {
        let payload = format!("tunnel {i}").into_bytes();
        match kind {
            0 => tunnel_client_close(&proxy, &echo, &payload),
            1 => tunnel_target_close(&proxy, &source),
            2 => tunnel_client_vanishes(&proxy, &echo, &payload),
            3 => tunnel_hixie76(&proxy, &echo, rng, &payload),
            4 => tunnel_target_ends(&proxy, &half_closing, &[1000]),
            5 => tunnel_target_ends(&proxy, &resetting, &[1011]),
            6 => tunnel_violation(&proxy, &echo),
            _ => tunnel_client_resets(&proxy, &echo, &payload),
        }
    };

    // Warm up every path once so lazily created process-wide resources exist.
    for kind in 0..8 {
        one(kind, 0, &mut rng);
    }
    let targets = [&echo, &source, &half_closing, &resetting];
    assert!(targets.iter().all(|t| t.wait_idle(Duration::from_secs(10))));
    let (fds, threads) = baseline(&proxy);
    eprintln!("baseline: {fds} fds, {threads} threads");

    let started = Instant::now();
    let mut kinds = [0usize; 8];
    for i in 0..10_000 {
        let kind = rng.range(0, 7);
        kinds[kind as usize] += 1;
        one(kind, i, &mut rng);
    }
    eprintln!(
        "10,000 tunnels in {:?}; endings: {kinds:?}",
        started.elapsed()
    );
    assert_back_to_baseline(&proxy, fds, threads, "after 10,000 tunnels");
    for t in targets {
        assert!(
            t.wait_idle(Duration::from_secs(10)),
            "every target connection was closed by the proxy ({} open)",
            t.open_connections()
        );
    }
    assert!(
        proxy.logs().iter().all(|l| !l.contains("panicked")),
        "{}",
        proxy.logs_text()
    );
}

#[test]
fn refused_handshakes_and_failed_connects_leak_nothing() {
    let proxy = Proxy::start(&[]);
    let closed = closed_port();
    // Warm up.
    let mut c = RawHybiClient::connect(proxy.addr, &closed.to_string(), 13, None);
    assert_eq!(c.expect_close().0, 1011);
    let (fds, threads) = baseline(&proxy);

    for i in 0..300 {
        match i % 3 {
            0 => {
                let mut c = RawHybiClient::connect(proxy.addr, &closed.to_string(), 13, None);
                assert_eq!(c.expect_close().0, 1011);
            }
            1 => {
                // An upgrade with a bad target (port 0) is refused before any connect.
                let req = HybiRequest::new(proxy.addr, "127.0.0.1:0", 13);
                let reply = http_request(proxy.addr, &req.to_bytes()).expect("HTTP answer");
                assert_eq!(reply.head.status, 400);
            }
            _ => {
                // Half a request, then the client goes away.
                let mut conn = Conn::connect(proxy.addr);
                conn.write_all(b"GET /127.0.0.1:9 HTTP/1.1\r\nUpgr")
                    .unwrap();
            }
        }
    }
    assert_back_to_baseline(&proxy, fds, threads, "after 300 failed tunnels");
}

/// The proxy's thread ids once they have not changed for 200 ms.
fn settled_thread_ids(proxy: &Proxy) -> Vec<u32> {
    let mut last = proxy.thread_ids();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let now = proxy.thread_ids();
        if now == last || Instant::now() > deadline {
            return now;
        }
        last = now;
    }
}

#[test]
fn finished_threads_serve_the_next_tunnels_then_exit_when_idle() {
    let proxy = Proxy::start(&[]);
    let echo = EchoServer::start();
    // The main thread (the accept loop) and the signal thread.
    let idle = settled_thread_ids(&proxy);

    tunnel_client_close(&proxy, &echo, b"first");
    let with_spares = settled_thread_ids(&proxy);
    // The tunnel's two threads (connection + upload pump, download pump) wait as spares.
    assert_eq!(
        with_spares.len(),
        idle.len() + 2,
        "the first tunnel's two threads, parked"
    );
    for i in 0..20 {
        tunnel_client_close(&proxy, &echo, format!("tunnel {i}").as_bytes());
        // Give the two threads a moment to park again before the next client comes.
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        proxy.thread_ids(),
        with_spares,
        "20 more tunnels ran on the same two threads, none was created"
    );
    // With no work for 3 s, the spares exit.
    assert!(
        wait_until(Duration::from_secs(10), || proxy.thread_count()
            == idle.len()),
        "spares still there: {:?} (idle: {idle:?})",
        proxy.thread_ids()
    );
}

#[test]
fn with_no_spare_threads_a_tunnels_threads_exit_with_it() {
    let proxy = Proxy::start(&["--spare-threads", "0"]);
    let echo = EchoServer::start();
    let idle = settled_thread_ids(&proxy);
    for i in 0..3 {
        tunnel_client_close(&proxy, &echo, format!("tunnel {i}").as_bytes());
        // Well before the 3 s a spare would wait.
        assert!(
            wait_until(Duration::from_secs(1), || proxy.thread_count()
                == idle.len()),
            "threads {} after tunnel {i} (idle: {})",
            proxy.thread_count(),
            idle.len()
        );
    }
}

#[test]
fn clients_leaving_together_leave_at_most_the_spares_then_none() {
    let proxy = Proxy::start(&["--handshake-timeout", "1"]);
    let idle = settled_thread_ids(&proxy).len();

    // 100 clients that connect and say nothing: each gets a thread, and all of them reach
    // the handshake deadline together, so their threads finish at the same moment and each
    // decides whether to park. At most --spare-threads (32) may.
    for round in 0..3 {
        let silent: Vec<Conn> = (0..100).map(|_| Conn::connect(proxy.addr)).collect();
        let mut most = 0;
        wait_until(Duration::from_millis(500), || {
            most = most.max(proxy.thread_count());
            most >= 100
        });
        assert!(most >= 100, "a thread per client: at most {most}");
        // Wait for the deadline to pass (spares stay for 3 s).
        std::thread::sleep(Duration::from_millis(1500));
        drop(silent);
        assert!(
            wait_until(Duration::from_secs(10), || proxy.thread_count()
                <= idle + 32),
            "round {round}: threads {} (idle: {idle})",
            proxy.thread_count()
        );
    }
    assert!(
        wait_until(Duration::from_secs(10), || proxy.thread_count() <= idle),
        "threads {} (idle: {idle}): finished threads stayed",
        proxy.thread_count()
    );
}
