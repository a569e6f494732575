//! Log output: `-v` prints one line when a tunnel opens (peer, generation, target) and one when
//! it closes (bytes each way); `-d` adds the handshake transcript and per-frame lines.

mod common;

use std::time::Duration;

use common::*;

/// Every decimal number appearing in `line`.
fn numbers(line: &str) -> Vec<u64> {
    line.split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .filter_map(|s| s.parse().ok())
        .collect()
}

/// Lines mentioning `peer` (as `ip:port`) and the word `word`.
fn lines_with(proxy: &Proxy, peer: &str, word: &str) -> Vec<String> {
    proxy
        .logs()
        .into_iter()
        .filter(|l| l.contains(peer) && l.to_ascii_lowercase().contains(word))
        .collect()
}

#[test]
fn verbose_logs_one_open_and_one_close_line_per_tunnel() {
    let proxy = Proxy::start(&["-v"]);
    let http = HttpServer::start();
    let target = http.addr().to_string();
    let mut client = RawHybiClient::connect(proxy.addr, &target, 13, Some("binary"));
    let peer = client.conn.stream.local_addr().unwrap().to_string();
    let request = b"GET / HTTP/1.0\r\n\r\n";
    client.send_binary(request);
    let (body, close) = client.recv_until_close();
    assert_eq!(body, HTTP_RESPONSE);
    assert_eq!(close.map(|c| c.0), Some(1000));
    client.send_close(1000, "");
    client.conn.expect_eof(Duration::from_secs(5)).unwrap();

    let close_line = proxy
        .wait_for_log(Duration::from_secs(5), |l| {
            l.contains(&peer) && l.to_ascii_lowercase().contains("close")
        })
        .unwrap_or_else(|| panic!("no close line for {peer}; logs:\n{}", proxy.logs_text()));
    let opens = lines_with(&proxy, &peer, "open");
    assert_eq!(
        opens.len(),
        1,
        "one open line for {peer}; logs:\n{}",
        proxy.logs_text()
    );
    let open = &opens[0];
    assert!(
        open.contains(&target),
        "open line names the target: {open:?}"
    );
    assert!(
        open.contains("6455"),
        "open line names the generation: {open:?}"
    );
    assert!(
        open.contains("binary"),
        "open line names the subprotocol: {open:?}"
    );
    assert_eq!(
        lines_with(&proxy, &peer, "close").len(),
        1,
        "one close line for {peer}; logs:\n{}",
        proxy.logs_text()
    );
    let n = numbers(&close_line);
    assert!(
        n.contains(&(request.len() as u64)) && n.contains(&(HTTP_RESPONSE.len() as u64)),
        "close line should report {} bytes up and {} down: {close_line:?}",
        request.len(),
        HTTP_RESPONSE.len()
    );
    // -v is not -d: no per-frame lines.
    assert!(
        proxy.logs().len() < 10,
        "-v should be concise; logs:\n{}",
        proxy.logs_text()
    );
}

#[test]
fn verbose_open_line_names_hixie_generation() {
    let proxy = Proxy::start(&["-v"]);
    let echo = EchoServer::start();
    let mut rng = Rng::for_test("log hixie");
    let req = HixieRequest::new(proxy.addr, &echo.target());
    let mut client = HixieClient::connect_76(proxy.addr, &req, &Hixie76Keys::generate(&mut rng));
    let peer = client.conn.stream.local_addr().unwrap().to_string();
    client.send_data(b"hi");
    assert_eq!(recv_exactly(&mut client, 2), b"hi");
    let open = proxy
        .wait_for_log(Duration::from_secs(5), |l| {
            l.contains(&peer) && l.to_ascii_lowercase().contains("open")
        })
        .unwrap_or_else(|| panic!("no open line; logs:\n{}", proxy.logs_text()));
    assert!(open.contains("76"), "open line names hixie-76: {open:?}");
    assert!(
        open.contains(&echo.target()),
        "open line names the target: {open:?}"
    );
}

#[test]
fn connect_failure_is_logged_with_the_target() {
    let proxy = Proxy::start(&["-v"]);
    let port = closed_port();
    let mut client = RawHybiClient::connect(proxy.addr, &port.to_string(), 13, None);
    let _ = client.expect_close();
    let line = proxy
        .wait_for_log(Duration::from_secs(5), |l| l.contains(&port.to_string()))
        .unwrap_or_else(|| panic!("connect failure not logged; logs:\n{}", proxy.logs_text()));
    assert!(
        line.to_ascii_lowercase().contains("connect") || line.contains("refused"),
        "{line:?}"
    );
}

#[test]
fn debug_logs_handshake_transcript_and_frame_lines() {
    let proxy = Proxy::start(&["-d"]);
    let echo = EchoServer::start();
    let target = echo.target();
    let mut req = HybiRequest::new(proxy.addr, &target, 13);
    req.protocols = Some("binary".into());
    let mut client = RawHybiClient::handshake(proxy.addr, &req).expect("handshake");
    client.send_binary(b"hello-debug");
    assert_eq!(recv_exactly(&mut client, 11), b"hello-debug");
    client.send_close(1000, "");
    client.expect_close();
    client.conn.expect_eof(Duration::from_secs(5)).unwrap();

    let request_line = format!("GET /{target} HTTP/1.1");
    proxy
        .wait_for_log(Duration::from_secs(5), |l| l.contains(&request_line))
        .unwrap_or_else(|| panic!("no request line in -d; logs:\n{}", proxy.logs_text()));
    let logs = proxy.logs();
    assert!(
        logs.iter().any(|l| l.contains(&req.key)),
        "-d shows the Sec-WebSocket-Key header; logs:\n{}",
        proxy.logs_text()
    );
    assert!(
        logs.iter().any(|l| l.contains(&accept_key(&req.key))),
        "-d shows the accept computation; logs:\n{}",
        proxy.logs_text()
    );
    let frame_lines: Vec<&String> = logs
        .iter()
        .filter(|l| l.contains("binary") && numbers(l).contains(&11) && !l.contains(&target))
        .collect();
    assert!(
        !frame_lines.is_empty(),
        "-d shows a line for the 11-byte binary frame; logs:\n{}",
        proxy.logs_text()
    );
}
